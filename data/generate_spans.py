"""Generate taxi-like spans of any size from the bundled real rows.

Writes `<out>/span-K/data.csv` (K = 1..N) with the bundled spans' header,
column order and value types, so CsvExampleGen and the curated schema
(schema/taxi/schema.pbtxt) take them as they take data/taxi/. Every row is a real
bundled trip resampled with noise: one random factor scales its distance,
duration, fare and tip together (the tip keeps its share of the fare, so the
label `tips > 0.2 * fare` stays what it was), its coordinates move by ~50 m
(clipped to the schema's Chicago box), its start time by up to an hour in
15-minute steps (month, day and hour follow). Missing cells stay missing,
categories are kept, so presence and domains match the source.

    python data/generate_spans.py --out /tmp/big --rows 1000000 --spans 1
    python data/generate_spans.py --out /tmp/ct --rows 20000 --spans 4 \\
        --drift fare=1.3 --drift-spans 4

Output is a pure function of the flags (same --seed, same bytes; each span
from its own seed, so span 3 does not depend on --spans). Rows are streamed:
memory stays at the ~15k source rows whatever --rows is.

Drift (`--drift KIND=VALUE`, repeatable; applied to --drift-spans only):
  trip_miles=F     trip_miles x F; nothing else changes
  fare=F           fare x F, and tips x F so the label keeps its meaning
  hour=H           start time + H hours (timestamp, hour, day, month follow)
  payment_type=P   a fraction P of Cash trips are paid by Credit Card
                   instead; their tip is drawn from real card trips' tip/fare
                   ratios (cash tips are not recorded in this data), so the
                   label rate rises as it would
"""

import argparse
import csv
import datetime
import json
import math
import os
import random
import sys
import time
from typing import Dict, Iterator, List, Optional, TextIO

if __package__ in (None, ''):  # run as a script: data/generate_spans.py
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from data import spans as span_rules  # pylint: disable=wrong-import-position
from models.taxi.problem import PROBLEM  # pylint: disable=wrong-import-position  # the label rule
from models.taxi.problem import TIP_FRACTION  # pylint: disable=wrong-import-position  # the label's threshold
from project import cli  # pylint: disable=wrong-import-position
from project import paths  # pylint: disable=wrong-import-position

DEFAULT_SOURCE = paths.data_root(PROBLEM.name)
DRIFT_KINDS = ('trip_miles', 'fare', 'hour', 'payment_type')
# The schema's Chicago box (schema/taxi/schema.pbtxt float_domain).
LAT_RANGE = (41.5, 42.2)
LON_RANGE = (-88.1, -87.4)
# Noise scales: small enough that a generated span looks like the bundled
# data to TFDV, large enough that rows are not copies.
SCALE_SIGMA = 0.05  # log-normal factor on distance, duration, fare, tip
COORD_SIGMA = 0.0005  # degrees, ~50 m
TIME_STEPS = (-4, -3, -2, -1, 0, 1, 2, 3, 4)  # x 15 minutes
PROGRESS_EVERY = 100_000


def source_files(source: str) -> List[str]:
  """The CSV files of every span under `source`, sorted by path (the order
  fixes which row a random index draws, so it is part of the output)."""
  files = sorted(path for span in span_rules.spans_on_disk(source)
                 for path in span_rules.span_files(source, span))
  if not files:
    sys.exit(f'no {span_rules.SPAN_PATTERN.replace(span_rules.SPAN_SPEC, "N")}'
             f' under {source}')
  return files


def read_source(source: str) -> List[Dict[str, str]]:
  """Every row of every span's CSV files under `source`, as CSV text."""
  rows = []
  for path in source_files(source):
    with open(path, newline='') as f:
      rows.extend(csv.DictReader(f))
  return rows


def header_of(source: str) -> List[str]:
  with open(source_files(source)[0], newline='') as f:
    return next(csv.reader(f))


