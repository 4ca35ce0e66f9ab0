"""Continuous delivery: canary a pushed version, check it, promote or roll back.

    python -m delivery.cd --model_config_file models.config [--version V]
        [--server http://127.0.0.1:8501 --grpc 127.0.0.1:8500]

The CD gate of MLOps level 2, for one version V (default: the newest pushed):
  1. infra: V is a complete SavedModel with the signatures clients call
     (serving_default, serving_raw), serving_raw takes the inputs and dtypes
     of models/features.py, it loads in-process, and the config file parses
     with a version policy that can serve `stable` and `canary` side by side.
  2. canary: V is added to a `specific` policy and, once the server reports
     it AVAILABLE, the `canary` label is pointed at it (TF Serving only
     labels available versions); waits until /labels/canary answers V.
  3. predictions: labelled rows (the newest bundled spans) through
     labels/canary over REST and gRPC: finite probabilities in [0, 1], REST =
     gRPC = the SavedModel in-process; against `stable` (if any), paired on
     the same rows, accuracy, AUC and calibration error must be shown (a
     seeded bootstrap's one-sided 95% bound) to be worse by at most their
     margins: being better or just different never fails (canary_stats).
  4. load: one-trip REST requests to labels/canary from concurrent clients
     that back off on connection failures (load_test): no error answers,
     p50/p99 within the performance targets.
  5. decision. All pass: `stable` -> V, `canary` removed, the old stable
     unloaded from a `specific` policy. Any fails: `stable` stays, `canary`
     removed, V leaves the policy and is moved to <base>/.rolled-back/ (V
     itself, not "the newest": the Pusher may have pushed another meanwhile)
     so no `latest` policy serves it and the Pusher never pushes it again.
     The stable version is never moved.
  Not judged at all (exit 2): the server unreachable (refused, reset, timed
  out, gone) at any step, stable not answering, a load test that got too
  few answers, or too few check rows to show either way. The config file
  is put back byte for byte as before the run, no version is moved, and
  `cd_abort` is logged.

One run at a time per model: from reading the config file to its decision
CD holds the model base path's lock (serving.base_path), which
`delivery.versions rollback|promote` and the Pusher take too, so none of them
changes the versions or the config under a run, and two CD runs never
canary at once (the second waits up to --lock_timeout, then exits 2 naming
the holder, having changed nothing). A Pusher waits for the run to end.

Every config change is an atomic file replace a polling server picks up;
requests to `stable` keep being answered throughout. Each step is printed and
appended to <base>/.versions.log (delivery.versions' action log). Exit status:
0 promoted (or already stable), 1 rolled back, 2 nothing judged (usage,
infrastructure, too little evidence, the lock busy); every error is one line
on stderr.

The steps live in modules named for what they do: checks.py (steps 1 and
3), rollout.py (2 and 5), load_test.py (4), on cd_run.py's `Delivery`;
this module runs them in order and is the command.
"""

import argparse
import os
import sys
import traceback
from typing import List, Optional

from delivery import canary_stats
from delivery import cd_run
from delivery import checks
from delivery import config_file
from delivery import load_test
from delivery import rollout
from delivery import versions
from models import problem as problems
from project import cli
from project import display
from project import paths
from serving import base_path
from serving import model_config
from serving import server_process

EXIT_PROMOTED, EXIT_ROLLED_BACK, EXIT_ERROR = 0, 1, 2
CANARY, STABLE = cd_run.CANARY, cd_run.STABLE
DEFAULT_WAIT_SECONDS = 60.0
InfraError = cd_run.InfraError  # nothing judged: exit 2


