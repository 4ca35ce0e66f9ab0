"""The blessing rule: the TFMA config whose thresholds decide a push.

One owner for what a model must reach to be pushed; the values are knobs of
pipeline/configs.py (docs/decisions.md says why each is what it is). The
Evaluator applies it to the candidate and the baseline (components/baseline.py).
"""

import tensorflow_model_analysis as tfma

from models import features
from pipeline import configs


def eval_config(cfg: configs.PipelineConfig) -> tfma.EvalConfig:
  """TFMA config: metrics, slices, and the thresholds that decide blessing.

  A model is blessed when all of these hold (docs/decisions.md says why
  each threshold is what it is):
    overall slice   AUC >= min_auc, balanced accuracy >= min_balanced_accuracy,
                    min_calibration <= calibration <= max_calibration,
                    AUC >= baseline AUC - max_auc_drop (once there is one);
    guarded slices  min/max_slice_calibration (configs.GUARDED_SLICES).
  Plain accuracy is reported but no threshold: it rewards the majority
  class (78% of trips have no big tip), so a model that never says "big
  tip" scores 0.78 with no skill at all.
  """
  overall = [tfma.SlicingSpec()]
  guarded = [tfma.SlicingSpec(feature_values={key: value})
             for key, values in configs.GUARDED_SLICES.items()
             for value in values]

  def threshold(slices, lower=None, upper=None, max_drop=None):
    bounds = {}
    if lower is not None:
      bounds['lower_bound'] = {'value': lower}
    if upper is not None:
      bounds['upper_bound'] = {'value': upper}
    change = None
    if max_drop is not None:  # skipped by TFMA when there is no baseline
      change = tfma.GenericChangeThreshold(
          direction=tfma.MetricDirection.HIGHER_IS_BETTER,
          absolute={'value': -max_drop})
    return [tfma.PerSliceMetricThreshold(
        slicing_specs=slices, threshold=tfma.MetricThreshold(
            value_threshold=tfma.GenericValueThreshold(**bounds),
            change_threshold=change))]

  return tfma.EvalConfig(
      model_specs=[
          tfma.ModelSpec(
              signature_name='serving_default',
              label_key=features.LABEL_XF,
              preprocessing_function_names=['transform_features'])
      ],
      slicing_specs=overall + [
          tfma.SlicingSpec(feature_keys=[key]) for key in configs.SLICE_FEATURES
      ],
      metrics_specs=[
          tfma.MetricsSpec(metrics=[
              tfma.MetricConfig(class_name='ExampleCount'),
              tfma.MetricConfig(
                  class_name='AUC', per_slice_thresholds=threshold(
                      overall, lower=cfg.min_auc,
                      max_drop=cfg.max_auc_drop)),
              tfma.MetricConfig(
                  class_name='BalancedAccuracy',
                  per_slice_thresholds=threshold(
                      overall, lower=cfg.min_balanced_accuracy)),
              tfma.MetricConfig(
                  class_name='Calibration',
                  per_slice_thresholds=threshold(
                      overall, cfg.min_calibration, cfg.max_calibration)
                  + threshold(guarded, cfg.min_slice_calibration,
                              cfg.max_slice_calibration)),
              tfma.MetricConfig(class_name='BinaryAccuracy'),
              tfma.MetricConfig(class_name='Precision'),
              tfma.MetricConfig(class_name='Recall'),
              tfma.MetricConfig(class_name='MeanLabel'),
              tfma.MetricConfig(class_name='MeanPrediction'),
          ])
      ])


def _where(slicing_spec) -> str:
  if slicing_spec.feature_values:
    return ', '.join(f'{k}={v}' for k, v in
                     sorted(slicing_spec.feature_values.items()))
  if slicing_spec.feature_keys:
    return 'each ' + ', '.join(slicing_spec.feature_keys)
  return 'overall'


def describe(config: tfma.EvalConfig) -> list:
  """The rule as lines ('AUC >= 0.7 (overall)'), read from the EvalConfig
  the Evaluator applies, so a model card states the thresholds it passed
  exactly as they were checked."""
  lines = []
  for spec in config.metrics_specs:
    for metric in spec.metrics:
      for per_slice in metric.per_slice_thresholds:
        where = '; '.join(_where(s) for s in per_slice.slicing_specs)
        value = per_slice.threshold.value_threshold
        low = value.lower_bound.value if value.HasField('lower_bound') else None
        high = value.upper_bound.value if value.HasField('upper_bound') else None
        if low is not None and high is not None:
          lines.append(f'{metric.class_name} in [{low:g}, {high:g}] ({where})')
        elif low is not None:
          lines.append(f'{metric.class_name} >= {low:g} ({where})')
        elif high is not None:
          lines.append(f'{metric.class_name} <= {high:g} ({where})')
        change = per_slice.threshold.change_threshold
        if change.HasField('absolute'):
          lines.append(f'{metric.class_name} >= baseline '
                       f'{metric.class_name} - {-change.absolute.value:g} '
                       f'({where}; once there is a baseline)')
  return lines
