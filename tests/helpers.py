"""Test helpers: real bundled rows turned into the tf.Examples TFX would make."""

import csv
import os
from typing import Dict, List, Optional

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import tensorflow as tf  # pylint: disable=g-import-not-at-top
from tensorflow_metadata.proto.v0 import schema_pb2
from google.protobuf import text_format

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_ROOT = os.path.join(REPO, 'data', 'taxi')
SCHEMA_PATH = os.path.join(REPO, 'schema', 'schema.pbtxt')


def load_schema() -> schema_pb2.Schema:
  with open(SCHEMA_PATH) as f:
    return text_format.Parse(f.read(), schema_pb2.Schema())


def read_span(span: int, limit: Optional[int] = None,
              data_root: str = DATA_ROOT) -> List[Dict[str, str]]:
  """Rows of a bundled span as CSV text (missing cells are '')."""
  with open(os.path.join(data_root, f'span-{span}', 'data.csv'),
            newline='') as f:
    rows = list(csv.DictReader(f))
  return rows[:limit] if limit else rows


# PipelineConfig knobs for a whole run in about a minute on `small_spans`.
# A short budget that still trains a real model: its models pass the
# default blessing rule (docs/decisions.md has the table). The eval split
# has ~300 rows, so two models' AUC differ by noise more than the default
# 0.01 allows: max_auc_drop is the only threshold loosened.
FAST_PIPELINE = dict(window_spans=3, train_steps=120, eval_steps=10,
                     batch_size=32, hidden_units=[16, 8], learning_rate=0.02,
                     max_auc_drop=0.2)
# Thresholds no model fails, for tests that need every run pushed.
BLESS_ANY = dict(min_auc=0.0, min_balanced_accuracy=0.0, min_calibration=0.0,
                 max_calibration=1e9, min_slice_calibration=0.0,
                 max_slice_calibration=1e9, max_auc_drop=1.0)


def small_spans(data_root: str, sources=(9, 10, 11), rows: int = 300) -> None:
  """Spans 1..N under data_root: `rows` real rows of consecutive quarters."""
  for span, source in enumerate(sources, start=1):
    write_csv(os.path.join(data_root, f'span-{span}', 'data.csv'),
              read_span(source, rows))


def as_flags(knobs: Dict) -> List[str]:
  """PipelineConfig fields as the runners' flags (--train-steps 120 ...)."""
  flags = []
  for name, value in knobs.items():
    text = ','.join(map(str, value)) if isinstance(value, list) else str(value)
    flags += ['--' + name.replace('_', '-'), text]
  return flags


def write_csv(path: str, rows: List[Dict[str, str]],
              columns: Optional[List[str]] = None) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  columns = columns or list(rows[0])
  with open(path, 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=columns, extrasaction='ignore')
    writer.writeheader()
    writer.writerows(rows)


def to_example(row: Dict[str, str], schema: schema_pb2.Schema,
               drop_label: bool = False) -> tf.train.Example:
  """A CSV row as CsvExampleGen encodes it: an empty cell -> empty list."""
  example = tf.train.Example()
  for feature in schema.feature:
    if drop_label and feature.name == 'tips':
      continue
    text = row.get(feature.name, '')
    target = example.features.feature[feature.name]
    if feature.type == schema_pb2.INT:
      target.int64_list.value.extend([int(float(text))] if text else [])
    elif feature.type == schema_pb2.FLOAT:
      target.float_list.value.extend([float(text)] if text else [])
    else:
      target.bytes_list.value.extend([text.encode()] if text else [])
  return example


def to_instance(row: Dict[str, str], schema: schema_pb2.Schema) -> Dict:
  """A CSV row as a tf.Transform instance dict (VarLen -> list of values)."""
  instance = {}
  for feature in schema.feature:
    text = row.get(feature.name, '')
    if feature.type == schema_pb2.INT:
      instance[feature.name] = [int(float(text))] if text else []
    elif feature.type == schema_pb2.FLOAT:
      instance[feature.name] = [float(text)] if text else []
    else:
      instance[feature.name] = [text.encode()] if text else []
  return instance


def write_examples(path: str, rows: List[Dict[str, str]]) -> None:
  """GZIP TFRecord of tf.Examples, as ExampleGen writes them."""
  schema = load_schema()
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with tf.io.TFRecordWriter(path, options='GZIP') as writer:
    for row in rows:
      writer.write(to_example(row, schema).SerializeToString())


class UiProcess:
  """`python -m ui ARGV --port 0` as the README starts it; `url` is where it
  listens (read from its first line). A context manager: always stopped."""

  def __init__(self, argv: List[str], env: Optional[Dict[str, str]] = None):
    import re  # pylint: disable=g-import-not-at-top
    import subprocess  # pylint: disable=g-import-not-at-top
    import sys  # pylint: disable=g-import-not-at-top
    self.process = subprocess.Popen(
        [sys.executable, '-m', 'ui', '--port', '0'] + argv, cwd=REPO,
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    self.first_line = self.process.stdout.readline()
    found = re.search(r'http://127\.0\.0\.1:\d+', self.first_line)
    if not found:
      self.stop()
      raise AssertionError('python -m ui did not start: ' + self.first_line
                           + self.process.stdout.read())
    self.url = found.group(0)

  def stop(self) -> str:
    """Stops it; returns the rest of what it printed."""
    self.process.terminate()
    rest, _ = self.process.communicate(timeout=30)
    return self.first_line + (rest or '')

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    if self.process.poll() is None:
      self.stop()
