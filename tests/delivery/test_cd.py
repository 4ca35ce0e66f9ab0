"""`python -m delivery.cd` end to end: canary, checks, promote or roll back.

Real server processes on free loopback ports (always stopped), real
SavedModels from the trained_model fixture, and versions built from it with
the same signatures: a weaker one (a deterministic quarter of its decisions
flipped), an inverted one (1 - p), one that answers every request with an
error, and one without the serving_raw signature. Each test asserts its own
premises (weaker is less accurate, decisions really disagree) on the check
rows, since the trained model may change. Latency targets are never a test
input except as impossible ones, and no assertion is on a time.
"""

import json
import os
import queue
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest
import tensorflow as tf

from delivery import canary_stats
from delivery import cd
from delivery import checks
from serving import client
from serving import model_config
from delivery import version_list
from delivery import versions
from models import tasks
from tests import helpers


# Generous targets: these tests check the gate's logic, never the machine.
NO_TARGETS = ['--p50_target_ms', '600000', '--p99_target_ms', '600000']
QUICK = ['--load_requests', '100', '--concurrency', '2', '--wait_seconds', '90']
OLD_DISAGREEMENT_VETO = 0.15  # the symmetric check this gate replaced


def _wrapped(loaded, answer, path):
  """Saves `loaded` with both signatures' outputs passed through `answer`."""
  module = tf.Module()
  module.model = loaded  # tracks the variables
  signatures = {}
  for name in checks.REQUIRED_SIGNATURES:
    signature = loaded.signatures[name]

    def call(_signature=signature, **inputs):
      return {'outputs': answer(_signature(**inputs)['outputs'])}
    signatures[name] = tf.function(call).get_concrete_function(
        **signature.structured_input_signature[1])
  tf.saved_model.save(module, path, signatures=signatures)
  return path


def _flip_a_quarter(p):
  """1 - p where the 4th decimal digit of p is 0 mod 4: ~25% of rows, chosen
  by the answer itself, so both signatures flip the same rows."""
  return tf.where(tf.math.floormod(tf.floor(p * 1e4), 4.0) == 0.0, 1.0 - p, p)


def _always_fails(p):
  with tf.control_dependencies([tf.debugging.assert_less(
      p, -1.0, message='this version fails every request')]):
    return tf.identity(p)


@pytest.fixture(scope='module')
def built(tmp_path_factory, trained_model):
  """{'weaker' | 'inverted' | 'failing' | 'no_raw': SavedModel dir}."""
  root = tmp_path_factory.mktemp('built_models')
  loaded = tf.saved_model.load(trained_model.serving_model_dir)
  dirs = {name: _wrapped(loaded, answer, str(root / name)) for name, answer in
          [('weaker', _flip_a_quarter), ('inverted', lambda p: 1.0 - p),
           ('failing', _always_fails)]}
  tf.saved_model.save(loaded, str(root / 'no_raw'), signatures={
      'serving_default': loaded.signatures['serving_default']})
  return {**dirs, 'no_raw': str(root / 'no_raw')}


@pytest.fixture(scope='module')
def check_rows():
  """The rows `python -m delivery.cd` checks by default."""
  return canary_stats.read_rows(helpers.TAXI,
                                canary_stats.check_csvs(helpers.DATA_ROOT),
                                canary_stats.DEFAULT_ROWS)


def _deployment(tmp_path, sources):
  """<tmp>/taxi/<v> for each source, and a config serving 1 as stable."""
  base = tmp_path / 'taxi'
  base.mkdir()
  for version, src in sources.items():
    helpers.copy_version(src, str(base), version)
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


def _accuracy(answers, labels):
  """Binary answers ([p] per row) against labels."""
  return float(np.mean((np.array(answers)[:, 0] > 0.5) == np.array(labels)))


def _answers(p):
  """Probabilities of class 1 as a binary task's answer rows ([p])."""
  return [[float(x)] for x in p]


class Traffic:
  """Clients of `stable` and of the unlabelled model, counting failures."""

  def __init__(self, url):
    body = json.dumps({'signature_name': 'serving_raw', 'instances': [
        client.raw_instance(helpers.TAXI, helpers.TAXI.sample)]}).encode()
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


