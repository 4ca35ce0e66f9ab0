"""The base-path contract: what is on disk under a TF Serving model base path.

Numeric directories are versions (the only names a model server serves);
`.incoming-<v>/` is a push in progress, `.rolled-back/` holds rolled-back
versions, `.versions.log` records every push, rollback, promotion and CD
step, and `<v>/assets.extra/tfx_reference_push.json` says where a version
came from. Below: one lock per base path, the push record, and the litter
of killed runs.

Everything that changes what is under a TF Serving model base path does it
holding one exclusive OS file lock, `fcntl.flock` on `<base>/.lock`:
  * the Pusher (components/pusher.py), around its duplicate check, the copy to
    `<base>/.incoming-<v>/` and the rename to `<base>/<v>/`;
  * `python -m delivery.versions rollback` and `promote` (promote locks the
    base path of the model whose label it moves);
  * `python -m delivery.cd`, from reading the model config to its decision.
So any two of them behave as if run one after the other: the second sees the
first's result. The kernel releases a flock when its process dies, kill -9
included, so a killed holder never leaves the base path locked. Readers
(`versions list`, the model server's version poll) take no lock; model
servers never look at names that are not numbers, so `.lock`, `.incoming-*`,
`.rolled-back/` and `.versions.log` are never served.

The lock is per thread and re-entrant: code already holding it (delivery.cd
calling delivery.versions.rollback) takes it again without waiting. Two
threads of one process exclude each other like two processes. The holder
writes its pid, host and command line into the lock file, so a caller that
cannot take the lock in time is told who has it. It only works on a local
(or NFS) filesystem; on GCS there is no lock (the Pusher says so).

The flock itself, and the one rule for its timeout, are project/file_lock.py
(the run lock, ops/run_lock.py, uses it too); besides it, only the standard
library: the model server imports this module.
"""

import contextlib
import datetime
import json
import logging
import os
import shutil
import socket
import sys
import threading
from typing import Dict, Iterator, List, Optional

from project import file_lock

log = logging.getLogger('serving.base_path')

LOCK_FILE = '.lock'
INCOMING_PREFIX = '.incoming-'  # the Pusher's copy before its rename
# One JSON line per push, rollback, promotion and CD step (components/pusher.py,
# delivery/versions.py, delivery/cd.py); components/baseline.py reads CD's
# verdicts from it.
ACTION_LOG = '.versions.log'
# Where `delivery.versions rollback` moves a version: not a number, so no
# model server serves it, and the Pusher never re-pushes what is in it.
ROLLED_BACK_DIR = '.rolled-back'
# Written by the Pusher inside the version directory before the rename, so a
# served version always says where it came from, even if the run was killed
# before ML Metadata recorded the push. TF Serving reads nothing under
# assets.extra/ but tf_serving_warmup_requests; the SavedModel fingerprint
# (fingerprint.pb) does not cover assets.extra/.
PUSH_RECORD = os.path.join('assets.extra', 'tfx_reference_push.json')
# The version's model card (components/model_card.py), written beside the push
# record by the Pusher before the rename, for the same reasons: HTML to read,
# Markdown to paste, JSON for tools (lineage, the UI).
MODEL_CARD_DIR = 'assets.extra'
MODEL_CARD_FILES = {'html': 'model_card.html', 'md': 'model_card.md',
                    'json': 'model_card.json'}


def model_card_path(version_dir: str, kind: str = 'html') -> str:
  """Where version `version_dir`'s model card of `kind` is (may not exist)."""
  return os.path.join(version_dir, MODEL_CARD_DIR, MODEL_CARD_FILES[kind])
DEFAULT_TIMEOUT_S = 30.0

_held = threading.local()  # .depth: {realpath of base: re-entry depth}


class Busy(Exception):
  """The lock was not free within the timeout; names the holder if known."""

  def __init__(self, base: str, timeout: Optional[float],
               holder: Optional[Dict]):
    self.base, self.holder = base, holder
    who = ('pid {pid} on {host} ({command}) since {since}'.format(
        **{k: holder.get(k, '?') for k in ('pid', 'host', 'command',
                                           'since')})
           if holder else 'another process')
    super().__init__(
        f'{os.path.join(base, LOCK_FILE)} is held by {who}; not free after '
        f'{timeout or 0:g} s: another rollback, promote, CD run or push is '
        'changing this model base path (retry later, or with a longer lock '
        'timeout)')


def _depths() -> Dict[str, int]:
  if not hasattr(_held, 'depth'):
    _held.depth = {}
  return _held.depth


def _open(path: str) -> int:
  """The lock file, read-only if another user's (file_lock.open_lock_file)."""
  return file_lock.open_lock_file(path)


