"""Reads the server's PredictionLog files back into feature rows.

The server (serving/request_logging.py) writes uncompressed TFRecord files
`<filename_prefix>-<time>-<pid>-<seq>.tfrecord` of `tensorflow.serving.
PredictionLog`. Each logged predict call becomes one `ServedRow` per
instance: the raw feature values (as the problem names them,
models/<problem>/problem.py), the model's answer (its `outputs` row: what
it means is the problem's task's, models/tasks.py), and the model version
that answered. Both
signatures are understood: `serving_raw` (one tensor per raw feature) and
`serving_default` (serialized tf.Examples).

Missing values: a tf.Example's empty feature, a `serving_raw` '' string or
NaN float are missing (None). `serving_raw` has no "missing" for integers
(clients send 0, serving/client.py); 0 is read as missing where the
problem's curated schema's int_domain starts above 0 (for taxi: community
areas, day, month), so served statistics count missing values as the
training statistics do.
"""

import dataclasses
import glob
import math
import os
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np

from models import features
from models import problem as problems
from project import paths

SUFFIX = '.tfrecord'  # serving.request_logging.SUFFIX (serving/ is not imported)
OUTPUT_KEY = 'outputs'  # the model's answer


@dataclasses.dataclass
class ServedRow:
  """One instance the server answered."""
  features: Dict[str, object]  # raw feature -> value, None when missing
  prediction: List[float]  # the answer: its `outputs` row
  model_version: str
  signature: str
  timestamp: int


def log_files(prefix: str) -> List[str]:
  """The log files of a filename_prefix (or a directory of them), by name.

  Names start with the UTC time a file was opened, so the order is the
  order they were written in (per server process).
  """
  if os.path.isdir(prefix):
    return sorted(glob.glob(os.path.join(prefix, '*' + SUFFIX)))
  return sorted(glob.glob(glob.escape(prefix) + '-*' + SUFFIX))


def read_records(path: str) -> Iterator[bytes]:
  """Records of one TFRecord file; a half-written last record ends it.

  The file the server is writing may end in a partial record (it is flushed
  between records, not atomically): everything before it is read.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    for record in tf.compat.v1.io.tf_record_iterator(path):
      yield record
  except tf.errors.DataLossError:
    return


def _int_missing_below(problem: problems.Problem) -> Dict[str, int]:
  """Int features whose schema domain starts above 0: 0 means missing."""
  from google.protobuf import text_format  # pylint: disable=g-import-not-at-top
  from tensorflow_metadata.proto.v0 import schema_pb2  # pylint: disable=g-import-not-at-top
  with open(paths.schema_path(problem.name)) as f:
    schema = text_format.Parse(f.read(), schema_pb2.Schema())
  return {f.name: f.int_domain.min for f in schema.feature
          if f.HasField('int_domain') and f.int_domain.min > 0}


def _array(proto) -> np.ndarray:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.make_ndarray(proto)


def _raw_rows(problem: problems.Problem, inputs,
              int_min: Dict[str, int]) -> List[Dict[str, object]]:
  """serving_raw inputs (one tensor per feature) -> feature dicts."""
  columns = {key: _array(inputs[key]).reshape(-1)
             for key in problem.raw_types if key in inputs}
  size = len(next(iter(columns.values()))) if columns else 0
  rows = []
  for i in range(size):
    row = {}
    for key, kind in problem.raw_types.items():
      value = columns[key][i] if key in columns else None
      if value is None:
        row[key] = None
      elif kind == 'string':
        text = value.decode('utf-8', 'replace') if isinstance(
            value, bytes) else str(value)
        row[key] = text or None
      elif kind == 'float':
        row[key] = None if math.isnan(value) else float(value)
      else:
        value = int(value)
        row[key] = None if (value == 0 and key in int_min) else value
    rows.append(row)
  return rows


def _example_rows(problem: problems.Problem,
                  inputs) -> List[Dict[str, object]]:
  """serving_default inputs (serialized tf.Examples) -> feature dicts."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  (tensor,) = inputs.values()
  rows = []
  for serialized in _array(tensor).reshape(-1):
    example = tf.train.Example.FromString(serialized)
    row = {}
    for key, kind in problem.raw_types.items():
      feature = example.features.feature.get(key)
      values = []
      if feature is not None:
        values = getattr(feature, features.EXAMPLE_LISTS[kind]).value
      if not values:
        row[key] = None
      elif kind == 'string':
        row[key] = values[0].decode('utf-8', 'replace') or None
      else:
        row[key] = float(values[0]) if kind == 'float' else int(values[0])
    rows.append(row)
  return rows


def read(problem: problems.Problem, prefix: str,
         model_version: Optional[str] = None) -> List[ServedRow]:
  """Every logged instance under `prefix`, oldest first (per file), read
  as the problem's instances.

  `model_version`: only the instances that version answered.
  """
  from tensorflow_serving.apis import prediction_log_pb2  # pylint: disable=g-import-not-at-top
  int_min = _int_missing_below(problem)
  rows: List[ServedRow] = []
  for path in log_files(prefix):
    for record in read_records(path):
      entry = prediction_log_pb2.PredictionLog.FromString(record)
      if entry.WhichOneof('log_type') != 'predict_log':
        continue
      spec = entry.log_metadata.model_spec
      version = str(spec.version.value)
      if model_version is not None and version != str(model_version):
        continue
      request, response = entry.predict_log.request, entry.predict_log.response
      signature = spec.signature_name or request.model_spec.signature_name
      if signature == features.RAW_SIGNATURE:
        instances = _raw_rows(problem, request.inputs, int_min)
      else:
        instances = _example_rows(problem, request.inputs)
      if OUTPUT_KEY not in response.outputs or not instances:
        continue
      predictions = _array(response.outputs[OUTPUT_KEY])
      if predictions.size % len(instances):
        continue  # not this model's shape: nothing to attribute
      predictions = predictions.reshape(len(instances), -1)
      for row, p in zip(instances, predictions):
        rows.append(ServedRow(row, [float(v) for v in p], version, signature,
                              entry.log_metadata.timestamp_secs))
  return rows


def versions(rows: Sequence[ServedRow]) -> Dict[str, int]:
  """Model version -> logged instances it answered."""
  counts: Dict[str, int] = {}
  for row in rows:
    counts[row.model_version] = counts.get(row.model_version, 0) + 1
  return counts
