"""Keras wide-and-deep model for any problem, and the TFX Trainer `run_fn`.

The problem (models/problem.py; its name comes in the Trainer's
custom_config) says which features are numbers (the deep part) and which
are categories (one-hot, the wide part); its task (models/tasks.py) says the
head: units, activation, loss, the starting bias.

The exported SavedModel (models/export.py) carries three signatures:
  * `serving_default`    - serialized tf.Example in (`examples`), the
                           task's answer out (`outputs`: a probability, or
                           one per class). What the Evaluator and TF
                           Serving's predict on tf.Example use.
  * `serving_raw`        - one tensor per raw feature (the problem's
                           raw_types), for JSON clients. A missing value is
                           '' (string) or NaN (float).
  * `transform_features` - tf.Example in, transformed features out; the
                           Evaluator uses it to compute the label.
Both serving signatures run the same tf.Transform graph and the same model,
so they give the same prediction for the same instance.
"""

import json
import math
import numbers
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from absl import logging
import tensorflow as tf
import tensorflow_transform as tft
from tfx.components.trainer.fn_args_utils import DataAccessor
from tfx.components.trainer.fn_args_utils import FnArgs
from tfx_bsl.tfxio import dataset_options

from models import export
from models import features
from models import problem as problems
from models import transform

# Keys of the `hparams` dict the pipeline passes in Trainer's custom_config.
HPARAM_KEYS = ('hidden_units', 'learning_rate', 'batch_size', 'seed')
# The ones the Tuner may set (models/tuning.py). Never the seed: it is what
# makes a run reproducible, and a "best seed" would be noise, not a setting.
TUNABLE_KEYS = ('hidden_units', 'learning_rate', 'batch_size')
HISTORY_FILE = 'history.json'
RAW_SIGNATURE = features.RAW_SIGNATURE


def _one_hot_sizes(problem: problems.Problem) -> Dict[str, int]:
  """Transformed categorical feature -> number of distinct indices."""
  return {features.transformed_name(f.name): transform.one_hot_size(f)
          for f in problem.features if transform.one_hot_size(f)}


def parse_hidden_units(value: Union[str, Sequence[int]]) -> List[int]:
  """[64, 32, 16] or '64,32,16' -> [64, 32, 16].

  The string form is how the Tuner searches layer sizes (KerasTuner choices
  must be scalars) and how --hidden-units is typed; the list form is the
  configured one. An empty list (or '') is a wide-only model.
  """
  if isinstance(value, str):
    try:
      units = [int(part) for part in value.split(',')] if value.strip() else []
    except ValueError:
      raise ValueError(f'hidden_units {value!r} is not comma-separated '
                       'integers, e.g. "64,32,16"') from None
  elif isinstance(value, (list, tuple)):
    units = list(value)
  else:
    raise ValueError(f'hidden_units {value!r} is neither a list of layer '
                     'sizes nor a string like "64,32,16"')
  if not all(_is_int(u) and u > 0 for u in units):
    raise ValueError(f'hidden_units {value!r}: every layer size must be a '
                     'positive integer')
  return units


def format_hidden_units(value: Union[str, Sequence[int]]) -> str:
  """[64, 32, 16] -> '64,32,16', the Tuner's scalar form."""
  return ','.join(str(u) for u in parse_hidden_units(value))


def _is_int(value) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def tuned_values(hyperparameters: Optional[Mapping[str, Any]]
                 ) -> Dict[str, Any]:
  """fn_args.hyperparameters -> the tuned values ({} when not tuned).

  TFX's Trainer reads the Tuner's best_hyperparameters.txt into
  fn_args.hyperparameters as it is: a KerasTuner HyperParameters config,
  {'space': [...], 'values': {name: value}}. Only the values matter here.
  """
  if not hyperparameters:
    return {}
  values = (hyperparameters.get('values')
            if isinstance(hyperparameters, Mapping) else None)
  if not isinstance(values, Mapping):
    raise ValueError(
        'fn_args.hyperparameters is not a KerasTuner HyperParameters config '
        f'({{"space": [...], "values": {{...}}}}): {hyperparameters!r}')
  return dict(values)


