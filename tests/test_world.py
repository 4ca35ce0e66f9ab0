"""tests/world.py and the session's plumbing in tests/conftest.py: a world
is built once for every worker, a failed build is not tried again, a copy
names its own paths, and a missing system package ends the run with one
line naming it."""

import os
import pathlib
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from tests import helpers
from tests import world

REPO = pathlib.Path(helpers.REPO)


class _Factory:
  """What world.once needs of pytest's tmp_path_factory."""

  def __init__(self, base):
    self.base = pathlib.Path(base)

  def getbasetemp(self):
    return self.base


_BUILD_IN_A_PROCESS = '''
import os, pathlib, sys, time
sys.path.insert(0, {repo!r})
from tests import world

class Factory:
  def getbasetemp(self):
    return pathlib.Path({base!r})

def build(folder):
  with open({count!r}, 'a') as f:
    f.write(f'{{os.getpid()}}\\n')
  time.sleep(1)  # long enough for the other process to wait on the lock
  (folder / 'made').write_text('by ' + str(os.getpid()))

print(world.once(Factory(), 'thing', build) / 'made')
'''


@pytest.fixture
def one_process(monkeypatch):
  """As if pytest ran without xdist (this test may run in an xdist worker)."""
  monkeypatch.delenv('PYTEST_XDIST_WORKER', raising=False)


def test_two_workers_asking_at_once_build_a_world_once(tmp_path, one_process):
  base, count = tmp_path / 'session', tmp_path / 'builds'
  base.mkdir()
  code = _BUILD_IN_A_PROCESS.format(repo=str(REPO), base=str(base),
                                    count=str(count))
  procs = [subprocess.Popen([sys.executable, '-c', code], text=True,
                            stdout=subprocess.PIPE) for _ in range(2)]
  printed = [p.communicate(timeout=120)[0].strip() for p in procs]
  assert [p.returncode for p in procs] == [0, 0]
  assert len(count.read_text().split()) == 1  # one build
  assert printed[0] == printed[1] and pathlib.Path(printed[0]).exists()
  # A later caller gets the folder without building.
  assert world.once(_Factory(base), 'thing',
                    lambda _: pytest.fail('built again')) == (
                        base / 'world' / 'thing')


def test_a_failed_build_fails_every_later_caller_without_building(
    tmp_path, one_process):
  def broken(_):
    raise RuntimeError('no disk left')
  with pytest.raises(RuntimeError):
    world.once(_Factory(tmp_path), 'thing', broken)
  with pytest.raises(pytest.fail.Exception, match='no disk left'):
    world.once(_Factory(tmp_path), 'thing',
               lambda _: pytest.fail('built again'))


def test_under_xdist_the_shared_folder_is_the_sessions(tmp_path, monkeypatch):
  worker = tmp_path / 'popen-gw1'
  monkeypatch.setenv('PYTEST_XDIST_WORKER', 'gw1')
  assert world.shared_dir(_Factory(worker)) == tmp_path
  monkeypatch.delenv('PYTEST_XDIST_WORKER')
  assert world.shared_dir(_Factory(tmp_path)) == tmp_path


def test_a_copy_names_its_own_paths_in_the_store_and_text_files(tmp_path):
  original = tmp_path / 'original'
  (original / 'pipeline' / 'Model' / '3').mkdir(parents=True)
  (original / 'pipeline' / 'Model' / '3' / 'saved_model.pb').write_bytes(
      b'\x00binary ' + str(original).encode())
  (original / 'world.json').write_text(f'{{"root": "{original}/data"}}')
  (original / 'link').symlink_to(original / 'world.json')
  store = original / 'pipeline' / 'metadata.sqlite'
  with sqlite3.connect(store) as db:
    db.execute('CREATE TABLE Artifact (id INTEGER, uri TEXT, name '
               'VARCHAR(255), state INT)')
    db.execute('INSERT INTO Artifact VALUES (1, ?, ?, 2)',
               (f'{original}/pipeline/Model/3', 'model'))
  (original / world.BUILT).write_text('')

  copied = world.copy(original, tmp_path / 'copy')
  with sqlite3.connect(copied / 'pipeline' / 'metadata.sqlite') as db:
    assert db.execute('SELECT uri, name, state FROM Artifact').fetchone() == (
        f'{copied}/pipeline/Model/3', 'model', 2)
  assert (copied / 'world.json').read_text() == f'{{"root": "{copied}/data"}}'
  # Binary files are copied as they are; links still point where they did.
  assert (copied / 'pipeline' / 'Model' / '3' / 'saved_model.pb'
         ).read_bytes() == b'\x00binary ' + str(original).encode()
  assert os.readlink(copied / 'link') == str(original / 'world.json')
  assert not (copied / world.BUILT).exists()  # a copy is no built world
  # The original is untouched.
  with sqlite3.connect(store) as db:
    assert db.execute('SELECT uri FROM Artifact').fetchone() == (
        f'{original}/pipeline/Model/3',)


def _pytest(test_file):
  """pytest on a file outside tests/, with this suite's conftest."""
  return [sys.executable, '-m', 'pytest', str(test_file), '-q', '-p',
          'no:cacheprovider', '-p', 'tests.conftest', '-c',
          str(REPO / 'pytest.ini'), '--rootdir', str(REPO)]


def test_a_missing_system_package_ends_the_run_with_one_line(tmp_path):
  test_file = tmp_path / 'test_needs.py'
  test_file.write_text(textwrap.dedent('''
      from tests import helpers

      def test_needs_a_server():
        helpers.require(False, 'mariadbd not found', system_package='MariaDB')

      def test_needs_a_browser():
        helpers.require(False, 'no chromium', system_package='Chromium')

      def test_needs_a_fetch():
        helpers.require(False, 'not fetched (make flink-fetch)')
  '''))
  env = {k: v for k, v in os.environ.items() if k != 'CI'}
  result = subprocess.run(
      _pytest(test_file), cwd=REPO, env=env, capture_output=True, text=True,
      timeout=300)
  assert result.returncode == 0, result.stdout + result.stderr
  last = result.stdout.strip().splitlines()[-1]
  assert '3 skipped' in last
  line = [l for l in result.stdout.splitlines() if l.startswith('Skipped ')]
  assert line == ['Skipped 2 tests that need Chromium, MariaDB: install them '
                  'with `sudo .ci/system-packages` (Debian or Ubuntu), then '
                  'run the tests again.']
  # Under CI=true they fail instead: CI must run them.
  failed = subprocess.run(
      _pytest(test_file), cwd=REPO, env=dict(env, CI='true'),
      capture_output=True, text=True, timeout=300)
  assert failed.returncode == 1 and '3 failed' in failed.stdout
  assert 'CI must run this: needs a system package: MariaDB' in failed.stdout