def parse_args(argv=None) -> argparse.Namespace:
  parser = cli.ArgumentParser(
      prog='python -m delivery.cd', description=__doc__.split('\n\n')[0],
      formatter_class=argparse.ArgumentDefaultsHelpFormatter,
      underscores=True)
  parser.add_argument('--model_config_file', required=True,
                      help='TF Serving model config the server reads; CD '
                      'edits its labels and policy')
  problems.add_flag(parser, 'the problem the model answers (its instances, '
                    'label and task)')
  parser.add_argument('--model_name', default=None,
                      help="model in the config file (None: the problem's "
                      'name)')
  parser.add_argument('--model_base_path', default=None,
                      help='where Pusher writes versions; checked against '
                      'the config\'s base_path (None: take that)')
  parser.add_argument('--version', type=int, default=None,
                      help='version to deliver (None: the newest on disk)')
  parser.add_argument('--server', default=None,
                      help='REST URL of a running server reading the config '
                      'file (with --grpc); None: start one for the run')
  parser.add_argument('--grpc', default=None,
                      help='gRPC host:port of the same running server')
  parser.add_argument('--data_root', default=None,
                      help='directory of span-N/ whose newest spans are the '
                      'check rows (None: data/<problem>)')
  parser.add_argument('--check_data', default=None,
                      help='CSV of labelled rows (None: the newest spans '
                      'under --data_root, newest first)')
  parser.add_argument('--check_rows', type=int,
                      default=canary_stats.DEFAULT_ROWS,
                      help='how many labelled rows to check')
  parser.add_argument('--tolerance', type=float,
                      default=checks.DEFAULT_TOLERANCE,
                      help='max |REST - gRPC| and |served - in-process|')
  for metric in canary_stats.METRICS:
    worse = ('above' if metric in canary_stats.LOWER_IS_BETTER else 'below')
    parser.add_argument(
        f'--{metric}_margin', type=float,
        default=canary_stats.DEFAULT_MARGINS[metric],
        help=f'non-inferiority margin: the canary passes when its {metric} '
        f'({canary_stats.DEFINITIONS[metric]}) is shown (one-sided 95%% '
        'bound, paired bootstrap over the check rows) to be at most this '
        f'much {worse} stable\'s, fails when shown to be further, and in '
        'between nothing is judged (exit 2)')
  parser.add_argument('--concurrency', type=int,
                      default=load_test.DEFAULT_CONCURRENCY,
                      help='load test: client threads')
  parser.add_argument('--load_seconds', type=float,
                      default=load_test.DEFAULT_LOAD_SECONDS,
                      help='load test: how long to send requests')
  parser.add_argument('--load_requests', type=int, default=None,
                      help='send this many requests instead of '
                      f'--load_seconds (>= {load_test.MIN_LOAD_REQUESTS}, '
                      'for a p99)')
  parser.add_argument('--p50_target_ms', type=float,
                      default=load_test.DEFAULT_P50_TARGET_MS,
                      help='performance target: median latency')
  parser.add_argument('--p99_target_ms', type=float,
                      default=load_test.DEFAULT_P99_TARGET_MS,
                      help='performance target: 99th percentile latency')
  parser.add_argument('--wait_seconds', type=float,
                      default=DEFAULT_WAIT_SECONDS,
                      help='how long the server may take to apply a config')
  parser.add_argument('--lock_timeout', type=cli.timeout_seconds,
                      default=base_path.DEFAULT_TIMEOUT_S,
                      help='how long to wait for another CD run, rollback, '
                      'promote or push on the same base path to finish')
  args = parser.parse_args(argv)
  if bool(args.server) != bool(args.grpc):
    parser.error('--server and --grpc go together (both APIs are checked)')
  if args.concurrency < 1 or (args.load_requests is not None and
                              args.load_requests < load_test.MIN_LOAD_REQUESTS):
    parser.error('--concurrency must be >= 1 and --load_requests >= '
                 f'{load_test.MIN_LOAD_REQUESTS}')
  return args


def _print_summary(run: Optional[cd_run.Delivery], done: List[cd_run.Check],
                   decision: str, code: int) -> None:
  what = (f'{run.model_name} version {run.version}' if run else 'model')
  print(f'\nCD summary for {what}:')
  for check in done:
    print(f'  {check.name:<12} {check.verdict}  {check.summary}')
  print(f'  {"decision":<12} {decision}\nexit {code}', flush=True)


def deliver(args: argparse.Namespace) -> int:
  """Runs the five steps holding the base path's lock; the exit status."""
  print('[1/5] infra compatibility', flush=True)
  config = checks.check_config(args.model_config_file, args.model_name,
                               args.model_base_path)
  base = config.base_path
  if not os.path.isdir(base):
    raise InfraError(f'model base path {base} is not a directory')
  try:
    with base_path.locked(base, args.lock_timeout, what='delivery.cd'):
      # Again, as it is now: another run may have changed it while we waited.
      config = checks.check_config(args.model_config_file, args.model_name,
                                   args.model_base_path)
      if os.path.realpath(config.base_path) != os.path.realpath(base):
        raise InfraError(f'{args.model_config_file} changed the base_path of '
                         f'{args.model_name!r} during the run')
      return _deliver(args, config)
  except base_path.Busy as e:
    raise InfraError(str(e)) from e


