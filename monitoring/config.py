"""Every threshold and path default of the monitor, defined once.

The CLI exposes each as a flag (python -m monitoring --help); tests and the
CT controller read the same values from here.
"""

import dataclasses
import os

from monitoring import distribution
from project import paths


def monitoring_dir(output_dir: str) -> str:
  """Where the monitor of an outputs directory keeps its logs and report."""
  return os.path.join(output_dir, 'monitoring')


def report_path(output_dir: str) -> str:
  """The monitor's report.json under an outputs directory: the contract file
  the CT controller (continuous_training/controller.py) reads; a problem
  (outputs/<problem>/) and a replay have their own outputs directory, so
  their own report path."""
  return os.path.join(monitoring_dir(output_dir), 'report.json')


def default_report(problem: str = paths.DEFAULT_PROBLEM) -> str:
  """A problem's report: outputs/<problem>/monitoring/report.json."""
  return report_path(paths.problem_outputs(problem))


def log_prefix(problem: str = paths.DEFAULT_PROBLEM) -> str:
  """Where a problem's served model logs its predictions (the filename
  prefix serving/deploy/models-logging.config gives the taxi model)."""
  return os.path.join(monitoring_dir(paths.problem_outputs(problem)),
                      'prediction_logs', problem)


@dataclasses.dataclass(frozen=True)
class Thresholds:
  """When served traffic counts as skewed, and the model as degraded."""
  # Skew is drift's comparison (monitoring/distribution.py) with drift's
  # thresholds, defined once in monitoring/distribution.py (DRIFT_*): a feature is
  # skewed when the chi-square test of served vs training counts is
  # significant at `alpha` (family-wise over the features) and the effect is
  # above its floor: L-infinity of category shares for categorical features
  # (strings and integer categories), Jensen-Shannon divergence of the
  # training deciles' bins for numeric ones.
  alpha: float = distribution.DRIFT_ALPHA
  categorical_linf: float = distribution.DRIFT_LINF_THRESHOLD
  numeric_js: float = distribution.DRIFT_JSD_THRESHOLD
  # Live accuracy below the Evaluator's by more than this, shown with this
  # one-sided confidence (monitor.verdict): degraded.
  max_accuracy_drop: float = 0.05
  confidence: float = 0.95
  # Fewer labelled predictions than this: no accuracy verdict (too noisy).
  min_labelled: int = 100

  def rule(self):
    """The skew rule (a monitoring.distribution.Rule) these thresholds make."""
    return distribution.Rule(alpha=self.alpha,
                             categorical_floor=self.categorical_linf,
                             numeric_floor=self.numeric_js)


THRESHOLDS = Thresholds()
