"""Scoring's last step: every scored row, with the served model's answer, as CSV.

TFX has no stock component for this: BulkInferrer (stock) writes
PredictionLogs, TFRecords of the request and the response per example, in
no order and without the split. This component turns them into what people
read, an artifact with lineage (batch_scoring.SCORES_TYPE): one line per row of the
scored span, in split and row order, with the columns that identify it (the
problem's id_columns), its label if the data has one (the problem's rule),
the answer (the task's columns, models/tasks.py) and the served version.
It fails if any row has no answer, or an answer no row, or if the served
model changed while the run ran.
"""

import collections
import csv
import io
import os
from typing import Any, Dict, Iterator, List, Tuple

import numpy as np
import tensorflow as tf
from tfx import types
from tfx.dsl.component.experimental.annotations import InputArtifact
from tfx.dsl.component.experimental.annotations import OutputArtifact
from tfx.dsl.component.experimental.annotations import Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.dsl.io import fileio
from tfx.types import artifact_utils
from tfx.types import standard_artifacts

from lineage import batch_scoring
from models import problem as problems
from tensorflow_serving.apis import prediction_log_pb2

# BulkInferrer's request and response keys (models/model.py's
# serving_default: serialized tf.Examples in, the answer out).
INPUT_ALIAS, OUTPUT_ALIAS = 'examples', 'outputs'
PREDICTION_LOGS_PATTERN = 'prediction_logs-*'  # what BulkInferrer writes


class PredictionsCsv(types.Artifact):
  """The scored rows as CSV (batch_scoring.SCORES_FILE in the artifact's URI)."""
  TYPE_NAME = batch_scoring.SCORES_TYPE


class ScoringError(RuntimeError):
  """The predictions do not cover the rows, or the served model changed."""


def prediction_logs(uri: str) -> Iterator[Tuple[bytes, List[float]]]:
  """(serialized tf.Example, its answer) of each of BulkInferrer's logs."""
  files = sorted(fileio.glob(os.path.join(uri, PREDICTION_LOGS_PATTERN)))
  if not files:
    return
  for record in tf.data.TFRecordDataset(
      files, compression_type='GZIP').as_numpy_iterator():
    log = prediction_log_pb2.PredictionLog.FromString(record).predict_log
    # One row per request: its answer's values, however the TensorProto
    # holds them (float_val for one value, tensor_content for several).
    answer = tf.make_ndarray(log.response.outputs[OUTPUT_ALIAS])
    yield (log.request.inputs[INPUT_ALIAS].string_val[0],
           [float(v) for v in answer.reshape(-1)])


def split_records(examples: types.Artifact) -> Iterator[Tuple[str, int, bytes]]:
  """(split, row, serialized tf.Example) of an Examples artifact: `row` is
  the record's place in its split (files in name order)."""
  for split in sorted(artifact_utils.decode_split_names(
      examples.split_names)):
    uri = artifact_utils.get_split_uri([examples], split)
    files = sorted(fileio.glob(os.path.join(uri, '*')))
    for row, record in enumerate(tf.data.TFRecordDataset(
        files, compression_type='GZIP').as_numpy_iterator()):
      yield split, row, record


def _key(serialized: bytes) -> bytes:
  """An example's identity: BulkInferrer parses and re-serializes it."""
  return tf.train.Example.FromString(serialized).SerializeToString(
      deterministic=True)


def _text(feature: tf.train.Feature) -> str:
  """A raw value as people read it ('' when missing): float32 in its
  shortest exact form."""
  kind = feature.WhichOneof('kind')
  values = getattr(feature, kind).value if kind else []
  if not values:
    return ''
  value = values[0]
  if kind == 'float_list':
    return str(np.float32(value))
  return value.decode('utf-8', 'replace') if kind == 'bytes_list' else str(
      value)


