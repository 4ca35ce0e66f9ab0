"""project/file_lock.py: exclusive and shared flocks, one timeout rule."""

import math
import os
import subprocess
import sys
import time

import pytest

from project import file_lock
from serving import base_path


def test_exclusive_excludes_and_shared_shares(tmp_path):
  path = str(tmp_path / 'lock')
  a, b = file_lock.open_lock_file(path), file_lock.open_lock_file(path)
  try:
    assert file_lock.lock(a, 0)
    assert not file_lock.lock(b, 0)
    assert not file_lock.lock(b, 0, shared=True)
    start = time.monotonic()
    assert not file_lock.lock(b, 0.2)  # waits its timeout, then gives up
    assert time.monotonic() - start >= 0.2
    file_lock.unlock(a)
    assert file_lock.lock(a, 0, shared=True)
    assert file_lock.lock(b, 0, shared=True)
    assert not file_lock.lock(
        file_lock.open_lock_file(path), 0)  # exclusive vs two shared
  finally:
    os.close(a)
    os.close(b)


def test_a_lock_freed_while_waiting_is_taken(tmp_path):
  path = str(tmp_path / 'lock')
  holder = subprocess.Popen(
      [sys.executable, '-c', 'import fcntl, os, sys, time\n'
       f'fd = os.open({path!r}, os.O_RDWR | os.O_CREAT)\n'
       'fcntl.flock(fd, fcntl.LOCK_EX)\n'
       'print("held", flush=True)\ntime.sleep(0.5)\n'],
      stdout=subprocess.PIPE, text=True)
  assert holder.stdout.readline() == 'held\n'
  fd = file_lock.open_lock_file(path)
  try:
    assert file_lock.lock(fd, 30)
  finally:
    os.close(fd)
    holder.wait(timeout=30)


@pytest.mark.parametrize('bad', [math.nan, -0.5, math.inf])
def test_a_timeout_that_would_never_end_is_refused(tmp_path, bad):
  fd = file_lock.open_lock_file(str(tmp_path / 'lock'))
  try:
    with pytest.raises(ValueError, match='lock timeout'):
      file_lock.lock(fd, bad)
  finally:
    os.close(fd)
  # The model base path's lock: refused at once, not a wait for ever.
  with pytest.raises(ValueError, match='lock timeout'):
    with base_path.locked(str(tmp_path), bad):
      pass


def test_versions_cli_refuses_a_nan_lock_timeout_in_one_line(tmp_path):
  os.makedirs(tmp_path / '1')
  result = subprocess.run(
      [sys.executable, '-m', 'delivery.versions', 'rollback',
       '--model_base_path', str(tmp_path), '--lock_timeout', 'nan'],
      capture_output=True, text=True, timeout=120,
      cwd=os.path.dirname(os.path.dirname(os.path.dirname(
          os.path.abspath(__file__)))))
  assert result.returncode == 2, result.stderr
  assert result.stderr.count('\n') == 1, result.stderr
  assert '--lock_timeout' in result.stderr and 'nan' in result.stderr
