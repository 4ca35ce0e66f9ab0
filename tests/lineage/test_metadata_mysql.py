"""ML Metadata on MySQL: a real MariaDB server, the real pipeline, no SQLite.

The module starts a throwaway MariaDB (Debian's mariadb-server) on a free
loopback port with its own data directory, creates a database and a user
whose password is distinctive and full of characters that text formats
escape, runs the small pipeline (the data and flags of the session's pipeline
world's first run, tests/conftest.py) through local_runner.py against it
(flags plus the password in the environment, as a user would), and checks
that the lineage landed in MySQL, that the lineage tools read it back, that
the password shows up in no output, log, error, artifact or MLMD row, and
that the model and decision are the world's (same data and flags, another
store).
"""

import dataclasses
import glob
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from typing import Dict, Optional

import pytest

from pipeline import configs
from lineage import graph
from lineage import metadata_store
from pipeline.run_pipeline import run_pipeline
from tests import helpers

pytestmark = pytest.mark.integration

COMPONENTS = helpers.PIPELINE_COMPONENTS
EXPECTED_OUTPUTS = helpers.EXPECTED_OUTPUTS

DATABASE, USER = 'mlmd', 'tfx'
# Found nowhere unless leaked; the tail (quotes, backslash, non-ASCII) makes
# proto text format and repr() spell it differently from the raw string.
PASSWORD_CORE = 'Mlmd-Zq7-x9k'
PASSWORD = PASSWORD_CORE + '"\\\'\u00e9'
WRONG_CORE = 'Wrong-Vb3-q8t'


def _binary(name: str) -> Optional[str]:
  """A MariaDB program; /usr/sbin is not on every user's PATH."""
  found = shutil.which(name)
  if found:
    return found
  path = os.path.join('/usr/sbin', name)
  return path if os.access(path, os.X_OK) else None


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


