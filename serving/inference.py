"""Running a signature of a loaded version: shared by the REST and gRPC APIs."""

from typing import Dict, Mapping, Optional, Tuple, TYPE_CHECKING

import numpy as np

from serving.errors import BadRequest
from serving.errors import FailedPrecondition
from serving.model_registry import LoadedVersion

if TYPE_CHECKING:
  from serving import batching  # pylint: disable=g-bad-import-order

DEFAULT_SIGNATURE = 'serving_default'
PREDICT_METHOD = 'tensorflow/serving/predict'
MAX_RANK = 254  # TensorShape::MaxDimensions(); deeper aborts the process


def signature(loaded: LoadedVersion, name: str):
  """The concrete function of signature `name` (default if empty)."""
  if not isinstance(name, str):
    raise BadRequest("'signature_name' must be a string")
  name = name or DEFAULT_SIGNATURE
  if name not in loaded.model.signatures:
    raise FailedPrecondition(
        f'Serving signature name: "{name}" not found in signature def')
  return loaded.model.signatures[name]


def check_method(loaded: LoadedVersion, name: str, method: str) -> None:
  """TF Serving's check that e.g. :classify gets a classify signature."""
  signature(loaded, name)
  actual = loaded.signature_defs[name or DEFAULT_SIGNATURE].method_name
  if actual != method:
    kind = method.rsplit('/', 1)[-1]
    raise FailedPrecondition(
        f'Expected {kind} signature method_name to be {method}. Was: {actual}')


def tf_error_message(error: Exception) -> str:
  """The line of a TensorFlow error that says what was wrong with the input.

  Graph execution errors start with boilerplate ("Graph execution error:",
  "Detected at node ...", stack frames); the cause is the first other line.
  """
  text = getattr(error, 'message', None) or str(error)
  skip = ('Graph execution error', 'Detected at node', '<stack traces',
          'File "', '[[', '\\t', '  ')
  for line in text.splitlines():
    if line.strip() and not line.startswith(skip):
      return line.strip()[:500]
  return text.strip()[:500]


def check_input_names(specs: Mapping[str, object], names) -> None:
  """The request names exactly the signature's inputs."""
  unknown = sorted(set(names) - set(specs))
  missing = sorted(set(specs) - set(names))
  if unknown or missing:
    raise BadRequest(f'Inputs do not match the signature: missing {missing}, '
                     f'unknown {unknown[:20]}')


def _check_rank(key: str, value: object) -> None:
  """Nested lists no deeper than a tensor may be.

  tf.constant infers the shape from the first element of each level (as
  py_seq_tensor.cc's InferShapeAndType does) and a list nested deeper than
  254 levels then fails a CHECK: the whole process aborts. So the same
  walk, bounded, comes first. Arrays (gRPC) are bounded by numpy already.
  """
  rank = 0
  while isinstance(value, list):
    rank += 1
    if rank > MAX_RANK:
      raise BadRequest(f'Input {key!r}: nested deeper than the {MAX_RANK} '
                       'dimensions a tensor may have')
    if not value:
      return
    value = value[0]


def _fits(spec, dims: Optional[Tuple[Optional[int], ...]], tensor) -> bool:
  """spec.shape.is_compatible_with(tensor.shape), in well under the ~5 us an
  input that costs when the spec's dims are known (LoadedVersion.input_dims).
  """
  if dims is None:
    return spec.shape.is_compatible_with(tensor.shape)
  shape = tuple(tensor.shape)
  return len(dims) == len(shape) and all(
      d is None or d == s for d, s in zip(dims, shape))


def prepare(loaded: LoadedVersion, signature_name: str,
            inputs: Mapping[str, object]) -> Dict[str, object]:
  """`inputs` (lists or arrays) as tensors of the signature's dtypes and shapes.

  Every check that depends on the request alone happens here, so a bad
  request fails on its own and never inside a batch shared with others.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  specs = signature(loaded, signature_name).structured_input_signature[1]
  check_input_names(specs, inputs)
  known_dims = loaded.input_dims.get(signature_name or DEFAULT_SIGNATURE, {})
  arrays = {}
  for key, spec in specs.items():
    _check_rank(key, inputs[key])
    try:
      tensor = tf.constant(inputs[key], dtype=spec.dtype)
    except (TypeError, ValueError) as e:
      raise BadRequest(f'Input {key!r}: expected {spec.dtype.name} values: '
                       f'{(str(e).splitlines() or [""])[0][:500]}') from e
    if not _fits(spec, known_dims.get(key), tensor):
      raise BadRequest(f'Input {key!r}: shape {tensor.shape} does not '
                       f'match {spec.shape}')
    arrays[key] = tensor
  return arrays


def execute(loaded: LoadedVersion, signature_name: str,
            arrays: Mapping[str, object]) -> Dict[str, np.ndarray]:
  """Runs the signature on prepared tensors; a model-side error is a 400.

  Calling a signature by keyword re-checks and re-converts every input in
  Python (~0.3 ms a call here) after `prepare` has already checked them;
  the flat call (ConcreteFunction._call_flat, what the keyword call ends in,
  and close to TF Serving's Session::Run on the SignatureDef's tensors)
  skips that. A private API of the pinned TF 2.16: tests compare its answers
  with the keyword call's, and any signature whose inputs it cannot order
  is called by keyword.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  fn = signature(loaded, signature_name)
  order = loaded.flat_inputs.get(signature_name or DEFAULT_SIGNATURE)
  try:
    if order is None:
      outputs = fn(**arrays)
    else:
      outputs = fn._call_flat(  # pylint: disable=protected-access
          [_tensor(tf, arrays[k]) for k in order], fn.captured_inputs)
  except (tf.errors.InvalidArgumentError, ValueError, TypeError) as e:
    raise BadRequest(tf_error_message(e)) from e
  return {k: v.numpy() for k, v in outputs.items()}


def _tensor(tf, value):
  """`value` as a tensor: prepare's tensors as they are (convert_to_tensor
  costs ~4 us even for a tensor), merged batches' numpy arrays converted."""
  return value if isinstance(value, tf.Tensor) else tf.convert_to_tensor(value)


def run(loaded: LoadedVersion, signature_name: str,
        inputs: Mapping[str, object],
        batcher: Optional['batching.Batcher'] = None) -> Dict[str, np.ndarray]:
  """Converts `inputs` to the signature's dtypes and runs it.

  With a `batcher`, the call may share one model execution with concurrent
  requests (server-side batching); the answer is the same either way.
  """
  arrays = prepare(loaded, signature_name, inputs)
  if batcher is None:
    return execute(loaded, signature_name, arrays)
  return batcher.run(loaded, signature_name or DEFAULT_SIGNATURE, arrays)
