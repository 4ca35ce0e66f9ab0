"""The InfraValidator executor against a real `python -m serving`.

The trained model is blessed; a SavedModel that loads but answers NaN, or
fails every request, is not; a directory that is no SavedModel is not, and
its server is stopped; and the stock Pusher contract: an infra_blessing that
is not blessed stops the push of a model the Evaluator blessed. Each model
is validated once per module (a server start is a few seconds).
"""

import json
import os
import shutil
import types

import pytest
import tensorflow as tf

from components import infra_validator
from components import pusher
from tests import helpers


NUM_EXAMPLES = 5  # of the 8 eval rows; the train split has 3
BOUND_S = 120  # max_loading_time_seconds: bounds a wait, never measured


@pytest.fixture(scope='module')
def examples(tmp_path_factory):
  """An Examples artifact as ExampleGen writes it: real rows, two splits."""
  from tfx.types import artifact_utils  # pylint: disable=g-import-not-at-top
  from tfx.types import standard_artifacts  # pylint: disable=g-import-not-at-top
  artifact = standard_artifacts.Examples()
  artifact.uri = str(tmp_path_factory.mktemp('CsvExampleGen'))
  artifact.split_names = artifact_utils.encode_split_names(['train', 'eval'])
  helpers.write_examples(
      os.path.join(artifact.uri, 'Split-train', 'data_tfrecord-00000.gz'),
      helpers.read_span(5, 3))
  helpers.write_examples(
      os.path.join(artifact.uri, 'Split-eval', 'data_tfrecord-00000.gz'),
      helpers.read_span(7, 8))
  return artifact


def validate(root, model_dir, examples):
  """infra_validator.Executor.Do as TFX's launcher calls it, on a Model
  laid out as the Trainer writes it; returns its Model, InfraBlessing and
  report."""
  from tfx.dsl.components.base import base_executor  # pylint: disable=g-import-not-at-top
  from tfx.proto import infra_validator_pb2 as iv  # pylint: disable=g-import-not-at-top
  from tfx.types import standard_artifacts  # pylint: disable=g-import-not-at-top
  from tfx.utils import proto_utils  # pylint: disable=g-import-not-at-top
  root = str(root)
  model = standard_artifacts.Model()
  model.uri = os.path.join(root, 'Trainer', 'model', '3')
  shutil.copytree(model_dir, os.path.join(model.uri, 'Format-Serving'))
  blessing = standard_artifacts.InfraBlessing()
  blessing.uri = os.path.join(root, 'InfraValidator', 'blessing', '4')
  context = base_executor.BaseExecutor.Context(
      tmp_dir=os.path.join(root, '.temp'), unique_id='4')
  request_spec = iv.RequestSpec(
      tensorflow_serving=iv.TensorFlowServingRequestSpec(
          signature_names=['serving_default']),
      split_name='eval', num_examples=NUM_EXAMPLES)
  validation_spec = iv.ValidationSpec(max_loading_time_seconds=BOUND_S,
                                      num_tries=2)
  infra_validator.Executor(context).Do(
      {'model': [model], 'examples': [examples]}, {'blessing': [blessing]},
      {'model_name': 'taxi', 'problem': 'taxi',
       'request_spec': proto_utils.proto_to_json(request_spec),
       'validation_spec': proto_utils.proto_to_json(validation_spec)})
  with open(os.path.join(blessing.uri, infra_validator.REPORT_FILE)) as f:
    report = json.load(f)
  return types.SimpleNamespace(model=model, blessing=blessing, report=report)


def _markers(blessing):
  return sorted({infra_validator.BLESSED_FILE,
                 infra_validator.NOT_BLESSED_FILE} & set(os.listdir(
                     blessing.uri)))


def _assert_servers_stopped(report):
  pids = [t['server_pid'] for t in report['tries']]
  assert pids and all(pids)
  assert [p for p in pids if os.path.exists(f'/proc/{p}')] == []


def _save_module(path, answer):
  """A SavedModel that loads, whose serving_default takes serialized
  tf.Examples as the real one does, and answers answer(ones[n, 1])."""
  module = tf.Module()

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string,
                                              name='examples')])
  def serve(examples):
    return {'outputs': answer(tf.ones([tf.shape(examples)[0], 1]))}

  tf.saved_model.save(module, path, signatures={'serving_default': serve})
  return path


def _nan(ones):
  return ones * float('nan')


def _fails(ones):
  with tf.control_dependencies([tf.debugging.assert_less(
      ones, 0.0, message='this model fails every request')]):
    return tf.identity(ones)


@pytest.fixture(scope='module')
def good(tmp_path_factory, trained_model, examples):
  return validate(tmp_path_factory.mktemp('good'),
                  trained_model.serving_model_dir, examples)


@pytest.fixture(scope='module')
def corrupt(tmp_path_factory, trained_model, examples):
  """The trained model with a saved_model.pb that is not one."""
  root = tmp_path_factory.mktemp('corrupt')
  model_dir = root / 'model'
  shutil.copytree(trained_model.serving_model_dir, model_dir)
  (model_dir / 'saved_model.pb').write_bytes(b'not a SavedModel')
  return validate(root / 'pipeline', str(model_dir), examples)


