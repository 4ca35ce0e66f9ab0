"""Every threshold and path default of the monitor, defined once.

The CLI exposes each as a flag (python -m monitoring --help); tests and the
CT controller read the same values from here.
"""

import dataclasses
import os

from pipeline import configs

MONITORING_DIR = os.path.join(configs.OUTPUT_DIR, 'monitoring')
# Where serving/deploy/models-logging.config points the server's logs.
LOG_PREFIX = os.path.join(MONITORING_DIR, 'prediction_logs', configs.MODEL_NAME)
# The contract file the CT controller (pipeline/ct_controller.py) reads.
REPORT_PATH = os.path.join(MONITORING_DIR, 'report.json')


@dataclasses.dataclass(frozen=True)
class Thresholds:
  """When served traffic counts as skewed, and the model as degraded."""
  # TFDV skew comparators (the same kinds the drift check uses): L-infinity
  # distance between the value frequencies of a categorical (string) feature,
  # Jensen-Shannon divergence between the histograms of a numeric one.
  categorical_linf: float = 0.2
  numeric_js: float = 0.35
  # Live accuracy below the Evaluator's by more than this: degraded.
  max_accuracy_drop: float = 0.05
  # Fewer labelled predictions than this: no accuracy verdict (too noisy).
  min_labelled: int = 100
  # A prediction above this is a "big tip" (Keras BinaryAccuracy's rule).
  decision_threshold: float = 0.5


THRESHOLDS = Thresholds()
