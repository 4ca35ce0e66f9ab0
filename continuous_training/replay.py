"""Replay the quarterly spans in time order through the CT controller.

One command shows continuous training on history: spans arrive one at a time
(a symlink per span under <out>/data), and at each span's logical date (the
day its quarter ends) the controller decides whether to run and why, then
the pipeline ingests, validates, trains on the rolling window, evaluates
against the served model and pushes if blessed. Everything goes to its own
outputs directory (default outputs/<problem>/replay: pipeline root, ML
Metadata, serving dir), restarted from empty on each replay unless --resume.

    python -m continuous_training.replay                       # all bundled spans
    python -m continuous_training.replay --spans 1-4           # a short range
    python -m continuous_training.replay --problem penguin     # another problem
    python -m continuous_training.replay --data-root /tmp/ct   # generated spans
        (python data/generate_spans.py --out /tmp/ct --rows 1000 --spans 8 \\
             --drift payment_type=0.6 --drift-spans 6)

Prints one table row per span (trigger, drift found, the candidate's
headline metric vs the baseline's, blessed, pushed) and writes <out>/report.html: data statistics
and anomalies per span, drift distances, evaluation metrics, push
decisions, and the lineage of every pushed version, read from ML Metadata.
Train steps and window are smaller than `make run`'s so the 16 runs fit in
a learner's wait (continuous_training/config.py REPLAY_DEFAULTS); every one
is a flag. The table and the report: continuous_training/report.py.
"""

import argparse
import dataclasses
import os
import shutil
import sys
import time
from typing import List, Optional

from continuous_training import config as ct_config
from continuous_training import controller
from continuous_training import report
from data import spans as span_rules
from models import problem as problems
from monitoring import config as monitor_config
from pipeline import configs
from ops import console
from ops import reproducible
from project import cli
from project import paths

START = time.time()
MARKER = '.replay'  # only a directory holding it is ever wiped


def parse_spans(text: Optional[str], available: List[int]) -> List[int]:
  """'1-4', '1,3,5', '2-3,7' or None (all available), checked against disk."""
  if not text:
    return available
  spans = []
  for part in text.split(','):
    first, _, last = part.strip().partition('-')
    try:
      spans += list(range(int(first), int(last or first) + 1))
    except ValueError:
      raise SystemExit(f'--spans {text!r}: expected e.g. 1-4 or 1,3,5') from None
  missing = sorted(set(spans) - set(available))
  if missing:
    raise SystemExit(f'--spans {text!r}: span(s) {missing} not on disk '
                     f'(available: {available})')
  return sorted(set(spans))


def prepare_out(out: str, resume: bool) -> None:
  """Empties <out> (a directory this command made) unless resuming."""
  if os.path.isdir(out) and not resume and os.listdir(out):
    if not os.path.exists(os.path.join(out, MARKER)):
      raise SystemExit(f'{out} exists and was not made by a replay; choose '
                       'another --out')
    for name in ('pipeline', 'serving', 'data', 'report.html'):
      path = os.path.join(out, name)
      if os.path.isdir(path):
        shutil.rmtree(path)
      elif os.path.exists(path):
        os.remove(path)
  os.makedirs(os.path.join(out, 'data'), exist_ok=True)
  open(os.path.join(out, MARKER), 'w').close()


def arrive(source: str, data_dir: str, span: int) -> None:
  """Span `span` lands on disk (a symlink to the source span directory)."""
  link = span_rules.span_dir(data_dir, span)
  if not os.path.lexists(link):
    os.symlink(os.path.abspath(span_rules.span_dir(source, span)), link)


def replay_span(cfg: configs.PipelineConfig, ct: ct_config.CTConfig,
                source: str, span: int, make_runner) -> report.Row:
  """Span arrives, the controller decides at its logical date, maybe runs."""
  arrive(source, cfg.data_root, span)
  now = span_rules.logical_date(span)
  print(f'\n=== span {span} ({span_rules.quarter(span)}) arrives; '
        f'controller clock {now.date()} ===', flush=True)
  start = time.time()
  result = controller.run_once(cfg, ct, make_runner, now=now)
  d = result.decision
  row = report.Row(span=span, date=str(now.date()), trigger=d.trigger,
                   ran=d.run, drift=d.drift, decision_id=d.execution_id)
  outcome = result.outcome
  if outcome is not None:
    row.ok, row.error, row.window = outcome.ok, outcome.error, outcome.window
    row.metrics, row.baseline = outcome.metrics, outcome.baseline_metrics
    row.blessed, row.pushed = outcome.blessed, outcome.pushed_version
    row.failures = outcome.blessing_failures
    row.baseline_versions = outcome.baseline_versions
    row.statistics = report.span_statistics(outcome, cfg.problem_spec)
    row.anomalies = report.span_anomalies(outcome)
  row.seconds = time.time() - start
  return row


