"""No execution RUNNING for good: what a run marks that a dead run left.

A run killed mid-run leaves its executions NEW or RUNNING in ML Metadata
forever: nothing else ever finishes them. Holding the pipeline root's lock
(ops/run_lock.py, which also says when a run is provably dead),
run_pipeline:
  * marks the executions still NEW or RUNNING in a dead run's contexts
    CANCELED, with TFX's error-message custom property, and their pending
    outputs ABANDONED: what TFX's own orchestrator does to the active
    executions of a node it stops (tfx/orchestration/experimental/core/
    pipeline_ops.py, `_cancel_executions`; a task that failed is FAILED,
    one that was stopped CANCELED). `recover_dead_run`.
  * deletes what those executions half-wrote under the pipeline root
    (`remove_litter`).
  * at the end of its own run, marks what its runner left RUNNING in this
    run's contexts: FAILED after an error TFX's launcher does not publish
    (a component driver that raised), CANCELED after an interruption
    (Ctrl-C). A returned run leaves nothing RUNNING. `mark_active`.
TFX's caching reuses only COMPLETE or CACHED executions, and each run has a
new `pipeline_run` context, so marked executions are neither reused nor
resumed: the next run runs their components again.

Only ml_metadata here, no TFX import.
"""

import dataclasses
import os
import shutil
from typing import List, Optional, Tuple

import ml_metadata as mlmd
from ml_metadata.proto import metadata_store_pb2
from lineage import graph
from ops import run_lock
from ops import tfx_private

_ACTIVE = (metadata_store_pb2.Execution.NEW,
           metadata_store_pb2.Execution.RUNNING)
Execution = metadata_store_pb2.Execution


@dataclasses.dataclass
class Marked:
  """Executions of one pipeline run set from NEW/RUNNING to `state`."""
  run: str
  state: str
  executions: List[Tuple[int, str]]  # (execution id, node id)

  @property
  def nodes(self) -> str:
    return ', '.join(node for _, node in self.executions)


def _node_id(store: mlmd.MetadataStore, execution_id: int,
             pipeline_name: str) -> str:
  contexts = store.get_contexts_by_execution(execution_id)
  # Another pipeline of the same root and lock: the scoring pipeline
  # (pipeline/scoring.py) writes to <root>/<node>/ too.
  return (graph.node_id(contexts, pipeline_name) or graph.node_id(contexts)
          or str(execution_id))


def mark_active(store: mlmd.MetadataStore, pipeline_name: str,
                run_ids: List[str], state: int, why: str) -> List[Marked]:
  """Sets the NEW/RUNNING executions of these runs to `state` (with `why`).

  Their pending output artifacts become ABANDONED (TFX's LocalDagRunner
  registers outputs only when it publishes, so there are seldom any).
  """
  marked = []
  for run_id in run_ids:
    # [] when killed before TFX made the run's context: nothing ran.
    active = sorted((e for e in graph.run_executions(store, run_id)
                     if e.last_known_state in _ACTIVE), key=lambda e: e.id)
    if not active:
      continue
    for execution in active:
      execution.last_known_state = state
      execution.custom_properties[tfx_private.ERROR_CODE_KEY].int_value = (
          tfx_private.CANCELLED_CODE if state == Execution.CANCELED
          else tfx_private.UNKNOWN_CODE)
      execution.custom_properties[tfx_private.ERROR_MSG_KEY].string_value = why
    store.put_executions(active)
    pending = [e.artifact_id for e in store.get_events_by_execution_ids(
        [e.id for e in active])
               if e.type == metadata_store_pb2.Event.PENDING_OUTPUT]
    abandoned = [a for a in store.get_artifacts_by_id(pending)
                 if a.state == metadata_store_pb2.Artifact.PENDING]
    for artifact in abandoned:
      artifact.state = metadata_store_pb2.Artifact.ABANDONED
    if abandoned:
      store.put_artifacts(abandoned)
    marked.append(Marked(run_id, Execution.State.Name(state), [
        (e.id, _node_id(store, e.id, pipeline_name)) for e in active]))
  return marked


def remove_litter(store: mlmd.MetadataStore, pipeline_root: str,
                  marked: List[Marked]) -> List[str]:
  """Deletes what the executions marked here wrote before their run died.

  A killed execution's outputs stay on disk: `<root>/<node>/<output>/<id>/`
  (Transform's half-written `.temp_path` among them) and
  `<root>/<node>/.system/executor_execution/<id>/`. TFX never reuses them:
  a rerun is a new execution with new directories. They are provably dead
  once the execution is CANCELED here, unless an artifact that is not
  ABANDONED has that URI (then it is kept). Called holding the run lock, so
  no live run writes under the root. Returns the paths removed.
  """
  removed = []
  for m in marked:
    for execution_id, node in m.executions:
      node_dir = os.path.join(pipeline_root, node)
      candidates = [os.path.join(node_dir, output, str(execution_id))
                    for output in sorted(_listdir(node_dir))
                    if not output.startswith('.')]
      candidates.append(os.path.join(node_dir, '.system',
                                     'executor_execution', str(execution_id)))
      for path in candidates:
        if not os.path.isdir(path) or any(
            a.state != metadata_store_pb2.Artifact.ABANDONED
            for a in store.get_artifacts_by_uri(path)):
          continue
        shutil.rmtree(path, ignore_errors=True)
        if not os.path.exists(path):
          removed.append(path)
  return removed


def _listdir(path: str) -> List[str]:
  try:
    return os.listdir(path)
  except OSError:
    return []


def _count(n: int) -> str:
  return f'{n} execution{"s" if n != 1 else ""}'


def recover_dead_run(store: mlmd.MetadataStore,
                     previous: Optional[run_lock.Holder], pipeline_name: str,
                     this_store: str) -> Tuple[List[Marked], List[str]]:
  """Marks what a dead previous run left active; (marked, console lines).

  Called holding the lock. Nothing is touched unless the previous record
  is of this store and pipeline, unfinished, and its process provably gone.
  """
  if (previous is None or previous.finished or not previous.runs or
      previous.store != this_store or previous.pipeline != pipeline_name):
    return [], []
  dead, why = previous.gone()
  if not dead:
    active = []
    for run_id in previous.runs:
      active += [e for e in graph.run_executions(store, run_id)
                 if e.last_known_state in _ACTIVE]
    if not active:
      return [], []
    runs = sorted({run.name for run in (graph.run_context(store, e.id)
                                        for e in active) if run})
    return [], [
        f'Left {_count(len(active))} of pipeline run {", ".join(runs)} '
        f'RUNNING ({previous.who()}): {why}, so it is not known to be dead.']
  reason = (f'Canceled by the next run: its runner ({previous.who()}) '
            f'died mid-run; {why}.')
  marked = mark_active(store, pipeline_name, previous.runs, Execution.CANCELED,
                       reason)
  lines = [
      f'Marked {_count(len(m.executions))} CANCELED that a dead run left '
      f'RUNNING: {m.nodes} (pipeline run {m.run}; {previous.who()}; {why}).'
      for m in marked]
  return marked, lines
