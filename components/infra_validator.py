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
loopback ports (one try: components/infra_probe.py):

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

import contextlib
import dataclasses
import json
import os
import signal
import tempfile
import threading
from typing import Any, Dict, List, Optional

from absl import logging
from tfx import types
from tfx.dsl.components.base import base_component
from tfx.dsl.components.base import base_executor
from tfx.dsl.components.base import executor_spec
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

from components import infra_probe
from models import problem as problems
from project import paths
from project import waiting

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

MODEL_NAME_KEY = 'model_name'
PROBLEM_KEY = 'problem'  # models/<problem>/: what a valid answer is
REASON_KEY = 'not_blessed_reason'  # string custom property, when not blessed
REPORT_FILE = 'infra_validation.json'
SERVER_LOG_FILE = 'model_server.log'


class _TryAgain(Exception):
  """A try failed for a reason a fresh server may not have (not the model):
  project/waiting.retry (tenacity) starts another, up to num_tries."""


@contextlib.contextmanager
def _sigterm_raises():
  """SIGTERM raises Terminated, so `finally` stops the server (as the stock
  executor's _InstallGracefulShutdownHandler; main thread only)."""
  if threading.current_thread() is not threading.main_thread():
    yield
    return

  def _raise(signum, _):
    raise infra_probe.Terminated(f'signal {signum}')

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
      infra_probe.check_request_spec(request_spec)

    split, records, signatures = None, [], []
    if examples is not None and request_spec is not None:
      split, records = infra_probe.read_examples(
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
    tries: List[infra_probe.Try] = []
    try:
      io_utils.copy_dir(model_path, os.path.join(base_path, '1'))

      def one_try() -> None:
        logging.info('Starting infra validation (attempt %d/%d).',
                     len(tries) + 1, num_tries)
        tries.append(infra_probe.validate_once(
            base_path, model_name, records, signatures, max_seconds,
            problem))
        if tries[-1].failure and not tries[-1].model_fault:
          raise _TryAgain(tries[-1].failure)

      with _sigterm_raises():
        try:
          waiting.retry(one_try, num_tries, errors=_TryAgain)
        except _TryAgain:
          pass  # every try failed: the last one's failure is the verdict
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
        'apis': list(infra_probe.APIS) if records else [],
        'load_seconds': last.load_seconds,
        'requests_sent': last.requests_sent,
        'requests_answered': last.requests_answered,
        'failures': [t.failure for t in tries if t.failure],
        'tries': [{k: v for k, v in dataclasses.asdict(t).items()
                   if k != 'server_log'} for t in tries],
    }
    if not blessed:
      report['server_log_tail'] = last.server_log[-infra_probe.LOG_TAIL_CHARS:]
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
      infra_probe.check_request_spec(request_spec)
    super().__init__(spec=InfraValidatorSpec(
        model=model, examples=examples,
        blessing=types.Channel(type=standard_artifacts.InfraBlessing),
        model_name=model_name or problem, problem=problem,
        validation_spec=validation_spec,
        request_spec=request_spec))
