"""Is a problem ready to run? Says what is still missing, and why.

    python -m pipeline.problem_check --problem NAME
    python -m pipeline.problem_check --problem NAME --write-schema

A problem is a folder, models/<name>/ (problem.py, preprocessing.py), its
spans, data/<name>/span-N/*.csv, and its curated schema,
schema/<name>/schema.pbtxt (docs/adapt.md). The check loads each and
compares them: every feature and label column in the CSV header and in the
schema with the declared type, no fixed shape (a served instance may leave
a value out), a label for every row it reads and every class present, and
every span valid against the schema (TensorFlow Data Validation, as the
pipeline's ExampleValidator judges it). Exit status 0 when nothing is
missing, 1 otherwise, one line per finding.

--write-schema infers a first schema from the spans with TFDV (no schema
there yet): the starting point of the schema step, to curate (domains,
presence floors) and commit. It is written the way the bundled schemas are:
no fixed shapes, the label's columns absent from the SERVING environment.
"""

import argparse
import csv
import dataclasses
import importlib
import os
import sys
from typing import List, Optional

from data import spans as span_rules
from models import problem as problems
from project import cli
from project import paths

# Schema type of each raw dtype (tensorflow_metadata FeatureType names).
SCHEMA_TYPES = {'float': 'FLOAT', 'int': 'INT', 'string': 'BYTES'}
# Rows of each span the label and class checks read (all, when fewer).
ROWS_READ = 100_000


@dataclasses.dataclass
class Finding:
  """One thing missing or wrong, and where to fix it."""
  where: str
  what: str

  def __str__(self) -> str:
    return f'{self.where}: {self.what}'


def _load_problem(name: str, found: List[Finding]
                  ) -> Optional[problems.Problem]:
  try:
    return problems.load(name)
  except (ValueError, ImportError, AttributeError) as e:
    found.append(Finding(f'models/{name}/problem.py', str(e)))
    return None


def check_preprocessing(problem: problems.Problem) -> List[Finding]:
  module, _, attribute = problem.preprocessing_fn.rpartition('.')
  where = module.replace('.', '/') + '.py'
  try:
    fn = getattr(importlib.import_module(module), attribute, None)
  except ImportError as e:
    return [Finding(where, f'does not import: {e}')]
  if not callable(fn):
    return [Finding(where, f'defines no {attribute} (TFX Transform calls '
                    'it; transform.preprocessing_fn_for(problem.PROBLEM) '
                    'makes one from the declared encodings)')]
  return []


def _columns(problem: problems.Problem) -> List[str]:
  return list(problem.raw_types) + list(problem.label_only_columns)


def check_data(problem: problems.Problem, data_root: str) -> List[Finding]:
  """Spans on disk, every column in each header, a label per row, every
  class present."""
  spans = span_rules.spans_on_disk(data_root)
  if not spans:
    return [Finding(data_root, 'no span-N/ directories (span-1/data.csv, '
                    'span-2/data.csv, ...)')]
  found, seen = [], set()
  for span in spans:
    files = span_rules.span_files(data_root, span)
    if not files:
      found.append(Finding(span_rules.span_dir(data_root, span),
                           'no *.csv file'))
    for path in files:
      with open(path, newline='') as f:
        reader = csv.DictReader(f)
        missing = [c for c in _columns(problem)
                   if c not in (reader.fieldnames or [])]
        if missing:
          found.append(Finding(path, f'header lacks {", ".join(missing)}'))
          continue
        unlabelled = 0
        for i, row in enumerate(reader):
          if i >= ROWS_READ:
            break
          try:
            label = problem.label_of(row)
          except ValueError as e:
            found.append(Finding(path, f'row {i + 2}: the label rule fails '
                                 f'({e})'))
            break
          if label is None:
            unlabelled += 1
          elif not 0 <= label < len(problem.label.classes):
            found.append(Finding(path, f'row {i + 2}: label {label} is no '
                                 f'class index (0..'
                                 f'{len(problem.label.classes) - 1})'))
            break
          else:
            seen.add(label)
        if unlabelled:
          found.append(Finding(path, f'{unlabelled} rows miss a column of '
                               'the label: they never train'))
  absent = [problem.label.classes[i]
            for i in range(len(problem.label.classes)) if i not in seen]
  if absent and not found:
    found.append(Finding(data_root, f'no row of class {", ".join(absent)}: '
                         'the model cannot learn it'))
  return found


def _load_schema(path: str):
  from google.protobuf import text_format  # pylint: disable=g-import-not-at-top
  from tensorflow_metadata.proto.v0 import schema_pb2  # pylint: disable=g-import-not-at-top
  with open(path) as f:
    return text_format.Parse(f.read(), schema_pb2.Schema())


