"""TensorProto <-> numpy for the dtypes a request carries, without TF's helpers.

`tf.make_tensor_proto` and `tf.make_ndarray` handle every dtype and shape
through generic Python code: ~30 us per small tensor, which for a request of
14 feature tensors is most of the gRPC overhead over calling the model
in-process. Numeric tensors travel as raw little-endian bytes in
`tensor_content` (what TF Serving's own clients send) or in the repeated
`*_val` field of their dtype; strings as `string_val`.

A TensorProto from the network is hostile until checked: its shape is a
claim, and a 557-byte proto once claimed [25000000, 2] floats and got them
(600 MB) by sending one value. So `to_array` checks the shape (TF's
TensorShape rules: at most 254 dims, none negative, no int64 overflow) and
requires exactly one value per element, or tensor_content of exactly the
shape's bytes, before allocating anything. Every element then costs at
least one byte on the wire, so gRPC's message limit (--max_request_bytes)
bounds a request's elements, as the body limit bounds a REST request's.
Only the dtypes in `_TYPES` (and DT_STRING) are read: DT_RESOURCE,
DT_VARIANT, quantized, *_REF and unknown enum values are refused, never
handed to TF.
"""

from typing import Any

import numpy as np

from serving import protos

# Without TensorFlow's __init__ where it is not imported yet (the client).
tensor_pb2 = protos.load('tensorflow.core.framework.tensor_pb2')
tensor_shape_pb2 = protos.load('tensorflow.core.framework.tensor_shape_pb2')
types_pb2 = protos.load('tensorflow.core.framework.types_pb2')

MAX_DIMS = 254  # TensorShape::MaxDimensions() in TF
_INT64_MAX = 2**63 - 1

# DataType enum -> (numpy dtype, the repeated field it may use instead of
# tensor_content). Half values travel as their bit patterns in half_val;
# complex values as (real, imag) pairs.
_TYPES = {
    types_pb2.DT_FLOAT: (np.dtype('<f4'), 'float_val'),
    types_pb2.DT_DOUBLE: (np.dtype('<f8'), 'double_val'),
    types_pb2.DT_INT32: (np.dtype('<i4'), 'int_val'),
    types_pb2.DT_INT64: (np.dtype('<i8'), 'int64_val'),
    types_pb2.DT_BOOL: (np.dtype('bool'), 'bool_val'),
    types_pb2.DT_INT8: (np.dtype('i1'), 'int_val'),
    types_pb2.DT_INT16: (np.dtype('<i2'), 'int_val'),
    types_pb2.DT_UINT8: (np.dtype('u1'), 'int_val'),
    types_pb2.DT_UINT16: (np.dtype('<u2'), 'int_val'),
    types_pb2.DT_UINT32: (np.dtype('<u4'), 'uint32_val'),
    types_pb2.DT_UINT64: (np.dtype('<u8'), 'uint64_val'),
    types_pb2.DT_HALF: (np.dtype('<f2'), 'half_val'),
    types_pb2.DT_COMPLEX64: (np.dtype('<c8'), 'scomplex_val'),
    types_pb2.DT_COMPLEX128: (np.dtype('<c16'), 'dcomplex_val'),
}
_BY_NUMPY = {dtype: enum for enum, (dtype, _) in _TYPES.items()}
# How a field's values are typed on the wire, where not as the tensor's dtype.
_WIRE = {'int_val': np.int32, 'half_val': np.int32,
         'scomplex_val': np.float32, 'dcomplex_val': np.float64}


def dtype_name(enum: int) -> str:
  """TF's DataTypeString: DT_DOUBLE -> 'double', DT_FLOAT_REF -> 'float_ref'."""
  try:
    return types_pb2.DataType.Name(enum)[3:].lower()
  except ValueError:
    return f'unknown DataType {enum}'


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
  array = np.asarray(value, dtype=_TYPES[dtype][0] if dtype in _TYPES else None)
  array = array.astype(array.dtype.newbyteorder('<'), copy=False)
  enum = _BY_NUMPY.get(array.dtype)
  if enum is None:  # our own outputs only: requests never take this path
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    return tf.make_tensor_proto(array, dtype=dtype)
  proto = tensor_pb2.TensorProto(dtype=enum,
                                 tensor_content=np.ascontiguousarray(array).tobytes())
  _shape(proto, array.shape)
  return proto


