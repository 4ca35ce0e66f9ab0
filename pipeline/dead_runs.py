"""One run at a time per pipeline root, and no execution RUNNING for good.

TFX's LocalDagRunner (and BeamDagRunner) runs a pipeline in one process.
Killed mid-run (kill -9, the OOM killer, a reboot), it leaves its
executions RUNNING in ML Metadata forever: nothing else ever finishes them.
run_pipeline therefore:
  * holds an exclusive flock on `<pipeline root>/run.lock` for the whole
    run. The kernel drops it when the process dies, however it dies. A
    second run on the same pipeline root is refused while the first holds
    it (`RunInProgress`), instead of interleaving its executions with it.
  * records in that file who holds it (host, boot id, pid and the process's
    start time), which store and pipeline it writes, and the TFX pipeline
    run id of each `runner.run` before the run starts (`pin_run_id` chooses
    it; TFX would otherwise pick it inside the runner), so a kill at any
    moment leaves every run context it made named.
  * at the next run, holding the lock, reads the previous record. Its runs
    are dead, never guessed, when the record has no `finished` line and its
    process is gone: same host and another boot, or no such process, or a
    process with that pid but another start time (a reused pid), or a
    zombie, or an earlier run of this very process (the lock is free, so
    it has ended). A record from another host is never judged: its
    executions are left as they are, and the console says so. The dead
    run's ids stay in the record until its executions are marked, so a run
    that dies before it could mark them passes them on.
  * marks the executions still NEW or RUNNING in the dead runs' contexts
    CANCELED, with TFX's error-message custom property, and their pending
    outputs ABANDONED: what TFX's own orchestrator does to the active
    executions of a node it stops (tfx/orchestration/experimental/core/
    pipeline_ops.py, `_cancel_executions`; a task that failed is FAILED,
    one that was stopped CANCELED).
  * at the end of its own run, marks what its runner left RUNNING in this
    run's contexts: FAILED after an error TFX's launcher does not publish
    (a component driver that raised), CANCELED after an interruption
    (Ctrl-C). A returned run leaves nothing RUNNING.
TFX's caching reuses only COMPLETE or CACHED executions, and each run has a
new `pipeline_run` context, so marked executions are neither reused nor
resumed: the next run runs their components again.

Only ml_metadata here, no TFX import at module level (`pin_run_id` imports
it when a runner needs it).
"""

import dataclasses
import datetime
import fcntl
import json
import os
import shutil
import socket
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

import ml_metadata as mlmd
from ml_metadata.proto import metadata_store_pb2
from lineage import secrets

LOCK_FILE = 'run.lock'
# TFX's custom properties for why an execution stopped
# (tfx/orchestration/experimental/core/constants.py).
ERROR_CODE_KEY = '__execution_error_code__'
ERROR_MSG_KEY = '__execution_error_msg__'
_CANCELLED, _UNKNOWN = 1, 2  # google.rpc codes, as TFX records them
_ACTIVE = (metadata_store_pb2.Execution.NEW,
           metadata_store_pb2.Execution.RUNNING)
Execution = metadata_store_pb2.Execution


class RunInProgress(SystemExit):
  """Another live run holds the pipeline root's lock (exit status 1)."""


def store_id(connection: metadata_store_pb2.ConnectionConfig) -> str:
  """Which store a record's execution ids belong to (never a password)."""
  if connection.HasField('sqlite'):
    return 'sqlite:' + os.path.realpath(connection.sqlite.filename_uri)
  if connection.HasField('mysql'):
    m = connection.mysql
    return f'mysql:{m.host or m.socket}:{m.port or 3306}/{m.database}'
  return connection.WhichOneof('config') or 'unknown'


# --- Who a process is -------------------------------------------------------


def _read(path: str) -> Optional[str]:
  try:
    with open(path) as f:
      return f.read()
  except OSError:
    return None


def boot_id() -> str:
  """This boot of this machine ('' where Linux's /proc is missing)."""
  return (_read('/proc/sys/kernel/random/boot_id') or '').strip()


def _stat(pid: int) -> Optional[Tuple[str, int]]:
  """(state, start time in clock ticks since boot) of a live pid, or None."""
  text = _read(f'/proc/{pid}/stat')
  if not text:
    return None
  fields = text[text.rfind(')') + 2:].split()  # the name may hold spaces
  return fields[0], int(fields[19])


def process_start(pid: int) -> Optional[int]:
  stat = _stat(pid)
  return stat[1] if stat else None


