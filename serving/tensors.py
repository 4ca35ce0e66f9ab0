"""TensorProto <-> numpy for the dtypes a request carries, without TF's helpers.

`tf.make_tensor_proto` and `tf.make_ndarray` handle every dtype and shape
through generic Python code: ~30 us per small tensor, which for a request of
14 feature tensors is most of the gRPC overhead over calling the model
in-process. Numeric tensors travel as raw little-endian bytes in
`tensor_content` (what TF Serving's own clients send); strings as
`string_val`. Anything else falls back to TF's helpers, so every TensorProto
a client may send is still accepted.
"""

from typing import Any

import numpy as np
from tensorflow.core.framework import tensor_pb2
from tensorflow.core.framework import tensor_shape_pb2
from tensorflow.core.framework import types_pb2

# DataType enum <-> numpy dtype, for the types sent as raw bytes.
_NUMERIC = {
    types_pb2.DT_FLOAT: np.dtype('<f4'),
    types_pb2.DT_DOUBLE: np.dtype('<f8'),
    types_pb2.DT_INT32: np.dtype('<i4'),
    types_pb2.DT_INT64: np.dtype('<i8'),
    types_pb2.DT_BOOL: np.dtype('bool'),
}
_FIELD = {  # the repeated *_val field each numeric type may use instead
    types_pb2.DT_FLOAT: 'float_val',
    types_pb2.DT_DOUBLE: 'double_val',
    types_pb2.DT_INT32: 'int_val',
    types_pb2.DT_INT64: 'int64_val',
    types_pb2.DT_BOOL: 'bool_val',
}
_BY_NUMPY = {dtype: enum for enum, dtype in _NUMERIC.items()}


def _shape(proto: tensor_pb2.TensorProto, dims) -> None:
  proto.tensor_shape.CopyFrom(tensor_shape_pb2.TensorShapeProto(
      dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims]))


def to_proto(value: Any, dtype: int = None) -> tensor_pb2.TensorProto:
  """A TensorProto of `value` (array or nested list), as `dtype` if given."""
  if dtype == types_pb2.DT_STRING or (dtype is None and _is_text(value)):
    array = np.asarray(value, dtype=object)
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING)
    _shape(proto, array.shape)
    proto.string_val.extend(
        v if isinstance(v, bytes) else str(v).encode('utf-8')
        for v in array.reshape(-1))
    return proto
  array = np.asarray(value, dtype=_NUMERIC[dtype] if dtype in _NUMERIC else None)
  array = array.astype(array.dtype.newbyteorder('<'), copy=False)
  enum = _BY_NUMPY.get(array.dtype)
  if enum is None:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    return tf.make_tensor_proto(array, dtype=dtype)
  proto = tensor_pb2.TensorProto(dtype=enum,
                                 tensor_content=np.ascontiguousarray(array).tobytes())
  _shape(proto, array.shape)
  return proto


def _is_text(value: Any) -> bool:
  array = np.asarray(value)
  return array.dtype.kind in ('U', 'S', 'O')


def to_array(proto: tensor_pb2.TensorProto) -> np.ndarray:
  """The numpy array a TensorProto holds (strings as an object array of bytes).

  Raises ValueError when the content does not fit the declared shape.
  """
  shape = [d.size for d in proto.tensor_shape.dim]
  size = int(np.prod(shape)) if shape else 1
  if proto.dtype == types_pb2.DT_STRING:
    values = list(proto.string_val)
    if len(values) == 1 and size != 1:
      values = values * size  # a single value fills the tensor, as in TF
    if len(values) != size:
      raise ValueError(f'{len(values)} string values for shape {shape}')
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array.reshape(shape)
  dtype = _NUMERIC.get(proto.dtype)
  if dtype is None:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    return tf.make_ndarray(proto)
  if proto.tensor_content:
    if len(proto.tensor_content) != size * dtype.itemsize:
      raise ValueError(f'{len(proto.tensor_content)} bytes of tensor_content '
                       f'for shape {shape} of {dtype}')
    return np.frombuffer(proto.tensor_content, dtype=dtype).reshape(shape)
  values = np.asarray(getattr(proto, _FIELD[proto.dtype]), dtype=dtype)
  if values.size == 1 and size != 1:
    values = np.full(size, values[0], dtype=dtype)
  if values.size != size:
    raise ValueError(f'{values.size} values for shape {shape}')
  return values.reshape(shape)
