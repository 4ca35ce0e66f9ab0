"""Advisory file locks (flock): exclusive or shared, with one timeout rule.

Two parts of the project lock a file: the pipeline root's run lock
(ops/run_lock.py: one run at a time, never waits) and a model base path's
lock (serving/base_path.py: one change at a time, waits up to a timeout).
Both take an OS `flock` (the kernel drops it when its holder dies, kill -9
included) on a descriptor they keep, because both read and write a record
of the holder in the locked file itself. They used to write their own
loops with different rules (one accepted nan and then waited for ever);
here is the one rule:

  timeout   seconds, finite and >= 0 (0: one try, never wait), or None:
            wait for ever. nan, inf or a negative number is a ValueError
            (project/waiting.check_timeout), raised before any waiting.
  waiting   a poll of non-blocking tries every POLL_S, run by
            project/waiting.wait_until (tenacity): the last try is at or
            after the timeout.

Why not the `filelock` package (in requirements.lock for the tests' shared
world): its lock owns its descriptor and opens the file itself, so the
holder's record cannot be written through it, and it has no shared flock
mode (base_path.holder asks "is anyone holding it?" with one).
"""

import fcntl
import os
from typing import Optional

from project import waiting

POLL_S = 0.05


def check_timeout(timeout: Optional[float]) -> Optional[float]:
  """The lock timeout rule (see the module docstring); ValueError if not."""
  return waiting.check_timeout(timeout, 'lock timeout')


def _try(fd: int, operation: int) -> bool:
  try:
    fcntl.flock(fd, operation | fcntl.LOCK_NB)
    return True
  except BlockingIOError:
    return False


def lock(fd: int, timeout: Optional[float], shared: bool = False,
         path: str = 'the lock file') -> bool:
  """Takes an exclusive (or shared) flock on `fd`: True once held, False
  when it was not free within `timeout` seconds (None: waits for ever).

  ValueError for a timeout that breaks the rule, before trying. The lock
  is released by `unlock` or by closing every descriptor of that open file.
  """
  timeout = check_timeout(timeout)
  operation = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
  if timeout is None:
    fcntl.flock(fd, operation)
    return True
  if _try(fd, operation):  # the common case: free, nothing to wait for
    return True
  if timeout == 0:
    return False
  try:
    waiting.wait_until(lambda: _try(fd, operation), timeout, POLL_S,
                       what=f'a lock on {path}')
  except waiting.WaitTimeout:
    return False
  return True


def unlock(fd: int) -> None:
  fcntl.flock(fd, fcntl.LOCK_UN)


def open_lock_file(path: str, mode: int = 0o664) -> int:
  """`path` opened read-write (created if missing), not inherited by child
  processes; read-only when it is another user's file (a flock holds on a
  read-only descriptor too, but no record can be written through it)."""
  try:
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, mode)
  except PermissionError:
    return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
