"""Start, inspect and stop a local Flink cluster for the pipeline's Beam jobs.

  python -m cluster fetch            # once: Flink's jars (PyPI) and Beam's
                                     # Flink job server (Maven Central)
  python -m cluster up               # JobManager, 2 TaskManagers, Beam job
                                     # server, Python worker pool
  python -m cluster status           # processes, TaskManagers, jobs
  python -m cluster flags            # the Beam flags that run on it
  python -m cluster down             # stop everything `up` started

Then run the pipeline's Beam jobs on it (Trainer and the rest stay local):

  .venv/bin/python beam_runner.py -- $(.venv/bin/python -m cluster flags)

Everything binds 127.0.0.1 except what Beam's job server and the
TaskManagers' harness ports bind (every interface: cluster/flink.py).
The cache of jars is $TFX_REFERENCE_CACHE or ~/.cache/tfx-reference; the
state (pids, config, logs) is --state-dir, outputs/flink by default.
"""

import argparse
import dataclasses
import sys
import time

from cluster import distribution
from cluster import flink
from project import cli


def _settings(args) -> flink.Settings:
  known = {f.name for f in dataclasses.fields(flink.Settings)}
  return flink.Settings(**{k: v for k, v in vars(args).items()
                           if k in known and v is not None})


def _print_status(info) -> None:
  for process in info['processes']:
    print(f'  {process["name"]:<16} pid {process["pid"]:<8} '
          f'{"running" if process["alive"] else "NOT RUNNING"}   '
          f'{process["log"]}')
  overview = info['overview']
  if overview:
    print(f'  Flink {overview["flink-version"]}: {overview["taskmanagers"]} '
          f'TaskManager(s), {overview["slots-total"]} slot(s) '
          f'({overview["slots-available"]} free); jobs: '
          f'{overview["jobs-running"]} running, {overview["jobs-finished"]} '
          f'finished, {overview["jobs-failed"]} failed')
    print(f'  web UI           {info["web_ui"]}')
  else:
    print('  the JobManager does not answer')
  print('  Beam flags       ' + ' '.join(info['beam_flags']))


def main(argv=None) -> int:
  parser = cli.ArgumentParser(
      prog='python -m cluster', description=__doc__.split('\n\n')[0],
      epilog=__doc__.split('\n\n', 1)[1],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  defaults = flink.Settings()
  parser.add_argument('--state-dir', default=defaults.state_dir,
                      help='pids, config and logs (default: %(default)s)')
  commands = parser.add_subparsers(dest='command', required=True,
                                   metavar='{fetch,up,status,flags,down}')
  commands.add_parser('fetch', help="fetch Flink's jars and Beam's job "
                      'server into the cache (once)')
  start = commands.add_parser(
      'up', help='start the cluster (fetches first if needed)',
      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  start.add_argument('--task-managers', type=int,
                     default=defaults.task_managers, metavar='N',
                     help='TaskManager processes')
  start.add_argument('--slots', type=int, default=defaults.slots,
                     metavar='N', help='task slots per TaskManager')
  start.add_argument('--taskmanager-memory',
                     default=defaults.taskmanager_memory,
                     help='process size of each TaskManager')
  start.add_argument('--jobmanager-memory',
                     default=defaults.jobmanager_memory,
                     help='process size of the JobManager')
  for flag, port in defaults.ports().items():
    start.add_argument(flag, type=int, default=port, metavar='PORT',
                       help='port')
  start.add_argument('--jit', choices=sorted(flink.JIT_FLAGS),
                     default=defaults.jit,
                     help="the JVMs' compilers and collector: quick (client "
                     'compiler, serial GC: small jobs on few cores) or full '
                     "(the JVM's defaults: long jobs)")
  start.add_argument('--timeout', type=float, default=120,
                     help='seconds to wait for every part to answer')
  commands.add_parser('status', help='what runs, and Flink\'s overview')
  commands.add_parser('flags', help='print the Beam flags for this cluster')
  commands.add_parser('down', help='stop everything `up` started')
  args = parser.parse_args(argv)

  if args.command == 'fetch':
    distribution.fetch()
    print(f'Ready in {distribution.cache_root()}')
    return 0
  if args.command == 'up':
    distribution.fetch()
    settings = _settings(args)
    begin = time.time()
    print(f'Starting Flink {distribution.FLINK_VERSION}: a JobManager, '
          f'{settings.task_managers} TaskManager(s) x {settings.slots} '
          'slot(s), the Beam job server and the Python worker pool ...',
          flush=True)
    flink.up(settings, timeout=args.timeout)
    print(f'Up in {time.time() - begin:.1f} s:')
    _print_status(flink.status(settings.state_dir))
    print('Run the pipeline on it:\n  .venv/bin/python beam_runner.py -- '
          + ' '.join(flink.beam_flags(settings)))
    return 0
  if args.command == 'down':
    stopped = flink.down(args.state_dir)
    print('stopped: ' + ', '.join(stopped) if stopped else
          f'nothing was running (state dir {args.state_dir})')
    return 0
  info = flink.status(args.state_dir)
  if info is None:
    print(f'no cluster started from {args.state_dir} (python -m cluster up)',
          file=sys.stderr)
    return 1
  if args.command == 'flags':
    print(' '.join(info['beam_flags']))
    return 0
  _print_status(info)
  return 0 if all(p['alive'] for p in info['processes']) else 1


if __name__ == '__main__':
  sys.exit(main())