def _pid_exists(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


@dataclasses.dataclass
class Holder:
  """A lock file's record: the run that holds, or last held, the lock."""
  pid: int
  host: str
  boot_id: str
  process_start: Optional[int]
  started: float  # Unix seconds
  command: str
  store: str
  pipeline: str
  runs: List[str] = dataclasses.field(default_factory=list)
  finished: bool = False

  @property
  def started_text(self) -> str:
    return time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(self.started))

  def who(self) -> str:
    here = self.host == socket.gethostname()
    return (f'pid {self.pid} on {"this host" if here else "host " + self.host}'
            f', started {self.started_text}')

  def gone(self) -> Tuple[Optional[bool], str]:
    """(True: provably dead, False: alive, None: cannot tell here, why).

    Meaningful to the holder of the lock only: an earlier run of this very
    process has then ended (a second run_pipeline in one process, even on
    another thread, cannot take the lock while the first holds it).
    """
    if self.host != socket.gethostname():
      return None, f'it ran on host {self.host}, which this one cannot check'
    if self.boot_id and boot_id() and self.boot_id != boot_id():
      return True, 'the machine has rebooted since'
    if not _pid_exists(self.pid):
      return True, 'the process is gone: killed or crashed'
    stat = _stat(self.pid)
    if stat is not None and self.process_start is not None and (
        stat[1] != self.process_start):
      return True, (f'the process is gone: killed or crashed (pid '
                    f'{self.pid} is now another process)')
    if stat is not None and stat[0] == 'Z':
      return True, 'the process is gone: killed or crashed (a zombie)'
    if self.pid == os.getpid():
      return True, 'an earlier run of this process ended without marking them'
    if stat is None:
      return None, f'pid {self.pid} is alive and cannot be checked here'
    return False, f'pid {self.pid} is still running'


def _parse(text: str) -> Optional[Holder]:
  """The record in a lock file ('' or garbage: None)."""
  holder = None
  for line in text.splitlines():
    try:
      entry = json.loads(line)
    except ValueError:
      continue  # a line cut short by a kill: the rest still counts
    if not isinstance(entry, dict):
      continue
    if 'pid' in entry:
      fields = {f.name for f in dataclasses.fields(Holder)} - {
          'runs', 'finished'}  # lines of their own
      try:
        holder = Holder(**{k: v for k, v in entry.items() if k in fields})
      except TypeError:
        holder = None
    elif holder is not None and 'run' in entry:
      holder.runs.append(str(entry['run']))
    elif holder is not None and 'finished' in entry:
      holder.finished = True
  return holder