def resolve_hparams(configured: Optional[Mapping[str, Any]],
                    tuned: Optional[Mapping[str, Any]] = None
                    ) -> Tuple[Dict[str, Any], List[str]]:
  """Configured hparams + tuned values -> (the hparams used, tuned keys).

  The one rule for both the Trainer (run_fn) and every tuning trial: a tuned
  value replaces the configured one for its key; the seed, and any key not
  tuned, stay as configured. Every value is checked here, before any data
  is read, so a bad one fails with its name and where it came from rather
  than deep inside Keras (or as a silently failed tuning trial).
  """
  hparams: Dict[str, Any] = dict(configured or {})
  missing = [k for k in HPARAM_KEYS if k not in hparams]
  if missing:
    raise ValueError(f'Trainer custom_config["hparams"] lacks {missing}')
  tuned = dict(tuned or {})
  unknown = sorted(set(tuned) - set(TUNABLE_KEYS))
  if unknown:
    raise ValueError(
        f'tuned hyperparameters {unknown} are not model hyperparameters '
        f'that may be tuned ({list(TUNABLE_KEYS)}; the seed is always the '
        'configured one)')
  hparams.update(tuned)

  def source(key):
    return 'tuned' if key in tuned else 'configured'

  try:
    hparams['hidden_units'] = parse_hidden_units(hparams['hidden_units'])
  except ValueError as e:
    raise ValueError(f'{source("hidden_units")} {e}') from None
  rate = hparams['learning_rate']
  if (not isinstance(rate, numbers.Real) or isinstance(rate, bool) or
      not math.isfinite(rate) or rate <= 0):
    raise ValueError(f'{source("learning_rate")} learning_rate {rate!r} must '
                     'be a positive number')
  if not _is_int(hparams['batch_size']) or hparams['batch_size'] <= 0:
    raise ValueError(f'{source("batch_size")} batch_size '
                     f'{hparams["batch_size"]!r} must be a positive integer')
  if not _is_int(hparams['seed']):
    raise ValueError(f'configured seed {hparams["seed"]!r} must be an integer')
  return hparams, sorted(tuned)


def build_keras_model(problem: problems.Problem, hidden_units: List[int],
                      learning_rate: float,
                      class_shares: Optional[Sequence[float]] = None
                      ) -> tf.keras.Model:
  """Wide (one-hot categories) and deep (z-scored numbers) classifier with
  the problem's task's head.

  The output bias starts where the task puts it for `class_shares`, the
  training data's share of each class (task.initial_bias), so the untrained
  model already predicts the base rates: training spends its steps on the
  features, not on first learning them (for taxi, that 78% of trips have
  no big tip, which is where short budgets used to stop, predicting "no"
  for every trip). A problem with only numbers (or only categories) gets
  only the deep (or the wide) part.
  """
  task = problem.task
  n_classes = len(problem.label.classes)
  dense_keys = [features.transformed_name(f.name) for f in problem.features
                if f.encoding == problems.Z_SCORE]
  one_hot_sizes = _one_hot_sizes(problem)
  inputs = {
      key: tf.keras.layers.Input(name=key, shape=(1,), dtype='float32')
      for key in dense_keys
  }
  inputs.update({
      key: tf.keras.layers.Input(name=key, shape=(1,), dtype='int64')
      for key in one_hot_sizes
  })

  parts = []
  if dense_keys:
    deep = tf.keras.layers.concatenate([inputs[key] for key in dense_keys]
                                       ) if len(dense_keys) > 1 else (
                                           inputs[dense_keys[0]])
    for units in hidden_units:
      deep = tf.keras.layers.Dense(units, activation='relu')(deep)
    parts.append(deep)
  parts += [tf.keras.layers.CategoryEncoding(
      num_tokens=size, output_mode='one_hot')(inputs[key])
            for key, size in one_hot_sizes.items()]
  shares = class_shares or [1 / n_classes] * n_classes
  output = tf.keras.layers.Dense(
      task.units(n_classes), activation=task.activation,
      bias_initializer=tf.keras.initializers.Constant(
          task.initial_bias(shares)))(
              tf.keras.layers.concatenate(parts) if len(parts) > 1
              else parts[0])

  model = tf.keras.Model(inputs, output)
  model.compile(
      loss=task.loss,
      optimizer=tf.keras.optimizers.Adam(learning_rate=learning_rate),
      metrics=[task.keras_metric])
  return model


def _input_fn(label_key: str, file_pattern: List[str],
              data_accessor: DataAccessor,
              tf_transform_output: tft.TFTransformOutput,
              batch_size: int, seed: int,
              num_epochs: Optional[int] = None) -> tf.data.Dataset:
  """Raw examples -> endless (transformed features, label) batches.

  Transform runs with materialize=False (writing transformed copies of every
  span cost far more than it saved), so the transform graph is applied here,
  batch by batch, exactly as the serving signatures apply it. The shuffle
  is seeded and the read order deterministic, so the same files give the
  same batches in the same order.
  """
  dataset = data_accessor.tf_dataset_factory(
      file_pattern,
      dataset_options.TensorFlowDatasetOptions(
          batch_size=batch_size, shuffle_seed=seed, sloppy_ordering=False,
          num_epochs=num_epochs),
      tf_transform_output.raw_metadata.schema)
  transform_layer = tf_transform_output.transform_features_layer()

  # Plain graph code: autograph would rewrite the Keras and tf.Transform
  # layers' Python on every trace (~2 s each, three a run: train, eval and
  # the positive rate) to find tensor-dependent control flow that is not
  # there.
  @tf.autograph.experimental.do_not_convert
  def transform(raw_features):
    transformed = transform_layer(raw_features)
    label = transformed.pop(label_key)
    return transformed, label

  dataset = dataset.map(transform, num_parallel_calls=tf.data.AUTOTUNE)
  return dataset if num_epochs else dataset.repeat()


