"""Resolver strategy for the training window: the latest N *valid* spans.

TFX's SpanRangeStrategy takes every Examples artifact in the span range. Here
that is not enough: ExampleGen succeeds on a span before ExampleValidator and
the gate reject it, so a rejected span's Examples stay in ML Metadata and
would leak into the next run's training data. This strategy
  * drops every Examples artifact whose statistics ExampleValidator found
    anomalous (lineage: Examples -> StatisticsGen -> ExampleValidator);
  * keeps one artifact per span, the newest (a re-ingested, corrected span
    replaces the old one);
  * returns the latest `num_spans` spans, newest first (as SpanRangeStrategy).
Spans ingested without validation (the window backfill) count as valid: the
bundled history is what the curated schema was made from.
"""

from typing import Dict, List, Optional, Set

import ml_metadata as mlmd
from ml_metadata.proto import metadata_store_pb2
from tfx import types
from tfx.dsl.components.common import resolver

_OUTPUT = (metadata_store_pb2.Event.OUTPUT,
           metadata_store_pb2.Event.DECLARED_OUTPUT)
_INPUT = (metadata_store_pb2.Event.INPUT,
          metadata_store_pb2.Event.DECLARED_INPUT)


def _producers(store: mlmd.MetadataStore, artifact_ids: List[int]) -> Dict[int, int]:
  """artifact id -> id of the execution that produced it."""
  if not artifact_ids:
    return {}
  return {
      e.artifact_id: e.execution_id
      for e in store.get_events_by_artifact_ids(artifact_ids)
      if e.type in _OUTPUT
  }


def _inputs(store: mlmd.MetadataStore, execution_ids: List[int],
            key: str) -> Dict[int, int]:
  """execution id -> id of its input artifact under `key`."""
  if not execution_ids:
    return {}
  return {
      e.execution_id: e.artifact_id
      for e in store.get_events_by_execution_ids(execution_ids)
      if e.type in _INPUT and e.path.steps and e.path.steps[0].key == key
  }


def _is_anomalous(anomalies: types.Artifact) -> bool:
  """ExampleValidator sets 'blessed' = {split: 0|1} on its output."""
  if not anomalies.has_custom_property('blessed'):
    return False
  blessed = anomalies.get_json_value_custom_property('blessed') or {}
  return any(int(v) == 0 for v in blessed.values())


def rejected_examples(store: mlmd.MetadataStore,
                      anomalies: List[types.Artifact]) -> Set[int]:
  """Ids of Examples artifacts whose validation found anomalies."""
  bad = [a.id for a in anomalies if _is_anomalous(a)]
  validator_runs = _producers(store, bad)
  stats_of_run = _inputs(store, list(validator_runs.values()), 'statistics')
  stats_runs = _producers(store, list(stats_of_run.values()))
  examples_of_run = _inputs(store, list(stats_runs.values()), 'examples')
  return set(examples_of_run.values())


def _span(artifact: types.Artifact) -> int:
  return artifact.get_int_custom_property('span')


class ValidSpanWindowStrategy(resolver.ResolverStrategy):
  """Latest `num_spans` spans whose Examples were not rejected.

  Inputs: `examples` (all Examples of ExampleGen) and `anomalies` (all
  ExampleAnomalies of ExampleValidator). Outputs the same keys; `examples`
  is the window, newest span first.
  """

  def __init__(self, num_spans: int):
    if num_spans <= 0:
      raise ValueError(f'num_spans must be positive, got {num_spans}')
    self._num_spans = num_spans

  def resolve_artifacts(
      self, store: mlmd.MetadataStore,
      input_dict: Dict[str, List[types.Artifact]]
  ) -> Optional[Dict[str, List[types.Artifact]]]:
    rejected = rejected_examples(store, input_dict.get('anomalies', []))
    newest_per_span: Dict[int, types.Artifact] = {}
    for examples in input_dict['examples']:
      if examples.id in rejected or not examples.has_custom_property('span'):
        continue
      span = _span(examples)
      if span not in newest_per_span or examples.id > newest_per_span[span].id:
        newest_per_span[span] = examples
    spans = sorted(newest_per_span, reverse=True)[:self._num_spans]
    if not spans:
      return None
    return {**input_dict, 'examples': [newest_per_span[s] for s in spans]}