class RunLock:
  """The pipeline root's lock, held for one run (see the module docstring).

  acquire() takes it, writes this run's record and returns the previous
  one; add_run() records a pipeline run id; settle() says the previous
  record's runs are dealt with; release() drops the lock, and says
  'finished' only once settled: a run that stops before it could mark a
  dead run's executions (its store did not open, say) passes them on to the
  next run. A remote pipeline root (gs://...) cannot be locked: then every
  method does nothing.
  """

  def __init__(self, pipeline_root: str, pipeline_name: str, store: str):
    self.path = (None if '://' in pipeline_root else
                 os.path.join(pipeline_root, LOCK_FILE))
    self.pipeline_name = pipeline_name
    self.store = store
    self.runs: List[str] = []  # this run's pipeline run ids
    self.settled = False
    self._fd: Optional[int] = None

  def acquire(self) -> Optional[Holder]:
    """Takes the lock, or raises RunInProgress naming the run that has it."""
    if self.path is None:
      return None
    os.makedirs(os.path.dirname(self.path), exist_ok=True)
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = _parse(self._text(fd))
      os.close(fd)
      who = (f'{holder.who()} ({holder.command})' if holder else
             'a process that has not written its record yet')
      if holder and holder.pid != os.getpid() and holder.gone()[0]:
        who += (', which is gone, but a process it started still holds '
                f'the lock (`fuser {self.path}` names it)')
      raise RunInProgress(
          f'Another run is in progress on pipeline root '
          f'{os.path.dirname(self.path)}: {who}. Wait for it to finish, or '
          'stop it; two runs at once would interleave their executions in '
          f'ML Metadata (lock: {self.path}).') from None
    self._fd = fd
    previous = _parse(self._text(fd))
    # A dead run's ids stay in the record until settle(): if this run dies
    # too before marking them, the next one still finds them.
    inherited = previous.runs if (
        previous and not previous.finished and previous.store == self.store
        and previous.pipeline == self.pipeline_name and
        previous.gone()[0]) else []
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    header = dataclasses.asdict(Holder(
        pid=os.getpid(), host=socket.gethostname(), boot_id=boot_id(),
        process_start=process_start(os.getpid()), started=time.time(),
        command=secrets.redact(' '.join([os.path.basename(sys.executable)]
                                        + sys.argv))[:500],
        store=self.store, pipeline=self.pipeline_name))
    del header['runs'], header['finished']  # lines of their own
    self._append(header)
    for run_id in inherited:
      self._append({'run': run_id})
    return previous

  @staticmethod
  def _text(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while True:
      chunk = os.read(fd, 1 << 16)
      if not chunk:
        return b''.join(chunks).decode('utf-8', 'replace')
      chunks.append(chunk)

  def _append(self, entry: Dict[str, Any]) -> None:
    if self._fd is not None:
      os.write(self._fd, (json.dumps(entry) + '\n').encode())

  def add_run(self, run_id: str) -> None:
    self.runs.append(run_id)
    self._append({'run': run_id})

  def settle(self) -> None:
    self.settled = True

  def release(self) -> None:
    if self._fd is None:
      return
    try:
      if self.settled:
        self._append({'finished': time.time()})
    finally:
      os.close(self._fd)  # drops the flock
      self._fd = None


def new_run_id() -> str:
  """A pipeline run id as LocalDagRunner makes them."""
  return datetime.datetime.now().isoformat()


def pin_run_id(runner: Any, run_id: str) -> Any:
  """`runner`, whose next run uses `run_id` as TFX's pipeline run id.

  IR-based runners (LocalDagRunner, BeamDagRunner) pick the id in
  run_with_ir by substituting the `pipeline-run-id` runtime parameter; it is
  substituted here first, which leaves theirs nothing to replace. Any other
  runner is returned as it is (its runs are then not recorded).
  """
  original = getattr(runner, 'run_with_ir', None)
  if original is None:
    return runner
  from tfx.dsl.compiler import constants  # pylint: disable=g-import-not-at-top
  from tfx.orchestration.portable import runtime_parameter_utils  # pylint: disable=g-import-not-at-top

  def run_with_ir(pipeline, *args, **kwargs):
    runtime_parameter_utils.substitute_runtime_parameter(
        pipeline, {constants.PIPELINE_RUN_ID_PARAMETER_NAME: run_id})
    return original(pipeline, *args, **kwargs)

  runner.run_with_ir = run_with_ir
  return runner


# --- Marking the executions a run left behind --------------------------------


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
  prefix = pipeline_name + '.'
  return next((c.name[len(prefix):] for c in store.get_contexts_by_execution(
      execution_id) if c.type == 'node' and c.name.startswith(prefix)),
              str(execution_id))


def mark_active(store: mlmd.MetadataStore, pipeline_name: str,
                run_ids: List[str], state: int, why: str) -> List[Marked]:
  """Sets the NEW/RUNNING executions of these runs to `state` (with `why`).

  Their pending output artifacts become ABANDONED (TFX's LocalDagRunner
  registers outputs only when it publishes, so there are seldom any).
  """
  marked = []
  for run_id in run_ids:
    context = store.get_context_by_type_and_name('pipeline_run', run_id)
    if context is None:
      continue  # killed before TFX made the context: nothing ran
    active = sorted((e for e in store.get_executions_by_context(context.id)
                     if e.last_known_state in _ACTIVE), key=lambda e: e.id)
    if not active:
      continue
    for execution in active:
      execution.last_known_state = state
      execution.custom_properties[ERROR_CODE_KEY].int_value = (
          _CANCELLED if state == Execution.CANCELED else _UNKNOWN)
      execution.custom_properties[ERROR_MSG_KEY].string_value = why
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


def recover_dead_run(store: mlmd.MetadataStore, previous: Optional[Holder],
                     pipeline_name: str, this_store: str
                    ) -> Tuple[List[Marked], List[str]]:
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
      context = store.get_context_by_type_and_name('pipeline_run', run_id)
      if context is not None:
        active += [e for e in store.get_executions_by_context(context.id)
                   if e.last_known_state in _ACTIVE]
    if not active:
      return [], []
    runs = sorted({c.name for e in active
                   for c in store.get_contexts_by_execution(e.id)
                   if c.type == 'pipeline_run'})
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
