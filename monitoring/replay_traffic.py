"""Send a span's instances to a running model server, as live traffic would.

    python -m monitoring.replay_traffic --span 16                  # REST, :8501
    python -m monitoring.replay_traffic --span 16 --grpc 127.0.0.1:8500
    python -m monitoring.replay_traffic --span 16 --shift fare-x3 --rows 500
    python -m monitoring.replay_traffic --problem penguin --span 4

Reads data/<problem>/span-N/data.csv (or --csv), drops the label, and sends
the instances through serving/client.py in requests of --batch-size, so a
server with a logging_config logs them for `python -m monitoring`, whose
--labels takes the same CSV later ("labels arrive later"). --shift changes
the traffic on the way: one of the problem's known shifts
(models/<problem>/problem.py traffic_shifts), for demonstrations and tests.
"""

import argparse
import csv
import sys
import time
from typing import Dict, List, Optional

from data import spans
from models import problem as problems
from project import cli
from project import paths


def read_instances(problem: problems.Problem, path: str,
                   rows: Optional[int] = None, skip: int = 0,
                   shift: Optional[str] = None) -> List[Dict[str, str]]:
  """Rows of a span CSV as instances (raw features only, label dropped),
  changed by the problem's traffic shift `shift` if given."""
  with open(path, newline='') as f:
    reader = list(csv.DictReader(f))
  selected = reader[skip:skip + rows if rows else None]
  if shift:
    selected = [problem.traffic_shifts[shift](r) for r in selected]
  return [{k: r.get(k, '') for k in problem.raw_types} for r in selected]


def send(client, trips: List[Dict[str, str]], batch_size: int) -> int:
  """Sends instances in batches; returns the number of answers received."""
  answered = 0
  for start in range(0, len(trips), batch_size):
    answered += len(client.predict(trips[start:start + batch_size]))
  return answered


def main(argv=None) -> int:
  parser = cli.ArgumentParser(
      prog='python -m monitoring.replay_traffic',
      description=__doc__.split('\n\n')[0],
      formatter_class=argparse.RawDescriptionHelpFormatter,
      epilog=__doc__.split('\n\n', 1)[1])
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument('--span', type=int, help='span number under --data-root')
  source.add_argument('--csv', help='a CSV of instances instead of a span')
  problems.add_flag(parser, 'whose instances')
  parser.add_argument('--data-root', default=None,
                      help='directory of span-N/ (default: data/<problem>)')
  target = parser.add_mutually_exclusive_group()
  target.add_argument('--server', default='http://127.0.0.1:8501',
                      help='REST base URL (default: %(default)s)')
  target.add_argument('--grpc', default=None, help='gRPC address host:port')
  parser.add_argument('--model-name', default=None,
                      help="served model (default: the problem's name)")
  parser.add_argument('--rows', type=int, default=None,
                      help='send only this many instances (default: all)')
  parser.add_argument('--skip', type=int, default=0,
                      help='start at this row of the file')
  parser.add_argument('--batch-size', type=int, default=10,
                      help='instances per predict request (default: '
                      '%(default)s)')
  parser.add_argument('--shift', default=None,
                      help="change the traffic: one of the problem's known "
                      'shifts (models/<problem>/problem.py traffic_shifts)')
  args = parser.parse_args(argv)
  from serving import client as serving_client  # pylint: disable=g-import-not-at-top
  problem = problems.load(args.problem)
  if args.shift and args.shift not in problem.traffic_shifts:
    parser.error(f'--shift {args.shift}: the {problem.name} problem knows '
                 f'{sorted(problem.traffic_shifts) or "no shifts"}')
  model_name = args.model_name or problem.name
  path = args.csv or spans.csv_path(
      args.data_root or paths.data_root(problem.name), args.span)
  trips = read_instances(problem, path, args.rows, args.skip, args.shift)
  client = (serving_client.GrpcClient(args.grpc, model_name, problem)
            if args.grpc else
            serving_client.RestClient(args.server, model_name, problem))
  started = time.time()
  try:
    answered = send(client, trips, args.batch_size)
  except Exception as e:  # pylint: disable=broad-except  (HTTP, gRPC, I/O)
    print(f'replay failed after sending part of {path}: {e}', file=sys.stderr)
    return 1
  finally:
    if args.grpc:
      client.close()
  print(f'sent {answered} instances from {path}'
        + (f' (shift {args.shift})' if args.shift else '')
        + f' in {time.time() - started:.1f} s via '
        + (f'gRPC {args.grpc}' if args.grpc else f'REST {args.server}'))
  return 0


if __name__ == '__main__':
  sys.exit(main())