def score_rows(examples: types.Artifact,
               logs: List[Tuple[bytes, List[float]]]) -> List[Dict[str, Any]]:
  """Every row of `examples` with its prediction, in split and row order.

  BulkInferrer writes its logs in no order and without the split: each is
  matched to its row by the example it carries. Raises ScoringError when a
  row has no prediction or a prediction no row.
  """
  by_example = collections.defaultdict(list)
  for serialized, prediction in logs:
    by_example[_key(serialized)].append(prediction)
  rows = []
  for split, row, serialized in split_records(examples):
    found = by_example.get(_key(serialized))
    if not found:
      raise ScoringError(f'{split} row {row} of Examples #{examples.id} has no '
                         'prediction')
    example = tf.train.Example.FromString(serialized).features.feature
    raw = {k: _text(example[k]) for k in example}
    rows.append({'split': split, 'row': row, 'raw': raw,
                 'prediction': found.pop()})
  left = sum(len(v) for v in by_example.values())
  if left:
    raise ScoringError(f'{left} prediction(s) match no row of Examples '
                       f'#{examples.id}')
  return rows


def csv_text(problem: problems.Problem, rows: List[Dict[str, Any]],
             span: int, version: int) -> str:
  """The CSV: span, split, row, the problem's identifying raw features
  present, the label (its class index) if any row has one, the answer in
  the task's columns and the served version."""
  ids = [k for k in problem.id_columns if any(r['raw'].get(k) for r in rows)]
  labels = [problem.label_of(r['raw']) for r in rows]
  labelled = any(label is not None for label in labels)
  task, label_spec = problem.task, problem.label
  columns = (['span', 'split', 'row'] + ids +
             ([label_spec.name] if labelled else []) +
             task.csv_columns(label_spec) + ['version'])
  out = io.StringIO()
  writer = csv.writer(out, lineterminator='\n')
  writer.writerow(columns)
  for r, label in zip(rows, labels):
    writer.writerow(
        [span, r['split'], r['row']] + [r['raw'].get(k, '') for k in ids] +
        ([('' if label is None else label)] if labelled else []) +
        task.csv_values(r['prediction'], label_spec) + [version])
  return out.getvalue()


@component
def PredictionsToCsv(  # pylint: disable=invalid-name
    examples: InputArtifact[standard_artifacts.Examples],
    inference_result: InputArtifact[standard_artifacts.InferenceResult],
    model: InputArtifact[standard_artifacts.Model],
    scores: OutputArtifact[PredictionsCsv],
    served_version: Parameter[int],
    served_model_id: Parameter[int],
    problem: Parameter[str]) -> None:
  """Writes batch_scoring.SCORES_FILE: every row of `examples` with its prediction.

  `model` is the one BulkInferrer used (an input for lineage); it must be
  the Model the run was built for (`served_model_id`): the served version
  did not change in between. Its properties: span, rows, mean_prediction
  (the mean of the task's score: for a binary task, P(class 1)), mean_label
  (for a binary task with labels: the share of class 1), served_version,
  model_id.
  """
  spec = problems.load(problem)
  task, n_classes = spec.task, len(spec.label.classes)
  if model.id != served_model_id:
    raise ScoringError(f'The served model changed during this run: Model '
                       f'#{model.id} was resolved, #{served_model_id} '
                       f'(version {served_version}) was served when it began')
  logs = list(prediction_logs(inference_result.uri))
  if not logs:
    raise ScoringError(f'BulkInferrer wrote no PredictionLogs under '
                       f'{inference_result.uri} (an unblessed model?)')
  span = examples.get_int_custom_property('span')
  rows = score_rows(examples, logs)
  for r in rows:
    why = task.fault(r['prediction'] if n_classes > 2 else
                     r['prediction'][0], n_classes)
    if why:
      raise ScoringError(f'{r["split"]} row {r["row"]}: the answer '
                         f'{r["prediction"]} is no {task.name} answer: {why}')
  with fileio.open(os.path.join(scores.uri, batch_scoring.SCORES_FILE), 'w') as f:
    f.write(csv_text(spec, rows, span, served_version))
  labels = [spec.label_of(r['raw']) for r in rows]
  labels = [label for label in labels if label is not None]
  scores.set_int_custom_property('span', span)
  scores.set_int_custom_property('rows', len(rows))
  scores.set_float_custom_property('mean_prediction', float(np.mean(
      [task.score(r['prediction'], n_classes) for r in rows])))
  if labels and n_classes == 2:
    scores.set_float_custom_property('mean_label', float(np.mean(labels)))
  scores.set_int_custom_property('served_version', served_version)
  scores.set_int_custom_property('model_id', model.id)


