"""What the lineage pages show: a pushed version's provenance graph, and
each artifact and execution with its properties and neighbours, read from
ML Metadata (lineage/graph.py, lineage/provenance.py); nothing here writes
anywhere.
"""

import json
from typing import Any, Dict, List, Optional

from ml_metadata.proto import metadata_store_pb2

from lineage import graph
from lineage import provenance
from ui import views


# The lineage graph stops after this many nodes (a long chain of windows
# must not make a page without end).
MAX_GRAPH_NODES = 200


def version_graph(store, version: str) -> Optional[Dict[str, Any]]:
  """The provenance of a pushed version: every artifact and execution
  upstream of its PushedModel (lineage/graph.py's walk, to MAX_GRAPH_NODES),
  the edges between them (upstream -> downstream) and each node's depth: the
  longest path from it to the pushed model (0), so every node sits left of
  everything it fed."""
  pushed = provenance.pushed_model(store, version)
  if pushed is None:
    return None
  walked = graph.upstream(store, pushed, MAX_GRAPH_NODES)
  nodes = {key: _node(walked, key, entity)
           for key, entity in walked.nodes.items()}
  nodes[f'a{pushed.id}']['detail'] = f'version {version}'
  edges = walked.edges
  downstream: Dict[str, List[str]] = {}
  for source, target in edges:
    downstream.setdefault(source, []).append(target)
  depth: Dict[str, int] = {}

  def depth_of(key: str) -> int:  # provenance is acyclic
    if key not in depth:
      depth[key] = 1 + max((depth_of(t) for t in downstream.get(key, [])
                            if t in nodes), default=-1)
    return depth[key]

  for key, node in nodes.items():
    node['depth'] = depth_of(key)
  return {'version': version, 'nodes': nodes,
          'edges': sorted(e for e in edges if e[0] in nodes and e[1] in nodes),
          'truncated': walked.truncated}


def _node(walked: graph.Upstream, key: str, entity) -> Dict[str, Any]:
  """How the graph draws one node of the walk."""
  if key.startswith('e'):
    contexts = list(walked.contexts.get(entity.id, {}).values())
    return {'kind': 'execution', 'id': entity.id,
            'label': graph.node_id(contexts) or entity.type,
            'detail': views.STATE_WORDS.get(entity.last_known_state, '?')}
  span = graph.prop(entity, 'span')
  return {'kind': 'artifact', 'id': entity.id, 'label': entity.type,
          'detail': f'span {span}' if span is not None else f'#{entity.id}'}


def artifact(store, artifact_id: int) -> Optional[Dict[str, Any]]:
  [a] = store.get_artifacts_by_id([artifact_id]) or [None]
  if a is None:
    return None
  made = graph.producer(store, a.id)
  used = store.get_executions_by_id(graph.consumers(store, [a.id]))
  return {
      'id': a.id, 'type': a.type, 'uri': a.uri,
      'state': metadata_store_pb2.Artifact.State.Name(a.state),
      'created': views.iso_time_ms(a.create_time_since_epoch),
      'properties': _properties(a),
      'producer': _execution_ref(store, made) if made is not None else None,
      'consumers': [_execution_ref(store, e)
                    for e in sorted(used, key=lambda e: e.id)],
  }


def _properties(entity) -> Dict[str, Any]:
  """Properties and custom properties, as text (long values shortened)."""
  out = {}
  for source in (entity.properties, entity.custom_properties):
    for key in sorted(source):
      value = graph.property_value(entity, key)
      text = value if isinstance(value, str) else json.dumps(value)
      out[key] = text if len(text) <= 2000 else text[:2000] + ' ...'
  return out


def _execution_ref(store, e) -> Dict[str, Any]:
  run = graph.run_context(store, e.id)
  return {'id': e.id, 'node': graph.node_id(
      store.get_contexts_by_execution(e.id)) or e.type,
          'state': views.STATE_WORDS.get(e.last_known_state, '?'),
          'run': run.name if run else None}


def execution(store, execution_id: int) -> Optional[Dict[str, Any]]:
  [e] = store.get_executions_by_id([execution_id]) or [None]
  if e is None:
    return None
  inputs, outputs = graph.execution_artifacts(store, e.id)
  return {
      **_execution_ref(store, e), 'type': e.type,
      'started': views.iso_time_ms(e.create_time_since_epoch), 'seconds': views.seconds_taken(e),
      'properties': _properties(e),
      'inputs': {k: [views.artifact_ref(a) for a in v]
                 for k, v in sorted(inputs.items())},
      'outputs': {k: [views.artifact_ref(a) for a in v]
                  for k, v in sorted(outputs.items())},
  }
