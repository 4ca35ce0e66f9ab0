"""The monitor's ML Metadata inputs, found through lineage/graph.py.

A small SQLite store records, with ml_metadata's own API, what a pipeline
run records for one pushed version: Examples of two spans -> Trainer ->
Model; Evaluator -> blessing + evaluation; Pusher -> PushedModel. A second
run's Trainer and Evaluator came from the cache (CACHED executions that
output the same artifacts, as TFX records them). The monitor must find the
training data (the Examples' train split) and the Evaluator's accuracy.
"""

import os

import pytest

from ml_metadata.proto import metadata_store_pb2
from monitoring import distribution
from monitoring import feature_values
from monitoring import monitor
from monitoring import skew
from lineage import readers
from lineage import metadata_store
from tests import helpers

VERSION = '1700000000'
KINDS = distribution.kinds_of(helpers.TAXI)
Event = metadata_store_pb2.Event
Execution = metadata_store_pb2.Execution


def _artifact(store, type_name, uri, **custom):
  type_id = store.put_artifact_type(
      metadata_store_pb2.ArtifactType(name=type_name))
  artifact = metadata_store_pb2.Artifact(
      type_id=type_id, uri=uri, state=metadata_store_pb2.Artifact.LIVE)
  for key, value in custom.items():
    if isinstance(value, int):
      artifact.custom_properties[key].int_value = value
    else:
      artifact.custom_properties[key].string_value = value
  [artifact_id] = store.put_artifacts([artifact])
  return artifact_id


def _execution(store, type_name, state, inputs, outputs, run):
  """An execution with its events, in its node's and its run's contexts."""
  type_id = store.put_execution_type(
      metadata_store_pb2.ExecutionType(name=type_name))
  [execution_id] = store.put_executions(
      [Execution(type_id=type_id, last_known_state=state)])
  contexts = []
  for context_type, name in (('node', f'taxi.{type_name}'),
                             ('pipeline_run', run)):
    found = store.get_context_by_type_and_name(context_type, name)
    if found is None:
      context_type_id = store.put_context_type(
          metadata_store_pb2.ContextType(name=context_type))
      [context_id] = store.put_contexts([metadata_store_pb2.Context(
          type_id=context_type_id, name=name)])
    else:
      context_id = found.id
    contexts.append(metadata_store_pb2.Association(
        execution_id=execution_id, context_id=context_id))
  store.put_attributions_and_associations([], contexts)
  events = []
  for kind, artifacts in ((Event.INPUT, inputs), (Event.OUTPUT, outputs)):
    for key, ids in artifacts.items():
      for index, artifact_id in enumerate(ids):
        event = Event(artifact_id=artifact_id, execution_id=execution_id,
                      type=kind)
        event.path.steps.add().key = key
        event.path.steps.add().index = index
        events.append(event)
  store.put_events(events)
  return execution_id


def _evaluation(path, accuracy, baseline):
  """A ModelEvaluation's metrics file: overall slice, candidate + baseline."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  metrics = readers._metrics_for_slice_class()()  # pylint: disable=protected-access
  for model, value in (('', accuracy), ('baseline', baseline)):
    kv = metrics.metric_keys_and_values.add()
    kv.key.name = 'binary_accuracy'
    kv.key.model_name = model
    kv.value.double_value.value = value
  os.makedirs(path)
  with tf.io.TFRecordWriter(os.path.join(path, 'metrics-00000-of-00001')
                           ) as writer:
    writer.write(metrics.SerializeToString())


@pytest.fixture(scope='module')
def store(tmp_path_factory):
  root = tmp_path_factory.mktemp('mlmd')
  store = metadata_store.open_store(
      metadata_store.sqlite_config(str(root / 'metadata.sqlite')))
  examples = []
  for span, source in ((1, 5), (2, 6)):
    uri = str(root / 'Examples' / str(span))
    helpers.write_examples(os.path.join(uri, 'Split-train', 'data.gz'),
                           helpers.read_span(source, 60))
    helpers.write_examples(os.path.join(uri, 'Split-eval', 'data.gz'),
                           helpers.read_span(source, 90)[60:])
    examples.append(_artifact(store, 'Examples', uri, span=span))
  model = _artifact(store, 'Model', str(root / 'Model'))
  blessing = _artifact(store, 'ModelBlessing', str(root / 'Blessing'),
                       blessed=1)
  evaluation = str(root / 'Evaluation')
  _evaluation(evaluation, 0.8125, 0.5)
  evaluation_id = _artifact(store, 'ModelEvaluation', evaluation)
  _execution(store, 'Trainer', Execution.COMPLETE,
             {'examples': examples}, {'model': [model]}, 'run-1')
  _execution(store, 'Evaluator', Execution.COMPLETE, {'model': [model]},
             {'blessing': [blessing], 'evaluation': [evaluation_id]}, 'run-1')
  # The next run: Trainer and Evaluator cached; their outputs are reused.
  _execution(store, 'Trainer', Execution.CACHED, {}, {'model': [model]},
             'run-2')
  _execution(store, 'Evaluator', Execution.CACHED, {},
             {'blessing': [blessing], 'evaluation': [evaluation_id]}, 'run-2')
  pushed = _artifact(store, 'PushedModel', str(root / 'serving' / VERSION),
                     pushed=1, pushed_version=VERSION)
  _execution(store, 'Pusher', Execution.COMPLETE,
             {'model': [model], 'model_blessing': [blessing]},
             {'pushed_model': [pushed]}, 'run-2')
  return store


def test_training_data_is_the_train_split_of_the_trainers_examples(store):
  found = skew.training_data(store, VERSION, KINDS)
  assert found.spans == [1, 2]
  assert 'spans 1-2' in found.source and '120 rows' in found.source
  expected = feature_values.values_from_rows(
      helpers.read_span(5, 60) + helpers.read_span(6, 60), KINDS)
  assert set(found.values) == set(KINDS)
  assert found.values == expected
  assert skew.training_data(store, '1600000000', KINDS) is None


def test_baseline_accuracy_is_the_evaluators_through_a_cached_run(store):
  # The taxi task's accuracy metric is the key TFMA writes for
  # BinaryAccuracy (the fixture's metrics file above).
  metric = helpers.TAXI.task.accuracy_metric
  assert metric == 'binary_accuracy'
  accuracy, source = monitor.evaluation_accuracy(store, VERSION, metric)
  assert accuracy == pytest.approx(0.8125)  # the candidate's, not 0.5
  assert source.startswith('Evaluator metrics ')
  assert monitor.evaluation_accuracy(store, '1600000000', metric) == (
      None, 'no Pusher of version 1600000000 in ML Metadata')
  # Another task's metric is not there: no accuracy, and why.
  accuracy, source = monitor.evaluation_accuracy(
      store, VERSION, 'sparse_categorical_accuracy')
  assert accuracy is None
  assert source.startswith('no sparse_categorical_accuracy in ')
