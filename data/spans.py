"""What a span is on disk and on the calendar, defined once.

On disk: span N of a data root is the directory `<root>/span-N/` (or a
symlink to one: a replay links the spans it has "received"), and its files
are what TFX's CsvExampleGen reads for it, `SPAN_PATTERN` with `{SPAN}` set
to N. The pipeline always pins the span (a static RangeConfig), and TFX then
spells N as `str(N)`: no zero padding, so `span-03/` is *not* span 3 (TFX
would never read it), and it is not listed as a span at all. Names are ASCII
digits only; a file named `span-5` is not a span.

On the calendar: spans are quarters of `trip_start_timestamp` (UTC), span 1
= 2013-Q1 (data/README.md). A span's logical date is the day its quarter is
complete, the first day of the next quarter: the CT controller's clock when
a replay "receives" the span.

Standard library only: the data scripts, the pipeline, the replay and the
monitor's traffic replay all read it.
"""

import datetime
import glob
import os
import re
from typing import Dict, List, Optional, Tuple

# `{SPAN}` is TFX's span spec: ExampleGen ingests one span per run.
SPAN_SPEC = '{SPAN}'
SPAN_PATTERN = 'span-' + SPAN_SPEC + '/*.csv'
# The one file per span that data/make_spans.py and data/generate_spans.py
# write (a span may hold more CSV files; CsvExampleGen reads them all).
CSV_NAME = 'data.csv'
# str(N) as TFX spells a pinned span: ASCII digits, no leading zero.
_DIR_NAME = re.compile(r'span-(0|[1-9][0-9]*)')
FIRST_QUARTER = (2013, 1)  # span 1 (data/README.md)


def dir_name(span: int) -> str:
  """3 -> 'span-3'."""
  return f'span-{int(span)}'


def span_number(name: str) -> Optional[int]:
  """'span-3' -> 3; None for a name that is not span N's ('span-03', 'x')."""
  match = _DIR_NAME.fullmatch(name)
  return int(match.group(1)) if match else None


def span_dir(data_root: str, span: int) -> str:
  return os.path.join(data_root, dir_name(span))


def csv_path(data_root: str, span: int) -> str:
  """`<root>/span-N/data.csv`: the file the data scripts write for span N."""
  return os.path.join(span_dir(data_root, span), CSV_NAME)


def spans_on_disk(data_root: str) -> List[int]:
  """Span numbers with a `span-N/` directory (or a link to one), ascending."""
  try:
    names = os.listdir(data_root)
  except (FileNotFoundError, NotADirectoryError):
    return []
  return sorted(span for span in map(span_number, names)
                if span is not None and
                os.path.isdir(span_dir(data_root, span)))


def span_glob(data_root: str, span: int, pattern: str = SPAN_PATTERN) -> str:
  """The glob CsvExampleGen matches for a pinned `span` (`{SPAN}` -> str(N))."""
  return os.path.join(data_root, pattern.replace(SPAN_SPEC, str(int(span))))


def span_files(data_root: str, span: int,
               pattern: str = SPAN_PATTERN) -> List[str]:
  """The files CsvExampleGen reads for `span`, sorted (local roots)."""
  return sorted(path for path in glob.glob(span_glob(data_root, span, pattern))
                if os.path.isfile(path))


def quarter_of(span: int) -> Tuple[int, int]:
  """Span 1 -> (2013, 1): its year and quarter (1..4)."""
  index = FIRST_QUARTER[0] * 4 + FIRST_QUARTER[1] - 2 + span
  return index // 4, index % 4 + 1


def quarter(span: int) -> str:
  """Span 1 -> '2013-Q1'."""
  year, q = quarter_of(span)
  return f'{year}-Q{q}'


def span_of(timestamp: int) -> int:
  """The span of a trip starting at this unix time (UTC, as the data is)."""
  t = datetime.datetime.fromtimestamp(timestamp, tz=datetime.timezone.utc)
  return ((t.year - FIRST_QUARTER[0]) * 4 + (t.month - 1) // 3 + 1
          - (FIRST_QUARTER[1] - 1))


def logical_date(span: int) -> datetime.datetime:
  """When span N's quarter is complete: the first day of the next quarter."""
  year, q = quarter_of(span + 1)
  return datetime.datetime(year, (q - 1) * 3 + 1, 1,
                           tzinfo=datetime.timezone.utc)


def write_or_check(files: Dict[str, str], out: str, check: bool) -> int:
  """Writes `files` (relative name -> content) under `out`, or with `check`
  compares them with what is there; prints one line, returns the exit
  status (1: a file differs or is missing). The data scripts' one ending."""
  differ = []
  for name, content in files.items():
    target = os.path.join(out, name)
    if check:
      try:
        with open(target) as f:
          if f.read() != content:
            differ.append(name)
      except FileNotFoundError:
        differ.append(name)
      continue
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(target, 'w') as f:
      f.write(content)
  rows = sum(c.count('\n') - 1 for c in files.values())
  if check:
    print(f'{len(files)} spans, {rows} rows: '
          + ('identical' if not differ else f'differ: {differ}'))
    return 1 if differ else 0
  print(f'wrote {len(files)} spans, {rows} rows to {out}')
  return 0
