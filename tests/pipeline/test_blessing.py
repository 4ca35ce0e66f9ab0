"""The blessing rule (pipeline.blessing.eval_config) decided by TFX's own Evaluator.

TFX's Evaluator executor runs for real on real labelled rows (the four 2016
quarters, ~800 trips) against three models: the fixture's trained model
(blessed), the same model after one training step, and a model that says
the base rate for every trip. The last two are what a careless rule
blesses: their accuracy is the majority class's, 0.74 here, above any
plain accuracy floor below the base rate.
"""

import os
import shutil

import pytest
import tensorflow as tf

from models import problem as problems
from pipeline import configs
from lineage import readers
from pipeline import blessing
from tests import conftest
from tests import helpers



@pytest.fixture(scope='module')
def eval_examples(tmp_path_factory):
  """The 2016 quarters as an Examples artifact with one `eval` split."""
  from tfx.types import artifact_utils  # pylint: disable=g-import-not-at-top
  from tfx.types import standard_artifacts  # pylint: disable=g-import-not-at-top
  root = str(tmp_path_factory.mktemp('eval_examples'))
  rows = [r for span in (13, 14, 15, 16) for r in helpers.read_span(span)]
  helpers.write_examples(os.path.join(root, 'Split-eval', 'data.gz'), rows)
  examples = standard_artifacts.Examples()
  examples.uri = root
  examples.split_names = artifact_utils.encode_split_names(['eval'])
  return examples


def evaluate(model_dir, examples, out):
  """TFX's Evaluator executor on `model_dir`: (blessed, failure lines)."""
  from tfx.components.evaluator import executor  # pylint: disable=g-import-not-at-top
  from tfx.types import standard_artifacts  # pylint: disable=g-import-not-at-top
  from tfx.utils import proto_utils  # pylint: disable=g-import-not-at-top
  model = standard_artifacts.Model()
  model.uri = os.path.join(out, 'model')
  shutil.copytree(model_dir, os.path.join(model.uri, 'Format-Serving'))
  evaluation = standard_artifacts.ModelEvaluation()
  evaluation.uri = os.path.join(out, 'evaluation')
  verdict = standard_artifacts.ModelBlessing()
  verdict.uri = os.path.join(out, 'blessing')
  executor.Executor().Do(
      {'examples': [examples], 'model': [model]},
      {'evaluation': [evaluation], 'blessing': [verdict]},
      {'eval_config': proto_utils.proto_to_json(
          blessing.eval_config(configs.PipelineConfig())),
       'example_splits': 'null'})
  blessed = verdict.get_int_custom_property('blessed') == 1
  assert os.path.exists(os.path.join(
      verdict.uri, 'BLESSED' if blessed else 'NOT_BLESSED'))
  return blessed, readers.blessing_failures(evaluation.uri), (
      readers.evaluation_metrics(evaluation.uri)['candidate'])


def constant_model(trained_dir, out, probability):
  """Says `probability` for every trip; TFMA still computes the label with
  the trained model's transform_features signature."""
  loaded = tf.saved_model.load(trained_dir)
  module = tf.Module()
  module.model = loaded  # tracks the transform graph's assets and variables

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string,
                                              name='examples')])
  def serve(examples):
    return {'outputs': tf.fill([tf.shape(examples)[0], 1], probability)}

  tf.saved_model.save(module, out, signatures={
      'serving_default': serve,
      'transform_features': loaded.signatures['transform_features']})
  return out


@pytest.mark.integration
def test_the_trained_model_is_blessed(trained_model, eval_examples, tmp_path):
  blessed, failures, metrics = evaluate(trained_model.serving_model_dir,
                                        eval_examples, str(tmp_path))
  assert blessed and failures == [], (failures, metrics)
  assert metrics['binary_accuracy'] > 1 - metrics['mean_label']


@pytest.mark.integration
def test_a_one_step_model_is_not_blessed(transform_dir, train_rows, eval_rows,
                                         eval_examples, tmp_path):
  one_step = conftest.train(str(tmp_path / 'train'), transform_dir,
                            train_rows, eval_rows, 1,
                            conftest.TRAINED_MODEL_HPARAMS)
  blessed, failures, metrics = evaluate(one_step.serving_model_dir,
                                        eval_examples, str(tmp_path / 'eval'))
  assert not blessed, metrics
  assert any(f.startswith('balanced_accuracy ') for f in failures), failures


@pytest.mark.integration
@pytest.mark.parametrize('probability', [0.26, 0.9])
def test_a_constant_model_is_not_blessed(trained_model, eval_examples,
                                         tmp_path, probability):
  """0.26 is the base rate: calibrated overall, majority-class accuracy and
  no skill; 0.9 says "big tip" to everyone."""
  model_dir = constant_model(trained_model.serving_model_dir,
                             str(tmp_path / 'constant'), probability)
  blessed, failures, metrics = evaluate(model_dir, eval_examples,
                                        str(tmp_path / 'eval'))
  assert not blessed, metrics
  assert metrics['auc'] == pytest.approx(0.5)
  failed = {f.split()[0] for f in failures}
  assert {'auc', 'balanced_accuracy'} <= failed, failures
  if probability > 0.5:  # everyone "big tip": accuracy is the minority's
    assert metrics['binary_accuracy'] == pytest.approx(metrics['mean_label'])
    assert 'calibration' in failed
  else:
    assert metrics['binary_accuracy'] == pytest.approx(
        1 - metrics['mean_label'])


@pytest.mark.integration
@pytest.mark.parametrize('problem,name', [
    (problem, name) for problem in problems.names()
    for name in configs.BLESSING_FIELDS])
def test_each_blessing_field_is_a_threshold_of_the_rule(problem, name):
  # The replay's flags are BLESSING_FIELDS: each knob of the problem's task
  # must move its rule; a knob of another task is refused, not ignored.
  base = configs.PipelineConfig(problem=problem)
  if name not in problems.load(problem).rule():
    assert getattr(base, name) is None
    with pytest.raises(SystemExit, match='is no threshold of a'):
      configs.PipelineConfig(problem=problem, **{name: 0.5})
    return
  moved = configs.PipelineConfig(problem=problem,
                                 **{name: getattr(base, name) + 0.0123})
  assert (blessing.eval_config(moved).SerializeToString()
          != blessing.eval_config(base).SerializeToString())


def test_no_other_knob_moves_the_blessing_rule():
  import dataclasses  # pylint: disable=g-import-not-at-top
  base = configs.PipelineConfig()
  rule = blessing.eval_config(base).SerializeToString()
  for field in dataclasses.fields(configs.PipelineConfig):
    value = getattr(base, field.name)
    if field.name in configs.BLESSING_FIELDS or not isinstance(
        value, float) or isinstance(value, bool):
      continue
    moved = dataclasses.replace(base, **{field.name: value + 0.0123})
    assert blessing.eval_config(moved).SerializeToString() == rule, field.name
