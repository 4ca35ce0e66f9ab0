"""Distribution drift between a new span and the previous one (TFDV).

The curated schema (DataValidationGate) catches *skew*: a missing column, a
wrong type, an unseen category. It cannot see a span whose values are all
legal but distributed differently, e.g. twice as many card payments. That is
*drift*, and it is what should trigger retraining. TFDV measures it when
`validate_statistics` gets `previous_statistics` and the schema carries a
drift comparator per feature: L-infinity for string features, Jensen-Shannon
divergence for numeric ones. Thresholds live in pipeline/configs.py only.

Why here and not as a pipeline component: the CT controller must decide
*before* it starts a run whether a span is worth one, so drift is measured on
statistics of a span that is not ingested yet (computed from its CSV with
TFDV). TFX 1.16 also ships `tfx.components.DistributionValidator` (not in
`tfx.v1`), which does the same comparison inside a pipeline, but its result
exists only after the run it could have triggered. The previous span's
statistics come from the StatisticsGen artifact already in ML Metadata when
the pipeline computed them (nothing is recomputed), else from its CSV.
"""

import dataclasses
import json
import os
from typing import Dict, List, Optional

import ml_metadata as mlmd
from ml_metadata.proto import metadata_store_pb2
from pipeline import configs
from pipeline import metadata_store
from tensorflow_metadata.proto.v0 import schema_pb2
from tensorflow_metadata.proto.v0 import statistics_pb2

STATISTICS_FILE = 'FeatureStats.pb'  # StatisticsGen's file per split
STATISTICS_SPLIT = 'train'  # the previous span's split compared (2/3 of rows)


@dataclasses.dataclass
class Thresholds:
  """Drift thresholds per comparator (defaults: pipeline/configs.py)."""
  linf: float = configs.DRIFT_LINF_THRESHOLD
  jsd: float = configs.DRIFT_JSD_THRESHOLD


@dataclasses.dataclass
class FeatureDrift:
  """One feature's distance between the previous span and the new one."""
  feature: str
  comparator: str  # 'L-inf' or 'JSD'
  distance: float
  threshold: float

  @property
  def drifted(self) -> bool:
    return self.distance > self.threshold


@dataclasses.dataclass
class DriftReport:
  """Every compared feature of `span` against `previous_span`."""
  span: int
  previous_span: int
  features: List[FeatureDrift]
  sources: Dict[str, str]  # 'span' / 'previous_span' -> where stats came from

  @property
  def drifted(self) -> List[FeatureDrift]:
    return [f for f in self.features if f.drifted]

  def summary(self) -> str:
    """One line: which features drifted, distance vs threshold."""
    if not self.drifted:
      worst = max(self.features, key=lambda f: f.distance / f.threshold,
                  default=None)
      closest = (f'; closest {worst.feature} {worst.comparator} '
                 f'{worst.distance:.3f} <= {worst.threshold:g}') if worst else ''
      return (f'no drift, span {self.span} vs {self.previous_span}'
              + closest)
    return (f'span {self.span} vs {self.previous_span}: ' + ', '.join(
        f'{f.feature} {f.comparator} {f.distance:.3f} > {f.threshold:g}'
        for f in self.drifted))

  def to_json(self) -> str:
    return json.dumps({
        'span': self.span, 'previous_span': self.previous_span,
        'sources': self.sources,
        'features': {f.feature: {'comparator': f.comparator,
                                 'distance': round(f.distance, 6),
                                 'threshold': f.threshold,
                                 'drifted': f.drifted}
                     for f in self.features}}, sort_keys=True)

  @classmethod
  def from_json(cls, text: str) -> 'DriftReport':
    data = json.loads(text)
    return cls(span=data['span'], previous_span=data['previous_span'],
               sources=data['sources'],
               features=[FeatureDrift(name, f['comparator'], f['distance'],
                                      f['threshold'])
                         for name, f in sorted(data['features'].items())])


def load_schema(path: str) -> schema_pb2.Schema:
  from google.protobuf import text_format  # pylint: disable=g-import-not-at-top
  with open(path) as f:
    return text_format.Parse(f.read(), schema_pb2.Schema())


def drift_schema(schema: schema_pb2.Schema,
                 thresholds: Thresholds) -> schema_pb2.Schema:
  """A copy of the curated schema with a drift comparator on each feature."""
  import tensorflow_data_validation as tfdv  # pylint: disable=g-import-not-at-top
  schema = schema_pb2.Schema.FromString(schema.SerializeToString())
  for name in configs.DRIFT_CATEGORICAL_FEATURES:
    tfdv.get_feature(schema, name).drift_comparator.infinity_norm.threshold = (
        thresholds.linf)
  for name in configs.DRIFT_NUMERIC_FEATURES:
    comparator = tfdv.get_feature(schema, name).drift_comparator
    comparator.jensen_shannon_divergence.threshold = thresholds.jsd
  return schema


def span_csv(data_root: str, span: int) -> str:
  return os.path.join(data_root,
                      configs.SPAN_PATTERN.replace('{SPAN}', str(span)))


# (path, size, mtime) of a span's files -> statistics: a controller process
# (a replay, a test) asks for the same unchanged span more than once.
_CSV_STATISTICS: Dict[tuple, statistics_pb2.DatasetFeatureStatisticsList] = {}


