"""Send a span's trips to a running model server, as live traffic would.

    python -m monitoring.replay_traffic --span 16                  # REST, :8501
    python -m monitoring.replay_traffic --span 16 --grpc 127.0.0.1:8500
    python -m monitoring.replay_traffic --span 16 --shift fare-x3 --rows 500

Reads data/taxi/span-N/data.csv (or --csv), drops the label, and sends the
trips through serving/client.py in requests of --batch-size trips, so a
server with a logging_config logs them for `python -m monitoring`, whose
--labels takes the same CSV later ("labels arrive later"). --shift changes
the traffic on the way (a known skew, for demonstrations and tests).
"""

import argparse
import csv
import sys
import time
import zlib
from typing import Callable, Dict, List, Optional

from data import spans
from models import features
from project import cli
from project import paths


def _scaled(text: str, factor: float, kind=float) -> str:
  """A CSV number times `factor`, in the column's own type ('' stays '')."""
  return str(kind(float(text) * factor)) if text else ''


def _half_to_card(row: Dict[str, str]) -> Dict[str, str]:
  """Half of the Cash trips paid by card: chosen by a checksum of the trip,
  so the same trip is always chosen or not, whatever the order or seed."""
  chosen = zlib.crc32(repr(sorted(row.items())).encode()) % 2 == 0
  if row['payment_type'] == 'Cash' and chosen:
    return {**row, 'payment_type': 'Credit Card'}
  return row


# Known shifts of served traffic: name -> what it does to one CSV row. The
# one definition of each; bench/shift_alarm_rates.py and the tests measure
# the skew and drift rule (monitoring/distribution.py) on these.
SHIFTS: Dict[str, Callable[[Dict[str, str]], Dict[str, str]]] = {
    'fare-x3': lambda r: {**r, 'fare': _scaled(r['fare'], 3)},
    'credit-card-only': lambda r: {**r, 'payment_type': 'Credit Card'},
    'cash-only': lambda r: {**r, 'payment_type': 'Cash'},
    'cash-half-to-card': _half_to_card,
    'night-only': lambda r: {**r, 'trip_start_hour': '3'},
    'trip-length-x2': lambda r: {
        **r, 'trip_miles': _scaled(r['trip_miles'], 2),
        'trip_seconds': _scaled(r['trip_seconds'], 2, int)},
}


def read_trips(path: str, rows: Optional[int] = None, skip: int = 0,
               shift: Optional[str] = None) -> List[Dict[str, str]]:
  """Rows of a span CSV as trips (raw features only, label dropped)."""
  with open(path, newline='') as f:
    reader = list(csv.DictReader(f))
  selected = reader[skip:skip + rows if rows else None]
  if shift:
    selected = [SHIFTS[shift](r) for r in selected]
  return [{k: r.get(k, '') for k in features.RAW_FEATURE_TYPES}
          for r in selected]


def send(client, trips: List[Dict[str, str]], batch_size: int) -> int:
  """Sends trips in batches; returns the number of predictions received."""
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
  source.add_argument('--csv', help='a CSV of trips instead of a span')
  parser.add_argument('--data-root', default=paths.DATA_ROOT,
                      help='directory of span-N/ (default: %(default)s)')
  target = parser.add_mutually_exclusive_group()
  target.add_argument('--server', default='http://127.0.0.1:8501',
                      help='REST base URL (default: %(default)s)')
  target.add_argument('--grpc', default=None, help='gRPC address host:port')
  parser.add_argument('--model-name', default=paths.MODEL_NAME)
  parser.add_argument('--rows', type=int, default=None,
                      help='send only this many trips (default: all)')
  parser.add_argument('--skip', type=int, default=0,
                      help='start at this row of the file')
  parser.add_argument('--batch-size', type=int, default=10,
                      help='trips per predict request (default: %(default)s)')
  parser.add_argument('--shift', choices=sorted(SHIFTS), default=None,
                      help='change the traffic: a known skew')
  args = parser.parse_args(argv)
  from serving import client as serving_client  # pylint: disable=g-import-not-at-top
  path = args.csv or spans.csv_path(args.data_root, args.span)
  trips = read_trips(path, args.rows, args.skip, args.shift)
  client = (serving_client.GrpcClient(args.grpc, args.model_name)
            if args.grpc else
            serving_client.RestClient(args.server, args.model_name))
  started = time.time()
  try:
    answered = send(client, trips, args.batch_size)
  except Exception as e:  # pylint: disable=broad-except  (HTTP, gRPC, I/O)
    print(f'replay failed after sending part of {path}: {e}', file=sys.stderr)
    return 1
  finally:
    if args.grpc:
      client.close()
  print(f'sent {answered} trips from {path}'
        + (f' (shift {args.shift})' if args.shift else '')
        + f' in {time.time() - started:.1f} s via '
        + (f'gRPC {args.grpc}' if args.grpc else f'REST {args.server}'))
  return 0


if __name__ == '__main__':
  sys.exit(main())
