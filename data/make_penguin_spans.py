"""Cut TFX's bundled penguin data into spans: data/penguin/span-N/data.csv.

The source is the processed Palmer penguins split that ships inside the tfx
wheel (tfx/components/testdata/penguin/data/Split-{train,eval}, gzipped
TFRecords of tf.Example: 234 + 100 rows, four measurements scaled to [0, 1]
and `species` 0/1/2 = Adelie/Chinstrap/Gentoo), the data of TFX's penguin
example. Penguins have no time column, so a span is not a period: row i of
train-then-eval goes to span (i mod SPANS) + 1, which gives every span a
random third of the birds (the source split is already shuffled) and the
same shares of species within a few rows. Values are written as Python
prints the float32 the record holds, so a span file reads back to exactly
the record's values.

    python data/make_penguin_spans.py            # rewrite data/penguin/
    python data/make_penguin_spans.py --check    # exit 1 if data/penguin/ differs
"""

import os
import sys
from typing import Dict, List

if __package__ in (None, ''):  # run as a script: data/make_penguin_spans.py
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from data import spans as span_rules  # pylint: disable=wrong-import-position
from project import cli  # pylint: disable=wrong-import-position
from project import display  # pylint: disable=wrong-import-position
from project import paths  # pylint: disable=wrong-import-position

DEFAULT_OUT = paths.data_root('penguin')
SPANS = 3
# The CSV's columns, the order of TFX's penguin example CSV.
COLUMNS = ('species', 'culmen_length_mm', 'culmen_depth_mm',
           'flipper_length_mm', 'body_mass_g')
SPLITS = ('Split-train', 'Split-eval')


def source_dir() -> str:
  """The penguin testdata directory inside the installed tfx package."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.find_spec('tfx')
  if spec is None or not spec.submodule_search_locations:
    sys.exit('tfx is not installed in this Python; run it with .venv/bin/python')
  return os.path.join(list(spec.submodule_search_locations)[0], 'components',
                      'testdata', 'penguin', 'data')


def read_rows(source: str) -> List[Dict[str, str]]:
  """Every record of train then eval, as CSV text per column."""
  display.quiet_imports()
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  rows = []
  for split in SPLITS:
    pattern = os.path.join(source, split, '*.gz')
    for record in tf.data.TFRecordDataset(sorted(tf.io.gfile.glob(pattern)),
                                          compression_type='GZIP'):
      feature = tf.train.Example.FromString(record.numpy()).features.feature
      row = {}
      for name in COLUMNS:
        values = (list(feature[name].int64_list.value)
                  or list(feature[name].float_list.value))
        if len(values) != 1:
          raise ValueError(f'{split}: {name} has {len(values)} values')
        row[name] = repr(values[0])
      rows.append(row)
  return rows


def render(source: str, spans: int = SPANS) -> Dict[str, str]:
  """Relative file name -> file content for every span."""
  by_span: Dict[int, List[str]] = {}
  for i, row in enumerate(read_rows(source)):
    by_span.setdefault(i % spans + 1, []).append(
        ','.join(row[c] for c in COLUMNS))
  header = ','.join(COLUMNS)
  return {os.path.join(span_rules.dir_name(span), span_rules.CSV_NAME):
          '\n'.join([header] + lines) + '\n'
          for span, lines in sorted(by_span.items())}


def main() -> int:
  parser = cli.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--source', default=None,
                      help='directory holding Split-train/ and Split-eval/ '
                      '(default: the one inside the tfx wheel)')
  parser.add_argument('--out', default=DEFAULT_OUT,
                      help='output directory (default: %(default)s)')
  parser.add_argument('--check', action='store_true',
                      help='compare instead of writing; exit 1 on difference')
  args = parser.parse_args()
  files = render(args.source or source_dir())
  return span_rules.write_or_check(files, args.out, args.check)


if __name__ == '__main__':
  sys.exit(main())
