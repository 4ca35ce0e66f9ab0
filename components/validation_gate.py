"""A gate that stops the pipeline when a new span breaks the data contract.

TFX's ExampleValidator records anomalies but does not stop anything: Transform
and Trainer would happily train on a span with a missing column. This
component reads the anomalies (and example counts) of the span just
ingested and fails, naming the
span, its files, the split and every feature at fault, so nothing downstream
(Trainer, Evaluator, Pusher) runs. A failed execution is recorded in ML
Metadata as such; artifacts of earlier runs and pushed models are untouched.
"""

import os
from typing import Any, Dict, List

from tfx.dsl.component.experimental.annotations import InputArtifact
from tfx.dsl.component.experimental.annotations import Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.dsl.io import fileio
from tfx.types import artifact_utils
from tfx.types.standard_artifacts import ExampleAnomalies
from tfx.types.standard_artifacts import Examples
from tfx.types.standard_artifacts import ExampleStatistics

from tensorflow_metadata.proto.v0 import anomalies_pb2
from tensorflow_metadata.proto.v0 import statistics_pb2

from data import spans

ANOMALIES_FILE = 'SchemaDiff.pb'  # what ExampleValidator writes per split
STATISTICS_FILE = 'FeatureStats.pb'  # what StatisticsGen writes per split


class DataAnomaliesError(RuntimeError):
  """The ingested span does not match the curated schema."""


def _per_split(artifact, file_name: str, proto_class) -> Dict[str, Any]:
  """split name -> the binary proto `file_name` TFX wrote for that split."""
  protos = {}
  for split in artifact_utils.decode_split_names(artifact.split_names):
    path = os.path.join(artifact_utils.get_split_uri([artifact], split),
                        file_name)
    with fileio.open(path, 'rb') as f:
      protos[split] = proto_class.FromString(f.read())
  return protos


def read_anomalies(anomalies: ExampleAnomalies) -> List[str]:
  """One line per anomaly: '<split>: <feature>: <description>'."""
  lines = []
  for split, proto in _per_split(anomalies, ANOMALIES_FILE,
                                 anomalies_pb2.Anomalies).items():
    if proto.HasField('dataset_anomaly_info'):
      info = proto.dataset_anomaly_info
      lines.append(f'{split}: <dataset>: {info.description or info.short_description}')
    for feature, info in sorted(proto.anomaly_info.items()):
      lines.append(f'{split}: column {feature!r}: '
                   f'{info.short_description} - {info.description}')
  return lines


def empty_splits(statistics: ExampleStatistics) -> List[str]:
  """Splits with no examples at all.

  TFDV skips validation of an empty dataset entirely (no anomaly, not even
  the schema's min_examples_count), so an empty or header-only file would
  pass ExampleValidator. The gate checks for it itself.
  """
  protos = _per_split(statistics, STATISTICS_FILE,
                      statistics_pb2.DatasetFeatureStatisticsList)
  return [split for split, stats in protos.items()
          if sum(d.num_examples for d in stats.datasets) == 0]


def span_files(data_root: str, span_pattern: str, span: int) -> List[str]:
  """The input files of `span`, for error messages (local or gs:// root)."""
  return sorted(fileio.glob(spans.span_glob(data_root, span, span_pattern)))


@component
def DataValidationGate(  # pylint: disable=invalid-name
    anomalies: InputArtifact[ExampleAnomalies],
    statistics: InputArtifact[ExampleStatistics],
    examples: InputArtifact[Examples],
    data_root: Parameter[str],
    span_pattern: Parameter[str]) -> None:
  """Raises DataAnomaliesError on any anomaly or an empty split."""
  problems = [f'{split}: <dataset>: no examples (empty or header-only file)'
              for split in empty_splits(statistics)]
  problems += read_anomalies(anomalies)
  if problems:
    span = examples.get_int_custom_property('span')
    files = ', '.join(span_files(data_root, span_pattern, span)) or '(none)'
    raise DataAnomaliesError(
        f'span {span} ({files}) does not match the schema; stopping before '
        'Transform/Trainer/Pusher:\n  ' + '\n  '.join(problems))
