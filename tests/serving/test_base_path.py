"""serving.base_path: the one lock per base path, kill -9, and litter.

No time is ever asserted: timeouts here only bound a wait that would
otherwise hang a broken build (generous) or ask for "not now" (0).
"""

import errno
import os
import signal
import subprocess
import sys
import threading

import pytest

from serving import base_path
from delivery import cd
from delivery import version_list
from delivery import versions
from tests import helpers

BOUND_S = 120  # a wait that should end at once, bounded only to never hang

_HOLD = '''
import sys, time
from serving import base_path
with base_path.locked(sys.argv[1], timeout=None, what='test holder'):
  print('held', flush=True)
  time.sleep(3600)
'''


class Holder:
  """A separate process holding the lock of `base` until killed."""

  def __init__(self, base):
    self.proc = subprocess.Popen([sys.executable, '-c', _HOLD, str(base)],
                                 cwd=helpers.REPO, stdout=subprocess.PIPE,
                                 text=True)
    assert self.proc.stdout.readline().strip() == 'held'

  def kill_9(self):
    self.proc.send_signal(signal.SIGKILL)
    assert self.proc.wait(timeout=BOUND_S) == -signal.SIGKILL

  def __enter__(self):
    return self

  def __exit__(self, *unused):
    if self.proc.poll() is None:
      self.kill_9()


def _base(tmp_path, versions_on_disk=(1, 2, 3)):
  base = tmp_path / 'taxi'
  base.mkdir()
  for v in versions_on_disk:
    (base / str(v)).mkdir()
  return str(base)


def test_imports_only_the_standard_library():
  """Pushers and the version tools load it: importing it (and the project
  helpers it uses, project/file_lock.py) loads nothing outside the standard
  library."""
  code = ('import sys; before = set(sys.modules); import serving.base_path; '
          'print(" ".join(sorted({m.split(".")[0] for m in sys.modules} - '
          'before)))')
  done = subprocess.run([sys.executable, '-c', code], cwd=helpers.REPO,
                        capture_output=True, text=True, check=True)
  loaded = set(done.stdout.split())
  assert loaded - set(sys.stdlib_module_names) <= {'serving', 'project'}, (
      loaded - set(sys.stdlib_module_names))


def test_lock_is_exclusive_across_threads_and_reentrant_within_one(tmp_path):
  base = _base(tmp_path)
  outcome = []
  with base_path.locked(base):
    with base_path.locked(base, timeout=0):  # same thread: re-entrant
      pass

    def other():
      try:
        with base_path.locked(base, timeout=0):
          outcome.append('taken')
      except base_path.Busy as e:
        outcome.append(str(e))
    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
  assert len(outcome) == 1 and f'pid {os.getpid()}' in outcome[0]
  with base_path.locked(base, timeout=0):  # released on exit
    pass
  assert base_path.holder(base) is None


def test_busy_names_the_holder_and_kill_9_releases_it(tmp_path):
  """A process killed -9 holding the lock: the kernel drops its flock, and
  the next mutation proceeds (the stale holder record is just overwritten)."""
  base = _base(tmp_path)
  with Holder(base) as holder:
    with pytest.raises(base_path.Busy) as busy:
      with base_path.locked(base, timeout=0):
        pass
    assert f'pid {holder.proc.pid}' in str(busy.value)
    assert base_path.holder(base)['pid'] == holder.proc.pid
    refused = helpers.versions_cli('rollback', '--model-base-path', base,
                            '--lock-timeout', '0')
    assert refused.returncode == versions.EXIT_FAILED
    line = helpers.one_error_line(refused)
    assert f'is held by pid {holder.proc.pid}' in line
    assert sorted(os.listdir(base)) == ['.lock', '1', '2', '3']
    holder.kill_9()
  done = helpers.versions_cli('rollback', '--model-base-path', base,
                       '--lock-timeout', str(BOUND_S))
  assert done.returncode == 0, done.stderr
  assert 'rolled_back=3' in done.stdout
  assert version_list.rolled_back_versions(base) == [3]


def test_cd_waits_for_nothing_it_cannot_have(tmp_path, capsys):
  """delivery.cd takes the same lock: busy, it judges and changes nothing."""
  base = _base(tmp_path, (1, 2))
  config = tmp_path / 'models.config'
  config.write_text('''model_config_list { config {
      name: "taxi" base_path: "taxi" model_platform: "tensorflow"
      model_version_policy { specific { versions: 1 } }
      version_labels { key: "stable" value: 1 } } }''')
  before = config.read_bytes()
  with Holder(base) as holder:
    assert cd.main(['--model_config_file', str(config),
                    '--lock_timeout', '0']) == cd.EXIT_ERROR
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and f'is held by pid {holder.proc.pid}' in err[0]
  assert config.read_bytes() == before
  assert sorted(os.listdir(base)) == ['.lock', '1', '2']


def test_remove_stale_incoming_only_when_nobody_writes(tmp_path):
  base = _base(tmp_path, (1,))
  assert base_path.remove_stale_incoming(base) == []
  assert sorted(os.listdir(base)) == ['1']  # no lock file made for nothing
  stale = os.path.join(base, base_path.INCOMING_PREFIX + '7')
  os.makedirs(os.path.join(stale, 'variables'))
  with Holder(base):  # a push may be copying: leave it
    assert base_path.remove_stale_incoming(base) == []
    assert os.path.isdir(stale)
  assert base_path.remove_stale_incoming(base) == [stale]
  assert sorted(os.listdir(base)) == ['.lock', '.versions.log', '1']
  with base_path.locked(base):  # the Pusher's case: the caller holds it
    os.makedirs(stale)
    assert base_path.remove_stale_incoming(base) == [stale]
  assert base_path.remove_stale_incoming(str(tmp_path / 'missing')) == []


def test_remove_stale_incoming_on_a_read_only_base_path_is_a_no_op(
    tmp_path, monkeypatch):
  """A model server with the base path mounted read-only (docker-compose,
  kubernetes.yaml) calls it at start: nothing to lock, nothing raised."""
  base = _base(tmp_path, (1,))
  os.makedirs(os.path.join(base, base_path.INCOMING_PREFIX + '7'))

  def read_only(path):
    raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)
  monkeypatch.setattr(base_path, '_open', read_only)
  assert base_path.remove_stale_incoming(base) == []
  assert sorted(os.listdir(base)) == [base_path.INCOMING_PREFIX + '7', '1']