def _is_text(value: Any) -> bool:
  array = np.asarray(value)
  return array.dtype.kind in ('U', 'S', 'O')


def num_elements(proto: tensor_pb2.TensorProto) -> int:
  """The element count the proto's shape declares, checked as TF checks it.

  Stops multiplying at the first overflow, so a shape of 254 dims of 2**62
  costs no big-integer arithmetic. Raises ValueError for an invalid shape.
  """
  shape = proto.tensor_shape
  if shape.unknown_rank:
    raise ValueError('a tensor must have a known rank')
  if len(shape.dim) > MAX_DIMS:
    raise ValueError(f'shape has {len(shape.dim)} dimensions; at most '
                     f'{MAX_DIMS} are allowed')
  size = 1
  for dim in shape.dim:
    if dim.size < 0:
      raise ValueError(f'shape {_text(proto)} has a negative dimension')
    size *= dim.size
    if size > _INT64_MAX:
      raise ValueError(f'shape {_text(proto)} has more than 2**63-1 elements')
  return size


def _text(proto: tensor_pb2.TensorProto) -> str:
  dims = [d.size for d in proto.tensor_shape.dim]
  text = str(dims[:8])
  return text if len(dims) <= 8 else text[:-1] + ', ...]'


def _count_check(count: int, size: int, what: str, proto) -> None:
  """Exactly one value per element.

  TF would fill a tensor from a single value (tf.make_tensor_proto(1.0,
  shape=[n]) sends one float_val) and pad a short list with its last value;
  TF Serving's Tensor::FromProto does too. Refused here: that fill is what
  lets a few bytes ask for any batch size, and a batch costs the model's
  working memory per row (~17 KB for the taxi model: a 14,000-row fill from
  a ~600-byte request took 244 MB, where spelling the rows out needs 0.5 MB,
  over the 200 KB limit the tests run with).
  """
  if count != size:
    raise ValueError(f'{count} {what} for shape {_text(proto)} ({size} '
                     'elements): send one value per element')


def to_array(proto: tensor_pb2.TensorProto) -> np.ndarray:
  """The numpy array a TensorProto holds (strings as an object array of bytes).

  Raises ValueError, before allocating, when the content does not fit the
  declared shape or the dtype is not one a request may carry.
  """
  size = num_elements(proto)
  shape = [d.size for d in proto.tensor_shape.dim]
  if proto.dtype == types_pb2.DT_STRING:
    if proto.tensor_content:
      raise ValueError('a DT_STRING tensor carries string_val, not '
                       'tensor_content')
    _count_check(len(proto.string_val), size, 'string values', proto)
    array = np.empty(size, dtype=object)
    array[:] = list(proto.string_val)
    return array.reshape(shape)
  if proto.dtype not in _TYPES:
    raise ValueError(f'{dtype_name(proto.dtype)} tensors are not supported')
  dtype, field = _TYPES[proto.dtype]
  if proto.tensor_content:
    if len(proto.tensor_content) != size * dtype.itemsize:
      raise ValueError(f'{len(proto.tensor_content)} bytes of tensor_content '
                       f'for shape {_text(proto)} of {dtype_name(proto.dtype)}'
                       f' ({size * dtype.itemsize} expected)')
    return np.frombuffer(proto.tensor_content, dtype=dtype).reshape(shape)
  values = getattr(proto, field)
  per_element = 2 if dtype.kind == 'c' else 1
  if len(values) % per_element:
    raise ValueError(f'{field} needs (real, imaginary) pairs')
  _count_check(len(values) // per_element, size, 'values', proto)
  wire = np.asarray(values, dtype=_WIRE.get(field, dtype))
  if field == 'half_val':
    array = wire.astype(np.uint16).view(dtype)  # the values' bit patterns
  elif per_element == 2:
    array = wire.view(dtype)
  else:
    array = wire.astype(dtype, copy=False)  # int_val: TF casts to 8/16 bits
  return array.reshape(shape)
