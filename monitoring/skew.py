"""Training/serving skew: served traffic's statistics vs the training data's.

Served rows become tf.Examples as CsvExampleGen would have written them
(a missing value is an empty feature) and go through the same decoder and
TFDV statistics generator as training data, so both sides have the same
types. TFDV's skew comparators then compare the two (`validate_statistics(
training, schema, serving_statistics=served)`): L-infinity distance for
categorical (string) features, Jensen-Shannon divergence for numeric ones,
with the thresholds of monitoring/config.py.

Training statistics, in order of preference:
  1. a statistics file given on the command line;
  2. from ML Metadata, for the served version: Pusher (pushed_version) ->
     its Model -> the Trainer that produced it -> the Examples it trained
     on; if those are one span with a StatisticsGen output, that output;
  3. else TFDV over the `train` split of those Examples. StatisticsGen
     statistics of several spans cannot be merged exactly (their histogram
     boundaries differ), and the runner backfills earlier spans of the
     window without StatisticsGen, so a window usually has one at most.
"""

import dataclasses
import glob
import os
from typing import Dict, List, Optional, Sequence, Tuple

from models import features
from monitoring import config as monitor_config
from monitoring.prediction_logs import ServedRow
from pipeline import metadata_store

STATS_FILE = 'FeatureStats.pb'  # StatisticsGen's output per split (TFX 1.16)
TRAIN_SPLIT = 'train'


@dataclasses.dataclass
class TrainingData:
  """Where the training side of the comparison came from."""
  statistics: object  # DatasetFeatureStatisticsList
  source: str  # for the report: a file, or the ML Metadata path taken
  spans: List[int] = dataclasses.field(default_factory=list)


def _schema():
  from google.protobuf import text_format  # pylint: disable=g-import-not-at-top
  from pipeline import configs  # pylint: disable=g-import-not-at-top
  from tensorflow_metadata.proto.v0 import schema_pb2  # pylint: disable=g-import-not-at-top
  with open(configs.PipelineConfig().schema_path) as f:
    return text_format.Parse(f.read(), schema_pb2.Schema())


def _example(row: Dict[str, object]):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  example = tf.train.Example()
  for key, kind in features.RAW_FEATURE_TYPES.items():
    value = row.get(key)
    target = example.features.feature[key]
    if value is None:
      continue
    if kind == 'string':
      target.bytes_list.value.append(str(value).encode('utf-8'))
    elif kind == 'float':
      target.float_list.value.append(float(value))
    else:
      target.int64_list.value.append(int(value))
  return example.SerializeToString()


def statistics_of_examples(serialized: Sequence[bytes]):
  """TFDV statistics of serialized tf.Examples, in memory (no Beam job)."""
  from tensorflow_data_validation.statistics import stats_impl  # pylint: disable=g-import-not-at-top
  from tensorflow_data_validation.statistics import stats_options  # pylint: disable=g-import-not-at-top
  from tfx_bsl.coders import example_coder  # pylint: disable=g-import-not-at-top
  if not serialized:
    raise ValueError('no examples to compute statistics of')
  batch = example_coder.ExamplesToRecordBatchDecoder().DecodeBatch(
      list(serialized))
  return stats_impl.generate_statistics_in_memory(
      batch, stats_options.StatsOptions())


def served_statistics(rows: Sequence[ServedRow]):
  """TFDV statistics of the served instances' raw features."""
  return statistics_of_examples([_example(r.features) for r in rows])


def _read_examples(uri: str, split: str) -> List[bytes]:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  files = sorted(glob.glob(os.path.join(uri, f'Split-{split}', '*')))
  if not files:
    raise FileNotFoundError(f'no Split-{split} files under {uri}')
  return [r.numpy() for r in tf.data.TFRecordDataset(files,
                                                     compression_type='GZIP')]


def load_statistics(path: str):
  """A DatasetFeatureStatisticsList file (binary, as StatisticsGen writes
  it, or text format if the name ends in .pbtxt)."""
  import tensorflow_data_validation as tfdv  # pylint: disable=g-import-not-at-top
  if path.endswith('.pbtxt'):
    return tfdv.load_stats_text(path)
  return tfdv.load_stats_binary(path)


def _producer(store, artifact_id: int) -> Optional[int]:
  return next((e.execution_id for e in store.get_events_by_artifact_ids(
      [artifact_id]) if e.type == e.OUTPUT), None)


def _inputs(store, execution_id: int) -> Dict[str, List[int]]:
  found: Dict[str, List[int]] = {}
  for e in store.get_events_by_execution_ids([execution_id]):
    if e.type in (e.INPUT, e.DECLARED_INPUT) and e.path.steps:
      found.setdefault(e.path.steps[0].key, []).append(e.artifact_id)
  return found


