"""lineage/graph.py's `upstream` walk, and the version page built on it
(ui/lineage_view.version_graph), on hand-made stores.

The oracle is the walk the page made before, three queries a node
(`reference_graph`, kept here as it was): the same nodes in the same order,
edges, labels, depths and truncation, on random provenance with what TFX
records besides plain reads (cached executions re-outputting an artifact,
DECLARED_INPUT events, a resolver's INTERNAL_INPUT), cut at any size and
fetched any number of hops at a time. Fast: no pipeline runs.
"""

import random
from typing import Any, Dict, List

import pytest
from ml_metadata.proto import metadata_store_pb2

from lineage import graph
from lineage import metadata_store
from ui import lineage_view
from ui import views

Event = metadata_store_pb2.Event
Execution = metadata_store_pb2.Execution


def reference_graph(store, pushed, version, max_nodes) -> Dict[str, Any]:
  """ui/lineage_view.version_graph as it was: breadth-first, producer,
  contexts and inputs queried per node."""
  nodes: Dict[str, Dict[str, Any]] = {
      f'a{pushed.id}': {'kind': 'artifact', 'id': pushed.id,
                        'label': pushed.type, 'detail': f'version {version}'}}
  edges = set()
  frontier = [(f'a{pushed.id}', pushed)]
  while frontier and len(nodes) < max_nodes:
    key, artifact = frontier.pop(0)
    made = graph.producer(store, artifact.id)
    if made is None:
      continue
    e_key = f'e{made.id}'
    edges.add((e_key, key))
    if e_key in nodes:
      continue
    nodes[e_key] = {
        'kind': 'execution', 'id': made.id,
        'label': graph.node_id(store.get_contexts_by_execution(made.id))
                 or made.type,
        'detail': views.STATE_WORDS.get(made.last_known_state, '?')}
    inputs, _ = graph.execution_artifacts(store, made.id)
    for _, artifacts in sorted(inputs.items()):
      for a in artifacts:
        a_key = f'a{a.id}'
        edges.add((a_key, e_key))
        if a_key not in nodes:
          span = graph.prop(a, 'span')
          nodes[a_key] = {'kind': 'artifact', 'id': a.id, 'label': a.type,
                          'detail': f'span {span}' if span is not None
                          else f'#{a.id}'}
          frontier.append((a_key, a))
  return {'nodes': nodes, 'edges': edges,
          'truncated': len(nodes) >= max_nodes}


class Builder:
  """Writes executions and their events as TFX does (key, then index)."""

  def __init__(self, store):
    self.store = store
    self.types = {}
    ctype = store.put_context_type(metadata_store_pb2.ContextType(name='node'))
    self.nodes = store.put_contexts([metadata_store_pb2.Context(
        type_id=ctype, name=f'taxi.Node{i}') for i in range(4)])
    [self.run] = store.put_contexts([metadata_store_pb2.Context(
        type_id=store.put_context_type(metadata_store_pb2.ContextType(
            name='pipeline_run')), name='run-1')])

  def _type(self, kind, name):
    if (kind, name) not in self.types:
      put = (self.store.put_execution_type if kind == 'e' else
             self.store.put_artifact_type)
      proto = (metadata_store_pb2.ExecutionType if kind == 'e' else
               metadata_store_pb2.ArtifactType)
      self.types[kind, name] = put(proto(name=name))
    return self.types[kind, name]

  def artifact(self, type_name='Examples', span=None, version=None) -> int:
    a = metadata_store_pb2.Artifact(type_id=self._type('a', type_name),
                                    uri='/x')
    if span is not None:
      a.custom_properties['span'].int_value = span
    if version is not None:
      a.custom_properties['pushed_version'].string_value = version
    return self.store.put_artifacts([a])[0]

  def execution(self, reads: List[tuple], writes: List[int],
                state=Execution.COMPLETE, node=None, type_name='Trainer'):
    """reads: (artifact id, key, event type)."""
    [e] = self.store.put_executions([Execution(
        type_id=self._type('e', type_name), last_known_state=state)])
    events, index = [], {}
    for a, key, kind in reads + [(a, 'out', Event.OUTPUT) for a in writes]:
      event = Event(artifact_id=a, execution_id=e, type=kind)
      event.path.steps.add().key = key
      event.path.steps.add().index = index.setdefault(key, 0)
      index[key] += 1
      events.append(event)
    self.store.put_events(events)
    # Every execution is in a run (ML Metadata has none without context);
    # node None: in no node, so the page names its type.
    self.store.put_attributions_and_associations([], [
        metadata_store_pb2.Association(context_id=c, execution_id=e)
        for c in [self.run] + ([] if node is None else [self.nodes[node]])])
    return e


