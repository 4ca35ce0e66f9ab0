"""models.tuning.tuner_fn under TFX's real Tuner executor, and run_fn
trained with the Tuner's best hyperparameters."""

import contextlib
import io
import json
import os

import numpy as np
import pytest

from models import model
from models import tuning
from tests import conftest


# The Tuner's configured hparams: conftest's model. Its values are in the
# search space and are the first trial.
TUNER_HPARAMS = conftest.TRAINED_MODEL_HPARAMS
TRIALS, STEPS, EVAL_STEPS = 3, 20, 5
# run_fn's configured hparams in the override test: none of them is in the
# search space, so a model trained with them is told apart from one
# trained with the Tuner's best.
UNTUNED_HPARAMS = {'hidden_units': [5], 'learning_rate': 0.05,
                   'batch_size': 16, 'seed': TUNER_HPARAMS['seed']}


def run_tuner(root, transform_dir, train_rows, eval_rows):
  """tfx.components.tuner.executor.Executor.Do as TFX's launcher calls it:
  Examples and TransformGraph in, HyperParameters and TunerResults out.

  Returns (best hyperparameters config, tuner results, what it printed).
  """
  from tfx.components.tuner import executor  # pylint: disable=g-import-not-at-top
  from tfx.dsl.components.base import base_executor  # pylint: disable=g-import-not-at-top
  from tfx.proto import trainer_pb2  # pylint: disable=g-import-not-at-top
  from tfx.types import standard_artifacts  # pylint: disable=g-import-not-at-top
  from tfx.types import standard_component_specs as specs  # pylint: disable=g-import-not-at-top
  from tfx.utils import json_utils  # pylint: disable=g-import-not-at-top
  from tfx.utils import proto_utils  # pylint: disable=g-import-not-at-top
  root = str(root)
  examples = conftest.write_split_examples(root, train_rows, eval_rows)
  transform_graph = standard_artifacts.TransformGraph()
  transform_graph.uri = transform_dir
  best = standard_artifacts.HyperParameters()
  best.uri = os.path.join(root, 'Tuner', 'best_hyperparameters', '1')
  results = standard_artifacts.TunerResults()
  results.uri = os.path.join(root, 'Tuner', 'tuner_results', '1')
  exec_properties = {
      specs.TUNER_FN_KEY: 'models.tuning.tuner_fn',
      specs.TRAIN_ARGS_KEY: proto_utils.proto_to_json(
          trainer_pb2.TrainArgs(num_steps=STEPS)),
      specs.EVAL_ARGS_KEY: proto_utils.proto_to_json(
          trainer_pb2.EvalArgs(num_steps=EVAL_STEPS)),
      specs.CUSTOM_CONFIG_KEY: json_utils.dumps(
          {'problem': 'taxi', 'hparams': TUNER_HPARAMS,
           'tuner': {'max_trials': TRIALS}}),
  }
  context = base_executor.BaseExecutor.Context(
      tmp_dir=os.path.join(root, 'tmp'), unique_id='1')
  stdout = io.StringIO()
  with contextlib.redirect_stdout(stdout):
    executor.Executor(context).Do(
        {specs.EXAMPLES_KEY: [examples],
         specs.TRANSFORM_GRAPH_KEY: [transform_graph]},
        {specs.BEST_HYPERPARAMETERS_KEY: [best],
         specs.TUNER_RESULTS_KEY: [results]},
        exec_properties)
  with open(os.path.join(best.uri, 'best_hyperparameters.txt')) as f:
    best_config = json.load(f)
  with open(os.path.join(results.uri, 'tuner_results.json')) as f:
    trials = json.load(f)
  return best_config, trials, stdout.getvalue()


@pytest.fixture(scope='module')
def tuned(tmp_path_factory, transform_dir, train_rows, eval_rows):
  return run_tuner(tmp_path_factory.mktemp('tuner'), transform_dir,
                   train_rows, eval_rows)


@pytest.mark.integration
def test_tuner_writes_best_values_from_the_search_space(tuned):
  best_config, trials, printed = tuned
  best = best_config['values']
  space = tuning.search_space(TUNER_HPARAMS)
  assert set(best) == set(model.TUNABLE_KEYS)
  for key, value in best.items():
    assert value in space[key], (key, value, space[key])
  assert len(trials) == TRIALS
  assert len({json.dumps({k: t[k] for k in best}) for t in trials}) == TRIALS
  # The configured values were a trial, and the best scored no worse.
  configured = {'hidden_units': model.format_hidden_units(
      TUNER_HPARAMS['hidden_units']),
                'learning_rate': TUNER_HPARAMS['learning_rate'],
                'batch_size': TUNER_HPARAMS['batch_size']}
  scores = {json.dumps({k: t[k] for k in best}, sort_keys=True): t['score']
            for t in trials}
  assert min(scores.values()) == scores[json.dumps(best, sort_keys=True)]
  assert json.dumps(configured, sort_keys=True) in scores
  # KerasTuner's trial tables and summaries went to logging, not stdout.
  assert printed == ''


@pytest.mark.integration
def test_same_inputs_give_the_same_best_hyperparameters(
    tuned, tmp_path, transform_dir, train_rows, eval_rows):
  best_config, trials, _ = tuned
  again_config, again_trials, _ = run_tuner(tmp_path, transform_dir,
                                            train_rows, eval_rows)
  assert again_config['values'] == best_config['values']
  assert again_trials == trials  # the same trials, scores included