def datasets(problem: problems.Problem, fn_args: FnArgs,
             tf_transform_output: tft.TFTransformOutput,
             batch_size: int, seed: int
             ) -> Tuple[tf.data.Dataset, tf.data.Dataset]:
  """(train, eval) endless batches of fn_args' files, the eval shuffle
  seeded `seed + 1`: what run_fn and every tuning trial fit on."""
  label_key = problem.label.transformed
  return (_input_fn(label_key, fn_args.train_files, fn_args.data_accessor,
                    tf_transform_output, batch_size, seed),
          _input_fn(label_key, fn_args.eval_files, fn_args.data_accessor,
                    tf_transform_output, batch_size, seed + 1))


def train_class_shares(problem: problems.Problem, fn_args: FnArgs,
                       tf_transform_output: tft.TFTransformOutput,
                       seed: int) -> List[float]:
  """Each class's share of fn_args' train files (build_keras_model's
  starting bias), in one pass."""
  return class_shares(_input_fn(
      problem.label.transformed, fn_args.train_files, fn_args.data_accessor,
      tf_transform_output, 1024, seed, num_epochs=1),
                      len(problem.label.classes))


def class_shares(dataset: tf.data.Dataset, n_classes: int) -> List[float]:
  """Each class's share of the labels, in one pass over a finite dataset
  (a label outside 0..n_classes-1 is an error: the problem's rule made it)."""
  counts = [0] * n_classes
  for _, label in dataset:
    values, _, found = tf.unique_with_counts(tf.reshape(label, [-1]))
    for value, count in zip(values.numpy().tolist(), found.numpy().tolist()):
      if not 0 <= value < n_classes:
        raise ValueError(f'label {value} is not a class index in '
                         f'0..{n_classes - 1}')
      counts[value] += count
  total = sum(counts)
  if not total:
    raise ValueError('the training split has no examples')
  return [c / total for c in counts]


def problem_of(fn_args: FnArgs) -> problems.Problem:
  """The problem a Trainer or Tuner run is for (its custom_config names
  it; the pipeline puts it there, pipeline/hyperparameters.py)."""
  name = (fn_args.custom_config or {}).get('problem')
  if not name:
    raise ValueError('Trainer custom_config["problem"] is missing: which '
                     f'problem is this model for? ({problems.names()})')
  return problems.load(name)


def make_deterministic(seed: int) -> None:
  """Same seed, same data -> the same model, bit for bit (on one machine).

  Seeds Python's, NumPy's and TensorFlow's generators (weight init, shuffle)
  and makes TF pick deterministic kernels (tf.data included). Op determinism
  is process-wide and stays on: under LocalDagRunner the Evaluator that
  runs next in this process is deterministic anyway.
  """
  tf.keras.utils.set_random_seed(seed)
  tf.config.experimental.enable_op_determinism()


def run_fn(fn_args: FnArgs) -> None:
  """TFX Trainer entry point: train on transformed examples, export the model.

  The problem is `fn_args.custom_config['problem']` (models/problem.py).
  Hyperparameters come from `fn_args.custom_config['hparams']` (set in
  pipeline/configs.py), so they are recorded in ML Metadata with the run.
  When the Trainer has a HyperParameters input (the Tuner's best, or the
  latest one in ML Metadata), `fn_args.hyperparameters` overrides the
  tuned keys (resolve_hparams). history.json records the hparams used,
  which of them were tuned, and the step budget.
  """
  problem = problem_of(fn_args)
  hparams, tuned = resolve_hparams(
      (fn_args.custom_config or {}).get('hparams'),
      tuned_values(fn_args.hyperparameters))
  make_deterministic(hparams['seed'])
  tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
  train_dataset, eval_dataset = datasets(
      problem, fn_args, tf_transform_output, hparams['batch_size'],
      hparams['seed'])

  shares = train_class_shares(problem, fn_args, tf_transform_output,
                              hparams['seed'])
  model = build_keras_model(problem, hparams['hidden_units'],
                            hparams['learning_rate'], shares)
  history = model.fit(
      train_dataset,
      steps_per_epoch=fn_args.train_steps,
      validation_data=eval_dataset,
      validation_steps=fn_args.eval_steps,
      verbose=0)
  record = {
      'hparams': hparams,
      'tuned': tuned,
      'train_steps': fn_args.train_steps,
      'eval_steps': fn_args.eval_steps,
      'train_class_shares': shares,
      'metrics': {k: [float(v) for v in vs]
                  for k, vs in history.history.items()},
  }
  logging.info('Training finished: %s', record)
  tf.io.gfile.makedirs(fn_args.model_run_dir)
  with tf.io.gfile.GFile(os.path.join(fn_args.model_run_dir, HISTORY_FILE),
                         'w') as f:
    json.dump(record, f, indent=2)
  if any(math.isnan(v) for vs in record['metrics'].values() for v in vs):
    # A NaN model must never reach the Evaluator, let alone serving.
    raise ValueError(f'Training diverged (NaN in metrics): {record}')

  export.export_serving_model(problem, model, tf_transform_output,
                       fn_args.serving_model_dir)