def random_provenance(store, seed: int, executions: int = 60) -> str:
  """A random DAG under one PushedModel (version '1'); its version."""
  rng = random.Random(seed)
  b = Builder(store)
  made = [b.artifact(span=rng.choice([None, 1, 2])) for _ in range(3)]
  runs = []
  for i in range(executions):
    reads = [(a, rng.choice(['examples', 'schema', 'model']),
              rng.choice([Event.INPUT, Event.INPUT, Event.DECLARED_INPUT,
                          Event.INTERNAL_INPUT]))
             for a in rng.sample(made, min(len(made), rng.randint(1, 3)))]
    if runs and rng.random() < 0.2:  # a cached rerun re-outputs
      old_reads, old_writes = rng.choice(runs)
      b.execution(old_reads, old_writes, Execution.CACHED,
                  node=rng.randrange(4))
      continue
    writes = [b.artifact(span=rng.choice([None, i])) for _ in
              range(rng.randint(1, 2))]
    b.execution(reads, writes, rng.choice([Execution.COMPLETE,
                                           Execution.FAILED]),
                node=rng.choice([None, 0, 1, 2, 3]),
                type_name=rng.choice(['Trainer', 'Transform']))
    runs.append((reads, writes))
    made.extend(writes)
  pushed = b.artifact('PushedModel', version='1')
  b.execution([(made[-1], 'model', Event.INPUT),
               (made[-2], 'model_blessing', Event.INPUT)], [pushed],
              node=0, type_name='Pusher')
  return '1'


@pytest.fixture
def store(tmp_path):
  return metadata_store.open_store(
      metadata_store.sqlite_config(str(tmp_path / 'metadata.sqlite')))


@pytest.mark.parametrize('seed', range(3))
@pytest.mark.parametrize('max_nodes', [3, 30, 200])
def test_the_page_shows_what_the_per_node_walk_showed(
    store, seed, max_nodes, monkeypatch):
  version = random_provenance(store, seed)
  monkeypatch.setattr(lineage_view, 'MAX_GRAPH_NODES', max_nodes)
  found = lineage_view.version_graph(store, version)
  pushed = max(store.get_artifacts_by_type('PushedModel'), key=lambda a: a.id)
  expected = reference_graph(store, pushed, version, max_nodes)
  assert list(found['nodes']) == list(expected['nodes'])
  assert {k: {f: v for f, v in n.items() if f != 'depth'}
          for k, n in found['nodes'].items()} == expected['nodes']
  assert found['edges'] == sorted(e for e in expected['edges']
                                  if e[0] in found['nodes']
                                  and e[1] in found['nodes'])
  assert found['truncated'] == expected['truncated']


@pytest.mark.parametrize('hops', [2, 3, 8])
def test_the_walk_is_the_same_whatever_one_query_fetches(store, hops):
  version = random_provenance(store, seed=7, executions=80)
  pushed = max(store.get_artifacts_by_type('PushedModel'), key=lambda a: a.id)
  walked = graph.upstream(store, pushed, 150, hops=hops)
  expected = reference_graph(store, pushed, version, 150)
  assert list(walked.nodes) == list(expected['nodes'])
  assert walked.edges == expected['edges']


class CountingStore:
  """The store, counting the queries made through it."""

  def __init__(self, store):
    self.store, self.calls = store, 0

  def __getattr__(self, name):
    method = getattr(self.store, name)

    def counted(*args, **kwargs):
      self.calls += 1
      return method(*args, **kwargs)
    return counted


def test_a_long_chain_is_a_few_queries_and_stops_at_the_bound(store):
  b = Builder(store)
  schema = b.artifact('Schema')
  previous = b.artifact(span=0)
  for span in range(1, 150):
    model = b.artifact('Model', span=span)
    b.execution([(previous, 'base_model', Event.INPUT),
                 (schema, 'schema', Event.INPUT)], [model], node=1)
    previous = model
  pushed = b.artifact('PushedModel', version='9')
  b.execution([(previous, 'model', Event.INPUT)], [pushed], node=0,
              type_name='Pusher')
  counting = CountingStore(store)
  found = lineage_view.version_graph(counting, '9')
  assert found['truncated'] and len(found['nodes']) == (
      lineage_view.MAX_GRAPH_NODES)
  assert counting.calls <= 20, counting.calls  # the walk of old: 3 a node
  assert found['nodes'][f'a{schema}']['depth'] > 0
