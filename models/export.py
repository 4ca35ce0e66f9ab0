"""The SavedModel the Trainer exports, and its three signatures.

  serving_default       serialized tf.Example -> {'outputs': the answer}
                        (what BulkInferrer, the InfraValidator's requests and
                        TF Serving's Predict with examples send);
  serving_raw           one tensor per raw feature -> the answer (JSON
                        clients: the problem's instance as it is);
  transform_features    serialized tf.Example -> the transformed features
                        (TFX's Evaluator reads the label from it).

All three call one tf.Transform layer, so serving applies exactly the
preprocessing training saw. The answer is what the problem's task says a
prediction is (models/tasks.py).
"""

import tensorflow as tf
import tensorflow_transform as tft
from tensorflow.core.framework import types_pb2

from models import features
from models import problem as problems

_DTYPES = {kind: tf.as_dtype(types_pb2.DataType.Value(name))
           for kind, name in features.DATATYPE_NAMES.items()}


def _transform_layer(model, tf_transform_output):
  """The one tf.Transform layer all three signatures call, tracked by the
  model, as TFX's penguin example shares it (one layer per signature gave
  the same SavedModel and predictions, with more to trace)."""
  if not hasattr(model, 'tft_layer'):
    model.tft_layer = tf_transform_output.transform_features_layer()
  return model.tft_layer


def _examples_signature(problem, model, tf_transform_output):
  """serving_default: serialized tf.Example -> {'outputs': the answer}."""
  tft_layer = _transform_layer(model, tf_transform_output)
  raw_feature_spec = tf_transform_output.raw_feature_spec()
  for column in problem.label_only_columns:  # the label is never served
    raw_feature_spec.pop(column)

  @tf.function(input_signature=[
      tf.TensorSpec(shape=[None], dtype=tf.string, name='examples')
  ], autograph=False)
  def serve_tf_examples_fn(serialized_tf_examples):
    raw = tf.io.parse_example(serialized_tf_examples, raw_feature_spec)
    return {'outputs': model(tft_layer(raw))}

  return serve_tf_examples_fn


def _raw_features_signature(problem, model, tf_transform_output):
  """serving_raw: one [batch] tensor per raw feature -> {'outputs': ...}.

  Dense inputs are turned into the same sparse form tf.io.parse_example gives
  for a tf.Example, so a missing value ('' or NaN) is treated exactly like an
  absent feature in `serving_default`.
  """
  tft_layer = _transform_layer(model, tf_transform_output)
  specs = [
      tf.TensorSpec(shape=[None], dtype=_DTYPES[kind], name=key)
      for key, kind in problem.raw_types.items()
  ]

  @tf.function(input_signature=specs, autograph=False)
  def serve_raw_fn(*tensors):
    raw = {}
    for (key, kind), value in zip(problem.raw_types.items(), tensors):
      if kind == 'string':
        present = tf.not_equal(value, '')
      elif kind == 'float':
        present = tf.logical_not(tf.math.is_nan(value))
      else:
        present = tf.ones_like(value, dtype=tf.bool)
      rows = tf.where(present)[:, 0]
      raw[key] = tf.SparseTensor(
          indices=tf.stack([rows, tf.zeros_like(rows)], axis=1),
          values=tf.gather(value, rows),
          dense_shape=tf.stack([tf.shape(value, out_type=tf.int64)[0], 1]))
    return {'outputs': model(tft_layer(raw))}

  return serve_raw_fn


def _transform_features_signature(model, tf_transform_output):
  """transform_features: tf.Example -> transformed features (for TFMA)."""
  tft_layer = _transform_layer(model, tf_transform_output)
  raw_feature_spec = tf_transform_output.raw_feature_spec()

  @tf.function(input_signature=[
      tf.TensorSpec(shape=[None], dtype=tf.string, name='examples')
  ], autograph=False)
  def transform_features_fn(serialized_tf_examples):
    raw = tf.io.parse_example(serialized_tf_examples, raw_feature_spec)
    return tft_layer(raw)

  return transform_features_fn


def export_serving_model(problem: problems.Problem, model: tf.keras.Model,
                         tf_transform_output: tft.TFTransformOutput,
                         export_dir: str) -> None:
  """Saves `model` with all three signatures (see module docstring)."""
  signatures = {
      'serving_default': _examples_signature(problem, model,
                                             tf_transform_output),
      features.RAW_SIGNATURE: _raw_features_signature(problem, model,
                                             tf_transform_output),
      'transform_features': _transform_features_signature(
          model, tf_transform_output),
  }
  # Under Keras 3 each weight is a keras.Variable wrapping a tf.Variable.
  # TF1-style loaders (TF Serving's C++ SavedModelBundle, saved_model_cli,
  # TFX's BulkInferrer) restore by the saver's variable names and found the
  # wrappers, not the tf.Variables the signatures read ("Could not find
  # variable dense_2/kernel", tensorflow/tfx#7782). Tracking the tf.Variables
  # themselves exports them under their own names; tf_keras' weights are
  # tf.Variables already. Which Keras tf.keras is depends on import order
  # (TFMA, imported by the runners, makes it Keras 3).
  model.tf_variables = [v if isinstance(v, tf.Variable) else v.value
                        for v in model.variables]
  tf.saved_model.save(model, export_dir, signatures=signatures)