def _read_holder(path: str) -> Optional[Dict]:
  try:
    with open(path) as f:
      holder = json.loads(f.read() or 'null')
  except (OSError, ValueError):
    return None
  return holder if isinstance(holder, dict) else None


def _record_holder(fd: int, what: Optional[str]) -> None:
  record = {'pid': os.getpid(), 'host': socket.gethostname(),
            'command': ' '.join(sys.argv)[:300], 'what': what,
            'since': datetime.datetime.now(
                datetime.timezone.utc).isoformat(timespec='seconds')}
  try:
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(record) + '\n').encode(), 0)
  except OSError:
    pass  # read-only descriptor: the lock holds all the same


@contextlib.contextmanager
def locked(base: str, timeout: Optional[float] = DEFAULT_TIMEOUT_S,
           what: Optional[str] = None) -> Iterator[None]:
  """Holds `<base>/.lock` exclusively for the `with` block.

  `timeout`: seconds to wait for it (0: fail at once; None: wait for ever),
  then Busy; project/file_lock.py's rule, so nan, inf or a negative
  number is a ValueError. `what` is recorded for whoever waits. `base`
  must exist.
  """
  timeout = file_lock.check_timeout(timeout)  # nan, inf, < 0: ValueError
  key = os.path.realpath(base)
  depths = _depths()
  if key in depths:  # this thread holds it already
    depths[key] += 1
    try:
      yield
    finally:
      depths[key] -= 1
    return
  if not os.path.isdir(base):
    raise FileNotFoundError(f'model base path {base} is not a directory')
  path = os.path.join(base, LOCK_FILE)
  fd = _open(path)
  try:
    if not file_lock.lock(fd, timeout, path=path):
      raise Busy(base, timeout, _read_holder(path))
    _record_holder(fd, what)
    depths[key] = 1
    try:
      yield
    finally:
      del depths[key]
      try:
        os.ftruncate(fd, 0)  # nobody holds it now
      except OSError:
        pass
  finally:
    os.close(fd)  # releases the flock


def holder(base: str) -> Optional[Dict]:
  """Who holds the lock now ({} if unknown), None if nobody does."""
  path = os.path.join(base, LOCK_FILE)
  try:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
  except OSError:
    return None
  try:
    if not file_lock.lock(fd, 0, shared=True, path=path):
      return _read_holder(path) or {}
  finally:
    os.close(fd)
  return None


def log_action(base: str, action: str, **details) -> Dict:
  """Appends one JSON line to `<base>/.versions.log`; returns the record."""
  record = {'time': datetime.datetime.now(datetime.timezone.utc).isoformat(),
            'action': action, **details}
  with open(os.path.join(base, ACTION_LOG), 'a') as f:
    f.write(json.dumps(record) + '\n')
  return record


def incoming_dirs(base: str) -> List[str]:
  """`<base>/.incoming-*` directories: pushes in progress or killed."""
  try:
    names = os.listdir(base)
  except OSError:
    return []
  return sorted(os.path.join(base, n) for n in names
                if n.startswith(INCOMING_PREFIX) and
                os.path.isdir(os.path.join(base, n)))


def remove_stale_incoming(base: str) -> List[str]:
  """Removes the `.incoming-*` copies killed pushes left; returns them.

  A push holds the lock while it copies, so whoever holds the lock may
  remove them all: the Pusher calls this holding it. Anyone else (the model
  server at start) may call it too: it then tries the lock without waiting
  and, if a push or another mutation holds it, removes nothing. It never
  raises for an unwritable or missing base path (a read-only mount).
  """
  if not incoming_dirs(base):
    return []  # the common case: touch nothing, create no lock file
  removed = []
  try:
    with locked(base, timeout=0, what='remove_stale_incoming'):
      for path in incoming_dirs(base):
        shutil.rmtree(path)
        removed.append(path)
      if removed:
        log_action(base, 'remove_stale_incoming',
                   removed=[os.path.basename(p) for p in removed])
  except Busy as e:
    log.info('not removing stale %s* under %s now: %s', INCOMING_PREFIX,
             base, e)
  except OSError as e:
    log.warning('could not remove stale %s* under %s: %s', INCOMING_PREFIX,
                base, e)
  for path in removed:
    log.info('removed %s, left by a killed push', path)
  return removed


def read_push_record(version_dir: str) -> Optional[Dict]:
  """The Pusher's record in a version directory, None if absent/unreadable."""
  try:
    with open(os.path.join(version_dir, PUSH_RECORD)) as f:
      record = json.load(f)
  except (OSError, ValueError):
    return None
  return record if isinstance(record, dict) else None