def pusher_inputs(store, version: str) -> Optional[Dict[str, List[int]]]:
  """Input artifact ids by key of the Pusher that pushed `version`."""
  pushed = [a for a in store.get_artifacts_by_type('PushedModel')
            if str(metadata_store.custom_property(a, 'pushed_version'))
            == str(version)]
  if not pushed:
    return None
  pusher = _producer(store, pushed[-1].id)
  return _inputs(store, pusher) if pusher is not None else None


def training_examples(store, version: str):
  """The Examples artifacts the served version's Trainer read, or []."""
  inputs = pusher_inputs(store, version)
  if not inputs or 'model' not in inputs:
    return []
  trainer = _producer(store, inputs['model'][0])
  if trainer is None:
    return []
  ids = _inputs(store, trainer).get('examples', [])
  return store.get_artifacts_by_id(ids) if ids else []


def _statistics_gen_output(store, examples_id: int):
  """The ExampleStatistics a StatisticsGen computed from these Examples."""
  for event in store.get_events_by_artifact_ids([examples_id]):
    if event.type not in (event.INPUT, event.DECLARED_INPUT):
      continue
    for out in store.get_events_by_execution_ids([event.execution_id]):
      if out.type == out.OUTPUT and out.path.steps and \
          out.path.steps[0].key == 'statistics':
        (artifact,) = store.get_artifacts_by_id([out.artifact_id])
        return artifact
  return None


def training_statistics(store, version: str) -> Optional[TrainingData]:
  """Training statistics of `version` found through ML Metadata, or None."""
  examples = training_examples(store, version)
  if not examples:
    return None
  spans = sorted(int(metadata_store.custom_property(e, 'span', -1))
                 for e in examples)
  if len(examples) == 1:
    stats = _statistics_gen_output(store, examples[0].id)
    path = os.path.join(stats.uri, f'Split-{TRAIN_SPLIT}', STATS_FILE) \
        if stats else None
    if path and os.path.exists(path):
      return TrainingData(load_statistics(path),
                          f'StatisticsGen output {path}', spans)
  serialized: List[bytes] = []
  for e in examples:
    serialized += _read_examples(e.uri, TRAIN_SPLIT)
  return TrainingData(
      statistics_of_examples(serialized),
      f'TFDV over the {TRAIN_SPLIT} split of the Trainer\'s {len(examples)} '
      f'Examples artifact(s) (spans {spans})', spans)


def skew_schema(thresholds: monitor_config.Thresholds):
  """The curated schema with a skew comparator on every model feature."""
  schema = _schema()
  for feature in schema.feature:
    if feature.name not in features.RAW_FEATURE_TYPES:
      continue
    if features.RAW_FEATURE_TYPES[feature.name] == 'string':
      feature.skew_comparator.infinity_norm.threshold = \
          thresholds.categorical_linf
    else:
      feature.skew_comparator.jensen_shannon_divergence.threshold = \
          thresholds.numeric_js
  return schema


@dataclasses.dataclass
class FeatureSkew:
  distance: float
  threshold: float
  anomalous: bool
  measure: str  # L_INFTY | JENSEN_SHANNON_DIVERGENCE


def detect(training, served, thresholds: monitor_config.Thresholds
          ) -> Tuple[Dict[str, FeatureSkew], List[str]]:
  """Skew per model feature, and TFDV's anomaly descriptions of the skew."""
  import tensorflow_data_validation as tfdv  # pylint: disable=g-import-not-at-top
  from tensorflow_metadata.proto.v0 import anomalies_pb2  # pylint: disable=g-import-not-at-top
  anomalies = tfdv.validate_statistics(
      training, skew_schema(thresholds), serving_statistics=served)
  result: Dict[str, FeatureSkew] = {}
  for info in anomalies.drift_skew_info:
    name = '.'.join(info.path.step)
    for m in info.skew_measurements:
      result[name] = FeatureSkew(
          distance=float(m.value), threshold=float(m.threshold),
          anomalous=m.value > m.threshold,
          measure=anomalies_pb2.DriftSkewInfo.Measurement.Type.Name(m.type))
  skew_types = {'COMPARATOR_L_INFTY_HIGH', 'COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH'}
  messages = []
  for name, info in sorted(anomalies.anomaly_info.items()):
    for reason in info.reason:
      kind = anomalies_pb2.AnomalyInfo.Type.Name(reason.type)
      if kind in skew_types or 'SKEW' in kind:
        messages.append(f'{name}: {reason.description}')
  return dict(sorted(result.items())), messages
