"""Hyperparameter search for TFX's Tuner component: `tuner_fn`.

The pipeline's opt-in `--tune` runs tfx.components.Tuner with
tuner_fn='models.tuning.tuner_fn' and the Trainer's custom_config; the
Trainer then gets the best values as `fn_args.hyperparameters`, which
models.model.run_fn lays over the configured hparams with the same rule a
trial uses here (models.model.resolve_hparams).

  * Space: SEARCH_SPACE (layer sizes, learning rate, batch size) plus each
    configured value. The configured values are the first trial, so the
    Tuner returns them unless another trial beats them on the objective.
  * Objective: the eval split's log loss (`val_loss`), the loss being
    trained. It is a proper scoring rule: it rewards ranking (what the
    Evaluator's AUC gate checks) and calibration (which it gates too), and
    on a few hundred eval rows it is far less noisy than AUC, which a
    handful of reordered pairs can move by more than the trials differ.
  * Budget: `custom_config['tuner']['max_trials']` (default 4) trials of
    the Tuner's train_args/eval_args steps each. Steps are fixed, so a
    bigger batch also means more examples seen: the best batch size is the
    best at that step budget, which is why the Tuner should get the
    Trainer's train_args.
  * Deterministic: the oracle is seeded from the configured seed and every
    trial starts from models.model.make_deterministic(seed), so the same
    data and seed give the same trials, scores and best hyperparameters.
  * Quiet: KerasTuner's trial tables and the summaries TFX's executor asks
    for go to absl logging, not stdout.
"""

import math
from typing import Any, Dict, List, Mapping, Optional

from absl import logging
import keras_tuner
import tensorflow as tf
import tensorflow_transform as tft
from tfx.components.trainer.fn_args_utils import FnArgs
from tfx.components.tuner.component import TunerFnResult

from models import model as model_lib

# Choices per tunable key (model.TUNABLE_KEYS), around pipeline/configs.py's
# defaults. Layer sizes are strings: KerasTuner choices must be scalars.
SEARCH_SPACE = {
    'hidden_units': ('64,32,16', '32,16', '128,64'),
    'learning_rate': (0.003, 0.01, 0.03),
    'batch_size': (32, 64, 128),
}
DEFAULT_MAX_TRIALS = 4
OBJECTIVE = 'val_loss'
PROJECT_NAME = 'tuning'  # KerasTuner's project folder, under the Tuner's working dir


def configured_values(configured: Mapping[str, Any]) -> Dict[str, Any]:
  """The configured tunable values as a trial holds them (layer sizes as
  '64,32,16'): every choice's default, and so the first trial."""
  hparams, _ = model_lib.resolve_hparams(configured)
  return {
      'hidden_units': model_lib.format_hidden_units(hparams['hidden_units']),
      'learning_rate': float(hparams['learning_rate']),
      'batch_size': int(hparams['batch_size']),
  }


def search_space(configured: Mapping[str, Any]) -> Dict[str, List[Any]]:
  """SEARCH_SPACE with each configured value added: key -> its choices.

  The configured value comes first among the layer sizes (their order
  means nothing); numbers are sorted, as KerasTuner orders them.
  """
  values = configured_values(configured)
  return {
      'hidden_units': list(dict.fromkeys(
          (values['hidden_units'], *SEARCH_SPACE['hidden_units']))),
      'learning_rate': sorted(
          {values['learning_rate'], *SEARCH_SPACE['learning_rate']}),
      'batch_size': sorted(
          {values['batch_size'], *SEARCH_SPACE['batch_size']}),
  }


class HyperModel(keras_tuner.HyperModel):
  """models.model's network and datasets, with a trial's hyperparameters.

  `build` makes the network (layer sizes, learning rate); `fit` makes the
  datasets, so the batch size a trial draws is the batch size it trains on.
  """

  def __init__(self, fn_args: FnArgs, configured: Mapping[str, Any],
               tf_transform_output: tft.TFTransformOutput,
               class_shares: List[float]):
    super().__init__(name=PROJECT_NAME)
    self._problem = model_lib.problem_of(fn_args)
    self._fn_args = fn_args
    self._configured = dict(configured)
    self._space = search_space(configured)
    self._defaults = configured_values(configured)
    self._tf_transform_output = tf_transform_output
    self._class_shares = class_shares

  def hparams(self, hp: keras_tuner.HyperParameters) -> Dict[str, Any]:
    """The trial's values (declared on first use) over the configured ones."""
    values = {key: hp.Choice(key, choices, default=self._defaults[key])
              for key, choices in self._space.items()}
    return model_lib.resolve_hparams(self._configured, values)[0]

  def build(self, hp: keras_tuner.HyperParameters) -> tf.keras.Model:
    hparams = self.hparams(hp)
    # Seeded at each build, so a trial's weights do not depend on the
    # trials before it.
    model_lib.make_deterministic(hparams['seed'])
    return model_lib.build_keras_model(self._problem,
                                       hparams['hidden_units'],
                                       hparams['learning_rate'],
                                       self._class_shares)

  def fit(self, hp: keras_tuner.HyperParameters, model: tf.keras.Model,
          *args, **kwargs) -> Dict[str, float]:
    """Trains `model` on batches of the trial's size; returns the final
    metrics (KerasTuner 1.4.8 takes only a Keras 3 History as a History)."""
    hparams = self.hparams(hp)
    train, evaluation = model_lib.datasets(
        self._problem, self._fn_args, self._tf_transform_output,
        hparams['batch_size'], hparams['seed'])
    history = model.fit(train, *args, validation_data=evaluation, **kwargs)
    metrics = {name: float(values[-1])
               for name, values in history.history.items()}
    if math.isnan(metrics.get(OBJECTIVE, math.nan)):
      # A NaN score would sort unpredictably; as in run_fn, it is a failure.
      raise keras_tuner.errors.FailedTrialError(
          f'trial diverged (NaN {OBJECTIVE}) with {hp.values}')
    return metrics


