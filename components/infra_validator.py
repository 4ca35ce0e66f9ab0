"""Infra validation without Docker: the candidate served by `python -m serving`.

TFX's InfraValidator (tfx.components.InfraValidator) loads the candidate
SavedModel in the production serving binary, a real tensorflow_model_server
started in Docker (LocalDockerConfig) or as a Kubernetes pod
(KubernetesConfig), waits until the model is AVAILABLE within
ValidationSpec.max_loading_time_seconds, sends requests built from real
examples (RequestSpec), and retries up to ValidationSpec.num_tries times.
Neither Docker nor Kubernetes runs here, so this component does the same
against the server this project deploys, `python -m serving` (serving/:
TF Serving's REST and gRPC APIs), started by serving.server_process on free
loopback ports:

  1. copies the candidate (path_utils.serving_model_path(model.uri)) to a
     TF Serving base path `<tmp>/<model_name>/1/`, as the stock executor
     does when the model is not laid out that way;
  2. starts `python -m serving --model_name ... --model_base_path ...` and
     waits until GET /v1/models/<name> says AVAILABLE (the deadline counts
     from the launch, as the stock one counts from the container's start;
     load_seconds in the report is that time, TensorFlow's import included);
  3. with `examples` and a `request_spec`, reads `num_examples` serialized
     tf.Examples of `split_name` (the first split by default) and sends
     each one to each signature of `tensorflow_serving.signature_names`
     (default serving_default) as a REST predict, {"instances": [{"b64":
     ...}]}, and as a gRPC PredictRequest on the signature's one string
     input (what the stock request builder sends); every answer must be a
     valid answer of the problem's task (models/tasks.py `fault`: one
     probability for a binary task, one per class for a multi-class one,
     each finite and in [0, 1]; the project's clients read the `outputs`
     tensor: serving.client.GrpcClient);
  4. stops the server in any case (also on SIGTERM, as the stock executor
     does, when it runs in the main thread) and keeps its log.

The same contract as the stock component, so the stock Pusher's
`infra_blessing` input takes its output: an InfraBlessing artifact whose URI
holds an empty INFRA_BLESSED or INFRA_NOT_BLESSED file and whose int custom
property `blessed` is 1 or 0 (Pusher.CheckBlessing reads it). A model that
does not load, does not load in time, or answers a request wrongly or with
an error is not blessed and the executor returns normally: the Pusher then
refuses it. An error of the pipeline's own (an unreadable `examples` input,
a RequestSpec this component cannot honour) raises. No warm-up model is
written (RequestSpec.make_warmup is refused), so the artifact never has
`has_model` and the Pusher pushes the Trainer's model. Added here:
`infra_validation.json` beside the marker (load seconds, requests sent and
answered, each try's failure, the server log's tail when not blessed),
`model_server.log` (the server's log of every try), and the string custom
property `not_blessed_reason`, one line, for the run summary.

One difference: a try that failed because of the model (the server refused
to load it, or it answered wrongly) is not retried, since the same files get
the same verdict; num_tries (default 5, as stock) retries only what the
machine may have caused (the server not starting, the deadline, a broken
connection).

With Docker, the stock component validates the same model in the real
tensorflow_model_server:

    from tfx.components import InfraValidator
    from tfx.proto import infra_validator_pb2 as iv

    InfraValidator(
        model=trainer.outputs['model'],
        examples=example_gen.outputs['examples'],
        serving_spec=iv.ServingSpec(
            tensorflow_serving=iv.TensorFlowServing(tags=['2.16.1']),
            local_docker=iv.LocalDockerConfig(),
            model_name='taxi'),
        validation_spec=iv.ValidationSpec(max_loading_time_seconds=60,
                                          num_tries=3),
        request_spec=iv.RequestSpec(
            tensorflow_serving=iv.TensorFlowServingRequestSpec(
                signature_names=['serving_default']),
            split_name='eval', num_examples=5))
"""

import base64
import contextlib
import dataclasses
import json
import os
import signal
import tempfile
import threading
import time
import urllib.error
import urllib.request
from typing import Any, Dict, List, Optional, Tuple

from absl import logging
from tfx import types
from tfx.components.util import examples_utils
from tfx.dsl.components.base import base_component
from tfx.dsl.components.base import base_executor
from tfx.dsl.components.base import executor_spec
from tfx.dsl.io import fileio
from tfx.proto import example_gen_pb2
from tfx.proto import infra_validator_pb2
from tfx.types import artifact_utils
from tfx.types import standard_artifacts
from tfx.types import standard_component_specs as keys
from tfx.types.component_spec import ChannelParameter
from tfx.types.component_spec import ComponentSpec
from tfx.types.component_spec import ExecutionParameter
from tfx.utils import io_utils
from tfx.utils import path_utils
from tfx.utils import proto_utils