def parse_drift(specs: List[str]) -> Dict[str, float]:
  """['fare=1.3', 'hour=2'] -> {'fare': 1.3, 'hour': 2.0}, validated."""
  drift = {}
  for spec in specs:
    kind, sep, value = spec.partition('=')
    if not sep or kind not in DRIFT_KINDS:
      raise argparse.ArgumentTypeError(
          f'--drift {spec!r}: expected KIND=VALUE with KIND one of '
          f'{", ".join(DRIFT_KINDS)}')
    try:
      number = float(value)
    except ValueError:
      raise argparse.ArgumentTypeError(
          f'--drift {spec!r}: {value!r} is not a number') from None
    if kind in ('trip_miles', 'fare') and number <= 0:
      raise argparse.ArgumentTypeError(f'--drift {spec!r}: factor must be > 0')
    if kind == 'payment_type' and not 0 <= number <= 1:
      raise argparse.ArgumentTypeError(
          f'--drift {spec!r}: fraction must be in [0, 1]')
    if kind == 'hour' and number != int(number):
      raise argparse.ArgumentTypeError(f'--drift {spec!r}: whole hours only')
    drift[kind] = number
  return drift


def _money(x: float) -> str:
  # Always with a decimal point: CsvExampleGen infers a column's type from
  # its text, and a FLOAT column that looks like ints would turn INT.
  return f'{x:.2f}'


def _scaled(text: str, factor: float) -> str:
  return _money(float(text) * factor) if text else text


def _jitter(text: str, rng: random.Random, low: float, high: float) -> str:
  if not text:
    return text
  value = float(text) + rng.gauss(0.0, COORD_SIGMA)
  return f'{min(max(value, low), high):.6f}'


def _time_fields(timestamp: int) -> Dict[str, str]:
  """trip_start_* as the source encodes them: UTC; day 1 = Sunday."""
  t = datetime.datetime.fromtimestamp(timestamp, tz=datetime.timezone.utc)
  return {
      'trip_start_timestamp': str(timestamp),
      'trip_start_month': str(t.month),
      'trip_start_day': str(t.isoweekday() % 7 + 1),
      'trip_start_hour': str(t.hour),
  }


def _keep_label(row: Dict[str, str], positive: bool) -> None:
  """Nudges a rounded tip by a cent so the label is what the source said."""
  fare, tips = float(row['fare']), float(row['tips'])
  if bool(PROBLEM.label_of(row)) == positive:
    return
  if positive:
    tips = math.floor(TIP_FRACTION * fare * 100 + 1) / 100
  else:
    tips = max(0.0, math.floor(TIP_FRACTION * fare * 100 - 1) / 100)
  row['tips'] = _money(tips)


class Generator:
  """Resamples source rows with noise and optional drift."""

  def __init__(self, source_rows: List[Dict[str, str]]):
    self._rows = source_rows
    # Tip/fare ratios of real card trips, for Cash trips turned card ones.
    self._card_tip_ratios = [
        float(r['tips']) / float(r['fare']) for r in source_rows
        if r['payment_type'] == 'Credit Card' and float(r['fare']) > 0
    ]

  def rows(self, count: int, rng: random.Random,
           drift: Optional[Dict[str, float]] = None
           ) -> Iterator[Dict[str, str]]:
    drift = drift or {}
    miles_factor = drift.get('trip_miles', 1.0)
    fare_factor = drift.get('fare', 1.0)
    hour_shift = int(drift.get('hour', 0))
    to_card = drift.get('payment_type', 0.0)
    for _ in range(count):
      src = self._rows[rng.randrange(len(self._rows))]
      row = dict(src)
      positive = bool(PROBLEM.label_of(src))
      scale = math.exp(rng.gauss(0.0, SCALE_SIGMA))
      row['trip_miles'] = _scaled(src['trip_miles'], scale * miles_factor)
      row['fare'] = _scaled(src['fare'], scale * fare_factor)
      row['tips'] = _scaled(src['tips'], scale * fare_factor)
      if src['trip_seconds']:
        row['trip_seconds'] = str(round(int(src['trip_seconds']) * scale))
      for key, (low, high) in (('pickup_latitude', LAT_RANGE),
                               ('dropoff_latitude', LAT_RANGE),
                               ('pickup_longitude', LON_RANGE),
                               ('dropoff_longitude', LON_RANGE)):
        row[key] = _jitter(src[key], rng, low, high)
      shift = rng.choice(TIME_STEPS) * 900 + hour_shift * 3600
      row.update(_time_fields(int(src['trip_start_timestamp']) + shift))
      # Always draw, so the rows after this one do not depend on P.
      switch, ratio = rng.random(), rng.choice(self._card_tip_ratios)
      if src['payment_type'] == 'Cash' and switch < to_card:
        row['payment_type'] = 'Credit Card'
        row['tips'] = _money(float(row['fare']) * ratio)
        positive = bool(PROBLEM.label_of(row))
      _keep_label(row, positive)
      yield row


