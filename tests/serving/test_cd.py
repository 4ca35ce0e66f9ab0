"""`python -m serving.cd` end to end: canary, checks, promote or roll back.

Real server processes on free loopback ports (always stopped), real
SavedModels from the trained_model fixture, and two deliberately bad
versions built from it: one whose answers are inverted (1 - p: every
decision disagrees with stable) and one without the serving_raw signature.
Latency targets are never a test input except as impossible ones.
"""

import json
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import pytest
import tensorflow as tf

from serving import cd
from serving import model_config
from serving import versions
from tests import helpers
from tests.serving.test_model_server import Server
from tests.serving.test_model_server import _copy_version
from tests.serving.test_model_server import _wait_for

pytestmark = pytest.mark.integration

# Generous targets: these tests check the gate's logic, never the machine.
NO_TARGETS = ['--p50_target_ms', '600000', '--p99_target_ms', '600000']
QUICK = ['--check_rows', '100', '--load_requests', '80', '--concurrency', '2',
         '--wait_seconds', '90']


@pytest.fixture(scope='module')
def bad_models(tmp_path_factory, trained_model):
  """{'inverted': dir, 'no_raw': dir}: valid SavedModels a gate must reject."""
  root = tmp_path_factory.mktemp('bad_models')
  loaded = tf.saved_model.load(trained_model.serving_model_dir)

  inverted = tf.Module()
  inverted.model = loaded  # tracks the variables
  signatures = {}
  for name in cd.REQUIRED_SIGNATURES:
    signature = loaded.signatures[name]

    def flipped(_signature=signature, **inputs):
      return {'outputs': 1.0 - _signature(**inputs)['outputs']}
    signatures[name] = tf.function(flipped).get_concrete_function(
        **signature.structured_input_signature[1])
  tf.saved_model.save(inverted, str(root / 'inverted'), signatures=signatures)
  tf.saved_model.save(loaded, str(root / 'no_raw'), signatures={
      'serving_default': loaded.signatures['serving_default']})
  return {'inverted': str(root / 'inverted'), 'no_raw': str(root / 'no_raw')}


def _deployment(tmp_path, sources):
  """<tmp>/taxi/<v> for each source, and a config serving 1 as stable."""
  base = tmp_path / 'taxi'
  base.mkdir()
  for version, src in sources.items():
    _copy_version(src, str(base), version)
  config = tmp_path / 'models.config'
  config.write_text('''model_config_list { config {
      name: "taxi" base_path: "taxi" model_platform: "tensorflow"
      model_version_policy { specific { versions: 1 } }
      version_labels { key: "stable" value: 1 } } }''')
  return str(base), str(config)


def _config(path):
  (entry,) = model_config.load(path)
  return entry.labels, list(entry.specific)


def _log(base):
  with open(os.path.join(base, versions.ACTION_LOG)) as f:
    return [json.loads(line) for line in f]


def _steps(records):
  return [(r['action'], r.get('check') or r.get('label') or
           r.get('decision')) for r in records]


class Traffic:
  """Clients of `stable` and of the unlabelled model, counting failures."""

  def __init__(self, url):
    body = json.dumps({'signature_name': 'serving_raw', 'instances': [
        cd.client.raw_instance(cd.client.SAMPLE_TRIP)]}).encode()
    self.ok, self.failures = 0, []
    self._stop = threading.Event()

    def loop(path):
      while not self._stop.is_set():
        try:
          with urllib.request.urlopen(urllib.request.Request(
              url + path, data=body), timeout=30) as response:
            json.loads(response.read())['predictions'][0][0]  # pylint: disable=expression-not-assigned
          self.ok += 1
        except (OSError, urllib.error.HTTPError, KeyError, ValueError) as e:
          self.failures.append(f'{path}: {e}')
        self._stop.wait(0.02)
    self._threads = [
        threading.Thread(target=loop, args=(path,), daemon=True)
        for path in ('/v1/models/taxi/labels/stable:predict',
                     '/v1/models/taxi:predict')]
    for thread in self._threads:
      thread.start()

  def stop(self):
    self._stop.set()
    for thread in self._threads:
      thread.join(timeout=30)