def _deliver(args: argparse.Namespace, config: model_config.ModelConfig
            ) -> int:
  problem = problems.load(args.problem)
  done: List[cd_run.Check] = []
  base = config.base_path
  on_disk = model_config.versions_on_disk(base)
  if not on_disk and args.version is None:
    raise InfraError(f'no version under {base} to deliver')
  version = on_disk[-1] if args.version is None else args.version
  if version not in on_disk:
    raise InfraError(f'version {version} is not under {base} '
                     f'(there: {on_disk})')
  stable = config.labels.get(STABLE)
  canary = config.labels.get(CANARY)
  if canary is not None and canary != version:
    raise InfraError(
        f'{args.model_config_file}: {CANARY} already points at version '
        f'{canary}: another CD run is in flight, or one was interrupted '
        f'(remove that version_labels entry to retry)')
  try:
    trips, labels = canary_stats.read_rows(
        problem, [args.check_data] if args.check_data else
        canary_stats.check_csvs(args.data_root or
                                paths.data_root(problem.name)),
        args.check_rows)
  except (OSError, ValueError) as e:
    raise InfraError(f'check rows: {e}') from e
  run = cd_run.Delivery(args.model_config_file, args.model_name, base,
                        version, args.server, args.grpc, args.wait_seconds,
                        problem)
  if stable == version:
    run.log('cd_skip', reason=f'already {STABLE}')
    _print_summary(run, done, f'nothing to do: already {STABLE}',
                   EXIT_PROMOTED)
    return EXIT_PROMOTED
  run.log('cd_start', stable=stable, config=args.model_config_file,
          server=args.server or 'own')
  check, loaded = checks.check_version(os.path.join(base, str(version)),
                                       problem)
  _record(run, done, check)
  if not check.passed:
    decision = rollout.roll_back(run, stable, check.failures)
    run.log('cd_done', decision='rolled_back', failed=['infra'])
    _print_summary(run, done, decision, EXIT_ROLLED_BACK)
    return EXIT_ROLLED_BACK

  server = None
  try:
    try:
      if not args.server:  # a server of our own on the same config file
        server = _own_server(run, args)
      if stable is not None and run.served_as(STABLE) != stable:
        raise InfraError(f'the server does not answer labels/{STABLE} '
                         f'(version {stable}) yet')
      print(f'[2/5] serve version {version} as {CANARY}', flush=True)
      _record(run, done, rollout.start_canary(run))
      print('[3/5] prediction checks', flush=True)
      _record(run, done, checks.check_predictions(run, loaded, trips, labels,
                                                  stable, args))
      print('[4/5] load test', flush=True)
      _record(run, done, load_test.check_load(run, trips, args))
      failed = [c for c in done if not c.passed]
      undecided = [u for c in done for u in c.undecided]
      if undecided and not failed:  # canary_stats: too few rows either way
        raise InfraError('too little evidence to judge: ' +
                         '; '.join(undecided))
    except BaseException as e:  # the server's failure, or ours: undo
      rollout.undo(run)
      run.log('cd_abort', error=f'{type(e).__name__}: {e}',
              **getattr(e, 'figures', {}))
      _print_summary(run, done, 'ABORTED: nothing judged, config file '
                     'as before the run, no version moved', EXIT_ERROR)
      raise
    print('[5/5] decision', flush=True)
    if failed:
      decision = rollout.roll_back(run, stable,
                                   [f for c in failed for f in c.failures])
      run.log('cd_done', decision='rolled_back',
              failed=[c.name for c in failed])
      code = EXIT_ROLLED_BACK
    else:
      decision = rollout.promote(run, stable)
      run.log('cd_done', decision='promoted', stable=version)
      code = EXIT_PROMOTED
  finally:
    if server is not None:
      server.stop()
  _print_summary(run, done, decision, code)
  return code


def _own_server(run: cd_run.Delivery, args: argparse.Namespace
               ) -> server_process.ServerProcess:
  """A server of the run's own on the same config file, polling it often."""
  try:
    server = server_process.start(
        ['--model_config_file', args.model_config_file,
         '--model_config_file_poll_wait_seconds', '0.5',
         '--file_system_poll_wait_seconds', '0.5'])
  except RuntimeError as e:
    raise InfraError(str(e)) from e
  run.rest_url, run.grpc_address = server.rest_url, server.grpc_address
  print(f'started python -m serving: REST {run.rest_url}, gRPC '
        f'{run.grpc_address}', flush=True)
  return server


def _record(run: cd_run.Delivery, done: List[cd_run.Check],
            check: cd_run.Check) -> None:
  done.append(check)
  run.log('cd_check', check=check.name, passed=check.passed,
          failures=check.failures,
          **({'undecided': check.undecided} if check.undecided else {}),
          **check.figures)


def _one_line(e: BaseException) -> str:
  text = str(e).strip().splitlines()
  return text[0][:500] if text else type(e).__name__


def main(argv=None) -> int:
  """Exit 2 for anything but a verdict, with one line on stderr (and the
  traceback too for an exception no step expects: a bug)."""
  args = parse_args(argv)
  args.model_name = args.model_name or args.problem
  display.quiet_imports()
  try:
    return deliver(args)
  except (InfraError, config_file.Error, versions.Error) as e:
    print(f'cd: nothing judged, nothing delivered: {e}', file=sys.stderr)
  except (OSError, ValueError) as e:
    print(f'cd: nothing judged, nothing delivered: {type(e).__name__}: '
          f'{_one_line(e)}', file=sys.stderr)
  except KeyboardInterrupt:
    print('cd: interrupted: nothing judged, nothing delivered',
          file=sys.stderr)
  except Exception as e:  # pylint: disable=broad-except
    traceback.print_exc()
    print(f'cd: nothing judged, nothing delivered: {type(e).__name__}: '
          f'{_one_line(e)} (a bug: the traceback is above)', file=sys.stderr)
  return EXIT_ERROR


if __name__ == '__main__':
  sys.exit(main())