def check_schema(problem: problems.Problem, schema_path: str
                 ) -> List[Finding]:
  """Every column declared with its type, no fixed shape."""
  from tensorflow_metadata.proto.v0 import schema_pb2  # pylint: disable=g-import-not-at-top
  if not os.path.exists(schema_path):
    return [Finding(schema_path, 'missing: infer one with --write-schema, '
                    'curate it, commit it (docs/adapt.md)')]
  try:
    schema = _load_schema(schema_path)
  except Exception as e:  # pylint: disable=broad-except
    return [Finding(schema_path, f'does not parse: {e}')]
  declared = {f.name: f for f in schema.feature}
  types = dict(problem.raw_types)
  for column in problem.label_only_columns:
    types.setdefault(column, 'float')
  found = []
  for column in _columns(problem):
    feature = declared.get(column)
    if feature is None:
      found.append(Finding(schema_path, f'declares no {column!r}'))
      continue
    expected = SCHEMA_TYPES[types[column]]
    actual = schema_pb2.FeatureType.Name(feature.type)
    if column in problem.raw_types and actual != expected:
      found.append(Finding(schema_path, f'{column!r} is {actual}, the '
                           f'problem says {types[column]} ({expected})'))
    if feature.HasField('shape'):
      found.append(Finding(schema_path, f'{column!r} has a fixed shape: a '
                           'served instance without it would fail to parse '
                           '(write `value_count { min: 1 max: 1 }` instead)'))
  return found


def check_spans_valid(schema_path: str, data_root: str) -> List[Finding]:
  """Each span against the schema, as the pipeline's ExampleValidator."""
  import tensorflow_data_validation as tfdv  # pylint: disable=g-import-not-at-top
  schema = tfdv.load_schema_text(schema_path)
  found = []
  for span in span_rules.spans_on_disk(data_root):
    for path in span_rules.span_files(data_root, span):
      anomalies = tfdv.validate_statistics(
          tfdv.generate_statistics_from_csv(path), schema,
          environment='TRAINING' if schema.default_environment else None)
      for name, info in sorted(anomalies.anomaly_info.items()):
        found.append(Finding(path, f'{name}: {info.short_description}'))
  return found


def infer_schema(problem: problems.Problem, data_root: str, out: str) -> None:
  """A first schema from the spans (TFDV), the bundled schemas' way."""
  import tensorflow_data_validation as tfdv  # pylint: disable=g-import-not-at-top
  files = [path for span in span_rules.spans_on_disk(data_root)
           for path in span_rules.span_files(data_root, span)]
  if not files:
    raise SystemExit(f'no span CSVs under {data_root} to infer from')
  stats = tfdv.generate_statistics_from_csv(
      os.path.join(os.path.dirname(os.path.dirname(files[0])), 'span-*',
                   '*.csv'))
  schema = tfdv.infer_schema(stats, infer_feature_shape=False)
  schema.default_environment.extend(['TRAINING', 'SERVING'])
  for feature in schema.feature:
    if feature.name in problem.label_only_columns:
      feature.not_in_environment.append('SERVING')
  os.makedirs(os.path.dirname(out), exist_ok=True)
  tfdv.write_schema_text(schema, out)


def check(name: str, data_root: Optional[str] = None,
          schema_path: Optional[str] = None) -> List[Finding]:
  """Every finding for problem `name` (empty: ready to run)."""
  found: List[Finding] = []
  problem = _load_problem(name, found)
  if problem is None:
    return found
  data_root = data_root or paths.data_root(name)
  schema_path = schema_path or paths.schema_path(name)
  found += check_preprocessing(problem)
  found += check_data(problem, data_root)
  schema_found = check_schema(problem, schema_path)
  found += schema_found
  if not schema_found and span_rules.spans_on_disk(data_root):
    found += check_spans_valid(schema_path, data_root)
  return found


def main(argv=None) -> int:
  parser = cli.ArgumentParser(
      prog='python -m pipeline.problem_check',
      description=__doc__.split('\n\n')[0],
      epilog=__doc__.split('\n\n', 1)[1],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--problem', default=paths.DEFAULT_PROBLEM,
                      help='the folder under models/ (default: %(default)s)')
  parser.add_argument('--data-root', help='default: data/<problem>')
  parser.add_argument('--schema-path',
                      help='default: schema/<problem>/schema.pbtxt')
  parser.add_argument('--write-schema', action='store_true',
                      help='infer a first schema from the spans (only where '
                      'there is none yet), then check')
  args = parser.parse_args(argv)
  from ops import console  # pylint: disable=g-import-not-at-top
  # TFDV's and Beam's log go to a file; the console gets the findings.
  console.quiet_logging(os.path.join(paths.OUTPUT_DIR, 'logs',
                                     'problem_check.log'))
  if args.write_schema:
    found: List[Finding] = []
    problem = _load_problem(args.problem, found)
    schema_path = args.schema_path or paths.schema_path(args.problem)
    if problem is not None and not os.path.exists(schema_path):
      infer_schema(problem, args.data_root or paths.data_root(args.problem),
                   schema_path)
      print(f'wrote {os.path.relpath(schema_path)}: curate it (domains, '
            'presence), then commit it')
  found = check(args.problem, args.data_root, args.schema_path)
  for finding in found:
    print(f'MISSING  {finding}')
  if found:
    print(f'{args.problem}: {len(found)} thing(s) to fix before a run')
    return 1
  print(f'{args.problem}: ready (problem, preprocessing, data, schema; every '
        'span valid against the schema)')
  return 0


if __name__ == '__main__':
  sys.exit(main())