def write_span(path: str, header: List[str], rows: Iterator[Dict[str, str]],
               total: int, label: str, progress: TextIO) -> int:
  """Streams rows to `path` (atomically: a reader never sees half a span)."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = f'{path}.tmp{os.getpid()}'
  start, written = time.time(), 0
  with open(tmp, 'w', newline='', buffering=1 << 20) as f:
    writer = csv.DictWriter(f, fieldnames=header, lineterminator='\n')
    writer.writeheader()
    for row in rows:
      writer.writerow(row)
      written += 1
      if written % PROGRESS_EVERY == 0 and written < total:
        rate = written / max(time.time() - start, 1e-9)
        progress.write(f'  {label}: {written:,} / {total:,} rows '
                       f'({rate:,.0f} rows/s)\n')
        progress.flush()
  os.replace(tmp, path)
  seconds = time.time() - start
  progress.write(f'  {label}: {written:,} rows in {seconds:.1f} s -> {path}\n')
  progress.flush()
  return written


def main(argv: Optional[List[str]] = None) -> int:
  parser = cli.ArgumentParser(
      description=__doc__.split('\n\n')[0],
      epilog=__doc__.split('\n\n', 1)[1],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--out', required=True,
                      help='output directory (span-K/data.csv under it)')
  parser.add_argument('--rows', type=int, default=100_000,
                      help='rows per span (default: %(default)s)')
  parser.add_argument('--spans', type=int, default=1,
                      help='number of spans (default: %(default)s)')
  parser.add_argument('--first-span', type=int, default=1,
                      help='number of the first span (default: %(default)s)')
  parser.add_argument('--seed', type=int, default=0,
                      help='random seed (default: %(default)s)')
  parser.add_argument('--drift', action='append', default=[],
                      metavar='KIND=VALUE',
                      help='distribution drift, KIND in '
                      f'{", ".join(DRIFT_KINDS)} (see below)')
  parser.add_argument('--drift-spans', default=None, metavar='K[,K...]',
                      help='spans that drift (default: the last one)')
  parser.add_argument('--source', default=DEFAULT_SOURCE,
                      help='directory of real span-N/*.csv to resample '
                      '(default: data/taxi)')
  args = parser.parse_args(argv)
  if args.rows < 1 or args.spans < 1:
    parser.error('--rows and --spans must be >= 1')
  try:
    drift = parse_drift(args.drift)
  except argparse.ArgumentTypeError as e:
    parser.error(str(e))
  spans = list(range(args.first_span, args.first_span + args.spans))
  drift_spans = ([int(s) for s in args.drift_spans.split(',') if s.strip()]
                 if args.drift_spans else spans[-1:]) if drift else []

  generator = Generator(read_source(args.source))
  header = header_of(args.source)
  print(f'Generating {len(spans)} span(s) x {args.rows:,} rows, seed '
        f'{args.seed}' + (f', drift {drift} in span(s) {drift_spans}'
                          if drift else '') + f' -> {args.out}',
        file=sys.stderr, flush=True)
  for span in spans:
    # A string seed is hashed with SHA-512: stable across processes.
    rng = random.Random(f'taxi-spans:{args.seed}:{span}')
    span_drift = drift if span in drift_spans else {}
    write_span(span_rules.csv_path(args.out, span), header,
               generator.rows(args.rows, rng, span_drift), args.rows,
               span_rules.dir_name(span), sys.stderr)
  manifest = {
      'generator': 'data/generate_spans.py', 'seed': args.seed,
      'rows_per_span': args.rows, 'spans': spans, 'drift': drift,
      'drift_spans': drift_spans,
  }
  with open(os.path.join(args.out, 'generated.json'), 'w') as f:
    json.dump(manifest, f, indent=2, sort_keys=True)
    f.write('\n')
  return 0


if __name__ == '__main__':
  sys.exit(main())