def test_paired_bounds_are_one_sided_seeded_and_need_rows():
  """canary_stats alone: better passes however different, worse fails, the
  same inputs give the same bounds, and 30 rows decide nothing."""
  rng = np.random.default_rng(3)
  labels = (rng.random(800) < 0.25).astype(int)
  good = np.clip(0.25 + 0.5 * (labels - 0.25) + rng.normal(0, 0.2, 800), 0, 1)
  weaker = np.where(rng.random(800) < 0.25, 1 - good, good)
  good, weaker = _answers(good), _answers(weaker)
  assert canary_stats.disagreement(good, weaker) > OLD_DISAGREEMENT_VETO
  better = canary_stats.compare(good, weaker, labels)
  assert [c.verdict for c in better] == [canary_stats.PASS] * 3, better
  assert all(c.shortfall < 0 and c.upper < 0 for c in better)
  worse = canary_stats.compare(weaker, good, labels)
  assert {c.metric for c in worse if c.verdict == canary_stats.FAIL} >= {
      canary_stats.ACCURACY, canary_stats.AUC}, worse
  assert canary_stats.compare(weaker, good, labels) == worse  # seeded
  few = canary_stats.compare(good[:30], good[:30], labels[:30])
  assert [c.verdict for c in few] == [canary_stats.INCONCLUSIVE] * 3, few
  assert all(c.rows_needed >= 60 for c in few)


def test_a_multiclass_canary_is_judged_on_accuracy_alone():
  """Three classes: the answers are probability rows, the gate judges the
  share of right classes (AUC and calibration read one probability), and a
  canary that confuses a class fails where one that is better passes."""
  rng = np.random.default_rng(5)
  labels = rng.integers(0, 3, 600)
  good = np.full((600, 3), 0.1)
  good[np.arange(600), labels] = 0.8
  confused = good.copy()
  swap = (labels == 1) & (rng.random(600) < 0.8)  # class 1 read as 2
  confused[swap] = good[swap][:, [0, 2, 1]]
  task = tasks.MULTICLASS
  better = canary_stats.compare(good.tolist(), confused.tolist(), labels,
                                task=task, n_classes=3)
  assert [(c.metric, c.verdict) for c in better] == [
      (canary_stats.ACCURACY, canary_stats.PASS)]
  worse = canary_stats.compare(confused.tolist(), good.tolist(), labels,
                               task=task, n_classes=3)
  assert [(c.metric, c.verdict) for c in worse] == [
      (canary_stats.ACCURACY, canary_stats.FAIL)]
  assert canary_stats.disagreement(confused.tolist(), good.tolist(), task,
                                   3) == pytest.approx(swap.mean())


