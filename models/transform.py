"""tf.Transform preprocessing from a problem's declared encodings.

`preprocessing_fn_for(problem)` is the TFX Transform callback a problem's
preprocessing.py exports (models/<name>/preprocessing.py): each raw feature
encoded as the problem declares (models/problem.py), and the label derived
by the problem's one rule.

All raw features arrive as SparseTensors (the curated schemas give no fixed
shape, so a missing CSV cell is simply an absent value). Missing values are
handled where data really has them:
  * z-scored numbers: mean and variance over present values; a missing
    value gets the mean (0 after scaling);
  * quantile buckets: computed on present values only; a missing value
    gets a bucket of its own (index `size`);
  * vocabularies: a missing value lands in an OOV bucket, as an unseen one
    does (tf.Transform keeps no empty token);
  * integer categories: missing -> 0; values outside [0, size) also -> 0,
    so an unseen value can never crash the one-hot layer at serving time.
"""

from typing import Callable, Dict, Union

import tensorflow as tf
import tensorflow_transform as tft

from models import features
from models import problem as problems

Tensor = Union[tf.Tensor, tf.SparseTensor]
# Out-of-vocabulary buckets of every vocabulary (missing and unseen values).
OOV_SIZE = 10


def _dense(x: Tensor, default_value) -> tf.Tensor:
  """[batch, <=1] SparseTensor -> [batch] dense Tensor, absent -> default."""
  if not isinstance(x, tf.sparse.SparseTensor):
    return tf.reshape(x, [-1])
  return tf.squeeze(
      tf.sparse.to_dense(
          tf.SparseTensor(x.indices, x.values, [x.dense_shape[0], 1]),
          default_value),
      axis=1)


def _bucketize_with_missing(x: Tensor, size: int) -> tf.Tensor:
  """Quantile buckets over present values; missing -> `size`."""
  buckets = tft.bucketize(x, size)
  return _dense(buckets, tf.constant(size, tf.int64))


def _category_index(x: Tensor, size: int) -> tf.Tensor:
  """Integer category -> index in [0, size); missing or out of range -> 0."""
  value = tf.cast(_dense(x, 0), tf.int64)
  in_range = tf.logical_and(value >= 0, value < size)
  return tf.where(in_range, value, tf.zeros_like(value))


def encode(feature: problems.Feature, x: Tensor) -> tf.Tensor:
  """One raw feature as the model reads it."""
  if feature.encoding == problems.Z_SCORE:
    return _dense(tft.scale_to_z_score(tf.cast(x, tf.float32)), 0.0)
  if feature.encoding == problems.QUANTILES:
    return _bucketize_with_missing(x, feature.size)
  if feature.encoding == problems.VOCABULARY:
    return tft.compute_and_apply_vocabulary(
        _dense(x, ''), top_k=feature.size, num_oov_buckets=OOV_SIZE,
        vocab_filename=feature.name)
  return _category_index(x, feature.size)


def one_hot_size(feature: problems.Feature) -> int:
  """How many distinct indices an encoded categorical feature takes (0 for
  a number): what the model's one-hot layer needs."""
  if feature.encoding == problems.QUANTILES:
    return feature.size + 1  # + the missing bucket
  if feature.encoding == problems.VOCABULARY:
    return feature.size + OOV_SIZE
  if feature.encoding == problems.CATEGORY:
    return feature.size
  return 0


def label(problem: problems.Problem, inputs: Dict[str, Tensor]) -> tf.Tensor:
  """The problem's label rule as an int64 class-index tensor.

  The schema requires the label's columns (presence 1.0), so the validation
  gate has stopped any span missing one before Transform runs; the 0
  default only keeps the graph total."""
  columns = {c: tf.cast(_dense(inputs[c], 0), tf.float32)
             for c in problem.label.columns}
  return tf.cast(problem.label.derive(columns), tf.int64)


def preprocessing_fn_for(problem: problems.Problem
                         ) -> Callable[[Dict[str, Tensor]], Dict[str, Tensor]]:
  """tf.Transform callback: raw features -> model inputs and the label."""

  def preprocessing_fn(inputs: Dict[str, Tensor]) -> Dict[str, tf.Tensor]:
    outputs = {features.transformed_name(f.name): encode(f, inputs[f.name])
               for f in problem.features}
    outputs[problem.label.transformed] = label(problem, inputs)
    return outputs

  return preprocessing_fn
