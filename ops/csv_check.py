"""A cheap check of a span's CSV files before CsvExampleGen reads them.

TFX 1.16's CsvExampleGen stops on a bad line with a message that names
neither the span, the file nor the line ("line contains NUL", "Columns do
not match specified csv headers: [...] -> [...]"). This reads each file the
way CsvExampleGen does (tfx/components/example_gen/csv_example_gen/
executor.py, tfx_bsl's csv_decoder) and says where, and what is wrong:
  header   the first line, split at commas (io_utils.load_csv_column_names);
           every file of a span must have the same one;
  records  the later lines, each decoded as UTF-8; lines are joined while
           a record holds an odd number of '"' (a quoted field may span
           lines), and each record is parsed with Python's csv module, as
           tfx_bsl parses it. A blank record is skipped; any other must have
           as many fields as the header. A NUL byte is an error on any line
           (Python 3.10's csv refuses it).
  line ends  LF or CRLF; a file whose lines end in CR alone (old Mac) is
           one line to CsvExampleGen: said once, for the file.
  rows     a span whose files hold a header and no record is refused: there
           is nothing to train on or to score (BulkInferrer would write no
           prediction, and the scoring run blame the model).
Types and values are not checked here: ExampleValidator does that against
the curated schema, and names the span and the feature.
Costs one pass over the files with Python's csv module (README.md has the
figure for the bundled spans).
"""

import codecs
import csv
import dataclasses
import os
from typing import List, Optional, Sequence, Tuple

from data import spans
from ops import console

# Bad lines listed by number after a file's first one; the rest are counted.
LISTED = 5


@dataclasses.dataclass
class Problem:
  path: str
  line: Optional[int]  # 1-based physical line; None: the file as a whole
  what: str


def _undecodable(raw: bytes, error: UnicodeDecodeError) -> str:
  bad = raw[error.start:error.end]
  return (f'not UTF-8: byte {" ".join(f"0x{b:02x}" for b in bad[:4])} at '
          f'column {len(raw[:error.start].decode("utf-8")) + 1}')


def _fields(record: str) -> Tuple[Optional[List[str]], Optional[str]]:
  """(fields, None) or (None, why csv refused the record)."""
  try:
    return next(csv.reader([record]), []), None
  except csv.Error as e:
    return None, f'not CSV: {e}'


def check_file(path: str, header: Optional[List[str]] = None
              ) -> Tuple[Optional[List[str]], List[Problem]]:
  """(the file's header, its problems). `header`: the span's, if known."""
  names, problems, _ = _check_file(path, header)
  return names, problems


def _check_file(path: str, header: Optional[List[str]]
               ) -> Tuple[Optional[List[str]], List[Problem], int]:
  """check_file, and how many records (rows) the file holds."""
  problems: List[Problem] = []
  rows = 0
  problem = lambda line, what: problems.append(Problem(path, line, what))
  with open(path, 'rb') as f:
    first = f.readline()
    if not first:
      problem(None, 'empty file: no header line')
      return None, problems, rows
    if first.startswith(codecs.BOM_UTF8):
      problem(1, 'starts with a UTF-8 byte-order mark: CsvExampleGen would '
              'read the first column as a different name')
      return None, problems, rows
    if b'\r' in first.rstrip(b'\r\n'):  # no LF ends the first CR's line
      problem(None, 'uses CR line endings (old Mac): CsvExampleGen would '
              'read the whole file as one line; convert them to LF')
      return None, problems, rows
    try:
      names = first.decode('utf-8').strip().split(',')
    except UnicodeDecodeError as e:
      problem(1, 'header ' + _undecodable(first, e))
      return None, problems, rows
    if b'\0' in first:
      problem(1, 'header has a NUL byte')
      return None, problems, rows
    seen = set()
    for column, name in enumerate(names, start=1):
      if not name:
        problem(1, f'header: column {column} has no name')
      elif name in seen:
        problem(1, f'header names {name!r} twice')
      seen.add(name)
    if header is not None and names != header:
      differ = ', '.join(sorted(set(names) ^ set(header))) or 'column order'
      problem(1, f"header differs from the span's first file's: {differ}")
    if problems:
      return names, problems, rows

    expected = len(names)
    record: List[str] = []
    quotes = 0
    start = 0  # first line of the record being read
    number = 1
    for number, raw in enumerate(f, start=2):
      nul = raw.find(b'\0')
      if nul >= 0:
        column = len(raw[:nul].decode('utf-8', 'replace')) + 1
        problem(number, f'a NUL byte at column {column}')
        record, quotes = [], 0  # the record is lost: count on from here
        continue
      try:
        text = raw.decode('utf-8')
      except UnicodeDecodeError as e:
        problem(number, _undecodable(raw, e))
        record, quotes = [], 0
        continue
      if not record:
        start = number
      record.append(text)
      quotes += text.count('"')
      if quotes % 2:
        continue  # a quoted field goes on on the next line
      fields, why = _fields(''.join(record))
      record, quotes = [], 0
      if why:
        problem(start, why)
      elif fields and len(fields) != expected:
        problem(start, f'{len(fields)} fields, the header has {expected}')
      elif fields:
        rows += 1
    if record:
      problem(start, 'a quote opened on this line is never closed (it runs '
              f'to the end of the file, line {number})')
  return names, problems, rows


def _describe(span: int, problems: List[Problem]) -> str:
  """One line per file: its first problem, then how many more."""
  lines = []
  for path in dict.fromkeys(p.path for p in problems):
    mine = [p for p in problems if p.path == path]
    first = mine[0]
    where = f' line {first.line}' if first.line else ''
    text = f'span {span}: {console.display_path(path)}{where}: {first.what}'
    more = [p.line for p in mine[1:] if p.line]
    if more:
      listed = ', '.join(map(str, more[:LISTED]))
      text += (f' (and {len(more)} more bad line'
               f'{"s" if len(more) > 1 else ""}: {listed}'
               f'{", ..." if len(more) > LISTED else ""})')
    lines.append(text)
  return '\n'.join(lines)


def check_span(data_root: str, span: int,
               pattern: str = spans.SPAN_PATTERN) -> Optional[str]:
  """None if CsvExampleGen can read the span, else what is wrong and where."""
  files = spans.span_files(data_root, span, pattern)
  if not files:
    return (f'span {span}: no file matches '
            f'{console.display_path(os.path.join(data_root, pattern))}'
            .replace('{SPAN}', str(span)))
  header, problems, rows = None, [], 0
  for path in files:
    names, found, count = _check_file(path, header)
    problems += found
    rows += count
    if header is None:
      header = names
  if problems:
    return _describe(span, problems)
  if not rows:
    shown = ', '.join(console.display_path(f) for f in files)
    return (f'span {span}: no rows: {shown} '
            f'{"has" if len(files) == 1 else "have"} a header and nothing '
            'else: nothing to train on or score')
  return None


def check_spans(data_root: str, spans: Sequence[int],
                pattern: str = spans.SPAN_PATTERN) -> List[str]:
  """What is wrong with each span CsvExampleGen could not read (in order)."""
  return [message for message in
          (check_span(data_root, span, pattern) for span in spans) if message]