class MariaDB:
  """A throwaway MariaDB server: temp data dir, loopback port, root via socket."""

  def __init__(self):
    self.dir = tempfile.mkdtemp(prefix='mariadb-')  # short: socket path limit
    self.datadir = os.path.join(self.dir, 'data')
    self.socket = os.path.join(self.dir, 'sock')
    self.log_path = os.path.join(self.dir, 'server.log')
    self.port = _free_port()
    self.process: Optional[subprocess.Popen] = None

  def start(self) -> None:
    # --skip-test-db also skips the anonymous ''@localhost users, which would
    # otherwise win over 'tfx'@'%' for connections from 127.0.0.1.
    subprocess.run(
        [_binary('mariadb-install-db'), '--no-defaults',
         f'--datadir={self.datadir}', '--auth-root-authentication-method=normal',
         '--skip-test-db'],
        check=True, capture_output=True, timeout=120)
    with open(self.log_path, 'w') as log:
      self.process = subprocess.Popen(
          [_binary('mariadbd'), '--no-defaults', f'--datadir={self.datadir}',
           f'--socket={self.socket}', f'--port={self.port}',
           '--bind-address=127.0.0.1', '--skip-name-resolve', '--user=root'],
          stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while True:
      if self.process.poll() is not None:
        raise RuntimeError(f'mariadbd exited with {self.process.returncode}:\n'
                           + self.log_tail())
      if os.path.exists(self.socket) and subprocess.run(
          [_binary('mariadb-admin'), '--no-defaults', f'--socket={self.socket}',
           '-uroot', 'ping'], capture_output=True).returncode == 0:
        return
      if time.monotonic() > deadline:
        raise RuntimeError('mariadbd not ready after 60 s:\n' + self.log_tail())
      time.sleep(0.2)

  def sql(self, statements: str, database: str = '') -> str:
    """Runs SQL as root over the socket (stdin: nothing on a command line)."""
    result = subprocess.run(
        [_binary('mariadb'), '--no-defaults', f'--socket={self.socket}',
         '-uroot', '--batch', '--skip-column-names'] + (
             [database] if database else []),
        input=statements, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout

  def dump(self, database: str) -> bytes:
    result = subprocess.run(
        [_binary('mariadb-dump'), '--no-defaults', f'--socket={self.socket}',
         '-uroot', database], capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout

  def log_tail(self) -> str:
    with open(self.log_path, errors='replace') as f:
      return ''.join(f.readlines()[-20:])

  def stop(self) -> None:
    if self.process is not None and self.process.poll() is None:
      self.process.terminate()  # a clean shutdown
      try:
        self.process.wait(timeout=60)
      except subprocess.TimeoutExpired:
        self.process.kill()
        self.process.wait()
    shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope='module')
def mariadb():
  """A running server with DATABASE and USER/PASSWORD; always stopped."""
  missing = [n for n in ('mariadb-install-db', 'mariadbd', 'mariadb',
                         'mariadb-admin', 'mariadb-dump') if not _binary(n)]
  helpers.require(not missing, f'{", ".join(missing)} not found: ML Metadata '
                  'on MySQL is tested against a real server',
                  system_package='MariaDB')
  server = MariaDB()
  try:
    server.start()
    # The password goes in as its mysql_native_password hash, so the
    # plain text never reaches the server and a leak cannot come from it.
    digest = hashlib.sha1(hashlib.sha1(PASSWORD.encode()).digest())
    server.sql(f"CREATE DATABASE {DATABASE};\n"
               f"CREATE USER '{USER}'@'%' IDENTIFIED BY PASSWORD "
               f"'*{digest.hexdigest().upper()}';\n"
               f"GRANT ALL PRIVILEGES ON {DATABASE}.* TO '{USER}'@'%';\n")
    yield server
  finally:
    server.stop()


@pytest.fixture(scope='module')
def cfg(tmp_path_factory):
  """The pipeline world's first run's data and flags, in a cold root."""
  return helpers.cold_root(str(tmp_path_factory.mktemp('mysql')))


@pytest.fixture(scope='module')
def mysql_cfg(cfg, mariadb):  # pylint: disable=redefined-outer-name
  return dataclasses.replace(cfg, mysql_host='127.0.0.1',
                             mysql_port=mariadb.port, mysql_database=DATABASE,
                             mysql_user=USER)


def _env(password: str, **extra: str) -> Dict[str, str]:
  env = {k: v for k, v in os.environ.items() if not k.startswith('MLMD_')}
  env.update({metadata_store.MYSQL_PASSWORD_ENV: password, **extra})
  return env


@pytest.fixture(scope='module')
def mysql_run(mysql_cfg):  # pylint: disable=redefined-outer-name
  """local_runner.py on MySQL: the password only in the environment."""
  result = subprocess.run(
      [sys.executable, 'local_runner.py'] + helpers.as_flags(
          {k: v for k, v in dataclasses.asdict(mysql_cfg).items()
           if v is not None}),
      cwd=helpers.REPO, env=_env(PASSWORD), capture_output=True, text=True,
      timeout=1200)
  print(result.stdout, result.stderr[-3000:])
  return result


def _store(config: configs.PipelineConfig):
  """The run's store, opened the way the tools open it (env password)."""
  with pytest.MonkeyPatch.context() as env:
    env.setenv(metadata_store.MYSQL_PASSWORD_ENV, PASSWORD)
    return metadata_store.open_store(metadata_store.store_config(config))


def test_pipeline_writes_every_execution_to_mysql(mysql_cfg, mysql_run,
                                                  mariadb):
  assert mysql_run.returncode == 0, mysql_run.stdout + mysql_run.stderr
  assert (f'metadata           {USER}@127.0.0.1:{mariadb.port}/{DATABASE} '
          '(MySQL)') in mysql_run.stdout
  store = _store(mysql_cfg)
  run = graph.latest_run(store, mysql_cfg.pipeline_name)
  nodes = graph.run_nodes(store, run, mysql_cfg.pipeline_name)
  for component in COMPONENTS:
    assert nodes[component].state == 'COMPLETE', (component, nodes[component])
  for component, keys in EXPECTED_OUTPUTS.items():
    assert keys <= set(nodes[component].outputs), component
  # The tables are really in MariaDB's database (not only reachable by MLMD).
  assert int(mariadb.sql('SELECT COUNT(*) FROM Execution;', DATABASE)) >= len(
      COMPONENTS)


def test_trainer_inputs_are_the_span_examples(mysql_cfg, mysql_run):
  assert mysql_run.returncode == 0
  store = _store(mysql_cfg)
  trainer = helpers.latest_execution(store, 'Trainer')
  example_ids = [e.artifact_id for e in store.get_events_by_execution_ids(
      [trainer.id]) if e.type == e.INPUT and e.path.steps[0].key == 'examples']
  examples = store.get_artifacts_by_id(example_ids)
  assert sorted(metadata_store.custom_property(a, 'span')
                for a in examples) == [1, 2]
  produced_by = {e.execution_id for e in store.get_events_by_artifact_ids(
      example_ids) if e.type == e.OUTPUT}
  example_gen = store.get_context_by_type_and_name(
      'node', f'{mysql_cfg.pipeline_name}.CsvExampleGen')
  assert produced_by <= {e.id for e in store.get_executions_by_context(
      example_gen.id)}


def test_the_model_and_decision_are_the_sqlite_runs(mysql_cfg, mysql_run,
                                                   pipeline_world):
  """Another store, the same data and flags: the same model (predictions
  to 1e-6), metrics and blessing as the pipeline world's first run."""
  assert mysql_run.returncode == 0
  from pipeline import run_pipeline as runs  # pylint: disable=g-import-not-at-top
  with pytest.MonkeyPatch.context() as env:
    env.setenv(metadata_store.MYSQL_PASSWORD_ENV, PASSWORD)
    on_mysql = runs.read_outcome(
        mysql_cfg, metadata_store.store_config(mysql_cfg), True, None, [], 0.0)
  helpers.assert_same_model_and_decision(on_mysql,
                                         pipeline_world.outcome('first'))


def test_pushed_model_is_recorded_and_no_sqlite_was_made(mysql_cfg, mysql_run):
  assert mysql_run.returncode == 0
  store = _store(mysql_cfg)
  (pushed,) = store.get_artifacts_by_type('PushedModel')
  version = str(metadata_store.custom_property(pushed, 'pushed_version'))
  assert [n for n in os.listdir(mysql_cfg.serving_model_dir) if n.isdigit()] == [version]
  root = os.path.dirname(mysql_cfg.pipeline_root)
  assert not os.path.exists(mysql_cfg.metadata_path)
  assert glob.glob(os.path.join(root, '**', '*.sqlite*'), recursive=True) == []


def test_lineage_tools_read_it_back_from_mysql(mysql_cfg, mysql_run, mariadb,
                                               tmp_path):
  assert mysql_run.returncode == 0
  mysql_flags = ['--mysql-port', str(mariadb.port), '--mysql-user', USER]
  # lineage run: host from the environment, password from the environment.
  shown = subprocess.run(
      [sys.executable, '-m', 'lineage', 'run'] + mysql_flags,
      cwd=helpers.REPO, env=_env(PASSWORD, MLMD_MYSQL_HOST='127.0.0.1'),
      capture_output=True, text=True, timeout=120)
  assert shown.returncode == 0, shown.stderr
  states = dict(line.split()[:2] for line in shown.stdout.splitlines()
                if line.startswith('  ') and not line.startswith('   '))
  for component in COMPONENTS:
    assert states[component] == 'COMPLETE', (component, shown.stdout)
  version = [n for n in os.listdir(mysql_cfg.serving_model_dir) if n.isdigit()][0]
  assert f'pushed_version={version}' in shown.stdout
  # versions list: the password from a file (which wins over the variable).
  password_file = tmp_path / 'mysql-password'
  password_file.write_text(PASSWORD + '\n')
  listed = subprocess.run(
      [sys.executable, '-m', 'delivery.versions', 'list', '--model-base-path',
       mysql_cfg.serving_model_dir, '--mysql-host', '127.0.0.1',
       '--mysql-password-file', str(password_file)] + mysql_flags,
      cwd=helpers.REPO, env=_env(WRONG_CORE), capture_output=True, text=True,
      timeout=120)
  assert listed.returncode == 0, listed.stderr
  line = next(l for l in listed.stdout.splitlines() if l.startswith(version))
  assert 'SERVED (latest)' in line and 'blessed=True' in line
  assert 'run=?' not in line and 'code=None' not in line
  for output in (shown.stdout, shown.stderr, listed.stdout, listed.stderr):
    assert PASSWORD_CORE not in output


def test_the_web_ui_reads_the_store_from_mysql(mysql_cfg, mysql_run, mariadb,
                                              tmp_path):
  """python -m ui with the lineage tools' MySQL flags, the password only in
  the environment: the run and the version are on its pages, the password
  on none of them, nor in what it printed or logged."""
  import urllib.request  # pylint: disable=g-import-not-at-top
  assert mysql_run.returncode == 0
  store = _store(mysql_cfg)
  run = graph.latest_run(store, mysql_cfg.pipeline_name).name
  (version,) = [n for n in os.listdir(mysql_cfg.serving_model_dir)
                if n.isdigit()]
  log = tmp_path / 'ui.log'
  with helpers.UiProcess(
      ['--serving-dir', mysql_cfg.serving_dir, '--mysql-host', '127.0.0.1',
       '--mysql-port', str(mariadb.port), '--mysql-user', USER,
       '--log-file', str(log)], env=_env(PASSWORD)) as ui:
    pages = {}
    for path in ('/', '/runs', '/models', '/serving', f'/versions/{version}',
                 '/runs/' + urllib.parse.quote(run, safe='')):
      with urllib.request.urlopen(ui.url + path, timeout=60) as response:
        assert response.status == 200, path
        pages[path] = response.read().decode()
    printed = ui.stop()
  assert f'{USER}@127.0.0.1:{mariadb.port}/{DATABASE} (MySQL)' in pages['/']
  assert run in pages['/runs'] and version in pages['/serving']
  assert 'Trainer' in pages[f'/versions/{version}']
  for text in list(pages.values()) + [printed, log.read_text()]:
    assert PASSWORD_CORE not in text


def test_lineage_cli_reads_a_version_from_mysql(mysql_cfg, mysql_run, mariadb):
  assert mysql_run.returncode == 0
  (version,) = [n for n in os.listdir(mysql_cfg.serving_model_dir) if n.isdigit()]
  shown = subprocess.run(
      [sys.executable, '-m', 'lineage', 'version', version, '--json',
       '--mysql-host', '127.0.0.1', '--mysql-port', str(mariadb.port),
       '--mysql-user', USER],
      cwd=helpers.REPO, env=_env(PASSWORD), capture_output=True, text=True,
      timeout=120)
  assert shown.returncode == 0, shown.stderr
  assert PASSWORD_CORE not in shown.stdout + shown.stderr
  found = json.loads(shown.stdout)
  assert [s['span'] for s in found['spans']] == [1, 2]
  for node in ('pusher', 'evaluator', 'trainer', 'transform'):
    assert found[node]['state'] == 'COMPLETE', node
  head = subprocess.run(['git', '-C', helpers.REPO, 'rev-parse', 'HEAD'],
                        capture_output=True, text=True).stdout.strip()
  assert found['trainer']['git_commit'] == (head or 'unknown')
  assert found['metrics']['candidate']['auc'] > 0


def test_password_is_in_no_output_log_artifact_or_row(mysql_cfg, mysql_run,
                                                      mariadb):
  assert mysql_run.returncode == 0
  assert PASSWORD_CORE not in mysql_run.stdout + mysql_run.stderr
  (log_path,) = glob.glob(os.path.join(mysql_cfg.pipeline_root, 'logs', '*'))
  with open(log_path, errors='replace') as f:
    log = f.read()
  # TFX logs the whole ConnectionConfig: it is there, with the password out.
  assert 'Using connection config' in log and 'password: "***"' in log
  root = os.path.dirname(mysql_cfg.pipeline_root)
  leaked = []
  for path in glob.glob(os.path.join(root, '**', '*'), recursive=True):
    if os.path.isfile(path):
      with open(path, 'rb') as f:
        if PASSWORD_CORE.encode() in f.read():
          leaked.append(path)
  assert leaked == []
  assert PASSWORD_CORE.encode() not in mariadb.dump(DATABASE)


def test_wrong_password_is_one_clear_line(mysql_cfg, mysql_run, mariadb,
                                          tmp_path, monkeypatch, capfd):
  assert mysql_run.returncode == 0  # the store exists; only the password is bad
  where = f'MySQL at 127.0.0.1:{mariadb.port}/{DATABASE} refused'
  shown = subprocess.run(
      [sys.executable, '-m', 'lineage', 'run', '--mysql-host', '127.0.0.1',
       '--mysql-port', str(mariadb.port), '--mysql-user', USER],
      cwd=helpers.REPO, env=_env(WRONG_CORE), capture_output=True, text=True,
      timeout=120)
  assert shown.returncode == 1
  assert where in shown.stderr and f"user '{USER}'" in shown.stderr
  assert 'Traceback' not in shown.stderr
  assert 'MySQL 8.0' not in shown.stderr  # ml_metadata's misleading C++ line
  assert WRONG_CORE not in shown.stdout + shown.stderr
  # The pipeline stops before TFX runs anything, and logs no password.
  monkeypatch.setenv(metadata_store.MYSQL_PASSWORD_ENV, WRONG_CORE)
  wrong = dataclasses.replace(mysql_cfg, pipeline_root=str(tmp_path / 'root'))
  with pytest.raises(SystemExit) as stopped:
    run_pipeline(wrong, lambda: pytest.fail('no run may start'))
  assert where in str(stopped.value.code)
  assert WRONG_CORE not in str(stopped.value.code)
  out, err = capfd.readouterr()
  assert WRONG_CORE not in out + err and 'MySQL 8.0' not in err
  for path in glob.glob(str(tmp_path / '**' / '*'), recursive=True):
    if os.path.isfile(path):
      with open(path, errors='replace') as f:
        assert WRONG_CORE not in f.read(), path
