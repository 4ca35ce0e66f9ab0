"""Which model scored a span's rows: the lineage of a batch scoring.

Scoring (pipeline/scoring.py) runs as a pipeline of its own,
`<pipeline>_scoring` (its module docstring says why); its last node writes
an artifact of SCORES_TYPE holding SCORES_FILE. `scorings` walks back from
that CSV with lineage/graph.py's steps: its writer, BulkInferrer's
PredictionLogs, the span's Examples, the Model (and its Trainer), and the
ModelBlessing BulkInferrer checked.
"""

import dataclasses
import os
from typing import List, Optional

import ml_metadata as mlmd
from ml_metadata.proto import metadata_store_pb2
from lineage import graph

SCORING_SUFFIX = '_scoring'
SCORES_TYPE = 'PredictionsCsv'
SCORES_FILE = 'scores.csv'


def scoring_pipeline_name(pipeline_name: str) -> str:
  return pipeline_name + SCORING_SUFFIX


@dataclasses.dataclass
class Scoring:
  """One batch scoring of a span: which model scored which rows, where."""
  span: Optional[int]
  csv: graph.ArtifactInfo
  csv_path: str
  rows: Optional[int]
  mean_prediction: Optional[float]
  served_version: Optional[str]  # the version served when it was scored
  versions: List[str]  # every version the Model was pushed as
  scorer: graph.ExecutionInfo  # the execution that wrote the CSV
  last_run: Optional[str]  # the newest run that made or reused the CSV
  examples: Optional[graph.ArtifactInfo] = None
  # BulkInferrer's PredictionLogs
  predictions: Optional[graph.ArtifactInfo] = None
  model: Optional[graph.ArtifactInfo] = None
  blessing: Optional[graph.ArtifactInfo] = None
  bulk_inferrer: Optional[graph.ExecutionInfo] = None
  trainer: Optional[graph.ExecutionInfo] = None


def _first(artifacts: Optional[List[metadata_store_pb2.Artifact]]):
  return artifacts[0] if artifacts else None


def _last_output(store: mlmd.MetadataStore, artifact_id: int
                ) -> Optional[metadata_store_pb2.Execution]:
  """The newest COMPLETE or CACHED execution that output an artifact: a
  cached rerun reuses an earlier scoring's CSV, and is its newest use."""
  ids = [e.execution_id for e in store.get_events_by_artifact_ids(
      [artifact_id]) if e.type == metadata_store_pb2.Event.OUTPUT]
  done = [e for e in store.get_executions_by_id(ids) if e.last_known_state in (
      metadata_store_pb2.Execution.COMPLETE,
      metadata_store_pb2.Execution.CACHED)]
  return max(done, key=lambda e: e.id, default=None)


def scorings(store: mlmd.MetadataStore, pipeline_name: str,
             span: Optional[int] = None) -> List[Scoring]:
  """The scorings of `pipeline_name`'s models (of `span` only, when given),
  newest use first: the CSV artifact <- its writer <- BulkInferrer's
  PredictionLogs, the span's Examples and the Model (<- its Trainer), and
  the ModelBlessing BulkInferrer checked."""
  context = store.get_context_by_type_and_name(
      'pipeline', scoring_pipeline_name(pipeline_name))
  if context is None:
    return []
  found = []
  for csv in store.get_artifacts_by_context(context.id):
    if (csv.type != SCORES_TYPE or
        csv.state != metadata_store_pb2.Artifact.LIVE):
      continue
    writer, last = graph.producer(store, csv.id), _last_output(store, csv.id)
    if writer is None or last is None:
      continue
    inputs, _ = graph.execution_artifacts(store, writer.id)
    examples = _first(inputs.get('examples'))
    scored_span = graph.property_value(examples, 'span') if examples else None
    if span is not None and scored_span != span:
      continue
    predictions = _first(inputs.get('inference_result'))
    model = _first(inputs.get('model'))
    bulk = graph.producer(store, predictions.id) if predictions else None
    blessing = _first(graph.execution_artifacts(store, bulk.id)[0].get(
        'model_blessing')) if bulk else None
    trainer = graph.producer(store, model.id) if model else None
    run = graph.run_context(store, last.id)
    version = graph.prop(csv, 'served_version')
    found.append((last.id, Scoring(
        span=scored_span, csv=graph.artifact_info(csv),
        csv_path=os.path.join(csv.uri, SCORES_FILE),
        rows=graph.prop(csv, 'rows'), mean_prediction=graph.prop(csv, 'mean_prediction'),
        served_version=None if version is None else str(version),
        versions=graph.pushed_versions(store, model.id) if model else [],
        scorer=graph.execution_info(store, writer),
        last_run=run.name if run else None,
        examples=graph.artifact_info(examples) if examples else None,
        predictions=graph.artifact_info(predictions) if predictions else None,
        model=graph.artifact_info(model) if model else None,
        blessing=graph.artifact_info(blessing) if blessing else None,
        bulk_inferrer=graph.execution_info(store, bulk) if bulk else None,
        trainer=graph.execution_info(store, trainer) if trainer else None)))
  return [s for _, s in sorted(found, key=lambda x: x[0], reverse=True)]
