"""tf.Transform preprocessing for the taxi model (TFX Transform `preprocessing_fn`).

All raw features arrive as SparseTensors (the curated schema gives no fixed
shape, so a missing CSV cell is simply an absent value). Missing values are
handled where the data really has them:
  * numbers (trip_seconds, ~0.1% missing): z-scored over present values, a
    missing value gets the mean (0 after scaling);
  * coordinates: quantile buckets are computed on present values only, and a
    missing coordinate gets bucket index FEATURE_BUCKET_COUNT;
  * strings (company): a missing value lands in an OOV bucket, as an unseen
    value does;
  * integer categories: missing -> 0; values outside [0, size) also -> 0, so an
    unseen hour like 99 can never crash the one-hot layer at serving time.
"""

from typing import Dict, Union

import tensorflow as tf
import tensorflow_transform as tft

from models import features

Tensor = Union[tf.Tensor, tf.SparseTensor]


def _dense(x: Tensor, default_value) -> tf.Tensor:
  """[batch, <=1] SparseTensor -> [batch] dense Tensor, absent -> default."""
  if not isinstance(x, tf.sparse.SparseTensor):
    return tf.reshape(x, [-1])
  return tf.squeeze(
      tf.sparse.to_dense(
          tf.SparseTensor(x.indices, x.values, [x.dense_shape[0], 1]),
          default_value),
      axis=1)


def _bucketize_with_missing(x: Tensor) -> tf.Tensor:
  """Quantile buckets over present values; missing -> FEATURE_BUCKET_COUNT."""
  buckets = tft.bucketize(x, features.FEATURE_BUCKET_COUNT)
  return _dense(buckets, tf.constant(features.FEATURE_BUCKET_COUNT, tf.int64))


def _category_index(x: Tensor, size: int) -> tf.Tensor:
  """Integer category -> index in [0, size); missing or out of range -> 0."""
  value = tf.cast(_dense(x, 0), tf.int64)
  in_range = tf.logical_and(value >= 0, value < size)
  return tf.where(in_range, value, tf.zeros_like(value))


def label(tips: Tensor, fare: Tensor) -> tf.Tensor:
  """features.is_big_tip as an int64 tensor (1 = big tip).

  The schema requires both values (presence 1.0), so the validation gate
  has stopped any span missing one before Transform runs; the 0 default
  only keeps the graph total.
  """
  tips = tf.cast(_dense(tips, 0), tf.float32)
  fare = tf.cast(_dense(fare, 0), tf.float32)
  return tf.cast(features.is_big_tip(tips, fare), tf.int64)


def preprocessing_fn(inputs: Dict[str, Tensor]) -> Dict[str, tf.Tensor]:
  """tf.Transform callback: raw features -> model inputs and label."""
  outputs = {}
  for key in features.DENSE_FLOAT_FEATURE_KEYS:
    # Mean and variance over present values; a missing value becomes 0 after
    # scaling, i.e. the mean.
    scaled = tft.scale_to_z_score(tf.cast(inputs[key], tf.float32))
    outputs[features.transformed_name(key)] = _dense(scaled, 0.0)

  for key in features.BUCKET_FEATURE_KEYS:
    outputs[features.transformed_name(key)] = _bucketize_with_missing(
        inputs[key])

  for key in features.VOCAB_FEATURE_KEYS:
    outputs[features.transformed_name(key)] = tft.compute_and_apply_vocabulary(
        _dense(inputs[key], ''),
        top_k=features.VOCAB_SIZE,
        num_oov_buckets=features.OOV_SIZE,
        vocab_filename=key)

  for key, size in features.CATEGORICAL_FEATURE_MAX_VALUES.items():
    outputs[features.transformed_name(key)] = _category_index(inputs[key], size)

  outputs[features.LABEL_XF] = label(inputs[features.LABEL_KEY],
                                     inputs[features.FARE_KEY])
  return outputs
