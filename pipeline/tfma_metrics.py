"""A TFMA metric TFMA lacks: balanced accuracy of a multi-class model.

TFMA's BalancedAccuracy is binary (one threshold on one probability). A
multi-class model's balanced accuracy is the mean, over the classes present
in the labels, of the share of that class's examples whose most probable
class is the label (the macro-averaged recall of the top-1 prediction):
1 / classes for a model that predicts one class, whatever the class shares,
so the blessing rule can refuse the majority class and any constant model
(models/tasks.py). Loaded by the Evaluator from this module
(pipeline/blessing.py names it in the MetricConfig).
"""

from typing import Dict, Iterable, List, Optional

import apache_beam as beam
import numpy as np
from tensorflow_model_analysis.metrics import metric_types
from tensorflow_model_analysis.metrics import metric_util
from tensorflow_model_analysis.proto import config_pb2

NAME = 'multiclass_balanced_accuracy'


class MulticlassBalancedAccuracy(metric_types.Metric):
  """Mean per-class recall of the top-1 prediction (see the module)."""

  def __init__(self, name: str = NAME):
    super().__init__(metric_util.merge_per_key_computations(_computations),
                     name=name)


def _computations(name: Optional[str] = None,
                  eval_config: Optional[config_pb2.EvalConfig] = None,
                  model_name: str = '', output_name: str = '',
                  sub_key: Optional[metric_types.SubKey] = None,
                  example_weighted: bool = False,
                  **_) -> metric_types.MetricComputations:
  key = metric_types.MetricKey(name=name, model_name=model_name,
                               output_name=output_name, sub_key=sub_key,
                               example_weighted=example_weighted)
  return [metric_types.MetricComputation(
      keys=[key], preprocessors=None,
      combiner=_Combiner(key, eval_config, example_weighted))]


class _Combiner(beam.CombineFn):
  """Accumulates [per class: (examples, right)] weights."""

  def __init__(self, key: metric_types.MetricKey,
               eval_config: Optional[config_pb2.EvalConfig],
               example_weighted: bool):
    self._key = key
    self._eval_config = eval_config
    self._example_weighted = example_weighted

  def create_accumulator(self) -> Dict[int, List[float]]:
    return {}

  def add_input(self, accumulator: Dict[int, List[float]],
                element: metric_types.StandardMetricInputs
                ) -> Dict[int, List[float]]:
    for label, prediction, weight in (
        metric_util.to_label_prediction_example_weight(
            element, eval_config=self._eval_config,
            model_name=self._key.model_name,
            output_name=self._key.output_name,
            example_weighted=self._example_weighted, flatten=False,
            allow_none=True)):
      label = int(np.asarray(label).reshape(-1)[0])
      predicted = int(np.argmax(np.asarray(prediction).reshape(-1)))
      weight = float(metric_util.safe_to_scalar(weight))
      counts = accumulator.setdefault(label, [0.0, 0.0])
      counts[0] += weight
      counts[1] += weight if predicted == label else 0.0
    return accumulator

  def merge_accumulators(self, accumulators: Iterable[Dict[int, List[float]]]
                         ) -> Dict[int, List[float]]:
    merged: Dict[int, List[float]] = {}
    for accumulator in accumulators:
      for label, (seen, right) in accumulator.items():
        counts = merged.setdefault(label, [0.0, 0.0])
        counts[0] += seen
        counts[1] += right
    return merged

  def extract_output(self, accumulator: Dict[int, List[float]]
                     ) -> metric_types.MetricsDict:
    recalls = [right / seen for seen, right in accumulator.values() if seen]
    return {self._key: float(np.mean(recalls)) if recalls else float('nan')}


metric_types.register_metric(MulticlassBalancedAccuracy)
