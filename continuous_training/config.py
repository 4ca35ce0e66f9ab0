"""Every knob of continuous training, defined once: the controller's and the
replay's.

`CTConfig` holds the controller's defaults; `add_flags` / `from_flags` make
them flags of `python -m continuous_training.controller` and of the replay.
The drift thresholds are the drift/skew rule's (monitoring/distribution.py
DRIFT_*), the monitor's report path is the monitor's (monitoring/config.py
default_report): the controller reads them, it does not own them.
"""

import argparse
import dataclasses
import os
from typing import Optional, Sequence

from monitoring import config as monitor_config
from monitoring import distribution
from project import paths

TRIGGERS = ('on_demand', 'new_span', 'schedule', 'drift', 'degraded')
# Schedule trigger: retrain when this much logical time passed since the
# last training run (spans are quarters, so 180 days = two quarters).
SCHEDULE_DAYS = 180
# Replay of the spans through the controller: its own outputs and knobs
# (fewer train steps than `make run`, so 16 runs fit in a learner's wait).
def replay_dir(problem: str = paths.DEFAULT_PROBLEM) -> str:
  """outputs/<problem>/replay: a replay's own outputs."""
  return os.path.join(paths.problem_outputs(problem), 'replay')


REPLAY_DEFAULTS = dict(window_spans=4, train_steps=300, eval_steps=50)


@dataclasses.dataclass
class CTConfig:
  """Controller knobs. Field == flag."""
  schedule_days: float = SCHEDULE_DAYS
  # The drift rule (monitoring/distribution.py): significant at
  # drift_alpha (family-wise) and an effect above the floor of its kind.
  drift_alpha: float = distribution.DRIFT_ALPHA
  drift_linf_threshold: float = distribution.DRIFT_LINF_THRESHOLD
  drift_jsd_threshold: float = distribution.DRIFT_JSD_THRESHOLD
  # The monitor's report.json; missing file = no signal. None: the
  # problem's (monitoring/config.py default_report).
  monitoring_report: Optional[str] = None
  triggers: Sequence[str] = TRIGGERS  # enabled; on_demand always is

  def report_of(self, problem: str) -> str:
    """The monitor report the controller reads for `problem`."""
    return self.monitoring_report or monitor_config.default_report(problem)

  def thresholds(self):
    return distribution.Rule(alpha=self.drift_alpha,
                             categorical_floor=self.drift_linf_threshold,
                             numeric_floor=self.drift_jsd_threshold)


def add_flags(parser: argparse.ArgumentParser) -> None:
  """The controller's knobs, in a group of their own."""
  group = parser.add_argument_group('continuous training')
  d = CTConfig()
  group.add_argument('--schedule-days', type=float, default=d.schedule_days,
                     help='schedule trigger: run when this many days passed '
                     'since the last training run in ML Metadata (default: '
                     '%(default)s)')
  group.add_argument('--drift-alpha', type=float, default=d.drift_alpha,
                     help='drift: chi-square test level over all compared '
                     'features (Bonferroni); a feature drifts only if '
                     'significant and its effect is above its floor '
                     '(default: %(default)s)')
  group.add_argument('--drift-linf-threshold', type=float,
                     default=d.drift_linf_threshold,
                     help='drift effect floor of categorical features '
                     '(strings, hour, day, community areas): L-infinity '
                     'distance of category shares (default: %(default)s)')
  group.add_argument('--drift-jsd-threshold', type=float,
                     default=d.drift_jsd_threshold,
                     help='drift effect floor of numeric features: '
                     'Jensen-Shannon divergence of their bins at the '
                     'previous span\'s deciles (default: %(default)s)')
  group.add_argument('--monitoring-report', default=d.monitoring_report,
                     help='the monitor\'s report.json; missing = no signal '
                     '(default: outputs/<problem>/monitoring/report.json)')
  group.add_argument('--triggers', default=','.join(TRIGGERS[1:]),
                     help='enabled triggers, comma-separated, of '
                     f'{",".join(TRIGGERS[1:])} (on_demand always is; '
                     'default: all)')


def from_flags(args: argparse.Namespace) -> CTConfig:
  triggers = [t.strip() for t in args.triggers.split(',') if t.strip()]
  unknown = set(triggers) - set(TRIGGERS)
  if unknown:
    raise SystemExit(f'--triggers: unknown {sorted(unknown)}; known: '
                     f'{", ".join(TRIGGERS)}')
  return CTConfig(schedule_days=args.schedule_days,
                  drift_alpha=args.drift_alpha,
                  drift_linf_threshold=args.drift_linf_threshold,
                  drift_jsd_threshold=args.drift_jsd_threshold,
                  monitoring_report=args.monitoring_report,
                  triggers=tuple(triggers))