@pytest.mark.integration
def test_promotes_a_good_version_then_rejects_a_bad_one_while_serving(
    tmp_path, trained_model, built, check_rows):
  """Stable 1 is the weaker version; 2, the trained model, disagrees with it
  on more decisions than the old veto allowed, and is promoted because it is
  better. Then: 3 (inverted) and 5 (error answers) are rolled back, and 4,
  checked on too few rows, is not judged at all."""
  good = trained_model.serving_model_dir
  trips, labels = check_rows
  by_good = checks.in_process(helpers.TAXI, tf.saved_model.load(good), trips)
  by_weaker = checks.in_process(helpers.TAXI,
                               tf.saved_model.load(built['weaker']), trips)
  # The premises: many flipped decisions, and the canary is the better one.
  disagreement = canary_stats.disagreement(by_good, by_weaker)
  assert disagreement > OLD_DISAGREEMENT_VETO
  assert _accuracy(by_good, labels) > _accuracy(by_weaker, labels)

  base, config = _deployment(tmp_path, {1: built['weaker'], 2: good})
  server = helpers.Server(None, extra=['--model_config_file', config,
                               '--model_config_file_poll_wait_seconds', '0.2'])
  traffic = None
  try:
    label = lambda name: server.request(f'/v1/models/taxi/labels/{name}')  # pylint: disable=g-long-lambda
    assert label('stable')[1]['model_version_status'][0]['version'] == '1'
    traffic = Traffic(server.url)
    target = ['--model_config_file', config, '--server', server.url,
              '--grpc', server.grpc_address, *QUICK, *NO_TARGETS]
    # The command as a user runs it: version 2 (the newest) is promoted.
    result = subprocess.run(
        [sys.executable, '-m', 'delivery.cd', *target],
        cwd=helpers.REPO, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'PROMOTED: stable 1 -> 2' in result.stdout
    for step in ('infra', 'canary', 'predictions', 'load'):
      assert f'{step:<12} PASS' in result.stdout
    assert _config(config) == ({'stable': 2}, [2])
    assert helpers.wait_for(lambda: label('stable')[1]['model_version_status'][0][
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
    by_check = {r['check']: r for r in promoted if r['action'] == 'cd_check'}
    figures = by_check['predictions']
    assert figures['rows'] == len(trips) == canary_stats.DEFAULT_ROWS
    assert figures['disagreement'] == pytest.approx(disagreement, abs=0.01)
    assert figures['accuracy']['canary'] > figures['accuracy']['stable']
    for metric in canary_stats.METRICS:
      assert figures[metric]['verdict'] == 'pass'
      assert figures[metric]['upper'] <= figures[metric]['margin']
    assert figures['max_rest_grpc_diff'] <= 1e-4
    assert by_check['load']['requests'] == 100 and by_check['load'][
        'errors'] == 0

    # Version 3 answers 1 - p: valid, fast, and wrong. Rolled back.
    helpers.copy_version(built['inverted'], base, 3)
    assert cd.main(target) == cd.EXIT_ROLLED_BACK
    assert _config(config) == ({'stable': 2}, [2])
    assert version_list.rolled_back_versions(base) == [3]
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
    assert not predictions['passed']
    for metric in (canary_stats.ACCURACY, canary_stats.AUC):
      assert predictions[metric]['verdict'] == 'fail'
      assert predictions[metric]['lower'] > predictions[metric]['margin']
    assert any('beyond margin' in f for f in predictions['failures'])
    assert rejected[-2]['rolled_back'] == 3
    assert rejected[-1]['failed'] == ['predictions']

    # Version 4 is fine, but 30 rows cannot show it: nothing judged.
    helpers.copy_version(good, base, 4)
    with open(config, 'rb') as f:
      before = f.read()
    before_log = len(_log(base))
    assert cd.main([*target, '--check_rows', '30']) == cd.EXIT_ERROR
    with open(config, 'rb') as f:
      assert f.read() == before
    assert model_config.versions_on_disk(base) == [1, 2, 4]
    assert version_list.rolled_back_versions(base) == [3]
    undecided = _log(base)[before_log:]
    assert [s for s in _steps(undecided)][-2:] == [('cd_undo', None),
                                                    ('cd_abort', None)]
    assert 'too little evidence' in undecided[-1]['error']

    # Requests to `stable` and to the model never failed, through all runs.
    traffic.stop()
    assert traffic.ok > 0 and not traffic.failures, traffic.failures[:3]

    # Version 5 answers every request with an error (HTTP 400 from a live
    # server): the version's failure, not the infrastructure's. (Unlabelled
    # requests would get those errors too while it is the newest loaded.)
    helpers.copy_version(built['failing'], base, 5)
    assert cd.main(target) == cd.EXIT_ROLLED_BACK
    assert version_list.rolled_back_versions(base) == [3, 5]
    failing = next(r for r in reversed(_log(base))
                   if r.get('check') == 'predictions')
    assert 'canary answered an error' in failing['failures'][0]
    assert 'HTTP 400' in failing['failures'][0]
    assert _config(config) == ({'stable': 2}, [2])
  finally:
    if traffic:
      traffic.stop()
    server.stop()


@pytest.mark.integration
def test_server_killed_during_the_load_step_judges_nothing(tmp_path,
                                                            trained_model):
  """kill -9 of the server while the canary (byte-identical to stable) is
  under load: exit 2, config file as before, no version moved, and the load
  clients stop after about one failed attempt each instead of spinning."""
  good = trained_model.serving_model_dir
  base, config = _deployment(tmp_path, {1: good, 2: good})
  with open(config, 'rb') as f:
    before = f.read()
  server = helpers.Server(None, extra=['--model_config_file', config,
                               '--model_config_file_poll_wait_seconds', '0.2'])
  concurrency = 4
  proc = None
  try:
    proc = subprocess.Popen(
        [sys.executable, '-u', '-m', 'delivery.cd', '--model_config_file',
         config, '--server', server.url, '--grpc', server.grpc_address,
         '--concurrency', str(concurrency), '--wait_seconds', '90',
         # Far longer than the wait below: only stopping early can pass.
         '--load_seconds', '900', *NO_TARGETS],
        cwd=helpers.REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(l) for l in proc.stdout],
                     daemon=True).start()
    out = []
    while not out or '[4/5] load test' not in out[-1]:
      out.append(lines.get(timeout=240))  # cd's own output, line by line
      assert proc.poll() is None or not lines.empty(), ''.join(out)
    # Let some requests be answered (asserted below), then kill -9.
    threading.Event().wait(2)
    server.proc.kill()
    server.proc.wait(timeout=30)
    code = proc.wait(timeout=120)
    while not lines.empty():
      out.append(lines.get())
  finally:
    if proc and proc.poll() is None:
      proc.kill()
    server.stop()
  output = ''.join(out)
  assert code == cd.EXIT_ERROR, output
  assert 'ABORTED: nothing judged' in output
  with open(config, 'rb') as f:
    assert f.read() == before
  assert version_list.rolled_back_versions(base) == []
  assert model_config.versions_on_disk(base) == [1, 2]
  records = _log(base)
  assert _steps(records)[-2:] == [('cd_undo', None), ('cd_abort', None)]
  assert not any(r['action'] in ('rollback', 'cd_done') for r in records)
  abort = records[-1]
  assert 'stopped answering' in abort['error']
  assert abort['requests'] > 0  # the load step was running when killed
  # Every attempt after the kill fails: about one per client, never more
  # than a few (the old loop made ~266,000 in 10 s).
  assert 1 <= abort['connection_failures'] <= 2 * concurrency, abort
  assert abort['status_checks'] <= 2 * concurrency, abort


@pytest.mark.integration
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
  assert version_list.rolled_back_versions(base) == [2]
  done = _log(base)[-1]
  assert done['action'] == 'cd_done' and done['failed'] == ['load']
  load = next(r for r in _log(base) if r.get('check') == 'load')
  assert load['errors'] == 0 and any('p99' in f for f in load['failures'])
  predictions = next(r for r in _log(base) if r.get('check') == 'predictions')
  assert predictions['disagreement'] == 0.0  # same model: identical answers


@pytest.mark.integration
def test_rejects_a_version_without_the_raw_signature(tmp_path, trained_model,
                                                      built, capsys):
  """The infra check fails before any server or label is touched."""
  before = '''model_config_list { config {
      name: "taxi" base_path: "taxi" model_platform: "tensorflow"
      model_version_policy { specific { versions: 1 } }
      version_labels { key: "stable" value: 1 } } }'''
  base, config = _deployment(tmp_path, {1: trained_model.serving_model_dir,
                                        2: built['no_raw']})
  code = cd.main(['--model_config_file', config, '--model_base_path', base])
  out = capsys.readouterr().out
  assert code == cd.EXIT_ROLLED_BACK, out
  assert "infra        FAIL  no 'serving_raw' signature" in out
  with open(config) as f:
    assert f.read() == before  # never rewritten
  assert version_list.rolled_back_versions(base) == [2]
  assert _steps(_log(base)) == [('cd_start', None), ('cd_check', 'infra'),
                                ('rollback', None), ('cd_done', 'rolled_back')]


@pytest.mark.integration
def test_usage_and_infrastructure_errors_change_nothing(tmp_path,
                                                        trained_model, capsys):
  good = trained_model.serving_model_dir
  base, config = _deployment(tmp_path, {1: good, 2: good})
  assert cd.main(['--model_config_file', config, '--model_base_path',
                  str(tmp_path / 'elsewhere')]) == cd.EXIT_ERROR
  assert 'is not the base_path' in capsys.readouterr().err
  for usage in (['--server', 'http://x:1'], ['--load_requests', '10']):
    with pytest.raises(SystemExit) as error:
      cd.main(['--model_config_file', config, *usage])
    assert error.value.code == 2
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
