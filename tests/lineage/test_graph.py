"""The run and artifact steps of lineage/graph.py on a hand-made store.

What TFX records for two runs of ExampleGen, written with ml_metadata's own
API: `pipeline`, `pipeline_run` and `node` contexts, ExampleGen executions
with their `input_base`, and the Examples they output (one of them from
another data root, one ABANDONED). Fast: no pipeline runs.
"""

import pytest

from ml_metadata.proto import metadata_store_pb2
from lineage import graph
from lineage import metadata_store

Execution = metadata_store_pb2.Execution


def _type_id(store, kind, name):
  if kind == 'context':
    return store.put_context_type(metadata_store_pb2.ContextType(name=name))
  if kind == 'execution':
    return store.put_execution_type(
        metadata_store_pb2.ExecutionType(name=name))
  return store.put_artifact_type(metadata_store_pb2.ArtifactType(name=name))


def _context(store, type_name, name):
  [context_id] = store.put_contexts([metadata_store_pb2.Context(
      type_id=_type_id(store, 'context', type_name), name=name)])
  return store.get_contexts_by_id([context_id])[0]


def _ingest(store, contexts, span, root,
            state=metadata_store_pb2.Artifact.LIVE):
  """One ExampleGen execution in `contexts` that output Examples of `span`."""
  execution = Execution(type_id=_type_id(store, 'execution', 'CsvExampleGen'),
                        last_known_state=Execution.COMPLETE)
  execution.custom_properties['input_base'].string_value = root
  examples = metadata_store_pb2.Artifact(
      type_id=_type_id(store, 'artifact', 'Examples'), uri=f'/x/{span}',
      state=state)
  examples.custom_properties['span'].int_value = span
  output = metadata_store_pb2.Event(type=metadata_store_pb2.Event.OUTPUT)
  output.path.steps.add().key = 'examples'
  execution_id, [artifact_id], _ = store.put_execution(
      execution, [(examples, output)], contexts)
  return execution_id, artifact_id


@pytest.fixture
def store(tmp_path):
  store = metadata_store.open_store(
      metadata_store.sqlite_config(str(tmp_path / 'metadata.sqlite')))
  pipeline = _context(store, 'pipeline', 'taxi')
  node = _context(store, 'node', 'taxi.CsvExampleGen')
  first = _context(store, 'pipeline_run', 'run-1')
  second = _context(store, 'pipeline_run', 'run-2')
  root, other = str(tmp_path / 'data'), str(tmp_path / 'other')
  ids = {
      'span1': _ingest(store, [pipeline, node, first], 1, root),
      'span2': _ingest(store, [pipeline, node, first], 2, root),
      'other2': _ingest(store, [pipeline, node, second], 2, other),
      'span2again': _ingest(store, [pipeline, node, second], 2, root + '/'),
      'abandoned3': _ingest(store, [pipeline, node, second], 3, root,
                            metadata_store_pb2.Artifact.ABANDONED),
  }
  return store, root, other, ids


def test_ingested_examples_of_a_span_and_root_newest_first(store):
  store, root, other, ids = store
  found = graph.ingested_examples(store, 'taxi', root, span=2)
  assert [a.id for a in found] == [ids['span2again'][1], ids['span2'][1]]
  assert [a.id for a in graph.ingested_examples(store, 'taxi', other)] == [
      ids['other2'][1]]
  assert graph.ingested_spans(store, 'taxi', root) == [1, 2]
  assert graph.ingested_spans(store, 'taxi') == [1, 2]  # 3 was ABANDONED
  assert graph.ingested_examples(store, 'another pipeline') == []
  assert graph.input_base(store, ids['span2again'][1]) == (
      graph.normalized_root(root))


def test_runs_their_executions_and_node_ids(store):
  store, _, _, ids = store
  assert graph.latest_run(store, 'taxi').name == 'run-2'
  assert sorted(e.id for e in graph.run_executions(store, 'run-1')) == [
      ids['span1'][0], ids['span2'][0]]
  assert graph.run_executions(store, 'never-made') == []
  execution_id = ids['other2'][0]
  assert graph.run_context(store, execution_id).name == 'run-2'
  contexts = store.get_contexts_by_execution(execution_id)
  assert graph.node_id(contexts) == 'CsvExampleGen'
  assert graph.node_id(contexts, 'taxi') == 'CsvExampleGen'
  assert graph.node_id(contexts, 'tax') is None
  [run] = [c for c in contexts if c.name == 'run-2']
  nodes = graph.run_nodes(store, run, 'taxi')
  assert list(nodes) == ['CsvExampleGen']  # one node: the newest execution
  assert nodes['CsvExampleGen'].outputs['examples'][0].id == (
      ids['abandoned3'][1])
  assert graph.producer(store, ids['span1'][1]).id == ids['span1'][0]
