"""A CT decision, and its record in ML Metadata and in decisions.jsonl.

Every decision, "no run" included, is a `CTDecision` execution (properties
trigger, reason, span, logical_date, drift, monitor report, outcome),
associated with a `ct_controller` context and, when it started a run, with
that run's `pipeline_run` context; and one JSON line in
<pipeline-root>/ct/decisions.jsonl. The triggers (continuous_training/
triggers.py) read earlier decisions back from here: the logical date of the
last training run, and which degraded report was already acted on.
"""

import dataclasses
import datetime
import json
import logging
import os
from typing import Any, Dict, List, Optional, Tuple

import ml_metadata as mlmd
from ml_metadata.proto import metadata_store_pb2
from lineage import graph

EXECUTION_TYPE = 'CTDecision'
CONTEXT_TYPE = 'ct_controller'
_STRING, _INT = metadata_store_pb2.STRING, metadata_store_pb2.INT
EXECUTION_PROPERTIES = {
    'pipeline': _STRING, 'trigger': _STRING, 'reason': _STRING,
    'span': _INT, 'logical_date': _STRING, 'run': _INT, 'drift': _STRING,
    'drift_found': _INT, 'monitor_report': _STRING, 'monitor_created': _STRING,
    'outcome': _STRING, 'blessed': _INT, 'pushed_version': _STRING,
    'pipeline_run': _STRING, 'release': _STRING,
}
DECISIONS_LOG = os.path.join('ct', 'decisions.jsonl')  # under pipeline root


@dataclasses.dataclass
class Decision:
  """What the controller decided, and every reason it had."""
  run: bool
  triggers: List[str]  # fired and enabled, in config.TRIGGERS order
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


def parse_time(text: str) -> datetime.datetime:
  """ISO date or time ('2014-01-01', '2014-01-01T12:00:00+00:00'); UTC if naive."""
  value = datetime.datetime.fromisoformat(text.replace('Z', '+00:00'))
  return value if value.tzinfo else value.replace(tzinfo=datetime.timezone.utc)


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


def ran(execution: metadata_store_pb2.Execution) -> bool:
  """Whether a recorded decision started a run."""
  return execution.properties['run'].int_value == 1


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
  run = graph.run_context(store, newest.id)
  if run is not None:
    for e in graph.run_executions(store, run.name):
      if e.type == EXECUTION_TYPE and e.properties['logical_date'].string_value:
        return (parse_time(e.properties['logical_date'].string_value),
                f'CT decision {e.id}')
  made = datetime.datetime.fromtimestamp(newest.create_time_since_epoch / 1000,
                                         datetime.timezone.utc)
  return made, f'pipeline run {run.name if run else "?"}'


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


def set_release(store: mlmd.MetadataStore, execution_id: Optional[int],
                version: str) -> None:
  """Names the pipeline release the decision's run runs (before it runs:
  a release that fails at run time is then named by the decision)."""
  if execution_id is None:
    return
  [execution] = store.get_executions_by_id([execution_id])
  execution.properties['release'].string_value = version
  store.put_executions([execution])


@dataclasses.dataclass
class Refused:
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
  del pipeline_name  # the execution names it
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


def log_decision(pipeline_root: str, decision: Decision) -> None:
  """One JSON line per decision, next to the run logs."""
  path = os.path.join(pipeline_root, DECISIONS_LOG)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'a') as f:
    f.write(json.dumps({
        'now': decision.now.isoformat(), 'run': decision.run,
        'trigger': decision.trigger, 'span': decision.span,
        'reasons': decision.notes, 'execution_id': decision.execution_id,
        'drift': json.loads(decision.drift.to_json()) if decision.drift
                 else None}) + '\n')
  logging.info('CT decision %s: %s', decision.trigger, decision.reason)
