"""A run killed mid-run leaves nothing RUNNING for good; two runs never mix.

First the rules of ops/run_lock.py and ops/dead_runs.py on a small
ML Metadata store made here (which records count as dead, which are left
alone), then the real thing: local_runner.py killed with SIGKILL during
Transform or Trainer, a second run refused while it lives, and the next run
marking what it left and completing.
"""

import dataclasses
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time

import pytest

from ml_metadata.proto import metadata_store_pb2
from pipeline import configs
from ops import dead_runs
from ops import run_lock
from ops import tfx_private
from lineage import metadata_store
from tests import helpers

Execution = metadata_store_pb2.Execution
STORE = 'sqlite:test'


# --- The rules, on a store made here -----------------------------------------


def _store(tmp_path):
  return metadata_store.open_store(
      metadata_store.sqlite_config(str(tmp_path / 'metadata.sqlite')))


def _context(store, type_name, name):
  type_id = store.put_context_type(
      metadata_store_pb2.ContextType(name=type_name))
  found = store.get_context_by_type_and_name(type_name, name)
  if found:
    return found
  [context_id] = store.put_contexts(
      [metadata_store_pb2.Context(type_id=type_id, name=name)])
  return store.get_contexts_by_id([context_id])[0]


def _executions(store, run_id, states, pipeline='taxi'):
  """One execution per node of `states` in run `run_id`; their ids."""
  ids = []
  for node, state in states.items():
    type_id = store.put_execution_type(
        metadata_store_pb2.ExecutionType(name=f'tfx.{node}'))
    contexts = [_context(store, 'pipeline', pipeline),
                _context(store, 'pipeline_run', run_id),
                _context(store, 'node', f'{pipeline}.{node}')]
    execution_id, _, _ = store.put_execution(
        Execution(type_id=type_id, last_known_state=state), [], contexts)
    ids.append(execution_id)
  return ids


def _state(store, execution_id):
  [execution] = store.get_executions_by_id([execution_id])
  return execution.last_known_state


def _gone_pid():
  child = subprocess.Popen([sys.executable, '-c', 'pass'])
  child.wait()
  return child.pid


def _holder(**changes):
  fields = dict(pid=_gone_pid(), host=socket.gethostname(),
                boot_id=run_lock.boot_id(), process_start=12345,
                started=time.time() - 60, command='python local_runner.py',
                store=STORE, pipeline='taxi', runs=['run-a'])
  fields.update(changes)
  return run_lock.Holder(**fields)


def test_a_dead_runs_executions_are_canceled_and_nothing_else(tmp_path):
  store = _store(tmp_path)
  done, transform = _executions(store, 'run-a', {
      'CsvExampleGen': Execution.COMPLETE, 'Transform': Execution.RUNNING})
  [other_run] = _executions(store, 'run-b', {'Trainer': Execution.RUNNING})
  [other_pipeline] = _executions(store, 'run-a-elsewhere',
                                 {'Trainer': Execution.RUNNING}, 'other')
  marked, lines = dead_runs.recover_dead_run(store, _holder(), 'taxi', STORE)
  assert [(m.run, m.state, m.executions) for m in marked] == [
      ('run-a', 'CANCELED', [(transform, 'Transform')])]
  assert _state(store, transform) == Execution.CANCELED
  [execution] = store.get_executions_by_id([transform])
  why = execution.custom_properties[tfx_private.ERROR_MSG_KEY].string_value
  assert 'died mid-run' in why and 'killed or crashed' in why
  assert _state(store, done) == Execution.COMPLETE
  assert _state(store, other_run) == Execution.RUNNING  # not in the record
  assert _state(store, other_pipeline) == Execution.RUNNING
  [line] = lines
  assert line.startswith('Marked 1 execution CANCELED that a dead run left '
                         'RUNNING: Transform (pipeline run run-a; pid ')
  assert 'on this host' in line


