"""Training/serving skew: served traffic vs the served version's training data.

Skew and drift are one comparison (monitoring/distribution.py) with one set
of thresholds: per model feature, a chi-square test of homogeneity of the
served and the training values' counts in bins made from the training data
(numeric: its deciles; categorical: its categories, rare ones pooled;
missing: a bin of its own), Bonferroni-corrected, and an effect size above a
floor (L-infinity of category shares, Jensen-Shannon divergence of the
bins). TFDV's skew comparators were used before; on equal-width histograms
their Jensen-Shannon divergence reported skew for unshifted traffic and
missed fares x3 (docs/continuous-training.md has the measured rates).

Both sides are raw values with one notion of missing: served rows come from
monitoring/prediction_logs.py ('' and NaN from `serving_raw`, an empty
tf.Example feature, are None), training rows from ExampleGen's tf.Examples
(an empty feature is None) or CSV files (an empty cell is None).

Training data, in order of preference:
  1. files given on the command line (--training-data): CSV files, Examples
     artifact directories (their Split-train), or GZIP TFRecord files of
     tf.Examples;
  2. from ML Metadata, for the served version: lineage/provenance.py's walk
     (PushedModel <- Pusher <- Model <- Trainer <- its Examples; a CACHED
     execution is followed to the one that made the artifact) gives the
     Examples the Trainer read, and their `train` split is what it trained
     on. Raw values are needed, not StatisticsGen's statistics: the bins come
     from the training data's own quantiles, and the runner backfills the
     earlier spans of a window without StatisticsGen anyway.
"""

import dataclasses
import os
from typing import List, Mapping, Optional, Sequence

from monitoring import config as monitor_config
from monitoring import distribution
from monitoring import feature_values

TRAIN_SPLIT = 'train'


@dataclasses.dataclass
class TrainingData:
  """The training side of the comparison, and where it came from."""
  values: distribution.Values
  source: str  # for the report: files, or the ML Metadata path taken
  spans: List[int] = dataclasses.field(default_factory=list)


def _read(path: str, kinds: Mapping[str, str]) -> distribution.Values:
  if os.path.isdir(path):
    return feature_values.values_from_examples_dir(path, TRAIN_SPLIT, kinds)
  if path.endswith('.csv'):
    return feature_values.values_from_csv([path], kinds)
  return feature_values.values_from_examples(
      list(feature_values.gzip_tfrecords(path)), kinds)


def training_data_from_files(paths: Sequence[str],
                             kinds: Mapping[str, str]) -> TrainingData:
  """Training values from files: *.csv, Examples artifact directories
  (Split-train), else GZIP TFRecords of tf.Examples."""
  values = feature_values.concatenate([_read(p, kinds) for p in paths])
  return TrainingData(values, f'files {", ".join(paths)} '
                      f'({feature_values.size(values)} rows)')


def training_data(store, version: str,
                  kinds: Mapping[str, str]) -> Optional[TrainingData]:
  """The train split of the Examples the served version was trained on,
  found through ML Metadata (lineage/provenance.py), or None."""
  from lineage import provenance  # pylint: disable=g-import-not-at-top
  from lineage import report  # pylint: disable=g-import-not-at-top
  found = provenance.version_lineage(store, str(version), read_files=False)
  if found is None or not found.spans:
    return None
  values = feature_values.concatenate([
      feature_values.values_from_examples_dir(s.uri, TRAIN_SPLIT, kinds)
      for s in found.spans])
  spans = sorted(s.span for s in found.spans if s.span is not None)
  return TrainingData(
      values, f'{TRAIN_SPLIT} split of the Trainer\'s {len(found.spans)} '
      f'Examples artifact(s) (spans {report.span_ranges(spans)}, '
      f'{feature_values.size(values)} rows), via ML Metadata', spans)


def detect(training: TrainingData, rows: Sequence[object],
           thresholds: monitor_config.Thresholds,
           kinds: Mapping[str, str]) -> distribution.Comparison:
  """Skew of the served rows (prediction_logs.ServedRow) per feature."""
  return distribution.compare(training.values,
                              feature_values.values_from_served(rows, kinds),
                              thresholds.rule(), kinds)


def describe(result: distribution.FeatureResult) -> str:
  """One line for the report: why a feature is (or is not) skewed."""
  return (f'{result.feature}: {result.measure} {result.effect:.3f} '
          f'{">" if result.effect > result.threshold else "<="} '
          f'{result.threshold:g}, chi-square p {result.p_value:.2g} '
          f'{"<" if result.significant else ">="} {result.alpha:.2g}')
