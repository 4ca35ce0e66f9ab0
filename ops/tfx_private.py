"""Every private TFX / tfx_bsl / Beam-integration behaviour this project uses.

TFX 1.16 has no public way to do a few things the pipeline needs: choose the
pipeline run id before a run starts (the run lock records it), mark a push
as TFX's own Pusher does, know which execution a Pusher runs as, follow the
launcher's progress, turn on tfx_bsl's byte-size batching. Each is one small
function or constant here, whose docstring names the TFX internals it
relies on; nothing outside this module touches them.
tests/ops/test_tfx_private.py pins the TFX release (TFX_VERSION) and
checks each of them against the installed one: when upgrading TFX, re-read
these docstrings against the new sources and update that test.

Nothing heavy at module level: dead_runs, console and beam_runner import it
before TensorFlow loads; each function imports what it needs.
"""

from typing import Any, Dict, List, Optional

# The release every assumption below was checked against.
TFX_VERSION = '1.16.0'

# --- The pipeline run id -----------------------------------------------------


def pin_run_id(runner: Any, run_id: str) -> Any:
  """`runner`, whose next run uses `run_id` as TFX's pipeline run id.

  Relies on: IR-based runners (LocalDagRunner, BeamDagRunner) implement
  `run()` as compile + `self.run_with_ir(ir)`, and `run_with_ir` picks the
  id by substituting the `pipeline-run-id` runtime parameter
  (tfx.dsl.compiler.constants.PIPELINE_RUN_ID_PARAMETER_NAME) with
  tfx.orchestration.portable.runtime_parameter_utils
  .substitute_runtime_parameter(ir, bindings). A parameter already
  substituted is left alone, so substituting it here first leaves theirs
  nothing to replace. Any other runner (no `run_with_ir`) is returned as it
  is.
  """
  original = getattr(runner, 'run_with_ir', None)
  if original is None:
    return runner
  from tfx.dsl.compiler import constants  # pylint: disable=g-import-not-at-top
  from tfx.orchestration.portable import runtime_parameter_utils  # pylint: disable=g-import-not-at-top

  def run_with_ir(pipeline, *args, **kwargs):
    runtime_parameter_utils.substitute_runtime_parameter(
        pipeline, {constants.PIPELINE_RUN_ID_PARAMETER_NAME: run_id})
    return original(pipeline, *args, **kwargs)

  runner.run_with_ir = run_with_ir
  return runner


# --- Why an execution stopped (ML Metadata custom properties) ---------------
# Relies on: the names TFX's own orchestrator gives them
# (tfx/orchestration/experimental/core/constants.py in the TFX sources; the
# 1.16 wheel does not ship that module, so they are copied), and the
# google.rpc codes it records there.
ERROR_CODE_KEY = '__execution_error_code__'
ERROR_MSG_KEY = '__execution_error_msg__'
CANCELLED_CODE, UNKNOWN_CODE = 1, 2

# --- The launcher's log records (console progress) ---------------------------
# Relies on: the exact format strings TFX logs (record.msg, before %-args):
# tfx/orchestration/local/local_dag_runner.py ('Component %s ...'),
# tfx/orchestration/beam/beam_dag_runner.py ('node %s ...'),
# tfx/orchestration/portable/launcher.py (cached execution, input
# resolution error; resolver nodes: portable/resolver_node_handler.py).
RUNNING_MESSAGES = ('Component %s is running.', 'node %s is running.')
FINISHED_MESSAGES = ('Component %s is finished.', 'node %s is finished.')
CACHED_MESSAGE = 'A cached execution %d is used.'
INPUT_ERROR_MESSAGE = '[%s] Input resolution error: %s'

# --- Inside a Pusher executor ------------------------------------------------


def log_startup(executor: Any, inputs: Dict[str, List[Any]],
                outputs: Dict[str, List[Any]],
                exec_properties: Dict[str, Any]) -> None:
  """What every stock executor's Do() logs first.

  Relies on: BaseExecutor._log_startup(inputs, outputs, exec_properties).
  """
  executor._log_startup(inputs, outputs, exec_properties)  # pylint: disable=protected-access


def mark_pushed(executor: Any, model_push: Any, pushed_destination: str,
                pushed_version: str) -> None:
  """Records a push on the PushedModel artifact as TFX's Pusher does.

  Relies on: pusher Executor._MarkPushed(model_push, pushed_destination,
  pushed_version) setting the custom properties `pushed` = 1,
  `pushed_destination` and `pushed_version`, which ML Metadata readers
  (lineage/, run_pipeline's summary) read back.
  """
  executor._MarkPushed(model_push, pushed_destination=pushed_destination,  # pylint: disable=protected-access
                       pushed_version=pushed_version)


def mark_not_pushed(executor: Any, model_push: Any) -> None:
  """Records "not pushed" (`pushed` = 0) as TFX's Pusher does.

  Relies on: pusher Executor._MarkNotPushed(model_push).
  """
  executor._MarkNotPushed(model_push)  # pylint: disable=protected-access


def execution_info(executor: Any) -> Dict[str, Optional[Any]]:
  """{pipeline_name, pipeline_run_id, node_id, execution_id} of a running
  executor (None where the launcher did not say).

  Relies on: BaseExecutor keeps the launcher's BaseExecutor.Context as
  `self._context`; the context's public pipeline_info / pipeline_node /
  pipeline_run_id, and its private `_unique_id`, which the IR launcher sets
  to the ML Metadata execution id.
  """
  context = getattr(executor, '_context', None)
  info = getattr(context, 'pipeline_info', None)
  node = getattr(context, 'pipeline_node', None)
  execution_id = getattr(context, '_unique_id', None)
  return {
      'pipeline_name': info.id if info is not None else None,
      'pipeline_run_id': getattr(context, 'pipeline_run_id', None),
      'node_id': node.node_info.id if node is not None else None,
      'execution_id': (int(execution_id)
                       if str(execution_id or '').isdigit() else None),
  }


# --- tfx_bsl batching --------------------------------------------------------


def use_byte_size_batching() -> None:
  """Makes TFXIO sources batch records by size, not by timing.

  Relies on: the experimental absl flag `tfxio_use_byte_size_batching`,
  defined when tfx_bsl.coders.batch_util is imported and read by
  batch_util.GetBatchElementsKwargs while a component builds its Beam
  pipeline (TFX's executors take no batch size for tf.Examples). Flags
  already parsed (an absl app) keep their other values.
  """
  from absl import flags  # pylint: disable=g-import-not-at-top
  from tfx_bsl.coders import batch_util  # pylint: disable=g-import-not-at-top,unused-import
  if not flags.FLAGS.is_parsed():
    flags.FLAGS(['tfx-reference'], known_only=True)  # defaults for the rest
  flags.FLAGS.tfxio_use_byte_size_batching = True


# --- Beam dependency flags ---------------------------------------------------
# Relies on: tfx.utils.dependency_utils.make_beam_dependency_flags leaving
# the Beam args as they are when any of these is set (else it builds an
# sdist of the whole tfx package for every Beam component). `extra_package`
# is the command-line spelling of Beam's `extra_packages` option.
BEAM_DEPENDENCY_FLAGS = ('extra_package', 'extra_packages', 'setup_file',
                         'requirements_file', 'worker_harness_container_image',
                         'sdk_container_image')