def main(argv: Optional[List[str]] = None) -> int:
  parser = cli.ArgumentParser(
      prog='python -m continuous_training.replay',
      description=__doc__.split('\n\n')[0],
      epilog=__doc__.split('\n\n', 1)[1],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  problems.add_flag(parser, 'the problem replayed')
  parser.add_argument('--spans', default=None,
                      help='spans to replay, e.g. 1-4 or 1,3,5 (default: all '
                      'under --data-root)')
  parser.add_argument('--data-root',
                      help='source span-N/ directories (default: '
                      'data/<problem>)')
  parser.add_argument('--out',
                      help='replay outputs: pipeline root, metadata, serving '
                      'dir, report.html (default: outputs/<problem>/replay)')
  parser.add_argument('--resume', action='store_true',
                      help='keep what an earlier replay left in --out')
  helps = {f.name: f.metadata['help']
           for f in dataclasses.fields(configs.PipelineConfig)}
  for name, default in ct_config.REPLAY_DEFAULTS.items():
    parser.add_argument('--' + name.replace('_', '-'), type=int,
                        default=default,
                        help=f'{helps[name]} (default: %(default)s)')
  parser.add_argument('--no-cache', action='store_true',
                      help='do not reuse cached component executions')
  for name in configs.BLESSING_FIELDS:
    parser.add_argument('--' + name.replace('_', '-'), type=float,
                        help=f"{helps[name]} (default: the problem's rule)")
  ct_config.add_flags(parser)
  parser.set_defaults(monitoring_report=None)
  args = parser.parse_args(argv)

  console.quiet_imports()  # before TensorFlow loads (run_pipeline imports it)
  args.data_root = args.data_root or paths.data_root(args.problem)
  args.out = args.out or ct_config.replay_dir(args.problem)
  spans = parse_spans(args.spans, span_rules.spans_on_disk(args.data_root))
  if not spans:
    raise SystemExit(f'No span-N/ directories under {args.data_root}')
  out = os.path.abspath(args.out)
  prepare_out(out, args.resume)
  cfg = configs.PipelineConfig(
      problem=args.problem,
      data_root=os.path.join(out, 'data'),
      pipeline_root=os.path.join(out, 'pipeline'),
      serving_dir=os.path.join(out, 'serving'),
      window_spans=args.window_spans, train_steps=args.train_steps,
      eval_steps=args.eval_steps, enable_cache=not args.no_cache,
      **{name: getattr(args, name) for name in configs.BLESSING_FIELDS})
  if args.monitoring_report is None:  # the replay's own: none unless put there
    args.monitoring_report = monitor_config.report_path(out)
  ct = ct_config.from_flags(args)
  command = 'python -m continuous_training.replay ' + ' '.join(
      sys.argv[1:] if argv is None else argv)
  print(f'Replaying {len(spans)} span(s) {spans[0]}..{spans[-1]} of '
        f'{args.data_root} through the CT controller -> {out}\n'
        + console.LOADING, flush=True)
  console.quiet_logging(os.path.join(cfg.pipeline_root, 'logs',
                                     time.strftime('replay-%Y%m%d-%H%M%S.log')))
  from tfx.orchestration.local.local_dag_runner import LocalDagRunner  # pylint: disable=g-import-not-at-top

  rows = []
  for span in spans:
    rows.append(replay_span(cfg, ct, args.data_root, span, LocalDagRunner))
  lineage = report.pushed_lineage(cfg)
  seconds = time.time() - START
  report_file = os.path.join(out, 'report.html')
  report.write_report(report_file, cfg, ct, rows, lineage, command.strip(),
                      seconds, args.data_root)

  print(f'\nReplay of spans {spans[0]}..{spans[-1]} '
        f'({seconds:.0f} s wall time, window {cfg.window_spans}, '
        f'{cfg.train_steps} train steps):\n', flush=True)
  print(report.format_table(rows, cfg.problem_spec.task))
  drifted = [r.span for r in rows if r.drift is not None and r.drift.drifted]
  not_blessed = [r.span for r in rows if r.ran and r.blessed is False]
  stopped = [r.span for r in rows if r.ran and r.ok is False]
  print(f'\n  drift detected     {", ".join(map(str, drifted)) or "none"}')
  print(f'  not blessed        {", ".join(map(str, not_blessed)) or "none"}')
  for r in rows:
    if r.ran and r.blessed is False and r.failures:
      print(f'    span {r.span}: {"; ".join(r.failures)}')
  if stopped:
    print(f'  stopped (anomalies) {", ".join(map(str, stopped))}')
  for p in lineage:
    print(f'  version {p.version}  trained on spans '
          f'{", ".join(map(str, p.spans))}')
  print(f'  report             {os.path.relpath(report_file)}')
  print(f'  metadata           {os.path.relpath(cfg.metadata_path)}')
  return 1 if stopped and len(stopped) == len([r for r in rows if r.ran]) else 0


if __name__ == '__main__':
  reproducible.fix_hash_seed()  # before anything runs TFX
  sys.exit(main())