def test_promotes_a_good_version_then_rejects_a_bad_one_while_serving(
    tmp_path, trained_model, bad_models):
  good = trained_model.serving_model_dir
  base, config = _deployment(tmp_path, {1: good, 2: good})
  server = Server(None, extra=['--model_config_file', config,
                               '--model_config_file_poll_wait_seconds', '0.2'])
  traffic = None
  try:
    label = lambda name: server.request(f'/v1/models/taxi/labels/{name}')  # pylint: disable=g-long-lambda
    assert label('stable')[1]['model_version_status'][0]['version'] == '1'
    traffic = Traffic(server.url)
    target = ['--model_config_file', config, '--server', server.url,
              '--grpc', server.grpc_address, *QUICK]
    # The command as a user runs it: version 2 (the newest) is promoted.
    result = subprocess.run(
        [sys.executable, '-m', 'serving.cd', *target, *NO_TARGETS],
        cwd=helpers.REPO, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'PROMOTED: stable 1 -> 2' in result.stdout
    for step in ('infra', 'canary', 'predictions', 'load'):
      assert f'{step:<12} PASS' in result.stdout
    assert _config(config) == ({'stable': 2}, [2])
    assert _wait_for(lambda: label('stable')[1]['model_version_status'][0][
        'version'] == '2')
    assert label('canary')[0] == 404
    promoted = _log(base)
    assert _steps(promoted) == [
        ('cd_start', None), ('cd_check', 'infra'), ('cd_serve', None),
        ('promote', 'canary'), ('cd_check', 'canary'),
        ('cd_check', 'predictions'), ('cd_check', 'load'),
        ('promote', 'stable'), ('cd_unlabel', 'canary'),
        ('cd_done', 'promoted')]
    assert {r['cd_run'] for r in promoted if 'cd_run' in r} == {
        promoted[0]['cd_run']}
    checks = {r['check']: r for r in promoted if r['action'] == 'cd_check'}
    assert checks['predictions']['disagreement'] == 0.0
    assert checks['predictions']['max_rest_grpc_diff'] <= 1e-4
    assert checks['load']['requests'] == 80 and checks['load']['errors'] == 0

    # Version 3 answers 1 - p: valid, fast, and wrong. Rolled back.
    _copy_version(bad_models['inverted'], base, 3)
    code = cd.main([*target, *NO_TARGETS])
    assert code == cd.EXIT_ROLLED_BACK
    assert _config(config) == ({'stable': 2}, [2])
    assert versions.rolled_back_versions(base) == [3]
    assert model_config.versions_on_disk(base) == [1, 2]
    assert label('canary')[0] == 404
    assert label('stable')[1]['model_version_status'][0]['version'] == '2'
    rejected = _log(base)[len(promoted):]
    assert _steps(rejected) == [
        ('cd_start', None), ('cd_check', 'infra'), ('cd_serve', None),
        ('promote', 'canary'), ('cd_check', 'canary'),
        ('cd_check', 'predictions'), ('cd_check', 'load'),
        ('cd_unlabel', 'canary'), ('rollback', None),
        ('cd_done', 'rolled_back')]
    predictions = next(r for r in rejected if r.get('check') == 'predictions')
    assert not predictions['passed'] and predictions['disagreement'] > 0.9
    assert any('disagree with stable' in f for f in predictions['failures'])
    assert rejected[-2]['rolled_back'] == 3
    assert rejected[-1]['failed'] == ['predictions']
  finally:
    if traffic:
      traffic.stop()
    server.stop()
  # Requests to `stable` and to the model never failed, through both runs.
  assert traffic.ok > 0 and not traffic.failures, traffic.failures[:3]


def test_rolls_back_when_a_performance_target_is_missed(tmp_path,
                                                         trained_model,
                                                         capsys):
  """No --server: cd starts its own; a 1 ns p99 target cannot be met."""
  good = trained_model.serving_model_dir
  base, config = _deployment(tmp_path, {1: good, 2: good})
  code = cd.main(['--model_config_file', config, *QUICK,
                  '--p50_target_ms', '600000', '--p99_target_ms', '0.000001'])
  out = capsys.readouterr().out
  assert code == cd.EXIT_ROLLED_BACK, out
  assert 'load         FAIL' in out and 'predictions  PASS' in out
  assert 'ROLLED BACK: stable stays 1' in out
  assert _config(config) == ({'stable': 1}, [1])
  assert versions.rolled_back_versions(base) == [2]
  done = _log(base)[-1]
  assert done['action'] == 'cd_done' and done['failed'] == ['load']
  load = next(r for r in _log(base) if r.get('check') == 'load')
  assert load['errors'] == 0 and any('p99' in f for f in load['failures'])


def test_rejects_a_version_without_the_raw_signature(tmp_path, trained_model,
                                                      bad_models, capsys):
  """The infra check fails before any server or label is touched."""
  before = '''model_config_list { config {
      name: "taxi" base_path: "taxi" model_platform: "tensorflow"
      model_version_policy { specific { versions: 1 } }
      version_labels { key: "stable" value: 1 } } }'''
  base, config = _deployment(tmp_path, {1: trained_model.serving_model_dir,
                                        2: bad_models['no_raw']})
  code = cd.main(['--model_config_file', config, '--model_base_path', base])
  out = capsys.readouterr().out
  assert code == cd.EXIT_ROLLED_BACK, out
  assert "infra        FAIL  no 'serving_raw' signature" in out
  with open(config) as f:
    assert f.read() == before  # never rewritten
  assert versions.rolled_back_versions(base) == [2]
  assert _steps(_log(base)) == [('cd_start', None), ('cd_check', 'infra'),
                                ('rollback', None), ('cd_done', 'rolled_back')]


def test_usage_and_infrastructure_errors_change_nothing(tmp_path,
                                                        trained_model, capsys):
  good = trained_model.serving_model_dir
  base, config = _deployment(tmp_path, {1: good, 2: good})
  assert cd.main(['--model_config_file', config, '--model_base_path',
                  str(tmp_path / 'elsewhere')]) == cd.EXIT_ERROR
  assert 'is not the base_path' in capsys.readouterr().err
  with pytest.raises(SystemExit) as usage:
    cd.main(['--model_config_file', config, '--server', 'http://x:1'])
  assert usage.value.code == 2
  with open(config) as f:  # a canary of another run is in flight
    text = f.read()
  with open(config, 'w') as f:
    f.write(text.replace('} } }', '} version_labels { key: "canary" '
                         'value: 1 } } }'))
  assert cd.main(['--model_config_file', config]) == cd.EXIT_ERROR
  assert 'canary already points at version 1' in capsys.readouterr().err
  with open(config, 'w') as f:  # latest{1} cannot serve stable and canary
    f.write('model_config_list { config { name: "taxi" base_path: "taxi" '
            'model_platform: "tensorflow" } }')
  assert cd.main(['--model_config_file', config]) == cd.EXIT_ERROR
  assert 'cannot be served side by side' in capsys.readouterr().err
  assert model_config.versions_on_disk(base) == [1, 2]
  assert not os.path.exists(os.path.join(base, versions.ACTION_LOG))