@pytest.mark.integration
def test_trial_batch_size_is_the_batch_size_trained_on(transform_dir,
                                                       train_rows, tmp_path):
  """One step from the same initial weights (build seeds them) on a batch
  of 32 and of 128 ends in different weights: the trial's batch size
  reaches the datasets, not only its record. (The same trial twice
  scores the same: the determinism test above.)"""
  import keras_tuner  # pylint: disable=g-import-not-at-top
  import tensorflow_transform as tft  # pylint: disable=g-import-not-at-top
  from tfx.components.trainer.fn_args_utils import DataAccessor  # pylint: disable=g-import-not-at-top
  from tfx.components.trainer.fn_args_utils import FnArgs  # pylint: disable=g-import-not-at-top
  from tfx.components.util import tfxio_utils  # pylint: disable=g-import-not-at-top
  examples = conftest.write_split_examples(str(tmp_path), train_rows,
                                           train_rows[:64])
  fn_args = FnArgs(
      train_files=[os.path.join(examples.uri, 'Split-train', '*')],
      eval_files=[os.path.join(examples.uri, 'Split-eval', '*')],
      data_accessor=DataAccessor(
          tf_dataset_factory=tfxio_utils.get_tf_dataset_factory_from_artifact(
              [examples], []),
          record_batch_factory=None, data_view_decode_fn=None),
      custom_config={'problem': 'taxi'})
  hypermodel = tuning.HyperModel(
      fn_args, TUNER_HPARAMS, tft.TFTransformOutput(transform_dir), [0.8, 0.2])

  def weights_after_one_step(batch_size):
    hp = keras_tuner.HyperParameters()
    hypermodel.hparams(hp)  # declares the space, at the configured values
    hp.values['batch_size'] = batch_size
    keras_model = hypermodel.build(hp)
    hypermodel.fit(hp, keras_model, steps_per_epoch=1, validation_steps=1,
                   verbose=0)
    return keras_model.get_weights()

  small = weights_after_one_step(32)
  large = weights_after_one_step(128)
  assert not all(np.array_equal(a, b) for a, b in zip(small, large))


@pytest.mark.integration
def test_run_fn_trains_with_the_tuned_values(tuned, tmp_path, transform_dir,
                                             train_rows, eval_rows):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  best_config = tuned[0]
  best = best_config['values']
  fn_args = conftest.train(str(tmp_path), transform_dir, train_rows,
                           eval_rows, STEPS, UNTUNED_HPARAMS,
                           hyperparameters=best_config)
  with open(os.path.join(fn_args.model_run_dir, model.HISTORY_FILE)) as f:
    history = json.load(f)
  hidden_units = model.parse_hidden_units(best['hidden_units'])
  assert history['hparams'] == {
      'hidden_units': hidden_units,
      'learning_rate': best['learning_rate'],
      'batch_size': best['batch_size'],
      'seed': UNTUNED_HPARAMS['seed'],
  }
  assert history['tuned'] == sorted(model.TUNABLE_KEYS)
  assert (history['train_steps'], history['eval_steps']) == (STEPS, 5)
  # The exported network has the tuned layers (the output layer's kernel
  # is the one with one column).
  loaded = tf.saved_model.load(fn_args.serving_model_dir)
  kernels = [v for v in loaded.tf_variables if v.name.endswith('kernel:0')]
  assert [int(v.shape[1]) for v in kernels if v.shape[1] != 1] == hidden_units
  assert hidden_units != UNTUNED_HPARAMS['hidden_units']


@pytest.mark.integration
def test_run_fn_without_hyperparameters_records_nothing_tuned(trained_model):
  with open(os.path.join(trained_model.model_run_dir,
                         model.HISTORY_FILE)) as f:
    history = json.load(f)
  assert history['hparams'] == conftest.TRAINED_MODEL_HPARAMS
  assert history['tuned'] == []
  assert history['train_steps'] == conftest.TRAINED_MODEL_STEPS


@pytest.mark.integration
@pytest.mark.parametrize('values,message', [
    ({'hidden_units': '64,0'}, 'tuned hidden_units'),
    ({'hidden_units': 'wide'}, 'tuned hidden_units'),
    ({'batch_size': 0}, 'tuned batch_size'),
    ({'learning_rate': -0.01}, 'tuned learning_rate'),
    ({'dropout': 0.5}, 'dropout'),
    ({'seed': 3}, 'seed'),
])
def test_bad_tuned_values_fail_before_training(values, message):
  from tfx.components.trainer.fn_args_utils import FnArgs  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match=message):
    model.run_fn(FnArgs(
        custom_config={'hparams': dict(conftest.TRAINED_MODEL_HPARAMS),
                       'problem': 'taxi'},
        hyperparameters={'space': [], 'values': values}))


def test_hyperparameters_that_are_not_a_keras_tuner_config_fail():
  from tfx.components.trainer.fn_args_utils import FnArgs  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match='KerasTuner HyperParameters config'):
    model.run_fn(FnArgs(
        custom_config={'hparams': dict(conftest.TRAINED_MODEL_HPARAMS),
                       'problem': 'taxi'},
        hyperparameters={'batch_size': 64}))


@pytest.mark.integration
@pytest.mark.parametrize('tuner_config,message', [
    ({'max_trials': 0}, 'max_trials'),
    ({'trials': 4}, 'unknown keys'),
])
def test_bad_tuner_config_fails_clearly(tuner_config, message):
  from tfx.components.trainer.fn_args_utils import FnArgs  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match=message):
    tuning.tuner_fn(FnArgs(
        train_steps=STEPS, eval_steps=EVAL_STEPS,
        custom_config={'problem': 'taxi',
                       'hparams': dict(conftest.TRAINED_MODEL_HPARAMS),
                       'tuner': tuner_config}))
