"""Resolver strategy for the training window: the latest N *valid* spans.

TFX's SpanRangeStrategy takes every Examples artifact in the span range. Here
that is not enough: ExampleGen succeeds on a span before the validation gate
rejects it, so a rejected span's Examples stay in ML Metadata and would leak
into the next run's training data. This strategy
  * drops every Examples artifact whose latest DataValidationGate execution
    failed (read from ML Metadata: the gate's executions and their inputs);
  * keeps one artifact per span, the newest (a re-ingested, corrected span
    replaces the old one);
  * keeps only spans of this run's data: ingested from the same data root
    (ExampleGen's `input_base`) and not after the span this run ingested, so
    a span 17 ingested earlier from another directory, or a later span of
    this one, never enters a run on span 16;
  * returns the latest `num_spans` spans, newest first (as SpanRangeStrategy).
Spans ingested without validation (the window backfill) count as valid: the
bundled history is what the curated schema was made from.
"""

from typing import Dict, List, Optional, Set, Tuple

import ml_metadata as mlmd
from ml_metadata.proto import metadata_store_pb2
from tfx import types
from tfx.dsl.components.common import resolver

from lineage import graph


def _gate_executions(store: mlmd.MetadataStore, gate_context: str
                    ) -> Tuple[List[metadata_store_pb2.Execution],
                               Set[int]]:
  """The gate's executions, and the states that mean "rejected".

  TFX's IR orchestration (LocalDagRunner, BeamDagRunner) links them to the
  `node` context `<pipeline>.<gate id>` and marks a failed one FAILED.
  AirflowDagRunner drives the pre-IR launcher instead: executions carry a
  `component_id` property within the `pipeline` context, and one whose
  executor raised is never marked failed (it stays RUNNING), so there
  anything but COMPLETE or CACHED counts as rejected. Airflow runs one DAG run
  at a time (dags/pipeline_dag.py), so no gate of another run is still running.
  """
  context = store.get_context_by_type_and_name('node', gate_context)
  if context is not None:
    return (store.get_executions_by_context(context.id),
            {metadata_store_pb2.Execution.FAILED})
  pipeline_name, gate_id = gate_context.rsplit('.', 1)
  context = store.get_context_by_type_and_name('pipeline', pipeline_name)
  if context is None:
    return [], set()
  executions = [
      e for e in store.get_executions_by_context(context.id)
      if 'component_id' in e.properties and
      e.properties['component_id'].string_value == gate_id
  ]
  rejected = set(metadata_store_pb2.Execution.State.values()) - {
      metadata_store_pb2.Execution.COMPLETE,
      metadata_store_pb2.Execution.CACHED}
  return executions, rejected


def rejected_examples(store: mlmd.MetadataStore, gate_context: str) -> Set[int]:
  """Ids of Examples whose latest validation gate execution failed."""
  gate_executions, rejected_states = _gate_executions(store, gate_context)
  executions = {e.id: e for e in gate_executions}
  latest: Dict[int, metadata_store_pb2.Execution] = {}
  for event in store.get_events_by_execution_ids(list(executions)):
    if (event.type == metadata_store_pb2.Event.INPUT and event.path.steps and
        event.path.steps[0].key == 'examples'):
      execution = executions[event.execution_id]
      if (event.artifact_id not in latest or
          execution.id > latest[event.artifact_id].id):
        latest[event.artifact_id] = execution
  return {
      artifact_id for artifact_id, execution in latest.items()
      if execution.last_known_state in rejected_states
  }


def _span(artifact: types.Artifact) -> int:
  return artifact.get_int_custom_property('span')


class ValidSpanWindowStrategy(resolver.ResolverStrategy):
  """Latest `num_spans` valid spans of this run's data, ending at its span.

  Input and output: `examples` (all Examples of ExampleGen in; the window,
  newest span first, out). `gate_context` is the validation gate's node
  context name, `<pipeline name>.<gate node id>`; `data_root` the run's
  ExampleGen input_base; `last_span` the span the run ingests (None: no
  upper bound, for an orchestrator that ingests the latest span on disk).
  """

  def __init__(self, num_spans: int, gate_context: str,
               data_root: Optional[str] = None,
               last_span: Optional[int] = None):
    if num_spans <= 0:
      raise ValueError(f'num_spans must be positive, got {num_spans}')
    self._num_spans = num_spans
    self._gate_context = gate_context
    self._root = (graph.normalized_root(data_root) if data_root
                  else None)
    self._last_span = last_span

  def resolve_artifacts(
      self, store: mlmd.MetadataStore,
      input_dict: Dict[str, List[types.Artifact]]
  ) -> Optional[Dict[str, List[types.Artifact]]]:
    rejected = rejected_examples(store, self._gate_context)
    last_span, root = self._last_span, self._root
    newest_per_span: Dict[int, types.Artifact] = {}
    for examples in input_dict['examples']:
      if examples.id in rejected or not examples.has_custom_property('span'):
        continue
      span = _span(examples)
      if last_span is not None and span > last_span:
        continue
      if root is not None and (
          graph.input_base(store, examples.id) != root):
        continue
      if span not in newest_per_span or examples.id > newest_per_span[span].id:
        newest_per_span[span] = examples
    spans = sorted(newest_per_span, reverse=True)[:self._num_spans]
    if not spans:
      return None
    return {**input_dict, 'examples': [newest_per_span[s] for s in spans]}
