"""The Keras model and run_fn, trained for real on raw bundled rows."""

import json
import math
import os

import numpy as np
import pytest
import tensorflow as tf

from models import features
from models import model
from models import problem as problems
from tests import helpers


@pytest.mark.parametrize('name,units', [('taxi', 1), ('penguin', 3)])
def test_model_builds_with_one_input_per_feature_and_the_tasks_head(name,
                                                                    units):
  problem = problems.load(name)
  keras_model = model.build_keras_model(problem, [8, 4], 0.01)
  expected = set(features.transformed_names(list(problem.raw_types)))
  assert set(keras_model.input) == expected
  assert keras_model.output_shape == (None, units)


def test_run_fn_without_hparams_fails_clearly(tmp_path):
  from tfx.components.trainer.fn_args_utils import FnArgs  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match='problem'):
    model.run_fn(FnArgs(custom_config={}))
  with pytest.raises(ValueError, match='hparams'):
    model.run_fn(FnArgs(custom_config={'problem': 'taxi'}))


def test_run_fn_lowers_the_loss(trained_model):
  """The trained model's eval loss is below the same model's untrained one.

  The untrained model is rebuilt here as run_fn builds it (same seed, same
  starting bias), not evaluated in every pipeline run.
  """
  import tensorflow_transform as tft  # pylint: disable=g-import-not-at-top
  with open(os.path.join(trained_model.model_run_dir, model.HISTORY_FILE)) as f:
    history = json.load(f)
  hparams = trained_model.custom_config['hparams']
  model.make_deterministic(hparams['seed'])
  transform_output = tft.TFTransformOutput(trained_model.transform_output)
  untrained = model.build_keras_model(helpers.TAXI, hparams['hidden_units'],
                                      hparams['learning_rate'],
                                      history['train_class_shares'])
  _, eval_dataset = model.datasets(helpers.TAXI, trained_model,
                                   transform_output, hparams['batch_size'],
                                   hparams['seed'])
  initial = untrained.evaluate(eval_dataset, steps=trained_model.eval_steps,
                               verbose=0, return_dict=True)['loss']
  final = history['metrics']['val_loss'][-1]
  assert final < initial, (initial, history)


def _load(trained_model):
  return tf.saved_model.load(trained_model.serving_model_dir)


def _raw_inputs(rows):
  """Rows as the serving_raw signature takes them: '' / NaN when missing."""
  inputs = {}
  for key, kind in helpers.RAW_TYPES.items():
    values = [row[key] for row in rows]
    if kind == 'string':
      inputs[key] = tf.constant(values)
    elif kind == 'float':
      inputs[key] = tf.constant(
          [float(v) if v else math.nan for v in values], tf.float32)
    else:
      inputs[key] = tf.constant([int(float(v)) if v else 0 for v in values],
                                tf.int64)
  return inputs


def test_signatures_exist(trained_model):
  loaded = _load(trained_model)
  assert {'serving_default', model.RAW_SIGNATURE,
          'transform_features'} <= set(loaded.signatures)


def test_both_serving_signatures_agree_and_give_probabilities(
    trained_model, eval_rows):
  loaded = _load(trained_model)
  schema = helpers.load_schema()
  serialized = tf.constant([
      helpers.to_example(r, schema, drop_label=True).SerializeToString()
      for r in eval_rows
  ])
  from_examples = loaded.signatures['serving_default'](
      examples=serialized)['outputs'].numpy()
  from_raw = loaded.signatures[model.RAW_SIGNATURE](
      **_raw_inputs(eval_rows))['outputs'].numpy()
  assert from_examples.shape == (len(eval_rows), 1)
  assert not np.isnan(from_examples).any()
  assert ((from_examples >= 0) & (from_examples <= 1)).all()
  np.testing.assert_allclose(from_examples, from_raw, rtol=1e-5, atol=1e-6)
  # The rows include real missing values, and the model is not constant.
  assert any(not r['dropoff_latitude'] or not r['company'] for r in eval_rows)
  assert from_examples.std() > 1e-3


def test_out_of_domain_values_give_a_finite_prediction(trained_model,
                                                        eval_rows):
  loaded = _load(trained_model)
  row = dict(eval_rows[0], payment_type='Bitcoin', company='Nobody Cab',
             trip_start_hour='99', pickup_community_area='-5',
             fare='100000', trip_miles='')
  out = loaded.signatures[model.RAW_SIGNATURE](
      **_raw_inputs([row]))['outputs'].numpy()
  assert np.isfinite(out).all() and 0 <= out[0, 0] <= 1


_TF1_LOAD = r'''
import sys
import tensorflow as tf
# tf.keras touched before tensorflow_transform sets TF_USE_LEGACY_KERAS, as
# in the runners (make run): tf.keras is Keras 3, not tf_keras.
assert tf.keras.__name__ == 'keras._tf_keras.keras', tf.keras.__name__
import numpy as np
import tensorflow_transform as tft
from models import export
from models import model

transform_dir, export_dir, examples_file = sys.argv[1:4]
from models import problem
taxi = problem.load('taxi')
keras_model = model.build_keras_model(taxi, [8, 4], 0.01, [0.7, 0.3])
export.export_serving_model(taxi, keras_model,
                            tft.TFTransformOutput(transform_dir), export_dir)
examples = list(tf.data.TFRecordDataset(examples_file).as_numpy_iterator())
tf2 = tf.saved_model.load(export_dir).signatures['serving_default'](
    examples=tf.constant(examples))['outputs'].numpy()
# TF Serving's C++ loader, saved_model_cli and BulkInferrer restore this way.
with tf.Graph().as_default(), tf.compat.v1.Session() as session:
  meta = tf.compat.v1.saved_model.loader.load(session, ['serve'], export_dir)
  signature = meta.signature_def['serving_default']
  tf1 = session.run(signature.outputs['outputs'].name,
                    {signature.inputs['examples'].name: examples})
np.testing.assert_allclose(tf1, tf2, rtol=1e-6, atol=1e-7)
print('SAME', len(examples))
'''


def test_a_keras3_export_loads_in_tf_servings_tf1_loader(tmp_path,
                                                         transform_dir,
                                                         eval_rows):
  """Under Keras 3 (the runners' tf.keras) the exported SavedModel restores
  in the TF1 loader TF Serving's C++ server uses, with the same answers as
  the TF2 loader (tensorflow/tfx#7782: it failed with "Could not find
  variable dense_2/kernel" before export_serving_model tracked the
  tf.Variables)."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  schema = helpers.load_schema()
  examples_file = str(tmp_path / 'examples.tfrecord')
  with tf.io.TFRecordWriter(examples_file) as writer:
    for row in eval_rows[:20]:
      writer.write(helpers.to_example(row, schema,
                                      drop_label=True).SerializeToString())
  # Not inherited: tensorflow_transform set it in this process.
  env = {k: v for k, v in os.environ.items() if k != 'TF_USE_LEGACY_KERAS'}
  result = subprocess.run(
      [sys.executable, '-c', _TF1_LOAD, transform_dir,
       str(tmp_path / 'export'), examples_file],
      cwd=helpers.REPO, capture_output=True, text=True, timeout=300, env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'SAME 20' in result.stdout
