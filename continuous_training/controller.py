"""Continuous-training controller: decide whether to run the pipeline, and why.

MLOps level 1 retrains automatically, but only for a reason. Each call looks
at the data on disk, ML Metadata, the monitor's report and the clock, and
runs the pipeline (latest span, rolling window of `--window-spans` valid
spans) when at least one trigger fires:

  new_span   a span-N/ directory on disk that ExampleGen has not ingested
  schedule   `--schedule-days` of (logical) time since the last training run
             recorded in ML Metadata (by the controller or by hand)
  drift      the newest new span drifted from the span before it
             (continuous_training/drift.py: the drift/skew rule of
             monitoring/distribution.py; thresholds in pipeline/configs.py)
  degraded   the monitor's report says live performance of the served
             version degraded (a report is acted on once)
  on_demand  `--force` / `--reason TEXT`

Every decision, "no run" included, is printed, appended to
<pipeline-root>/ct/decisions.jsonl, and recorded in ML Metadata as a
`CTDecision` execution (properties trigger, reason, span, logical_date,
drift, monitor report, outcome), associated with a `ct_controller` context
and, when it started a run, with that run's `pipeline_run` context.

The clock is injectable (`--now`) so that a replay (continuous_training/replay.py) or a
test can run history: each span's logical date is the day its quarter ends
(span 1 = 2013-Q1 arrives 2013-04-01), see `logical_date`.
"""

import argparse
import dataclasses
import datetime
import json
import logging
import os
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import ml_metadata as mlmd
from ml_metadata.proto import metadata_store_pb2
from monitoring import distribution
from pipeline import configs
from pipeline import console
from lineage import metadata_store
from pipeline import reproducible

START = time.time()

TRIGGERS = ('on_demand', 'new_span', 'schedule', 'drift', 'degraded')
EXECUTION_TYPE = 'CTDecision'
CONTEXT_TYPE = 'ct_controller'
FIRST_QUARTER = (2013, 1)  # span 1 (data/README.md)
_STRING, _INT = metadata_store_pb2.STRING, metadata_store_pb2.INT
EXECUTION_PROPERTIES = {
    'pipeline': _STRING, 'trigger': _STRING, 'reason': _STRING,
    'span': _INT, 'logical_date': _STRING, 'run': _INT, 'drift': _STRING,
    'drift_found': _INT, 'monitor_report': _STRING, 'monitor_created': _STRING,
    'outcome': _STRING, 'blessed': _INT, 'pushed_version': _STRING,
    'pipeline_run': _STRING,
}


@dataclasses.dataclass
class CTConfig:
  """Controller knobs; defaults from pipeline/configs.py. Field == flag."""
  schedule_days: float = configs.CT_SCHEDULE_DAYS
  # The drift rule (monitoring/distribution.py): significant at
  # drift_alpha (family-wise) and an effect above the floor of its kind.
  drift_alpha: float = distribution.DRIFT_ALPHA
  drift_linf_threshold: float = distribution.DRIFT_LINF_THRESHOLD
  drift_jsd_threshold: float = distribution.DRIFT_JSD_THRESHOLD
  monitoring_report: str = configs.MONITORING_REPORT
  triggers: Sequence[str] = TRIGGERS  # enabled; on_demand always is

  def thresholds(self):
    return distribution.Rule(alpha=self.drift_alpha,
                             categorical_floor=self.drift_linf_threshold,
                             numeric_floor=self.drift_jsd_threshold)


@dataclasses.dataclass
class Decision:
  """What the controller decided, and every reason it had."""
  run: bool
  triggers: List[str]  # fired and enabled, in TRIGGERS order
  notes: List[str]  # one line per trigger checked
  span: Optional[int]
  now: datetime.datetime
  drift: Any = None  # drift.DriftReport or None
  monitor: Optional[Dict[str, Any]] = None
  execution_id: Optional[int] = None

  @property
  def trigger(self) -> str:
    return '+'.join(self.triggers) or 'none'

  @property
  def reason(self) -> str:
    return '; '.join(self.notes)


@dataclasses.dataclass
class Result:
  decision: Decision
  outcome: Any = None  # run_pipeline.RunOutcome when a run was started


def logical_date(span: int) -> datetime.datetime:
  """When span N's quarter is complete: the first day of the next quarter."""
  quarter = (FIRST_QUARTER[0] * 4 + FIRST_QUARTER[1] - 1) + span
  return datetime.datetime(quarter // 4, (quarter % 4) * 3 + 1, 1,
                           tzinfo=datetime.timezone.utc)


