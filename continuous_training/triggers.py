"""Should the pipeline run now, and why: the five triggers, checked.

`decide` reads the data on disk, ML Metadata, the monitor's report and the
clock it is given, and writes nothing (the controller records what it
decided, continuous_training/decisions.py):

  new_span   a span-N/ directory on disk that ExampleGen has not ingested
             (data/spans.py: what a span directory is)
  schedule   `schedule_days` of (logical) time since the last training run
             recorded in ML Metadata (by the controller or by hand)
  drift      the newest new span drifted from the span before it
             (continuous_training/drift.py: the drift/skew rule of
             monitoring/distribution.py)
  degraded   the monitor's report says live performance of the served
             version degraded (a report is acted on once)
  on_demand  a reason given (`--force` / `--reason TEXT`)
"""

import datetime
import json
import os
from typing import Any, Dict, List, Optional

import ml_metadata as mlmd
from continuous_training import config as ct_config
from continuous_training import decisions
from data import spans
from lineage import graph
from pipeline import configs
from project import display
from serving import model_config


def read_monitor_report(path: str) -> Optional[Dict[str, Any]]:
  """The monitor's report.json, or None (missing file = no signal).

  Contract: {"model_version": str, "live_accuracy": float|null,
  "degraded": bool, "reason": str, "created": ISO time}. A file that breaks
  it raises ValueError naming the file and the field.
  """
  if not path or not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      report = json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f'{path}: not JSON: {e}') from None
  if not isinstance(report, dict):
    raise ValueError(f'{path}: expected a JSON object')
  for key, kind in (('model_version', str), ('degraded', bool),
                    ('created', str)):
    if not isinstance(report.get(key), kind):
      raise ValueError(f'{path}: field {key!r} must be a {kind.__name__}, '
                       f'got {report.get(key)!r}')
  return report


def decide(cfg: configs.PipelineConfig, ct: ct_config.CTConfig,
           store: mlmd.MetadataStore, now: datetime.datetime,
           force_reason: Optional[str] = None) -> decisions.Decision:
  """Checks every trigger; runs when an enabled one fired. Writes nothing."""
  enabled = set(ct.triggers) | {'on_demand'}
  fired: Dict[str, str] = {}
  notes: List[str] = []
  available = spans.spans_on_disk(cfg.data_root)
  ingested = set(graph.ingested_spans(store, cfg.pipeline_name,
                                      cfg.data_root))
  new = [s for s in available if s not in ingested]
  target = new[-1] if new else (available[-1] if available else None)

  if force_reason is not None:
    fired['on_demand'] = f'on demand: {force_reason or "--force"}'

  if new:
    fired['new_span'] = (f'new span(s) {", ".join(map(str, new))} on disk, '
                         'not yet ingested')
  else:
    notes.append('no new span' + (f' (latest, {target}, is ingested)'
                                  if target else ' (no span on disk)'))

  runs = [e for e in decisions.past_decisions(store, cfg.pipeline_name)
          if decisions.ran(e)]
  last_run = decisions.last_training_run(store, cfg.pipeline_name)
  if last_run is None:
    notes.append('schedule: no earlier training run in ML Metadata')
  else:
    last, how = last_run
    due = last + datetime.timedelta(days=ct.schedule_days)
    if now >= due:
      fired['schedule'] = (f'schedule: {(now - last).days} days since the '
                           f'last training run ({last.date()}, {how}), '
                           f'interval {ct.schedule_days:g} days')
    else:
      notes.append(f'schedule: next run due {due.date()}')

  drift_report = None
  previous = [s for s in available if target is not None and s < target]
  unreadable = None
  if new and previous:
    from ops import csv_check  # pylint: disable=g-import-not-at-top
    unreadable = csv_check.check_span(cfg.data_root, target)
  if unreadable:  # the run that follows stops on it and says where
    notes.append(f'drift: not measured, {unreadable}')
  elif new and previous:
    from continuous_training import drift  # pylint: disable=g-import-not-at-top
    drift_report = drift.detect(store, cfg, target, previous[-1],
                                ct.thresholds())
    if drift_report.drifted:
      fired['drift'] = 'drift: ' + drift_report.summary()
    else:
      notes.append('drift: ' + drift_report.summary())
  elif new:
    notes.append(f'drift: span {target} has no earlier span to compare with')

  monitor = None
  try:
    monitor = read_monitor_report(ct.report_of(cfg.problem))
  except ValueError as e:
    notes.append(f'monitor: report ignored ({e})')
  if monitor is None:
    if not any(n.startswith('monitor:') for n in notes):
      notes.append('monitor: no report')
  elif not monitor['degraded']:
    notes.append(f'monitor: version {monitor["model_version"]} not degraded '
                 f'(live accuracy {display.figure(monitor.get("live_accuracy"))})')
  else:
    acted = {e.properties['monitor_created'].string_value for e in runs
             if 'degraded' in e.properties['trigger'].string_value}
    # What TF Serving would serve: the newest version directory on disk.
    served = [str(v) for v in
              model_config.versions_on_disk(cfg.serving_model_dir)]
    if monitor['created'] in acted:
      notes.append(f'monitor: degraded report of {monitor["created"]} was '
                   'already acted on')
    elif served and monitor['model_version'] != served[-1]:
      notes.append(f'monitor: degraded report is about version '
                   f'{monitor["model_version"]}, version {served[-1]} is '
                   'served now')
    else:
      fired['degraded'] = (
          f'degraded: live accuracy {display.figure(monitor.get("live_accuracy"))} '
          f'of version '
          f'{monitor["model_version"]}: {monitor.get("reason", "")}')

  if monitor is not None and monitor.get('skew_detected'):
    skewed = sorted(name for name, found in (monitor.get('skew') or {}).items()
                    if isinstance(found, dict) and found.get('anomalous'))
    notes.append(
        f'monitor: training/serving skew in {", ".join(skewed) or "?"} '
        'reported; not a retraining trigger (serving differs from the '
        'training data: retraining on that data cannot fix it; new labelled '
        'data arrives as a new span)')

  triggers = [t for t in ct_config.TRIGGERS if t in fired and t in enabled]
  for t in ct_config.TRIGGERS:
    if t in fired and t not in enabled:
      notes.append(f'{fired[t]} (trigger {t} disabled)')
  run = bool(triggers) and target is not None
  if triggers and target is None:
    notes.append(f'no span under {cfg.data_root}: nothing to run on')
  return decisions.Decision(
      run=run, triggers=triggers, notes=[fired[t] for t in triggers] + notes,
      span=target if run else (new[-1] if new else target),
      now=now, drift=drift_report, monitor=monitor)
