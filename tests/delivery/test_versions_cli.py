"""Rollback and restore while a server is serving, a written model config
served, what `list` reports, concurrent rollbacks and restores, and the
CLI's errors."""

import ast
import json
import os
import subprocess
import sys
import threading

import pytest

from ml_metadata.proto import metadata_store_pb2
from lineage import metadata_store
from project import paths
from serving import base_path as base_path_lib
from serving import model_config
from delivery import version_list
from delivery import versions
from tests import helpers



@pytest.mark.integration
def test_rollback_while_serving(tmp_path, trained_model):
  base = str(tmp_path / 'taxi')
  os.makedirs(base)
  for version in (1, 2):
    helpers.copy_version(trained_model.serving_model_dir, base, version)
  server = helpers.Server(base)
  try:
    served = lambda: server.request('/v1/models/taxi')[1][  # pylint: disable=g-long-lambda
        'model_version_status'][0]['version']
    assert served() == '2'
    result = subprocess.run(
        [sys.executable, '-m', 'delivery.versions', 'rollback',
         '--model-base-path', base], cwd=helpers.REPO, capture_output=True,
        text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert 'rolled_back=2' in result.stdout and 'now_serving=1' in result.stdout
    assert helpers.wait_for(lambda: served() == '1')
    code, body = server.request('/v1/models/taxi/versions/2')
    assert code == 404
    listed = {i.version: i.rolled_back for i in version_list.list_versions(base)}
    assert listed == {2: True, 1: False}
    # restore undoes it: 2 is back under the base path and served again.
    result = helpers.versions_cli('restore', '2', '--model-base-path', base)
    assert result.returncode == 0, result.stderr
    assert 'restored=2' in result.stdout and 'now_serving=2' in result.stdout
    assert model_config.versions_on_disk(base) == [1, 2]
    assert version_list.rolled_back_versions(base) == []
    assert helpers.wait_for(lambda: served() == '2')
  finally:
    server.stop()
  with open(os.path.join(base, versions.ACTION_LOG)) as f:
    records = [json.loads(line) for line in f]
  assert [(r['action'], r.get('rolled_back', r.get('restored')))
          for r in records] == [('rollback', 2), ('restore', 2)]


@pytest.mark.integration
def test_rollback_refuses_to_remove_the_only_version(tmp_path, trained_model):
  base = str(tmp_path / 'taxi')
  os.makedirs(base)
  helpers.copy_version(trained_model.serving_model_dir, base, 1)
  with pytest.raises(versions.Error, match='at least two versions'):
    versions.rollback(base)
  assert os.path.isdir(os.path.join(base, '1'))


@pytest.mark.integration
def test_promote_label_is_picked_up_by_a_running_server(tmp_path,
                                                        trained_model):
  """write-config writes the file the server is started with (specific:
  stable = the newest version then, 1), promote edits it under it."""
  base = tmp_path / 'taxi'
  base.mkdir()
  helpers.copy_version(trained_model.serving_model_dir, str(base), 1)
  config = tmp_path / 'models.config'
  written = helpers.versions_cli('write-config', '--policy', 'specific', '--model-base-path',
                 str(base), '--model-config-file', str(config))
  assert written.returncode == 0, written.stderr
  assert 'stable=1' in written.stdout
  helpers.copy_version(trained_model.serving_model_dir, str(base), 2)
  server = helpers.Server(None, extra=['--model_config_file', str(config),
                               '--model_config_file_poll_wait_seconds', '1'])
  try:
    label = lambda name: server.request(f'/v1/models/taxi/labels/{name}')  # pylint: disable=g-long-lambda

    def labelled(name):  # one request: the label's version, else its code
      code, body = label(name)
      return body['model_version_status'][0]['version'] if code == 200 else code

    assert labelled('stable') == '1'
    assert labelled('canary') == 404
    for name, version in (('canary', 2), ('stable', 2)):
      result = subprocess.run(
          [sys.executable, '-m', 'delivery.versions', 'promote', str(version),
           '--label', name, '--model-config-file', str(config)],
          cwd=helpers.REPO, capture_output=True, text=True, timeout=60)
      assert result.returncode == 0, result.stderr
    # (until version 2 is loaded, a label naming it is a 404, as in TF
    # Serving)
    assert helpers.wait_for(lambda: labelled('stable') == '2')
    assert labelled('canary') == '2'
    code, body = server.request('/v1/models/taxi')
    assert code == 200
    assert [s['version'] for s in body['model_version_status']] == ['2', '1']
  finally:
    server.stop()
  result = subprocess.run(
      [sys.executable, '-m', 'delivery.versions', 'promote', '9', '--label',
       'stable', '--model-config-file', str(config)], cwd=helpers.REPO,
      capture_output=True, text=True, timeout=60)
  assert result.returncode != 0 and 'version 9 is not under' in result.stderr


# --- concurrent mutations -------------------------------------------------
BOUND_S = 300  # bounds a wait that should end, never a measured time

# One process of a race: `calls` times `versions.<action>(base[, version])`
# ('-': no version), after `go` appears; prints what each call returned.
_RACE = """
import contextlib, io, os, sys
from delivery import versions
base, go, action, version, calls = sys.argv[1:5] + [int(sys.argv[5])]
args = (base,) if version == '-' else (base, int(version))
print('ready', flush=True)
while not os.path.exists(go):  # spin: both processes start together
  pass
results = []
for _ in range(calls):
  try:
    with contextlib.redirect_stdout(io.StringIO()):
      results.append(getattr(versions, action)(*args))
  except BaseException as e:  # pylint: disable=broad-except
    results.append(type(e).__name__)
print(repr(results), flush=True)
"""


def _race(tmp_path, base, *racers):
  """Runs one _RACE process per (action, version, calls), started
  together; returns each one's results."""
  go = str(tmp_path / 'go')
  procs = [subprocess.Popen(
      [sys.executable, '-c', _RACE, base, go, action, version, str(calls)],
      cwd=helpers.REPO, stdout=subprocess.PIPE, text=True)
           for action, version, calls in racers]
  for proc in procs:
    assert proc.stdout.readline().strip() == 'ready'
  open(go, 'w').close()
  return [ast.literal_eval(proc.communicate(timeout=BOUND_S)[0])
          for proc in procs]


def _empty_versions(base, numbers):
  os.makedirs(base)
  for v in numbers:
    os.makedirs(os.path.join(base, str(v)))


def _rollbacks_logged(base):
  with open(os.path.join(base, versions.ACTION_LOG)) as f:
    return [r for r in map(json.loads, f) if r['action'] == 'rollback']


def test_concurrent_rollbacks_in_two_processes_act_one_after_the_other(
    tmp_path):
  """Two processes rolling back the newest version 50 times each, started
  together: every call sees the previous one's result, so 100 distinct
  versions are rolled back, newest first, and no call fails. (Unlocked, a
  call renamed a directory the other had just moved: FileNotFoundError, in
  10 of 10 such trials.)"""
  base = str(tmp_path / 'taxi')
  _empty_versions(base, range(1, 102))
  results = _race(tmp_path, base, ('rollback', '-', 50), ('rollback', '-', 50))
  assert all(isinstance(r, int) for rs in results for r in rs), results
  assert model_config.versions_on_disk(base) == [1]
  assert version_list.rolled_back_versions(base) == list(range(2, 102))
  logged = _rollbacks_logged(base)
  assert [r['rolled_back'] for r in logged] == list(range(101, 1, -1))
  assert [r['now_serving'] for r in logged] == list(range(100, 0, -1))


def test_two_rollback_commands_started_together(tmp_path):
  """`rollback` rolls back the newest when it holds the lock: two of them
  roll back two versions, never one twice. `rollback V` is idempotent:
  two of them roll back V once, and both succeed."""
  base = str(tmp_path / 'taxi')
  _empty_versions(base, (1, 2, 3, 4))

  def together(*args):
    procs = [subprocess.Popen(
        [sys.executable, '-m', 'delivery.versions', 'rollback', *args,
         '--model-base-path', base],
        cwd=helpers.REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True) for _ in range(2)]
    return [(p.wait(timeout=BOUND_S), p.stdout.read(), p.stderr.read())
            for p in procs]

  outcomes = together()
  assert [code for code, _, _ in outcomes] == [0, 0], outcomes
  assert model_config.versions_on_disk(base) == [1, 2]
  assert sorted(r['rolled_back'] for r in _rollbacks_logged(base)) == [3, 4]
  outcomes = together('2')
  assert [code for code, _, _ in outcomes] == [0, 0], outcomes
  assert model_config.versions_on_disk(base) == [1]
  assert [r['rolled_back'] for r in _rollbacks_logged(base)] == [4, 3, 2]
  said = sorted(out.strip() for _, out, _ in outcomes)
  assert said == ['rollback: rolled_back=2, now_serving=1',
                  'rollback: version 2 is already rolled back, '
                  'now_serving=1']


def test_threads_rolling_back_and_listing_never_see_a_missing_version(
    tmp_path, capsys):
  """In one process: 2 threads roll back, 2 list, 15 times each, 5 times
  over. (Unlocked: FileNotFoundError in 22 of 30 such trials.)"""
  for trial in range(5):
    base = str(tmp_path / f'taxi{trial}')
    _empty_versions(base, range(1, 40))
    errors, seen = [], []
    barrier = threading.Barrier(4)

    def work(kind, base=base, errors=errors, seen=seen, barrier=barrier):
      barrier.wait()
      for _ in range(15):
        try:
          if kind == 'rollback':
            versions.rollback(base)
          else:
            listed = [i.version for i in version_list.list_versions(base)]
            seen.append(len(listed) == len(set(listed)) == 39)
        except BaseException as e:  # pylint: disable=broad-except
          errors.append(f'{kind}: {type(e).__name__}: {e}')
    threads = [threading.Thread(target=work, args=(kind,)) for kind in
               ('rollback', 'rollback', 'list', 'list')]
    for thread in threads:
      thread.start()
    for thread in threads:
      thread.join(timeout=BOUND_S)
    assert not errors, errors
    assert all(seen)  # each version listed once, served or rolled back
    assert model_config.versions_on_disk(base) == list(range(1, 10))
    assert version_list.rolled_back_versions(base) == list(range(10, 40))
  capsys.readouterr()


# --- errors: one line, non-zero -------------------------------------------
def test_cli_errors_are_one_line_and_exit_non_zero(tmp_path):
  base = str(tmp_path / 'taxi')
  _empty_versions(base, (1,))
  config = tmp_path / 'models.config'
  config.write_text('model_config_list { config { name: "taxi" '
                    'base_path: "taxi" model_platform: "tensorflow" } }')
  broken = tmp_path / 'broken.config'
  broken.write_text('model_config_list { config { name: ')
  usage = [
      (['promote', '1', '--model-config-file', str(tmp_path / 'missing')],
       'No such file or directory'),
      (['promote', '1', '--model-config-file', str(broken)],
       'does not parse'),
      (['promote', '1', '--model-config-file', str(config),
        '--model-name', 'other'], "model 'other' is not in"),
      (['promote', '9', '--model-config-file', str(config)],
       'version 9 is not under'),
      (['promote', '1', '--model-config-file', str(tmp_path / 'missing')],
       'write it first: python -m delivery.versions write-config '
       f'--model_config_file {tmp_path / "missing"}'),
      (['list', '--model-config-file', str(tmp_path / 'missing'),
        '--model-base-path', base], 'No such file or directory'),
      (['list', '--model-config-file', str(broken), '--model-base-path',
        base], 'does not parse'),
      (['promote'], 'promote needs VERSION'),
      (['restore'], 'restore needs VERSION'),
      (['restore', '7', '--model-base-path', base],
       'version 7 is not rolled back'),
      (['list', '1'], 'list takes no VERSION'),
      (['rollback', '7', '--model-base-path', base], 'version 7 is not under'),
      (['rollback', '--model-base-path', str(tmp_path / 'nowhere')],
       'is not a directory'),
      (['write-config', '--model-base-path', str(tmp_path / 'nowhere'),
        '--model-config-file', str(tmp_path / 'new.config')],
       'is not a directory'),
      (['rollback', 'x'], "invalid int value: 'x'"),
  ]
  for args, message in usage:
    result = helpers.versions_cli(*args)
    assert result.returncode == 2, (args, result.stderr)  # usage
    assert message in helpers.one_error_line(result), (args, result.stderr)
  refused = helpers.versions_cli('rollback', '--model-base-path', base)
  assert refused.returncode == 1  # refused
  assert 'at least two versions' in helpers.one_error_line(refused)
  refused = helpers.versions_cli('write-config', '--model-base-path', base,
                 '--model-config-file', str(config))
  assert refused.returncode == 1
  assert 'exists: kept as it is (--force replaces it)' in helpers.one_error_line(
      refused)
  assert model_config.versions_on_disk(base) == [1]
  assert config.read_text().startswith('model_config_list { config { name')
  assert not os.path.exists(tmp_path / 'new.config')


def test_cd_errors_are_one_line_and_exit_2(tmp_path):
  """delivery.cd: usage, a missing or broken config file: exit 2 (nothing
  judged), one line, no traceback, nothing changed."""
  base = str(tmp_path / 'taxi')
  _empty_versions(base, (1, 2))
  broken = tmp_path / 'broken.config'
  broken.write_text('model_config_list { config { name: ')
  for args, message in [
      (['--model_config_file', str(tmp_path / 'missing')],
       'No such file or directory'),
      (['--model_config_file', str(broken)], 'does not parse'),
      (['--model_config_file', str(broken), '--concurrency', 'x'],
       "invalid int value: 'x'"),
      (['--model_config_file', str(broken), '--server', 'http://x:1'],
       '--server and --grpc go together')]:
    result = subprocess.run([sys.executable, '-m', 'delivery.cd', *args],
                            cwd=helpers.REPO, capture_output=True, text=True,
                            timeout=BOUND_S)
    assert result.returncode == 2, (args, result.stderr)
    assert 'Traceback' not in result.stderr, result.stderr
    (line,) = [l for l in result.stderr.splitlines()
               if l.startswith(('cd: ', 'python -m delivery.cd: error: '))]
    assert message in line, (args, line)
  assert sorted(os.listdir(base)) == ['1', '2']


# --- restore ----------------------------------------------------------------
def _actions(base):
  with open(os.path.join(base, versions.ACTION_LOG)) as f:
    return [r['action'] for r in map(json.loads, f)]


def test_restore_is_idempotent_and_refuses_to_replace_a_version(tmp_path):
  base = str(tmp_path / 'taxi')
  _empty_versions(base, (1, 2, 3))
  assert versions.rollback(base, 3) == 2
  assert versions.restore(base, 3) == 3
  assert model_config.versions_on_disk(base) == [1, 2, 3]
  again = helpers.versions_cli('restore', '3', '--model-base-path', base)  # served already
  assert again.returncode == 0, again.stderr
  assert again.stdout.strip() == ('restore: version 3 is already served, '
                                  'now_serving=3')
  assert _actions(base) == ['rollback', 'restore']
  # A version 2 under the base path beside the rolled-back 2: nothing moves.
  versions.rollback(base, 2)
  os.makedirs(os.path.join(base, '2'))
  refused = helpers.versions_cli('restore', '2', '--model-base-path', base)
  assert refused.returncode == 1
  assert 'already exists beside' in helpers.one_error_line(refused)
  assert model_config.versions_on_disk(base) == [1, 2, 3]
  assert version_list.rolled_back_versions(base) == [2]
  assert _actions(base) == ['rollback', 'restore', 'rollback']


def test_concurrent_rollback_and_restore_of_one_version(tmp_path):
  """`rollback 3` and `restore 3`, 50 times each in two processes started
  together: no call fails, 3 is always in exactly one place, and the
  logged moves alternate, each one starting where the previous one left
  it (unlocked, one rename's source is gone under the other)."""
  base = str(tmp_path / 'taxi')
  _empty_versions(base, (1, 2, 3))
  results = _race(tmp_path, base, ('rollback', '3', 50), ('restore', '3', 50))
  assert all(r in (2, 3) for rs in results for r in rs), results
  served = 3 in model_config.versions_on_disk(base)
  rolled_back = 3 in version_list.rolled_back_versions(base)
  assert served != rolled_back
  moves = _actions(base)
  assert moves, 'no rollback happened'
  assert all(a != b for a, b in zip(moves, moves[1:])), moves
  assert moves[0] == 'rollback'
  assert moves[-1] == ('restore' if served else 'rollback')


# --- write-config -------------------------------------------------------------
def test_write_config_writes_what_the_server_parses_and_keeps_a_file(
    tmp_path):
  base = tmp_path / 'taxi'
  _empty_versions(str(base), (5, 7))
  config = tmp_path / 'deep' / 'models.config'  # its directory is made
  relative = os.path.relpath(base, tmp_path)
  written = subprocess.run(
      [sys.executable, '-m', 'delivery.versions', 'write-config',
       '--model-base-path', relative, '--model-config-file', str(config)],
      cwd=tmp_path, env={**os.environ, 'PYTHONPATH': helpers.REPO},
      capture_output=True, text=True, timeout=BOUND_S)
  assert written.returncode == 0, written.stderr
  assert f'python -m serving --model_config_file {config}' in written.stdout
  (loaded,) = model_config.load(str(config))  # what `python -m serving` reads
  assert (loaded.name, loaded.base_path, loaded.policy,
          loaded.num_versions) == ('taxi', str(base), 'latest', 1)
  assert loaded.labels == {'stable': 7}
  assert model_config.wanted_versions(loaded, [5, 7]) == [7]
  assert os.listdir(config.parent) == ['models.config']  # no temp file left
  # An existing file is kept; --force replaces it (a new newest version).
  before = config.read_text()
  os.makedirs(base / '9')
  refused = helpers.versions_cli('write-config', '--model-base-path', str(base),
                 '--model-config-file', str(config))
  assert refused.returncode == 1 and config.read_text() == before
  forced = helpers.versions_cli('write-config', '--model-base-path', str(base),
                '--model-config-file', str(config), '--force', '--policy',
                'specific')
  assert forced.returncode == 0, forced.stderr
  (loaded,) = model_config.load(str(config))
  assert (loaded.policy, loaded.specific, loaded.labels) == (
      'specific', (9,), {'stable': 9})
  assert _actions(str(base)) == ['write_config', 'write_config']


def test_the_default_model_config_file_is_git_ignored_under_outputs():
  for command in ('write-config', 'promote', 'list'):
    args = versions.parser().parse_args([command])
    assert args.model_config_file == paths.MODEL_CONFIG_FILE
  default = paths.MODEL_CONFIG_FILE
  assert os.path.commonpath([default, paths.OUTPUT_DIR]) == paths.OUTPUT_DIR
  assert os.path.dirname(default) != paths.REPO_ROOT
  ignored = subprocess.run(['git', 'check-ignore', '-q', default],
                           cwd=paths.REPO_ROOT)
  assert ignored.returncode == 0  # 1: not ignored; a run would be dirty


# --- list: labels, steps, hparams --------------------------------------------
def _put_artifact(store, type_name, uri, **custom):
  artifact = metadata_store_pb2.Artifact(
      type_id=store.put_artifact_type(
          metadata_store_pb2.ArtifactType(name=type_name)),
      uri=uri, state=metadata_store_pb2.Artifact.LIVE)
  for key, value in custom.items():
    if isinstance(value, int):
      artifact.custom_properties[key].int_value = value
    else:
      artifact.custom_properties[key].string_value = value
  return artifact


def _put_execution(store, type_name, run, inputs, outputs, **custom):
  """A COMPLETE execution in its run's context with its events, as TFX
  records it; `inputs` / `outputs`: {event key: artifact}."""
  execution = metadata_store_pb2.Execution(
      type_id=store.put_execution_type(
          metadata_store_pb2.ExecutionType(name=type_name)),
      last_known_state=metadata_store_pb2.Execution.COMPLETE)
  for key, value in custom.items():
    execution.custom_properties[key].string_value = value
  context = (store.get_context_by_type_and_name('pipeline_run', run) or
             metadata_store_pb2.Context(
                 type_id=store.put_context_type(
                     metadata_store_pb2.ContextType(name='pipeline_run')),
                 name=run))
  pairs = []
  for kind, artifacts in ((metadata_store_pb2.Event.INPUT, inputs),
                          (metadata_store_pb2.Event.OUTPUT, outputs)):
    for key, artifact in artifacts.items():
      event = metadata_store_pb2.Event(type=kind)
      event.path.steps.add().key = key
      pairs.append((artifact, event))
  _, artifact_ids, _ = store.put_execution(execution, pairs, [context])
  for (artifact, _), artifact_id in zip(pairs, artifact_ids):
    artifact.id = artifact_id


def _trained_and_pushed(store, version, train_steps, hparams):
  """What a run records for a pushed version: Trainer (train_args,
  custom_config) -> Model -> Pusher -> PushedModel."""
  model = _put_artifact(store, 'Model', f'/m/{version}')
  _put_execution(store, 'Trainer', 'run-1', {}, {'model': model},
                 train_args=json.dumps({'num_steps': train_steps}),
                 custom_config=json.dumps({'hparams': hparams,
                                           'code_version': 'code-a'}))
  pushed = _put_artifact(store, 'PushedModel', f'/serving/{version}',
                         pushed=1, pushed_version=str(version))
  _put_execution(store, 'Pusher', 'run-1', {'model': model},
                 {'pushed_model': pushed})


def test_list_shows_labels_steps_and_hparams(tmp_path, monkeypatch, capsys):
  """Version 1 as ML Metadata records it (train_args, custom_config);
  version 2 with the model card the Pusher writes into a version (what
  run_fn used: a tuned learning rate); labels from the config file."""
  base = tmp_path / 'taxi'
  _empty_versions(str(base), (1, 2))
  metadata = str(tmp_path / 'metadata.sqlite')
  store = metadata_store.open_store(metadata_store.sqlite_config(metadata))
  _trained_and_pushed(store, 1, 120, {'hidden_units': [16, 8],
                                      'learning_rate': 0.02, 'seed': 1})
  card = base_path_lib.model_card_path(str(base / '2'), 'json')
  os.makedirs(os.path.dirname(card))
  with open(card, 'w') as f:
    json.dump({'training': {'hparams': {'hidden_units': [32],
                                        'learning_rate': 0.003, 'seed': 1},
                            'tuned': ['learning_rate'], 'train_steps': 3000}},
              f)
  config = str(tmp_path / 'models.config')
  flags = ['--model-base-path', str(base), '--model-config-file', config,
           '--metadata-path', metadata]
  assert versions.main(['write-config', *flags]) == 0  # stable -> 2
  capsys.readouterr()
  assert versions.main(['promote', '1', '--label', 'canary', *flags]) == 0
  # latest serves 2 only: TF Serving would refuse the label on 1.
  assert ('warning: the latest policy does not serve version 1'
          in capsys.readouterr().err)
  assert versions.main(['list', *flags]) == 0
  two, one = capsys.readouterr().out.splitlines()
  assert two.split()[:5] == ['2', 'SERVED', '(latest)', 'labels=stable',
                             'steps=3000']
  assert two.endswith('hparams: hidden_units=32 '
                      'learning_rate=0.003(tuned) seed=1')
  assert one.split()[:5] == ['1', 'on', 'disk', 'labels=canary', 'steps=120']
  assert 'run=run-1' in one and 'code=code-a' in one
  assert one.endswith('hparams: hidden_units=16,8 learning_rate=0.02 seed=1')
  assert two.index('steps=') == one.index('steps=')  # aligned columns
  assert two.index('hparams:') == one.index('hparams:')
  # No config file at the default place: no labels, no error.
  monkeypatch.setattr(paths, 'MODEL_CONFIG_FILE', str(tmp_path / 'absent'))
  assert versions.main(['list', *flags[:2], *flags[4:]]) == 0
  lines = capsys.readouterr().out.splitlines()
  assert len(lines) == 3 and 'labels=' not in ''.join(lines)
  assert lines[2].startswith(f'(no labels: {tmp_path / "absent"} does not')