@pytest.mark.integration
def test_the_trained_model_is_blessed(good):
  assert _markers(good.blessing) == [infra_validator.BLESSED_FILE]
  assert good.blessing.get_int_custom_property('blessed') == 1
  assert not good.blessing.has_custom_property('has_model')
  assert not good.blessing.has_custom_property(infra_validator.REASON_KEY)
  report = good.report
  assert report['blessed'] and report['reason'] == ''
  # Each of the 5 eval examples (not the 3 train ones) over REST and gRPC.
  assert report['examples'] == NUM_EXAMPLES and report['split'] == 'eval'
  assert report['requests_sent'] == report['requests_answered'] == 2 * 5
  assert report['failures'] == [] and len(report['tries']) == 1
  assert report['load_seconds'] > 0
  _assert_servers_stopped(report)


@pytest.mark.integration
@pytest.mark.parametrize('answer, says', [
    (_nan, 'nan is not a probability in [0, 1]'),
    (_fails, 'this model fails every request'),
])
def test_a_model_that_answers_wrongly_is_not_blessed(tmp_path, examples,
                                                      answer, says):
  model_dir = _save_module(str(tmp_path / 'model'), answer)
  validated = validate(tmp_path / 'pipeline', model_dir, examples)
  assert _markers(validated.blessing) == [infra_validator.NOT_BLESSED_FILE]
  assert validated.blessing.get_int_custom_property('blessed') == 0
  reason = validated.blessing.get_string_custom_property(
      infra_validator.REASON_KEY)
  assert reason.startswith("REST predict on 'serving_default', example 0")
  assert says in reason
  report = validated.report
  assert report['reason'] == reason and report['failures'] == [reason]
  assert report['load_seconds'] > 0  # it loaded: the answer is at fault
  assert (report['requests_sent'], report['requests_answered']) == (1, 0)
  assert len(report['tries']) == 1  # the same model, the same answer
  assert 'server_log_tail' in report
  _assert_servers_stopped(report)


@pytest.mark.integration
def test_a_model_that_does_not_load_is_not_blessed(corrupt):
  assert _markers(corrupt.blessing) == [infra_validator.NOT_BLESSED_FILE]
  assert corrupt.blessing.get_int_custom_property('blessed') == 0
  reason = corrupt.blessing.get_string_custom_property(
      infra_validator.REASON_KEY)
  assert reason.startswith('the model server could not load the model: ')
  assert os.path.join(corrupt.model.uri, 'Format-Serving') in reason
  cause = "Error parsing message with type 'tensorflow.SavedModel'"
  report = corrupt.report
  assert cause in reason and cause in report['server_log_tail']
  assert 'refusing version 1' in report['server_log_tail']
  assert report['load_seconds'] is None and report['requests_sent'] == 0
  assert len(report['tries']) == 1
  with open(os.path.join(corrupt.blessing.uri,
                         infra_validator.SERVER_LOG_FILE)) as f:
    assert cause in f.read()
  _assert_servers_stopped(report)


@pytest.mark.integration
def test_the_pusher_pushes_only_an_infra_blessed_model(tmp_path, good,
                                                       corrupt):
  base = tmp_path / 'taxi'
  served = base / '1'  # another model: the candidate is no duplicate of it
  shutil.copytree(good.model.uri + '/Format-Serving', served)
  with open(served / 'fingerprint.pb', 'ab') as f:
    f.write(b'another model')
  refused = helpers.push(tmp_path / 'run-1', good.model, base,
                    infra_blessing=corrupt.blessing)
  assert refused.get_int_custom_property('pushed') == 0
  assert pusher.versions(str(base)) == [1]
  pushed = helpers.push(tmp_path / 'run-2', good.model, base,
                    infra_blessing=good.blessing)
  assert pushed.get_int_custom_property('pushed') == 1
  version = int(pushed.get_string_custom_property('pushed_version'))
  assert pusher.versions(str(base)) == [1, version]



def test_what_the_stock_component_does_and_this_one_cannot_is_refused():
  """A warm-up model (make_warmup) or another tag set would be silently
  ignored otherwise: the artifact would claim what was not validated."""
  from tfx.proto import infra_validator_pb2 as iv  # pylint: disable=g-import-not-at-top
  from tfx.types import channel  # pylint: disable=g-import-not-at-top
  from tfx.types import standard_artifacts  # pylint: disable=g-import-not-at-top
  model = channel.Channel(type=standard_artifacts.Model)
  serving = iv.TensorFlowServingRequestSpec(signature_names=['serving_default'])
  gpu = iv.TensorFlowServingRequestSpec(tag_set=['serve', 'gpu'])
  component = infra_validator.InfraValidator(
      model=model, request_spec=iv.RequestSpec(tensorflow_serving=serving))
  assert component.exec_properties['model_name'] == 'taxi'
  for wrong in (iv.RequestSpec(tensorflow_serving=serving, make_warmup=True),
                iv.RequestSpec(tensorflow_serving=gpu),
                iv.RequestSpec(num_examples=1)):  # no tensorflow_serving
    with pytest.raises(ValueError):
      infra_validator.InfraValidator(model=model, request_spec=wrong)
