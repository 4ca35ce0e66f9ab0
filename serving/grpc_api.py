"""TF Serving's gRPC API over a ModelRegistry, on the official protos.

PredictionService: Predict and GetModelMetadata are served; Classify and
Regress answer FAILED_PRECONDITION unless the signature is a classify /
regress one (TF2 exports predict signatures only), as TF Serving does.
ModelService: GetModelStatus.

Predict checks its input tensors before anything is allocated for them:
names and dtypes against the signature's (no silent casts, as in TF
Serving), shapes against the values sent. See `read_inputs`.
"""

from concurrent import futures
from typing import Dict, Mapping, Optional, Tuple

import grpc
import numpy as np
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import model_service_pb2_grpc
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

from serving import batching
from serving import inference
from serving import request_logging  # pylint: disable=unused-import
from serving import tensors
from serving.errors import BadRequest
from serving.errors import ServingError
from serving.model_registry import LoadedVersion
from serving.model_registry import ModelRegistry

_AVAILABLE = get_model_status_pb2.ModelVersionStatus.AVAILABLE


def _spec(spec) -> Tuple[str, Optional[int], Optional[str]]:
  version = spec.version.value if spec.HasField('version') else None
  label = spec.version_label if spec.WhichOneof('version_choice') == \
      'version_label' else None
  return spec.name, version, label


def _fill_spec(target, name: str, loaded: LoadedVersion, signature: str):
  target.name = name
  target.version.value = loaded.version
  target.signature_name = signature


def read_inputs(protos: Mapping[str, object],
                specs: Mapping[str, object]) -> Dict[str, np.ndarray]:
  """A request's TensorProtos as arrays, refusing hostile ones unallocated.

  Names against the signature, then each dtype against the signature's (no
  silent casts: TF Serving answers "Expects arg[0] to be float but double
  is provided"), then shape and values (tensors.to_array checks both before
  allocating).
  """
  inference.check_input_names(specs, protos)
  for key, proto in protos.items():
    want = specs[key].dtype.as_datatype_enum
    if proto.dtype != want:
      raise BadRequest(f'Expects arg {key!r} to be {tensors.dtype_name(want)} '
                       f'but {tensors.dtype_name(proto.dtype)} is provided')
  arrays = {}
  for key, proto in protos.items():
    try:
      arrays[key] = tensors.to_array(proto)
    except ValueError as e:
      raise BadRequest(f'Cannot read input tensor {key!r}: {e}') from e
  return arrays


MAX_DETAILS_BYTES = 1000


def _details(text: str) -> str:
  """A status message short enough to arrive.

  gRPC sends it in trailing metadata, percent-encoded, which clients cap at
  8 KB: a message echoing a 100 KB model name reached the client as
  RESOURCE_EXHAUSTED "Stream removed" instead of NOT_FOUND.
  """
  data = text.encode('utf-8', 'replace')
  if len(data) <= MAX_DETAILS_BYTES:
    return text
  return data[:MAX_DETAILS_BYTES].decode('utf-8', 'ignore') + '...'


def _abort_on_error(method):
  """Maps ServingError to its gRPC status; anything else to INTERNAL."""
  def wrapper(self, request, context):
    try:
      return method(self, request, context)
    except ServingError as e:
      context.abort(getattr(grpc.StatusCode, e.grpc_code), _details(str(e)))
    except Exception as e:  # pylint: disable=broad-except
      context.abort(grpc.StatusCode.INTERNAL,
                    _details(f'{type(e).__name__}: {e}'))
  wrapper.__name__ = method.__name__
  return wrapper


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
  """tensorflow.serving.PredictionService."""

  def __init__(self, registry: ModelRegistry,
               batcher: Optional[batching.Batcher] = None,
               request_logger: Optional[
                   'request_logging.RequestLogger'] = None):
    self._registry = registry
    self._batcher = batcher
    self._request_logger = request_logger

  @_abort_on_error
  def Predict(self, request, context):  # pylint: disable=invalid-name
    name, version, label = _spec(request.model_spec)
    loaded = self._registry.resolve(name, version, label)
    signature = request.model_spec.signature_name or inference.DEFAULT_SIGNATURE
    specs = inference.signature(loaded, signature).structured_input_signature[1]
    inputs = read_inputs(request.inputs, specs)
    outputs = inference.run(loaded, signature, inputs, self._batcher)
    wanted = set(request.output_filter) or set(outputs)
    unknown = wanted - set(outputs)
    if unknown:
      raise BadRequest(f'output_filter names unknown outputs {sorted(unknown)}')
    response = predict_pb2.PredictResponse()
    _fill_spec(response.model_spec, name, loaded, signature)
    for key in sorted(wanted):
      response.outputs[key].CopyFrom(tensors.to_proto(outputs[key]))
    if self._request_logger is not None:  # sampled, written off this thread
      self._request_logger.log_grpc(name, loaded.version, signature, request,
                                    response)
    return response

  @_abort_on_error
  def GetModelMetadata(self, request, context):  # pylint: disable=invalid-name
    if list(request.metadata_field) != ['signature_def']:
      raise BadRequest('Metadata field must be exactly ["signature_def"]')
    name, version, label = _spec(request.model_spec)
    loaded = self._registry.resolve(name, version, label)
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    for key, value in loaded.signature_defs.items():
      signature_map.signature_def[key].CopyFrom(value)
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    _fill_spec(response.model_spec, name, loaded, '')
    response.metadata['signature_def'].Pack(signature_map)
    return response

  def _unsupported(self, request, method: str):
    name, version, label = _spec(request.model_spec)
    loaded = self._registry.resolve(name, version, label)
    inference.check_method(loaded, request.model_spec.signature_name,
                           f'tensorflow/serving/{method}')
    raise BadRequest(f'{method} signatures are not supported')

  @_abort_on_error
  def Classify(self, request, context):  # pylint: disable=invalid-name
    self._unsupported(request, 'classify')

  @_abort_on_error
  def Regress(self, request, context):  # pylint: disable=invalid-name
    self._unsupported(request, 'regress')


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
  """tensorflow.serving.ModelService (status only; config reload is not)."""

  def __init__(self, registry: ModelRegistry):
    self._registry = registry

  @_abort_on_error
  def GetModelStatus(self, request, context):  # pylint: disable=invalid-name
    name, version, label = _spec(request.model_spec)
    response = get_model_status_pb2.GetModelStatusResponse()
    for v, _ in self._registry.status(name, version, label):
      status = response.model_version_status.add()
      status.version = v
      status.state = _AVAILABLE
    return response


def make_server(registry: ModelRegistry, address: str,
                max_message_bytes: int,
                batcher: Optional[batching.Batcher] = None,
                workers: int = 16,
                request_logger: Optional[
                    'request_logging.RequestLogger'] = None
               ) -> Tuple[grpc.Server, int]:
  """A started-able gRPC server and the port it bound.

  `max_message_bytes` is gRPC's receive limit; with one value per element
  (tensors.to_array) it bounds a Predict request's elements too.
  """
  server = grpc.server(
      futures.ThreadPoolExecutor(max_workers=workers),
      options=[('grpc.max_receive_message_length', max_message_bytes)])
  prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
      PredictionService(registry, batcher, request_logger), server)
  model_service_pb2_grpc.add_ModelServiceServicer_to_server(
      ModelService(registry), server)
  port = server.add_insecure_port(address)
  return server, port