from models import problem as problems
from project import paths
from serving import client
from serving import server_process

# The stock executor's names, private there
# (tfx/components/infra_validator/executor.py: _BLESSED_KEY,
# _BLESSED_FILENAME, _NOT_BLESSED_FILENAME, _DEFAULT_NUM_TRIES,
# _DEFAULT_MAX_LOADING_TIME_SEC); Pusher.CheckBlessing reads BLESSED_KEY.
BLESSED_KEY = 'blessed'
BLESSED_FILE = 'INFRA_BLESSED'
NOT_BLESSED_FILE = 'INFRA_NOT_BLESSED'
DEFAULT_NUM_TRIES = 5
DEFAULT_MAX_LOADING_TIME_SECONDS = 300
# The stock request builder's defaults (request_builder.py).
DEFAULT_NUM_EXAMPLES = 1
DEFAULT_SIGNATURE = 'serving_default'
SERVING_TAG = 'serve'  # the one tag set `python -m serving` loads

MODEL_NAME_KEY = 'model_name'
PROBLEM_KEY = 'problem'  # models/<problem>/: what a valid answer is
REASON_KEY = 'not_blessed_reason'  # string custom property, when not blessed
REPORT_FILE = 'infra_validation.json'
SERVER_LOG_FILE = 'model_server.log'
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
  rest = client.RestClient(server.rest_url, model_name,
                           timeout=REQUEST_TIMEOUT_SECONDS)
  while True:
    try:
      states = [s['state'] for s in rest.status()]
      if states and all(s == 'AVAILABLE' for s in states):
        return
      said = f'states {states}'
    except (RuntimeError, OSError) as e:  # HTTP 404 until a version loads
      said = str(e)
    refused = _refusal(_log_text(server))
    if refused:
      raise ModelFault(f'the model server could not load the model: '
                       f'{refused}')
    if server.proc.poll() is not None:
      raise RuntimeError(f'the model server exited ({server.proc.returncode}) '
                         'before the model was AVAILABLE')
    if time.monotonic() >= deadline:
      raise TimeoutError(f'the model was not AVAILABLE within '
                         f'max_loading_time_seconds={max_seconds} ({said})')
    time.sleep(POLL_SECONDS)


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


@contextlib.contextmanager
def _sigterm_raises():
  """SIGTERM raises Terminated, so `finally` stops the server (as the stock
  executor's _InstallGracefulShutdownHandler; main thread only)."""
  if threading.current_thread() is not threading.main_thread():
    yield
    return

  def _raise(signum, _):
    raise Terminated(f'signal {signum}')

  previous = signal.signal(signal.SIGTERM, _raise)
  try:
    yield
  finally:
    signal.signal(signal.SIGTERM,
                  signal.SIG_DFL if previous is None else previous)


def _write_outcome(blessing: types.Artifact, report: Dict[str, Any],
                   server_log: str) -> None:
  io_utils.write_string_file(os.path.join(blessing.uri, SERVER_LOG_FILE),
                             server_log)
  io_utils.write_string_file(os.path.join(blessing.uri, REPORT_FILE),
                             json.dumps(report, indent=2) + '\n')
  if report['blessed']:
    logging.info('Model passed infra validation.')
    io_utils.write_string_file(os.path.join(blessing.uri, BLESSED_FILE), '')
    blessing.set_int_custom_property(BLESSED_KEY, 1)
  else:
    logging.info('Model failed infra validation: %s', report['reason'])
    io_utils.write_string_file(os.path.join(blessing.uri, NOT_BLESSED_FILE),
                               '')
    blessing.set_int_custom_property(BLESSED_KEY, 0)
    blessing.set_string_custom_property(REASON_KEY, report['reason'])


