"""ML Metadata access: the connection config and the queries runners need.

Uses `ml_metadata` directly (no tfx import), so lineage tools stay light.
TFX records three context types per pipeline: `pipeline` (name),
`pipeline_run` (one per run) and `node` (`<pipeline>.<node id>`).
"""

import dataclasses
import os
from typing import Dict, List, Optional

from google.protobuf import json_format
from google.protobuf import text_format
import ml_metadata as mlmd
from ml_metadata.proto import metadata_store_pb2


def sqlite_config(path: str) -> metadata_store_pb2.ConnectionConfig:
  """SQLite MLMD at `path` (created on first use, parent dirs included)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  config = metadata_store_pb2.ConnectionConfig()
  config.sqlite.filename_uri = path
  config.sqlite.connection_mode = (
      metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE_OPENCREATE)
  return config


def connection_config(metadata_path: str,
                      config_file: Optional[str] = None
                     ) -> metadata_store_pb2.ConnectionConfig:
  """The store to use: a ConnectionConfig text proto if given, else SQLite.

  A config file can name any backend ml_metadata supports, e.g.
    mysql { host: "127.0.0.1" port: 3306 database: "mlmd" user: "tfx" }
  """
  if not config_file:
    return sqlite_config(metadata_path)
  with open(config_file) as f:
    return text_format.Parse(f.read(), metadata_store_pb2.ConnectionConfig())


def describe(config: metadata_store_pb2.ConnectionConfig) -> str:
  """Where the store is, for humans; never includes a password."""
  kind = config.WhichOneof('config')
  if kind == 'sqlite':
    return f'{config.sqlite.filename_uri} (SQLite)'
  if kind == 'mysql':
    m = config.mysql
    return f'{m.user}@{m.host or m.socket}:{m.port}/{m.database} (MySQL)'
  return kind or 'unknown'


def open_store(config: metadata_store_pb2.ConnectionConfig
              ) -> mlmd.MetadataStore:
  return mlmd.MetadataStore(config)


def custom_property(entity, key: str, default=None):
  """A custom property of an MLMD artifact/execution as a Python value."""
  if key not in entity.custom_properties:
    return default
  value = entity.custom_properties[key]
  kind = value.WhichOneof('value')
  if kind == 'struct_value':  # JSON custom properties, e.g. {split: 0|1}
    return json_format.MessageToDict(value.struct_value)
  return getattr(value, kind) if kind else default


def ingested_spans(store: mlmd.MetadataStore, pipeline_name: str,
                   example_gen_id: str = 'CsvExampleGen') -> List[int]:
  """Spans ExampleGen has produced Examples for (successful runs only)."""
  context = store.get_context_by_type_and_name(
      'node', f'{pipeline_name}.{example_gen_id}')
  if context is None:
    return []
  spans = {
      custom_property(a, 'span')
      for a in store.get_artifacts_by_context(context.id)
      if a.state == metadata_store_pb2.Artifact.LIVE
  }
  return sorted(int(span) for span in spans if span is not None)


_INPUT = (metadata_store_pb2.Event.INPUT, metadata_store_pb2.Event.DECLARED_INPUT)
_OUTPUT = (metadata_store_pb2.Event.OUTPUT,
           metadata_store_pb2.Event.DECLARED_OUTPUT)


@dataclasses.dataclass
class NodeRun:
  """What one node did in one pipeline run."""
  node_id: str
  state: str  # COMPLETE, CACHED, FAILED, RUNNING, ...
  inputs: Dict[str, List[metadata_store_pb2.Artifact]]
  outputs: Dict[str, List[metadata_store_pb2.Artifact]]


def latest_run(store: mlmd.MetadataStore, pipeline_name: str
              ) -> Optional[metadata_store_pb2.Context]:
  """The `pipeline_run` context of the newest execution of `pipeline_name`."""
  pipeline_ctx = store.get_context_by_type_and_name('pipeline', pipeline_name)
  if pipeline_ctx is None:
    return None
  executions = store.get_executions_by_context(pipeline_ctx.id)
  if not executions:
    return None
  newest = max(executions, key=lambda e: e.id)
  return next((c for c in store.get_contexts_by_execution(newest.id)
               if c.type == 'pipeline_run'), None)


def run_nodes(store: mlmd.MetadataStore, run: metadata_store_pb2.Context,
              pipeline_name: str) -> Dict[str, NodeRun]:
  """Node id -> what it did in `run`, with its artifacts by event key."""
  prefix = pipeline_name + '.'
  nodes = {}
  for execution in sorted(store.get_executions_by_context(run.id),
                          key=lambda e: e.id):
    node_id = next(
        (c.name[len(prefix):] for c in store.get_contexts_by_execution(
            execution.id) if c.type == 'node' and c.name.startswith(prefix)),
        execution.name or str(execution.id))
    events = store.get_events_by_execution_ids([execution.id])
    artifacts = {
        a.id: a for a in store.get_artifacts_by_id(
            [e.artifact_id for e in events])
    }
    by_direction = {_INPUT: {}, _OUTPUT: {}}
    for event in events:
      direction = next((d for d in by_direction if event.type in d), None)
      if direction is None:
        continue
      key = event.path.steps[0].key if event.path.steps else ''
      by_direction[direction].setdefault(key, []).append(
          artifacts[event.artifact_id])
    nodes[node_id] = NodeRun(
        node_id=node_id,
        state=metadata_store_pb2.Execution.State.Name(
            execution.last_known_state),
        inputs=by_direction[_INPUT],
        outputs=by_direction[_OUTPUT])
  return nodes