def test_what_a_canceled_execution_half_wrote_is_removed(tmp_path):
  """Its output and executor dirs go; a live artifact's dir and the dirs of
  executions not marked stay."""
  store = _store(tmp_path)
  root = tmp_path / 'pipeline'
  [transform] = _executions(store, 'run-a', {'Transform': Execution.RUNNING})
  [running] = _executions(store, 'run-b', {'Transform': Execution.RUNNING})
  made = {}
  for name, execution_id in (('temp', transform), ('live', transform),
                             ('other', running)):
    output = {'temp': 'transform_graph', 'live': 'updated_analyzer_cache',
              'other': 'transform_graph'}[name]
    made[name] = root / 'Transform' / output / str(execution_id)
    (made[name] / '.temp_path').mkdir(parents=True)
  executor = root / 'Transform' / '.system' / 'executor_execution' / str(
      transform)
  (executor / '.temp').mkdir(parents=True)
  type_id = store.put_artifact_type(
      metadata_store_pb2.ArtifactType(name='TransformCache'))
  store.put_artifacts([metadata_store_pb2.Artifact(
      type_id=type_id, uri=str(made['live']),
      state=metadata_store_pb2.Artifact.LIVE)])
  marked, _ = dead_runs.recover_dead_run(store, _holder(), 'taxi', STORE)
  removed = dead_runs.remove_litter(store, str(root), marked)
  assert sorted(removed) == sorted([str(made['temp']), str(executor)])
  assert not made['temp'].exists() and not executor.exists()
  assert made['live'].exists() and made['other'].exists()
  assert dead_runs.remove_litter(store, str(root), []) == []


def test_a_pid_now_used_by_another_process_counts_as_dead(tmp_path):
  store = _store(tmp_path)
  [trainer] = _executions(store, 'run-a', {'Trainer': Execution.RUNNING})
  holder = _holder(pid=os.getpid(),  # alive, but started at another time
                   process_start=run_lock.process_start(os.getpid()) + 1)
  assert dead_runs.recover_dead_run(store, holder, 'taxi', STORE)[0]
  assert _state(store, trainer) == Execution.CANCELED


@pytest.fixture
def live_pid():
  child = subprocess.Popen([sys.executable, '-c', 'import time; '
                            'time.sleep(600)'])
  yield child.pid
  child.kill()
  child.wait()


@pytest.mark.parametrize('live, changes, kept_because', [
    (False, dict(host='some-other-host'), 'cannot check'),
    (True, {}, 'still running'),
])
def test_a_run_not_provably_dead_is_left_alone(tmp_path, live_pid, live,
                                               changes, kept_because):
  store = _store(tmp_path)
  [trainer] = _executions(store, 'run-a', {'Trainer': Execution.RUNNING})
  if live:  # a live process that does not hold the lock: not judged dead
    changes = dict(pid=live_pid,
                   process_start=run_lock.process_start(live_pid))
  marked, [line] = dead_runs.recover_dead_run(store, _holder(**changes),
                                              'taxi', STORE)
  assert marked == [] and _state(store, trainer) == Execution.RUNNING
  assert line.startswith('Left 1 execution of pipeline run run-a RUNNING (')
  assert kept_because in line


def test_an_earlier_run_of_this_process_has_ended(tmp_path):
  store = _store(tmp_path)
  [trainer] = _executions(store, 'run-a', {'Trainer': Execution.RUNNING})
  holder = _holder(pid=os.getpid(),
                   process_start=run_lock.process_start(os.getpid()))
  assert dead_runs.recover_dead_run(store, holder, 'taxi', STORE)[0]
  assert _state(store, trainer) == Execution.CANCELED


@pytest.mark.parametrize('changes', [
    dict(finished=True), dict(store='sqlite:another'),
    dict(pipeline='another')])
def test_a_finished_or_foreign_record_is_ignored(tmp_path, changes):
  store = _store(tmp_path)
  [trainer] = _executions(store, 'run-a', {'Trainer': Execution.RUNNING})
  assert dead_runs.recover_dead_run(store, _holder(**changes), 'taxi',
                                    STORE) == ([], [])
  assert _state(store, trainer) == Execution.RUNNING


HOLD = '''
import sys, time
from ops import run_lock
lock = run_lock.RunLock(sys.argv[1], 'taxi', 'sqlite:test')
lock.acquire()
lock.add_run('run-held')
print('held', flush=True)
time.sleep(600)
'''


def test_the_lock_refuses_a_second_run_until_the_first_dies(tmp_path):
  root = str(tmp_path / 'root')
  holder = subprocess.Popen([sys.executable, '-c', HOLD, root],
                            cwd=helpers.REPO, stdout=subprocess.PIPE,
                            text=True)
  try:
    assert holder.stdout.readline() == 'held\n'
    lock = run_lock.RunLock(root, 'taxi', 'sqlite:test')
    with pytest.raises(run_lock.RunInProgress) as refused:
      lock.acquire()
    message = str(refused.value.code)
    assert message.startswith(f'Another run is in progress on pipeline root '
                              f'{root}: pid {holder.pid} on this host')
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
  previous = lock.acquire()  # the kernel dropped the dead holder's lock
  try:
    assert previous.pid == holder.pid and previous.runs == ['run-held']
    assert not previous.finished
    assert previous.gone() == (True, 'the process is gone: killed or crashed')
  finally:
    lock.release()


