"""One infra-validation try: the candidate loaded in `python -m serving` and
asked over both APIs, as the InfraValidator (components/infra_validator.py)
runs it.

TFX's stock InfraValidator starts TF Serving in Docker or Kubernetes; here
the model server is this project's `python -m serving`, started on free
loopback ports with the candidate as the only version of a temporary model
base path (`validate_once`). A try passes when the version becomes
AVAILABLE within the loading budget and every request, over REST and gRPC,
gets a valid answer of the problem's task (models/tasks.py `fault`): the
requests are the Examples split's first records, as the stock request
builder makes them (`check_request_spec`, `read_examples`).
"""

import base64
import dataclasses
import json
import os
import time
import urllib.error
import urllib.request
from typing import Any, Dict, List, Optional, Tuple

from absl import logging
from tfx import types
from tfx.components.util import examples_utils
from tfx.dsl.io import fileio
from tfx.proto import example_gen_pb2
from tfx.proto import infra_validator_pb2
from tfx.types import artifact_utils

from models import problem as problems
from project import waiting
from serving import client
from serving import server_process

SERVING_TAG = 'serve'  # the one tag set `python -m serving` loads
LOG_TAIL_CHARS = 3000
POLL_SECONDS = 0.5
REQUEST_TIMEOUT_SECONDS = 30
APIS = ('REST', 'gRPC')
# What serving/model_registry.py logs when it cannot load a version:
# '... refusing version <v> at <path> until its files change: <error>'.
_REFUSED = 'refusing version'
_REFUSED_CAUSE = 'until its files change: '


class ModelFault(Exception):
  """The model itself failed: not loaded, or a wrong or failed answer."""


class Terminated(BaseException):
  """SIGTERM while validating: stop the server, then fail the execution."""


def check_request_spec(spec: infra_validator_pb2.RequestSpec) -> None:
  """ValueError for what this component cannot do that the stock one can."""
  if spec.WhichOneof('kind') != 'tensorflow_serving':
    raise ValueError('RequestSpec needs tensorflow_serving '
                     '(TensorFlowServingRequestSpec), as the stock one does')
  tags = set(spec.tensorflow_serving.tag_set)
  if tags and tags != {SERVING_TAG}:
    raise ValueError(f'python -m serving loads the {SERVING_TAG!r} tag set '
                     f'only, not {sorted(tags)}')
  if spec.make_warmup:
    raise ValueError('make_warmup is not supported: no warm-up model is '
                     'written (TF Serving warm-up needs the stock component)')
  if spec.num_examples < 0:
    raise ValueError(f'num_examples < 0 ({spec.num_examples})')