def parse_time(text: str) -> datetime.datetime:
  """ISO date or time ('2014-01-01', '2014-01-01T12:00:00+00:00'); UTC if naive."""
  value = datetime.datetime.fromisoformat(text.replace('Z', '+00:00'))
  return value if value.tzinfo else value.replace(tzinfo=datetime.timezone.utc)


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


def past_decisions(store: mlmd.MetadataStore, pipeline_name: str
                  ) -> List[metadata_store_pb2.Execution]:
  """This pipeline's CTDecision executions, oldest first."""
  try:
    executions = store.get_executions_by_type(EXECUTION_TYPE)
  except mlmd.errors.NotFoundError:
    return []
  return sorted((e for e in executions
                 if e.properties['pipeline'].string_value == pipeline_name),
                key=lambda e: e.id)


def _ran(execution: metadata_store_pb2.Execution) -> bool:
  return execution.properties['run'].int_value == 1


def _figure(value: Any) -> str:
  """A report's number as people read it (0.8408, not 0.8407960199004975)."""
  return f'{value:.4g}' if isinstance(value, float) else str(value)


def last_training_run(store: mlmd.MetadataStore, pipeline_name: str
                     ) -> Optional[Tuple[datetime.datetime, str]]:
  """When this pipeline last trained (or reused) a model, and on which clock.

  The newest Trainer execution (ran or cached) in ML Metadata, whoever
  started its run. Its time is the logical date of the CT decision that
  started the run, when one did (a replay runs history on a logical
  clock), else the wall-clock time the run made it (`make run` by hand).
  """
  context = store.get_context_by_type_and_name(
      'node', f'{pipeline_name}.Trainer')
  if context is None:
    return None
  done = (metadata_store_pb2.Execution.COMPLETE,
          metadata_store_pb2.Execution.CACHED)
  trainers = [e for e in store.get_executions_by_context(context.id)
              if e.last_known_state in done]
  if not trainers:
    return None
  newest = max(trainers, key=lambda e: e.id)
  run = next((c for c in store.get_contexts_by_execution(newest.id)
              if c.type == 'pipeline_run'), None)
  if run is not None:
    for e in store.get_executions_by_context(run.id):
      if e.type == EXECUTION_TYPE and e.properties['logical_date'].string_value:
        return (parse_time(e.properties['logical_date'].string_value),
                f'CT decision {e.id}')
  made = datetime.datetime.fromtimestamp(newest.create_time_since_epoch / 1000,
                                         datetime.timezone.utc)
  return made, f'pipeline run {run.name if run else "?"}'