def test_a_run_that_stops_before_marking_passes_the_dead_runs_on(tmp_path):
  store = _store(tmp_path)
  [trainer] = _executions(store, 'run-a', {'Trainer': Execution.RUNNING})
  path = tmp_path / run_lock.LOCK_FILE
  dead = _holder()
  path.write_text(json.dumps(dict(dataclasses.asdict(dead), runs=[])) + '\n'
                  + json.dumps({'run': 'run-a'}) + '\n')
  lock = run_lock.RunLock(str(tmp_path), 'taxi', STORE)
  assert lock.acquire().runs == ['run-a']
  lock.release()  # e.g. its store did not open: nothing marked, not settled
  assert _state(store, trainer) == Execution.RUNNING
  lock = run_lock.RunLock(str(tmp_path), 'taxi', STORE)
  previous = lock.acquire()
  assert previous.pid == os.getpid() and previous.runs == ['run-a']
  marked, _ = dead_runs.recover_dead_run(store, previous, 'taxi', STORE)
  lock.settle()
  lock.release()
  assert [m.run for m in marked] == ['run-a']
  assert _state(store, trainer) == Execution.CANCELED
  lock = run_lock.RunLock(str(tmp_path), 'taxi', STORE)
  assert lock.acquire().finished
  lock.release()


def test_a_record_cut_short_by_a_kill_still_names_its_runs(tmp_path):
  path = tmp_path / run_lock.LOCK_FILE
  path.write_text(json.dumps(dict(
      pid=1, host='h', boot_id='b', process_start=2, started=3.0,
      command='c', store=STORE, pipeline='taxi')) + '\n'
                  + json.dumps({'run': 'run-a'}) + '\n{"run": "run-')
  lock = run_lock.RunLock(str(tmp_path), 'taxi', STORE)
  previous = lock.acquire()
  lock.release()
  assert previous.runs == ['run-a'] and not previous.finished


# --- kill -9 of local_runner.py, for real --------------------------------------


@pytest.fixture(scope='module')
def cfg(tmp_path_factory):
  """The pipeline world's first run's data and flags, in a cold root."""
  return helpers.cold_root(str(tmp_path_factory.mktemp('killed')))


def _local_runner(cfg, out_path):
  return subprocess.Popen(
      [sys.executable, 'local_runner.py', '--data-root', cfg.data_root,
       '--pipeline-root', cfg.pipeline_root, '--serving-dir', cfg.serving_dir,
       '--skip-served-prediction'] + helpers.as_flags(helpers.FAST_PIPELINE),
      cwd=helpers.REPO, stdout=open(out_path, 'w'), stderr=subprocess.STDOUT)


def _running_transform_or_trainer(path):
  """Ids of RUNNING Transform/Trainer executions (read-only, no MLMD)."""
  if not os.path.exists(path):
    return []
  try:
    with sqlite3.connect(f'file:{path}?mode=ro', uri=True, timeout=30) as db:
      rows = db.execute(
          'SELECT e.id, t.name FROM Execution e JOIN Type t '
          'ON e.type_id = t.id WHERE e.last_known_state = ?',
          (Execution.RUNNING,)).fetchall()
  except sqlite3.Error:
    return []  # not made yet
  return [i for i, name in rows
          if name.rsplit('.', 1)[-1] in ('Transform', 'Trainer')]


def _active(store):
  return [e for e in store.get_executions()
          if e.last_known_state in (Execution.NEW, Execution.RUNNING)]


