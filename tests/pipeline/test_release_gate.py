"""pipeline/release_gate.py: nothing is released unless the gate passes.

One integration test on a copy of the shared pipeline world: a harmless
change passes the three checks and becomes current; payment_type dropped in
preprocessing is refused by the experiment (the source holds no tests), and
then, with the checkout's tests beside it, by the unit tests first.
"""

import os
import shutil

import pytest

from pipeline import release
from pipeline import release_gate
from project import paths
from tests import helpers


def test_the_gate_maps_changed_code_to_the_tests_that_mirror_it():
  assert release_gate.tests_for(paths.REPO_ROOT, [
      'models/taxi/preprocessing.py', 'pipeline/blessing.py',
      'serving/http_server.py', 'schema/taxi/schema.pbtxt', 'setup.py']) == [
          'tests/models/test_preprocessing.py', 'tests/pipeline/test_blessing.py',
          'tests/serving/test_http_server.py']


DROP_PAYMENT_TYPE = """
import tensorflow as _tf
from models import features as _features

_all_features = preprocessing_fn


def preprocessing_fn(inputs):
  # A feature-engineering change: payment_type's signal dropped.
  outputs = _all_features(inputs)
  name = _features.transformed_name('payment_type')
  outputs[name] = _tf.zeros_like(outputs[name])
  return outputs
"""


@pytest.mark.integration
def test_the_gate_releases_a_harmless_change_and_refuses_a_worse_model(
    pipeline_world, tmp_path):
  """The case that flips it: the same code with a comment passes every
  check and becomes current; payment_type dropped from the features trains
  a model the blessing rule refuses next to the served one, and nothing is
  released (the report names the check and the thresholds missed). The
  source tree holds no tests at first, so the experiment is what refuses
  it; with the checkout's tests beside it, the unit tests do first."""
  world = pipeline_world.copy(tmp_path / 'world')
  cfg = world.cfg()
  served, runs = helpers.pushed_versions(cfg), len(
      world.store().get_contexts_by_type('pipeline_run'))
  source = helpers.copy_released_tree(tmp_path / 'src')
  first = release.create(source, cfg.pipeline_root, 'taxi', compile_ir=False)
  helpers.append_to(source, 'pipeline/summary.py', '\n# a harmless change\n')
  report = release_gate.gate(source, cfg)
  assert report.passed, report.text()
  assert [c.passed for c in report.checks] == [True, True, True]
  assert 'tests/pipeline/test_summary.py' in report.checks[0].detail or (
      'no unit test' in report.checks[0].detail)
  assert release.current(cfg.pipeline_root).version == report.candidate
  assert report.current == first.version
  released = report.candidate

  helpers.append_to(source, 'models/taxi/preprocessing.py', DROP_PAYMENT_TYPE)
  report = release_gate.gate(source, cfg)
  assert not report.passed, report.text()
  failed = [c for c in report.checks if not c.passed]
  assert [c.name for c in failed] == [report.checks[-1].name]
  assert 'experiment' in failed[0].name, report.text()
  assert 'not blessed' in failed[0].detail, report.text()
  assert release.current(cfg.pipeline_root).version == released
  saved = release_gate.read_report(cfg.pipeline_root, report.candidate)
  assert saved['passed'] is False and saved['candidate'] == report.candidate
  # Production was never touched: the gate's runs had roots of their own.
  assert helpers.pushed_versions(cfg) == served
  assert len(world.store().get_contexts_by_type('pipeline_run')) == runs

  # With the checkout's tests beside the code (as in a real checkout), the
  # first check already stops it: a vocabulary test of preprocessing fails.
  shutil.copytree(os.path.join(paths.REPO_ROOT, 'tests'),
                  os.path.join(source, 'tests'),
                  ignore=shutil.ignore_patterns('__pycache__'))
  shutil.copy(os.path.join(paths.REPO_ROOT, 'pytest.ini'), source)
  shutil.copytree(os.path.join(paths.REPO_ROOT, 'data', 'taxi'),
                  os.path.join(source, 'data', 'taxi'), dirs_exist_ok=True)
  report = release_gate.gate(source, cfg)
  assert [c.passed for c in report.checks] == [False], report.text()
  assert 'tests/models/test_preprocessing.py' in report.checks[0].detail
  assert '1 failed' in report.checks[0].detail, report.text()
  assert release.current(cfg.pipeline_root).version == released
