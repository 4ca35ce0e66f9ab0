"""Split TFX's bundled Chicago taxi sample into time-ordered quarterly spans.

Reproduces `data/taxi/span-{N}/data.csv` byte for byte from the CSV that ships
inside the tfx wheel (tfx/examples/chicago_taxi_pipeline/data/simple/data.csv).
Span 1 is 2013-Q1, span 16 is 2016-Q4; rows keep their original order and
their original text (no re-formatting of numbers), so every value in a span
file is exactly the value in the source file.

    python data/make_spans.py            # rewrite data/taxi/
    python data/make_spans.py --check    # exit 1 if data/taxi/ differs
"""

import csv
import io
import os
import sys
from typing import Dict, List

if __package__ in (None, ''):  # run as a script: data/make_spans.py
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from data import spans as span_rules  # pylint: disable=wrong-import-position
from project import cli  # pylint: disable=wrong-import-position
from project import paths  # pylint: disable=wrong-import-position

DEFAULT_OUT = paths.data_root('taxi')
TIMESTAMP_COLUMN = 'trip_start_timestamp'


def source_csv() -> str:
  """Path of the sample CSV inside the installed tfx package (not imported)."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.find_spec('tfx')
  if spec is None or not spec.submodule_search_locations:
    sys.exit('tfx is not installed in this Python; run it with .venv/bin/python')
  return os.path.join(list(spec.submodule_search_locations)[0], 'examples',
                      'chicago_taxi_pipeline', 'data', 'simple', 'data.csv')


def split_rows(path: str) -> Dict[int, List[str]]:
  """Maps span -> list of raw CSV lines (header excluded), source order."""
  with open(path, newline='') as f:
    lines = f.read().splitlines()
  header, body = lines[0], lines[1:]
  ts_index = header.split(',').index(TIMESTAMP_COLUMN)
  spans: Dict[int, List[str]] = {}
  for line in body:
    row = next(csv.reader(io.StringIO(line)))
    spans.setdefault(span_rules.span_of(int(row[ts_index])), []).append(line)
  return {0: [header], **spans}


def render(path: str) -> Dict[str, str]:
  """Relative file name -> file content for every span."""
  spans = split_rows(path)
  header = spans.pop(0)[0]
  return {
      os.path.join(span_rules.dir_name(span), span_rules.CSV_NAME):
          '\n'.join([header] + lines) + '\n'
      for span, lines in sorted(spans.items())
  }


def main() -> int:
  parser = cli.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--source', default=None,
                      help='source CSV (default: the one inside the tfx wheel)')
  parser.add_argument('--out', default=DEFAULT_OUT, help='output directory')
  parser.add_argument('--check', action='store_true',
                      help='compare instead of writing; exit 1 on difference')
  args = parser.parse_args()
  files = render(args.source or source_csv())
  return span_rules.write_or_check(files, args.out, args.check)


if __name__ == '__main__':
  sys.exit(main())