@pytest.mark.integration
def test_kill_9_mid_run_then_the_next_run_marks_and_resumes(cfg, tmp_path,
                                                            request):
  """The resumed run ends where an uninterrupted one does: the same data
  and flags as the pipeline world's first run (tests/conftest.py) give the
  same model, metrics and decision in this cold root."""
  first = _local_runner(cfg, tmp_path / 'first.out')
  try:
    while not _running_transform_or_trainer(cfg.metadata_path):
      assert first.poll() is None, (tmp_path / 'first.out').read_text()
      time.sleep(0.2)
    # A second run while the first lives is refused, before it touches
    # anything.
    from pipeline.run_pipeline import run_pipeline  # pylint: disable=g-import-not-at-top
    with pytest.raises(SystemExit) as refused:
      run_pipeline(cfg, lambda: pytest.fail('a second run started'))
    assert f'pid {first.pid} on this host' in str(refused.value.code)
    assert 'Another run is in progress' in str(refused.value.code)
  finally:
    first.send_signal(signal.SIGKILL)
    first.wait()
  assert first.returncode == -signal.SIGKILL

  store = metadata_store.open_store(
      metadata_store.sqlite_config(cfg.metadata_path))
  left = _active(store)
  assert left, 'the kill left nothing RUNNING'
  killed_nodes = {
      c.name.split('.', 1)[1] for e in left
      for c in store.get_contexts_by_execution(e.id) if c.type == 'node'}
  assert killed_nodes <= {'Transform', 'Trainer'}, killed_nodes
  [run] = {c.name for e in left for c in store.get_contexts_by_execution(e.id)
           if c.type == 'pipeline_run'}

  second = _local_runner(cfg, tmp_path / 'second.out')
  second.wait(timeout=1800)
  out = (tmp_path / 'second.out').read_text()
  assert second.returncode == 0, out
  nodes = ', '.join(sorted(killed_nodes))
  assert (f'Marked {len(left)} execution{"s" if len(left) > 1 else ""} '
          f'CANCELED that a dead run left RUNNING: {nodes} (pipeline run '
          f'{run}; pid {first.pid} on this host') in out, out
  assert f'dead run           pipeline run {run} died mid-run' in out, out
  store = metadata_store.open_store(
      metadata_store.sqlite_config(cfg.metadata_path))
  for execution in store.get_executions_by_id([e.id for e in left]):
    assert execution.last_known_state == Execution.CANCELED
  # Nothing the killed executions half-wrote is left under the root.
  import glob  # pylint: disable=g-import-not-at-top
  for e in left:
    assert not glob.glob(os.path.join(cfg.pipeline_root, '*', '*', str(e.id))
                         ), e.id
    assert not glob.glob(os.path.join(cfg.pipeline_root, '*', '.system',
                                      'executor_execution', str(e.id)))
  assert _active(store) == []
  # It resumed: what was done is reused, what was killed runs again.
  assert 'CsvExampleGen                  cached' in out
  for node in killed_nodes:
    assert f'{node:<30} ran' in out, out
  assert 'STOPPED' not in out
  pusher = max(store.get_executions_by_context(store.get_context_by_type_and_name(
      'node', 'taxi.Pusher').id), key=lambda e: e.id)
  assert pusher.last_known_state == Execution.COMPLETE
  with open(os.path.join(cfg.pipeline_root, run_lock.LOCK_FILE)) as f:
    assert json.loads(f.read().splitlines()[-1]).keys() == {'finished'}

  # The same model and decision as the world's uninterrupted first run
  # (asked for last: the world may still be building in another worker).
  from pipeline import run_pipeline  # pylint: disable=g-import-not-at-top
  resumed = run_pipeline.read_outcome(
      cfg, metadata_store.store_config(cfg), True, None, [], 0.0)
  first = request.getfixturevalue('pipeline_world').outcome('first')
  helpers.assert_same_model_and_decision(resumed, first)


@pytest.mark.integration
def test_ctrl_c_in_a_component_leaves_it_canceled(cfg, monkeypatch):
  """An interrupted run (KeyboardInterrupt in the Trainer, which TFX's
  launcher does not catch) marks what it left RUNNING on its way out."""
  from pipeline.run_pipeline import run_pipeline  # pylint: disable=g-import-not-at-top
  from tfx.components.trainer import executor  # pylint: disable=g-import-not-at-top
  from tfx.orchestration.local.local_dag_runner import LocalDagRunner  # pylint: disable=g-import-not-at-top

  def interrupted(*args, **kwargs):
    raise KeyboardInterrupt

  # Not run_fn: TFX reloads the module it comes from.
  monkeypatch.setattr(executor.GenericExecutor, 'Do', interrupted)
  with pytest.raises(KeyboardInterrupt):
    # Another budget: a Trainer cache miss, everything before it cached.
    run_pipeline(dataclasses.replace(cfg, train_steps=121), LocalDagRunner)
  store = metadata_store.open_store(
      metadata_store.sqlite_config(cfg.metadata_path))
  assert _active(store) == []
  trainer = max(store.get_executions_by_context(store.get_context_by_type_and_name(
      'node', 'taxi.Trainer').id), key=lambda e: e.id)
  assert trainer.last_known_state == Execution.CANCELED
  assert 'interrupted (KeyboardInterrupt)' in trainer.custom_properties[
      tfx_private.ERROR_MSG_KEY].string_value
