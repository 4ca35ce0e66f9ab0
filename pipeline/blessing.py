"""The blessing rule: the TFMA config whose thresholds decide a push.

One owner for what a model must reach to be pushed: the problem's task
(models/tasks.py) says which metrics and which thresholds, and why each is
what it is for that task; the values are knobs of pipeline/configs.py, their
defaults the problem's (docs/decisions.md). The Evaluator applies it to the
candidate and the baseline (components/baseline.py).
"""

import tensorflow_model_analysis as tfma

from models import tasks
from pipeline import configs
from pipeline import tfma_metrics

# TFMA metrics this project defines, by class name -> their module.
CUSTOM_METRICS = {'MulticlassBalancedAccuracy': tfma_metrics.__name__}


def eval_config(cfg: configs.PipelineConfig) -> tfma.EvalConfig:
  """TFMA config: metrics, slices, and the thresholds that decide blessing.

  A model is blessed when every check of the problem's task holds
  (models/tasks.py), with cfg's values of its knobs: on the overall slice,
  and, for 'guarded' checks, on each of the problem's guarded slices. A
  change threshold (the candidate against the baseline) is skipped by TFMA
  when there is no baseline.
  """
  problem = cfg.problem_spec
  knobs = cfg.rule
  overall = [tfma.SlicingSpec()]
  guarded = [tfma.SlicingSpec(feature_values={key: value})
             for key, values in problem.guarded_slices.items()
             for value in values]

  def threshold(check: tasks.Check):
    bounds = {}
    if check.lower is not None:
      bounds['lower_bound'] = {'value': knobs[check.lower]}
    if check.upper is not None:
      bounds['upper_bound'] = {'value': knobs[check.upper]}
    change = None
    if check.drop is not None:
      change = tfma.GenericChangeThreshold(
          direction=tfma.MetricDirection.HIGHER_IS_BETTER,
          absolute={'value': -knobs[check.drop]})
    slices = overall if check.where == 'overall' else guarded
    if not slices:  # a guarded check, and the problem guards no slice
      return []
    return [tfma.PerSliceMetricThreshold(
        slicing_specs=slices, threshold=tfma.MetricThreshold(
            value_threshold=tfma.GenericValueThreshold(**bounds),
            change_threshold=change))]

  metrics = []
  for name in problem.task.metrics:
    per_slice = [t for check in problem.task.checks if check.metric == name
                 for t in threshold(check)]
    metrics.append(tfma.MetricConfig(class_name=name,
                                     module=CUSTOM_METRICS.get(name, ''),
                                     per_slice_thresholds=per_slice))
  return tfma.EvalConfig(
      model_specs=[
          tfma.ModelSpec(
              signature_name='serving_default',
              label_key=problem.label.transformed,
              preprocessing_function_names=['transform_features'])
      ],
      slicing_specs=overall + [
          tfma.SlicingSpec(feature_keys=[key]) for key in problem.slices
      ],
      metrics_specs=[tfma.MetricsSpec(metrics=metrics)])


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