class _ConfiguredFirstOracle(keras_tuner.oracles.RandomSearchOracle):
  """Seeded random search whose first trial is every choice's default (the
  configured hparams), so tuning never returns values that scored worse
  than the configured ones."""

  def populate_space(self, trial_id):
    defaults = self.get_space().values
    if not self._duplicate(defaults):
      return {'status': keras_tuner.engine.trial.TrialStatus.RUNNING,
              'values': defaults}
    return super().populate_space(trial_id)


class _Tuner(keras_tuner.Tuner):
  """KerasTuner's Tuner for a tf.keras model of either Keras, its
  summaries logged.

  tf.keras is the legacy Keras 2 (tf_keras) when tensorflow_transform is
  imported first, Keras 3 when TFMA is (as under the runners; models/model.py
  export_serving_model). KerasTuner 1.4.8 always runs on Keras 3: its own
  trial loop rejects a tf_keras model and passes Keras 3 callbacks to its
  fit (keras-team/keras-tuner#1039). So a trial is the plain build-and-fit
  KerasTuner documents for Tuner.run_trial, which works with either. The summaries, which TFX's
  executor calls and KerasTuner prints to stdout, go to absl logging.
  """

  def run_trial(self, trial, *args, **kwargs):
    hp = trial.hyperparameters
    # What KerasTuner does before each build, on the Keras in use.
    tf.keras.backend.clear_session()
    return self.hypermodel.fit(hp, self.hypermodel.build(hp), *args,
                               **kwargs)

  def search_space_summary(self, extended=False):
    del extended
    logging.info('Tuner search space: %s', {
        hp.name: hp.get_config() for hp in self.oracle.get_space().space})

  def results_summary(self, num_trials=10):
    for trial in self.oracle.get_best_trials(num_trials):
      logging.info('Tuner trial %s: %s=%s with %s', trial.trial_id,
                   OBJECTIVE, trial.score, trial.hyperparameters.values)


def max_trials(tuner_config: Optional[Mapping[str, Any]]) -> int:
  """custom_config['tuner'] -> the number of trials (DEFAULT_MAX_TRIALS)."""
  tuner_config = dict(tuner_config or {})
  unknown = sorted(set(tuner_config) - {'max_trials'})
  if unknown:
    raise ValueError(f'Tuner custom_config["tuner"] has unknown keys '
                     f'{unknown} (known: ["max_trials"])')
  trials = tuner_config.get('max_trials', DEFAULT_MAX_TRIALS)
  if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
    raise ValueError(f'Tuner custom_config["tuner"]["max_trials"] {trials!r} '
                     'must be a positive integer')
  return trials


def tuner_fn(fn_args: FnArgs) -> TunerFnResult:
  """TFX Tuner entry point: a seeded search over SEARCH_SPACE.

  fn_args is what TFX's Tuner executor gives (fn_args_utils.
  get_common_fn_args): files, data accessor, transform_graph_path, step
  budget, working_dir (the tuner's project goes there, overwritten) and
  custom_config: 'problem' and 'hparams' as the Trainer gets them,
  optional 'tuner'.
  """
  custom_config = fn_args.custom_config or {}
  configured, _ = model_lib.resolve_hparams(custom_config.get('hparams'))
  trials = max_trials(custom_config.get('tuner'))
  if not fn_args.train_steps or not fn_args.eval_steps:
    raise ValueError('the Tuner needs train_args.num_steps and '
                     'eval_args.num_steps: each trial trains and evaluates '
                     'that many steps (the datasets repeat forever)')
  if not fn_args.transform_graph_path:
    raise ValueError('the Tuner needs transform_graph: trials train on raw '
                     'examples through the tf.Transform graph, as run_fn')
  tf_transform_output = tft.TFTransformOutput(fn_args.transform_graph_path)
  shares = model_lib.train_class_shares(model_lib.problem_of(fn_args),
                                        fn_args, tf_transform_output,
                                        configured['seed'])
  oracle = _ConfiguredFirstOracle(
      objective=keras_tuner.Objective(OBJECTIVE, direction='min'),
      max_trials=trials,
      # KerasTuner takes seed 0 for "no seed" (a random one); seeds are >= 0.
      seed=configured['seed'] + 1)
  tuner = _Tuner(
      oracle=oracle,
      hypermodel=HyperModel(fn_args, configured, tf_transform_output,
                            shares),
      directory=fn_args.working_dir,
      project_name=PROJECT_NAME,
      overwrite=True)
  return TunerFnResult(
      tuner=tuner,
      fit_kwargs={
          'steps_per_epoch': fn_args.train_steps,
          'validation_steps': fn_args.eval_steps,
          # Also silences KerasTuner's per-trial tables (oracle.verbose).
          'verbose': 0,
      })