def statistics_from_csv(data_root: str, span: int
                       ) -> statistics_pb2.DatasetFeatureStatisticsList:
  """TFDV statistics of a span's CSV files (for a span not ingested yet)."""
  import glob  # pylint: disable=g-import-not-at-top
  import tensorflow_data_validation as tfdv  # pylint: disable=g-import-not-at-top
  pattern = span_csv(data_root, span)
  key = tuple((os.path.realpath(p), os.path.getsize(p), os.path.getmtime(p))
              for p in sorted(glob.glob(pattern)))
  if key not in _CSV_STATISTICS:
    _CSV_STATISTICS[key] = tfdv.generate_statistics_from_csv(pattern)
  return _CSV_STATISTICS[key]


def statistics_from_store(store: mlmd.MetadataStore, pipeline_name: str,
                          span: int
                         ) -> Optional[Dict[str, object]]:
  """The newest StatisticsGen statistics of `span`, from ML Metadata.

  TFX leaves the ExampleStatistics artifact's own `span` at 0, so the span
  is read from the Examples that StatisticsGen's execution took as input.
  Returns {'statistics': proto, 'artifact_id': id} or None when the
  pipeline never computed statistics for that span (e.g. a backfilled span).
  """
  context = store.get_context_by_type_and_name(
      'node', f'{pipeline_name}.StatisticsGen')
  if context is None:
    return None
  executions = {e.id: e for e in store.get_executions_by_context(context.id)
                if e.last_known_state in (metadata_store_pb2.Execution.COMPLETE,
                                          metadata_store_pb2.Execution.CACHED)}
  if not executions:
    return None
  events = store.get_events_by_execution_ids(list(executions))
  artifacts = {a.id: a for a in store.get_artifacts_by_id(
      list({e.artifact_id for e in events}))}
  spans_of: Dict[int, set] = {}
  outputs: Dict[int, List[int]] = {}
  for event in events:
    artifact = artifacts[event.artifact_id]
    if event.type == metadata_store_pb2.Event.INPUT and artifact.type == 'Examples':
      spans_of.setdefault(event.execution_id, set()).add(
          metadata_store.custom_property(artifact, 'span'))
    elif (event.type == metadata_store_pb2.Event.OUTPUT and
          artifact.type == 'ExampleStatistics'):
      outputs.setdefault(event.execution_id, []).append(artifact.id)
  candidates = sorted((a for execution_id, ids in outputs.items()
                       if spans_of.get(execution_id) == {span} for a in ids),
                      reverse=True)
  for artifact_id in candidates:
    path = os.path.join(artifacts[artifact_id].uri,
                        f'Split-{STATISTICS_SPLIT}', STATISTICS_FILE)
    if os.path.exists(path):
      import tensorflow_data_validation as tfdv  # pylint: disable=g-import-not-at-top
      return {'statistics': tfdv.load_stats_binary(path),
              'artifact_id': artifact_id}
  return None


def compare(statistics: statistics_pb2.DatasetFeatureStatisticsList,
            previous: statistics_pb2.DatasetFeatureStatisticsList,
            schema: schema_pb2.Schema, thresholds: Thresholds
           ) -> List[FeatureDrift]:
  """TFDV's drift measurements of every compared feature (sorted by name).

  TFDV reports a measurement for every feature with a comparator, drifted or
  not (`Anomalies.drift_skew_info`), so the report shows how close each came.
  """
  import tensorflow_data_validation as tfdv  # pylint: disable=g-import-not-at-top
  anomalies = tfdv.validate_statistics(
      statistics, drift_schema(schema, thresholds),
      previous_statistics=previous)
  names = {'L_INFTY': 'L-inf', 'JENSEN_SHANNON_DIVERGENCE': 'JSD'}
  found = []
  for info in anomalies.drift_skew_info:
    for m in info.drift_measurements:
      kind = m.Type.Name(m.type)
      found.append(FeatureDrift('.'.join(info.path.step),
                                names.get(kind, kind), m.value, m.threshold))
  return sorted(found, key=lambda f: f.feature)


def detect(store: Optional[mlmd.MetadataStore], cfg: configs.PipelineConfig,
           span: int, previous_span: int,
           thresholds: Optional[Thresholds] = None) -> DriftReport:
  """Drift of `span` (read from its CSV) against `previous_span`.

  The previous span's statistics are the pipeline's own when ML Metadata
  has them, else computed from its CSV like the new span's.
  """
  thresholds = thresholds or Thresholds()
  sources = {'span': f'TFDV on {span_csv(cfg.data_root, span)}'}
  recorded = statistics_from_store(store, cfg.pipeline_name,
                                   previous_span) if store else None
  if recorded:
    previous = recorded['statistics']
    sources['previous_span'] = (f'StatisticsGen artifact '
                                f'{recorded["artifact_id"]} ({STATISTICS_SPLIT} split)')
  else:
    previous = statistics_from_csv(cfg.data_root, previous_span)
    sources['previous_span'] = (
        f'TFDV on {span_csv(cfg.data_root, previous_span)}')
  features = compare(statistics_from_csv(cfg.data_root, span), previous,
                     load_schema(cfg.schema_path), thresholds)
  return DriftReport(span=span, previous_span=previous_span,
                     features=features, sources=sources)