def read_examples(examples: types.Artifact, split_name: str,
                  num_examples: int) -> Tuple[str, List[bytes]]:
  """(split, its first `num_examples` serialized tf.Examples, all of them
  if fewer), as the stock request builder reads them; `split_name` '' is
  the first split. ValueError if there is none to read."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  splits = artifact_utils.decode_split_names(examples.split_names)
  split = split_name or (splits[0] if splits else '')
  if split not in splits:
    raise ValueError(f'no split {split!r} in {examples.uri} (has {splits})')
  payload = examples_utils.get_payload_format(examples)
  if payload != example_gen_pb2.PayloadFormat.FORMAT_TF_EXAMPLE:
    raise ValueError('requests are built from tf.Examples; the examples are '
                     + example_gen_pb2.PayloadFormat.Name(payload))
  pattern = os.path.join(artifact_utils.get_split_uri([examples], split), '*')
  files = sorted(fileio.glob(pattern))
  if not files:
    raise ValueError(f'no example files match {pattern}')
  compression = 'GZIP' if files[0].endswith('.gz') else ''
  records = [r.numpy() for r in tf.data.TFRecordDataset(
      files, compression_type=compression).take(num_examples)]
  if not records:
    raise ValueError(f'no examples in {pattern}')
  return split, records


@dataclasses.dataclass
class Try:
  """One server start and what it answered."""
  server_pid: Optional[int] = None
  load_seconds: Optional[float] = None
  requests_sent: int = 0
  requests_answered: int = 0  # answered with one probability per example
  failure: str = ''  # one line; '' when the try passed
  model_fault: bool = False
  server_log: str = ''


def _log_text(server: server_process.ServerProcess) -> str:
  """The server's log so far, without moving the offset it writes at
  (its stderr shares this file description)."""
  fd = server.log.fileno()
  return os.pread(fd, os.fstat(fd).st_size, 0).decode('utf-8', 'replace')


def _refusal(log_text: str) -> Optional[str]:
  for line in log_text.splitlines():
    if _REFUSED in line:
      return line.split(_REFUSED_CAUSE, 1)[-1].strip()
  return None


def _wait_until_available(server: server_process.ServerProcess,
                          model_name: str, deadline: float,
                          max_seconds: int) -> None:
  """Polls the status until every version is AVAILABLE (project/waiting);
  ModelFault as soon as the server refuses the model."""
  rest = client.RestClient(server.rest_url, model_name,
                           timeout=REQUEST_TIMEOUT_SECONDS)
  said = ['no answer yet']

  def available() -> bool:
    try:
      states = [s['state'] for s in rest.status()]
      if states and all(s == 'AVAILABLE' for s in states):
        return True
      said[0] = f'states {states}'
    except (RuntimeError, OSError) as e:  # HTTP 404 until a version loads
      said[0] = str(e)
    refused = _refusal(_log_text(server))
    if refused:
      raise ModelFault(f'the model server could not load the model: '
                       f'{refused}')
    if server.proc.poll() is not None:
      raise RuntimeError(f'the model server exited ({server.proc.returncode}) '
                         'before the model was AVAILABLE')
    return False

  try:
    waiting.wait_until(available, max(0.0, deadline - time.monotonic()),
                       POLL_SECONDS, what='the model AVAILABLE')
  except waiting.WaitTimeout:
    raise TimeoutError(f'the model was not AVAILABLE within '
                       f'max_loading_time_seconds={max_seconds} ({said[0]})'
                      ) from None


def _get_json(url: str, body: Optional[Dict[str, Any]] = None, what: str = ''):
  """A REST call; ModelFault when the server answers with an error, the
  OSError itself when it does not answer."""
  data = json.dumps(body).encode() if body is not None else None
  try:
    with urllib.request.urlopen(urllib.request.Request(url, data=data),
                                timeout=REQUEST_TIMEOUT_SECONDS) as response:
      return json.loads(response.read())
  except urllib.error.HTTPError as e:
    text = e.read().decode('utf-8', 'replace')
    try:
      text = json.loads(text)['error']
    except (ValueError, KeyError, TypeError):
      pass
    raise ModelFault(f'{what}: HTTP {e.code}: {text}') from e


def _serialized_input(signature: str, signature_defs: Dict[str, Any]) -> str:
  """The signature's one DT_STRING input, which takes serialized examples
  (the stock request builder's rule for a PredictRequest)."""
  if signature not in signature_defs:
    raise ModelFault(f'no signature {signature!r} (the model has '
                     f'{sorted(signature_defs)})')
  inputs = signature_defs[signature].get('inputs', {})
  if len(inputs) != 1 or next(iter(inputs.values())).get(
      'dtype') != 'DT_STRING':
    raise ModelFault(
        f'signature {signature!r} takes {sorted(inputs)}, not one string '
        'input of serialized tf.Examples')
  return next(iter(inputs))


def _answer(answers: List[Any], what: str,
            problem: problems.Problem) -> List[float]:
  """The one answer a one-example request must get, valid for the
  problem's task (models/tasks.py): its class probabilities."""
  if not isinstance(answers, list) or len(answers) != 1:
    raise ModelFault(f'{what}: answered {answers!r}, not one answer to its '
                     'one example')
  value = answers[0]
  if isinstance(value, dict):
    value = value.get('outputs')
  n_classes = len(problem.label.classes)
  why = problem.task.fault(value, n_classes)
  if why:
    raise ModelFault(f'{what}: answered {value!r}: {why}')
  return problem.task.probabilities(value, n_classes)


def _grpc_predict(grpc: client.GrpcClient, model_name: str, signature: str,
                  input_key: str, record: bytes, what: str) -> List[float]:
  import grpc as grpc_lib  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorflow_serving.apis import predict_pb2  # pylint: disable=g-import-not-at-top
  request = predict_pb2.PredictRequest()
  request.model_spec.name = model_name
  request.model_spec.signature_name = signature
  request.inputs[input_key].CopyFrom(tf.make_tensor_proto([record]))
  try:
    return grpc.send(request)
  except grpc_lib.RpcError as e:
    if e.code() in (grpc_lib.StatusCode.UNAVAILABLE,
                    grpc_lib.StatusCode.DEADLINE_EXCEEDED):
      raise  # the server, not the model: a retry may pass
    raise ModelFault(f'{what}: {e.code().name}: {e.details()}') from e
  except KeyError as e:
    raise ModelFault(f'{what}: no {e} tensor in the answer') from e


def _query(server: server_process.ServerProcess, model_name: str,
           records: List[bytes], signatures: List[str], attempt: Try,
           problem: problems.Problem) -> None:
  """Each example to each signature over REST and gRPC; ModelFault at the
  first wrong or failed answer."""
  model_url = f'{server.rest_url}/v1/models/{model_name}'
  metadata = _get_json(model_url + '/metadata', what='REST metadata')
  signature_defs = metadata['metadata']['signature_def']['signature_def']
  grpc = client.GrpcClient(server.grpc_address, model_name, problem,
                           timeout=REQUEST_TIMEOUT_SECONDS)
  try:
    for signature in signatures:
      input_key = _serialized_input(signature, signature_defs)
      for i, record in enumerate(records):
        what = f'REST predict on {signature!r}, example {i}'
        attempt.requests_sent += 1
        answer = _get_json(model_url + ':predict', {
            'signature_name': signature,
            'instances': [{'b64': base64.b64encode(record).decode('ascii')}]
        }, what)
        _answer(answer.get('predictions'), what, problem)
        attempt.requests_answered += 1
        what = f'gRPC Predict on {signature!r}, example {i}'
        attempt.requests_sent += 1
        _answer(_grpc_predict(grpc, model_name, signature, input_key,
                              record, what), what, problem)
        attempt.requests_answered += 1
  finally:
    grpc.close()


def validate_once(base_path: str, model_name: str, records: List[bytes],
                  signatures: List[str], max_seconds: int,
                  problem: problems.Problem) -> Try:
  """Starts the server on `base_path`, waits for the model, asks it; the
  server is stopped whatever happens."""
  attempt = Try()
  launched = time.monotonic()
  deadline = launched + max_seconds
  server = None
  try:
    server = server_process.start(
        ['--model_name', model_name, '--model_base_path', base_path],
        timeout=max_seconds)
    attempt.server_pid = server.proc.pid
    _wait_until_available(server, model_name, deadline, max_seconds)
    attempt.load_seconds = round(time.monotonic() - launched, 3)
    logging.info('Model %s AVAILABLE after %.1f s.', model_name,
                 attempt.load_seconds)
    if records:
      _query(server, model_name, records, signatures, attempt, problem)
  except ModelFault as e:
    attempt.failure, attempt.model_fault = str(e), True
  except Exception as e:  # pylint: disable=broad-except
    # As the stock executor: any other failure is a failed try.
    attempt.failure = f'{type(e).__name__}: {e}'
  finally:
    if server is not None:
      attempt.server_log = server.stop()
  if attempt.failure:
    attempt.failure = ' '.join(attempt.failure.split())[:500]
    logging.warning('Infra validation failed: %s', attempt.failure)
  return attempt