class Executor(base_executor.BaseExecutor):
  """Blesses the model if `python -m serving` loads it and answers right."""

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]],
         exec_properties: Dict[str, Any]) -> None:
    self._log_startup(input_dict, output_dict, exec_properties)
    model = artifact_utils.get_single_instance(input_dict[keys.MODEL_KEY])
    blessing = artifact_utils.get_single_instance(
        output_dict[keys.BLESSING_KEY])
    examples = (artifact_utils.get_single_instance(
        input_dict[keys.EXAMPLES_KEY])
                if input_dict.get(keys.EXAMPLES_KEY) else None)
    problem = problems.load(exec_properties[PROBLEM_KEY])
    model_name = exec_properties.get(MODEL_NAME_KEY) or problem.name
    validation = infra_validator_pb2.ValidationSpec()
    if exec_properties.get(keys.VALIDATION_SPEC_KEY):
      proto_utils.json_to_proto(exec_properties[keys.VALIDATION_SPEC_KEY],
                                validation)
    num_tries = max(1, validation.num_tries or DEFAULT_NUM_TRIES)
    max_seconds = max(1, validation.max_loading_time_seconds or
                      DEFAULT_MAX_LOADING_TIME_SECONDS)
    request_spec = None
    if exec_properties.get(keys.REQUEST_SPEC_KEY):
      request_spec = infra_validator_pb2.RequestSpec()
      proto_utils.json_to_proto(exec_properties[keys.REQUEST_SPEC_KEY],
                                request_spec)
      check_request_spec(request_spec)

    split, records, signatures = None, [], []
    if examples is not None and request_spec is not None:
      split, records = read_examples(
          examples, request_spec.split_name,
          request_spec.num_examples or DEFAULT_NUM_EXAMPLES)
      signatures = (list(request_spec.tensorflow_serving.signature_names) or
                    [DEFAULT_SIGNATURE])
    elif request_spec is not None or examples is not None:
      logging.warning('InfraValidator needs both examples and request_spec '
                      'to send requests; it only loads the model.')

    model_path = path_utils.serving_model_path(
        model.uri, path_utils.is_old_model_artifact(model))
    # TF Serving's layout, <base>/<model_name>/<version>/, as the stock
    # executor makes it when the model is not stored that way.
    base_dir = tempfile.mkdtemp(prefix='infra_validation-',
                                dir=self._get_tmp_dir())
    base_path = os.path.join(base_dir, model_name)
    tries: List[Try] = []
    try:
      io_utils.copy_dir(model_path, os.path.join(base_path, '1'))
      with _sigterm_raises():
        while len(tries) < num_tries:
          logging.info('Starting infra validation (attempt %d/%d).',
                       len(tries) + 1, num_tries)
          tries.append(validate_once(base_path, model_name, records,
                                     signatures, max_seconds, problem))
          if not tries[-1].failure or tries[-1].model_fault:
            break
    finally:
      io_utils.delete_dir(base_dir)

    for t in tries:  # name the model, not its deleted temporary copy
      t.failure = t.failure.replace(os.path.join(base_path, '1'), model_path)
    last = tries[-1]
    blessed = not last.failure
    reason = '' if blessed else last.failure + (
        f' (tried {len(tries)} times)' if len(tries) > 1 else '')
    report = {
        'blessed': blessed,
        'reason': reason,
        'model': model_path,
        'model_name': model_name,
        'mode': 'LOAD_AND_QUERY' if records else 'LOAD_ONLY',
        'split': split,
        'examples': len(records),
        'signatures': signatures,
        'apis': list(APIS) if records else [],
        'load_seconds': last.load_seconds,
        'requests_sent': last.requests_sent,
        'requests_answered': last.requests_answered,
        'failures': [t.failure for t in tries if t.failure],
        'tries': [{k: v for k, v in dataclasses.asdict(t).items()
                   if k != 'server_log'} for t in tries],
    }
    if not blessed:
      report['server_log_tail'] = last.server_log[-LOG_TAIL_CHARS:]
    _write_outcome(blessing, report, ''.join(
        f'=== try {i} of {len(tries)} (pid {t.server_pid}) ===\n{t.server_log}'
        for i, t in enumerate(tries, start=1)))


class InfraValidatorSpec(ComponentSpec):
  """The stock InfraValidatorSpec without serving_spec, with model_name and
  the problem (what a valid answer is)."""

  PARAMETERS = {
      MODEL_NAME_KEY: ExecutionParameter(type=str),
      PROBLEM_KEY: ExecutionParameter(type=str),
      keys.VALIDATION_SPEC_KEY: ExecutionParameter(
          type=infra_validator_pb2.ValidationSpec, optional=True),
      keys.REQUEST_SPEC_KEY: ExecutionParameter(
          type=infra_validator_pb2.RequestSpec, optional=True),
  }
  INPUTS = {
      keys.MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
      keys.EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples,
                                          optional=True),
  }
  OUTPUTS = {
      keys.BLESSING_KEY: ChannelParameter(
          type=standard_artifacts.InfraBlessing),
  }


class InfraValidator(base_component.BaseComponent):
  """Validates the model in `python -m serving` (see the module docstring).

  Without both `examples` and `request_spec` it only loads the model, as the
  stock component does.
  """

  SPEC_CLASS = InfraValidatorSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

  def __init__(
      self,
      model: types.BaseChannel,
      examples: Optional[types.BaseChannel] = None,
      request_spec: Optional[infra_validator_pb2.RequestSpec] = None,
      validation_spec: Optional[infra_validator_pb2.ValidationSpec] = None,
      problem: str = paths.DEFAULT_PROBLEM,
      model_name: Optional[str] = None):
    if request_spec is not None:
      check_request_spec(request_spec)
    super().__init__(spec=InfraValidatorSpec(
        model=model, examples=examples,
        blessing=types.Channel(type=standard_artifacts.InfraBlessing),
        model_name=model_name or problem, problem=problem,
        validation_spec=validation_spec,
        request_spec=request_spec))