def decide(cfg: configs.PipelineConfig, ct: CTConfig,
           store: mlmd.MetadataStore, now: datetime.datetime,
           force_reason: Optional[str] = None) -> Decision:
  """Checks every trigger; runs when an enabled one fired. Writes nothing."""
  from pipeline import pusher  # pylint: disable=g-import-not-at-top
  from pipeline.run_pipeline import spans_on_disk  # pylint: disable=g-import-not-at-top
  enabled = set(ct.triggers) | {'on_demand'}
  fired: Dict[str, str] = {}
  notes: List[str] = []
  available = spans_on_disk(cfg.data_root)
  ingested = set(metadata_store.ingested_spans(store, cfg.pipeline_name,
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

  decisions = past_decisions(store, cfg.pipeline_name)
  runs = [e for e in decisions if _ran(e)]
  last_run = last_training_run(store, cfg.pipeline_name)
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
    from pipeline import csv_check  # pylint: disable=g-import-not-at-top
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
    monitor = read_monitor_report(ct.monitoring_report)
  except ValueError as e:
    notes.append(f'monitor: report ignored ({e})')
  if monitor is None:
    if not any(n.startswith('monitor:') for n in notes):
      notes.append('monitor: no report')
  elif not monitor['degraded']:
    notes.append(f'monitor: version {monitor["model_version"]} not degraded '
                 f'(live accuracy {_figure(monitor.get("live_accuracy"))})')
  else:
    acted = {e.properties['monitor_created'].string_value for e in runs
             if 'degraded' in e.properties['trigger'].string_value}
    served = [str(v) for v in pusher.versions(cfg.serving_model_dir)]
    if monitor['created'] in acted:
      notes.append(f'monitor: degraded report of {monitor["created"]} was '
                   'already acted on')
    elif served and monitor['model_version'] != served[-1]:
      notes.append(f'monitor: degraded report is about version '
                   f'{monitor["model_version"]}, version {served[-1]} is '
                   'served now')
    else:
      fired['degraded'] = (
          f'degraded: live accuracy {_figure(monitor.get("live_accuracy"))} '
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

  triggers = [t for t in TRIGGERS if t in fired and t in enabled]
  for t in TRIGGERS:
    if t in fired and t not in enabled:
      notes.append(f'{fired[t]} (trigger {t} disabled)')
  run = bool(triggers) and target is not None
  if triggers and target is None:
    notes.append(f'no span under {cfg.data_root}: nothing to run on')
  return Decision(run=run, triggers=triggers,
                  notes=[fired[t] for t in triggers] + notes,
                  span=target if run else (new[-1] if new else target),
                  now=now, drift=drift_report, monitor=monitor)


def _context(store: mlmd.MetadataStore, pipeline_name: str
            ) -> metadata_store_pb2.Context:
  type_id = store.put_context_type(
      metadata_store_pb2.ContextType(name=CONTEXT_TYPE))
  context = store.get_context_by_type_and_name(CONTEXT_TYPE, pipeline_name)
  if context is None:
    [context_id] = store.put_contexts([metadata_store_pb2.Context(
        type_id=type_id, name=pipeline_name)])
    context = store.get_contexts_by_id([context_id])[0]
  return context


def record(store: mlmd.MetadataStore, pipeline_name: str,
           decision: Decision) -> int:
  """Writes the decision as a CTDecision execution; returns its id.

  RUNNING when it started a run (attach_run completes it), else COMPLETE.
  """
  type_id = store.put_execution_type(
      metadata_store_pb2.ExecutionType(name=EXECUTION_TYPE,
                                       properties=EXECUTION_PROPERTIES),
      can_add_fields=True)
  execution = metadata_store_pb2.Execution(
      type_id=type_id,
      last_known_state=(metadata_store_pb2.Execution.RUNNING if decision.run
                        else metadata_store_pb2.Execution.COMPLETE))
  p = execution.properties
  p['pipeline'].string_value = pipeline_name
  p['trigger'].string_value = decision.trigger
  p['reason'].string_value = decision.reason
  if decision.span is not None:
    p['span'].int_value = decision.span
  p['logical_date'].string_value = decision.now.isoformat()
  p['run'].int_value = int(decision.run)
  if decision.drift is not None:
    p['drift'].string_value = decision.drift.to_json()
    p['drift_found'].int_value = int(bool(decision.drift.drifted))
  if decision.monitor is not None:
    p['monitor_report'].string_value = json.dumps(decision.monitor,
                                                  sort_keys=True)
    p['monitor_created'].string_value = decision.monitor['created']
  p['outcome'].string_value = 'running' if decision.run else 'no run'
  execution_id, _, _ = store.put_execution(
      execution, artifact_and_events=[],
      contexts=[_context(store, pipeline_name)])
  return execution_id


@dataclasses.dataclass
class _Refused:
  """The outcome of a run that never started, for attach_run."""
  error: str
  ok: bool = False
  blessed: Optional[bool] = None
  pushed_version: Optional[str] = None
  run_id: Optional[str] = None


def attach_run(store: mlmd.MetadataStore, pipeline_name: str,
               execution_id: int, outcome: Any) -> Optional[str]:
  """Completes the decision with the run's outcome and links its run context.

  The `pipeline_run` context is the one of `outcome.run_id` (the run just
  made); none when the run stopped before TFX created one (e.g. a bad CSV
  line): then the decision is linked to no run rather than to the last
  one. Returns the run's name.
  """
  [execution] = store.get_executions_by_id([execution_id])
  run_id = outcome.run_id
  run = (store.get_context_by_type_and_name('pipeline_run', run_id)
         if run_id else None)
  p = execution.properties
  execution.last_known_state = (metadata_store_pb2.Execution.COMPLETE
                                if outcome.ok else
                                metadata_store_pb2.Execution.FAILED)
  if outcome.ok:
    p['outcome'].string_value = (
        f'pushed version {outcome.pushed_version}' if outcome.pushed_version
        else 'not blessed' if outcome.blessed is False else 'nothing new')
  else:
    p['outcome'].string_value = f'failed: {outcome.error}'[:2000]
  if outcome.blessed is not None:
    p['blessed'].int_value = int(outcome.blessed)
  if outcome.pushed_version:
    p['pushed_version'].string_value = outcome.pushed_version
  if run is not None:
    p['pipeline_run'].string_value = run.name
  store.put_executions([execution])
  if run is not None:
    store.put_attributions_and_associations(
        [], [metadata_store_pb2.Association(execution_id=execution_id,
                                            context_id=run.id)])
  return run.name if run is not None else None


def format_decision(decision: Decision) -> str:
  head = (f'CT decision at {decision.now.date()}: '
          + (f'RUN on span {decision.span} (trigger {decision.trigger})'
             if decision.run else 'no run'))
  return '\n'.join([head] + [f'  - {note}' for note in decision.notes])


def _log_decision(cfg: configs.PipelineConfig, decision: Decision) -> None:
  """One JSON line per decision, next to the run logs."""
  path = os.path.join(cfg.pipeline_root, 'ct', 'decisions.jsonl')
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'a') as f:
    f.write(json.dumps({
        'now': decision.now.isoformat(), 'run': decision.run,
        'trigger': decision.trigger, 'span': decision.span,
        'reasons': decision.notes, 'execution_id': decision.execution_id,
        'drift': json.loads(decision.drift.to_json()) if decision.drift
                 else None}) + '\n')
  logging.info('CT decision %s: %s', decision.trigger, decision.reason)


def run_once(cfg: configs.PipelineConfig, ct: CTConfig,
             make_runner: Callable[[], Any],
             now: Optional[datetime.datetime] = None,
             force_reason: Optional[str] = None,
             dry_run: bool = False,
             started_at: Optional[float] = None) -> Result:
  """Decides, records the decision, runs the pipeline if it said so."""
  now = now or datetime.datetime.now(datetime.timezone.utc)
  connection = metadata_store.store_config(cfg)
  store = metadata_store.open_store(connection)
  decision = decide(cfg, ct, store, now, force_reason)
  if not dry_run:
    decision.execution_id = record(store, cfg.pipeline_name, decision)
    _log_decision(cfg, decision)
  print(format_decision(decision)
        + (f'\n  recorded in ML Metadata: {EXECUTION_TYPE} execution '
           f'{decision.execution_id}' if decision.execution_id else
           '\n  (dry run: nothing recorded)'), flush=True)
  if not decision.run or dry_run:
    return Result(decision)
  from pipeline.run_pipeline import run_pipeline  # pylint: disable=g-import-not-at-top
  try:
    outcome = run_pipeline(dataclasses.replace(cfg, span=decision.span),
                           make_runner, started_at=started_at)
  except SystemExit as e:  # refused (another run holds the root) or bad input
    attach_run(metadata_store.open_store(connection), cfg.pipeline_name,
               decision.execution_id, _Refused(str(e)))
    raise
  run_name = attach_run(metadata_store.open_store(connection),
                        cfg.pipeline_name, decision.execution_id, outcome)
  print(f'  CT decision {decision.execution_id} attached to pipeline_run '
        f'{run_name}' if run_name else f'  CT decision {decision.execution_id}'
        ' recorded as failed: the run stopped before TFX started it',
        flush=True)
  return Result(decision, outcome)


def add_ct_flags(parser: argparse.ArgumentParser) -> None:
  """The controller's knobs (defaults from pipeline/configs.py)."""
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
                     '(default: %(default)s)')
  group.add_argument('--triggers', default=','.join(TRIGGERS[1:]),
                     help='enabled triggers, comma-separated, of '
                     f'{",".join(TRIGGERS[1:])} (on_demand always is; '
                     'default: all)')


def ct_from_flags(args: argparse.Namespace) -> CTConfig:
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


def main(argv: Optional[List[str]] = None) -> int:
  parser = argparse.ArgumentParser(
      description=__doc__.split('\n\n')[0],
      epilog=__doc__.split('\n\n', 1)[1],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--force', action='store_true',
                      help='run whatever the triggers say (on demand)')
  parser.add_argument('--reason', default=None,
                      help='why you want a run (implies --force; recorded)')
  parser.add_argument('--now', type=parse_time, default=None,
                      help='the controller\'s clock, ISO date/time (default: '
                      'now); a replay passes each span\'s logical date')
  parser.add_argument('--dry-run', action='store_true',
                      help='decide and print; record and run nothing')
  add_ct_flags(parser)
  configs.add_flags(parser)
  args = parser.parse_args(argv)
  cfg = configs.from_flags(args)
  ct = ct_from_flags(args)
  force = args.reason if args.reason is not None else (
      '--force' if args.force else None)
  console.quiet_logging(os.path.join(
      cfg.pipeline_root, 'logs', time.strftime('ct-%Y%m%d-%H%M%S.log')))
  from tfx.orchestration.local.local_dag_runner import LocalDagRunner  # pylint: disable=g-import-not-at-top
  result = run_once(cfg, ct, LocalDagRunner, now=args.now,
                    force_reason=force, dry_run=args.dry_run,
                    started_at=START)
  return 0 if result.outcome is None or result.outcome.ok else 1


if __name__ == '__main__':
  reproducible.fix_hash_seed()  # before anything runs TFX
  sys.exit(main())
