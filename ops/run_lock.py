"""One run at a time per pipeline root, and a record of who runs there.

TFX's LocalDagRunner (and BeamDagRunner) runs a pipeline in one process;
killed mid-run (kill -9, the OOM killer, a reboot), it leaves its executions
RUNNING in ML Metadata forever. run_pipeline therefore:
  * holds an exclusive flock on `<pipeline root>/run.lock` for the whole
    run. The kernel drops it when the process dies, however it dies. A
    second run on the same pipeline root is refused while the first holds
    it (`RunInProgress`), instead of interleaving its executions with it.
  * records in that file who holds it (host, boot id, pid and the process's
    start time), which store and pipeline it writes, and the TFX pipeline
    run id of each `runner.run` before the run starts (`new_run_id`, pinned
    by tfx_private.pin_run_id; TFX would otherwise pick it inside the
    runner), so a kill at any moment leaves every run context it made named.
  * at the next run, holding the lock, reads the previous record. Its runs
    are dead, never guessed, when the record has no `finished` line and its
    process is gone (`Holder.gone`): same host and another boot, or no such
    process, or a process with that pid but another start time (a reused
    pid), or a zombie, or an earlier run of this very process (the lock is
    free, so it has ended). A record from another host is never judged. The
    dead run's ids stay in the record until its executions are marked, so a
    run that dies before it could mark them passes them on.
What is done with a dead run's executions: ops/dead_runs.py.

The flock is project/file_lock.py's (the model base path lock's too), and
who a process is (pid, start time, zombie or not) psutil's, through
project/processes.py; besides them, the standard library and ml_metadata's
protos only.
"""

import dataclasses
import datetime
import json
import os
import socket
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

from ml_metadata.proto import metadata_store_pb2
from lineage import secrets
from project import file_lock
from project import processes

LOCK_FILE = 'run.lock'


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


def process_start(pid: int) -> Optional[float]:
  """When process `pid` started (seconds since boot; project/processes)."""
  return processes.start_time(pid)


@dataclasses.dataclass
class Holder:
  """A lock file's record: the run that holds, or last held, the lock."""
  pid: int
  host: str
  boot_id: str
  process_start: Optional[float]  # seconds since boot (project/processes)
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
    state = processes.status(self.pid, self.process_start)
    if state == processes.GONE:
      return True, 'the process is gone: killed or crashed'
    if state == processes.REUSED:
      return True, (f'the process is gone: killed or crashed (pid '
                    f'{self.pid} is now another process)')
    if state == processes.ZOMBIE:
      return True, 'the process is gone: killed or crashed (a zombie)'
    if self.pid == os.getpid():
      return True, 'an earlier run of this process ended without marking them'
    if state == processes.UNKNOWN:
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
    if not file_lock.lock(fd, 0, path=self.path):  # never waits
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

