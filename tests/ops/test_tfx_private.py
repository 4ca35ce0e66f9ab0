"""The private TFX behaviour ops/tfx_private.py relies on, checked.

Pinned to one TFX release: an upgrade fails the first test on purpose, so
that whoever upgrades re-reads each docstring of tfx_private.py against the
new TFX sources, then updates TFX_VERSION. Every other test checks one
private symbol: that it exists, with the signature and the behaviour the
adapter relies on. (The byte-size batching switch's effect on the batches
is checked in test_reproducible.py.)
"""

import importlib
import inspect
import subprocess
import sys

import pytest

from ops import tfx_private
from tests import helpers


def test_tfx_is_the_release_the_adapter_was_checked_against():
  import tfx  # pylint: disable=g-import-not-at-top
  assert tfx.__version__ == tfx_private.TFX_VERSION == '1.16.0', (
      f'TFX is {tfx.__version__}, ops/tfx_private.py was checked '
      f'against {tfx_private.TFX_VERSION}: re-check every private API it '
      'uses in the new release (its docstrings say what each relies on), '
      'then update TFX_VERSION and this test')


def test_the_adapter_loads_nothing_heavy():
  """beam_runner --help, dead_runs and the console import it early."""
  code = ('import sys; from ops import tfx_private; '
          'heavy = {"tensorflow", "tfx", "tfx_bsl", "apache_beam"}; '
          'sys.exit(str(sorted(heavy & set(sys.modules))) '
          'if heavy & set(sys.modules) else 0)')
  result = subprocess.run([sys.executable, '-c', code], cwd=helpers.REPO,
                          capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stdout + result.stderr


def _tiny_pipeline(root):
  from tfx.components.schema_gen.import_schema_gen.component import ImportSchemaGen  # pylint: disable=g-import-not-at-top
  from tfx.orchestration import pipeline as tfx_pipeline  # pylint: disable=g-import-not-at-top
  return tfx_pipeline.Pipeline(
      pipeline_name='tiny', pipeline_root=str(root),
      components=[ImportSchemaGen(schema_file=helpers.SCHEMA_PATH)])


def test_substitute_runtime_parameter_keeps_a_substituted_run_id():
  from tfx.dsl.compiler import compiler  # pylint: disable=g-import-not-at-top
  from tfx.dsl.compiler import constants  # pylint: disable=g-import-not-at-top
  from tfx.orchestration.portable import runtime_parameter_utils  # pylint: disable=g-import-not-at-top
  assert constants.PIPELINE_RUN_ID_PARAMETER_NAME == 'pipeline-run-id'
  assert list(inspect.signature(
      runtime_parameter_utils.substitute_runtime_parameter).parameters) == [
          'msg', 'parameter_bindings']
  import tempfile  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory() as root:
    ir = compiler.Compiler().compile(_tiny_pipeline(root))
  name = constants.PIPELINE_RUN_ID_PARAMETER_NAME
  runtime_parameter_utils.substitute_runtime_parameter(ir, {name: 'ours'})
  # What LocalDagRunner / BeamDagRunner.run_with_ir do next.
  runtime_parameter_utils.substitute_runtime_parameter(ir, {name: 'theirs'})
  assert ir.runtime_spec.pipeline_run_id.field_value.string_value == 'ours'


@pytest.mark.parametrize('runner_path', [
    'tfx.orchestration.local.local_dag_runner.LocalDagRunner',
    'tfx.orchestration.beam.beam_dag_runner.BeamDagRunner'])
def test_pin_run_id_reaches_the_ir_the_runner_runs(runner_path, tmp_path):
  """run() compiles the pipeline and hands the IR to self.run_with_ir."""
  module, name = runner_path.rsplit('.', 1)
  runner = getattr(importlib.import_module(module), name)()
  assert 'run_with_ir' in inspect.getsource(type(runner).run)
  seen = []
  runner.run_with_ir = lambda ir, *args, **kwargs: seen.append(ir)
  tfx_private.pin_run_id(runner, 'pinned-run').run(_tiny_pipeline(tmp_path))
  [ir] = seen
  assert ir.runtime_spec.pipeline_run_id.field_value.string_value == (
      'pinned-run')


def test_a_runner_without_run_with_ir_is_returned_as_it_is():
  runner = object()
  assert tfx_private.pin_run_id(runner, 'x') is runner


def test_launcher_log_messages_are_the_ones_tfx_logs():
  # pylint: disable=g-import-not-at-top
  from tfx.orchestration.beam import beam_dag_runner
  from tfx.orchestration.local import local_dag_runner
  from tfx.orchestration.portable import launcher
  from tfx.orchestration.portable import resolver_node_handler
  # pylint: enable=g-import-not-at-top
  local, beam = (inspect.getsource(m) for m in (local_dag_runner,
                                                beam_dag_runner))
  running, finished = tfx_private.RUNNING_MESSAGES, tfx_private.FINISHED_MESSAGES
  assert repr(running[0]) in local and repr(finished[0]) in local
  assert repr(running[1]) in beam and repr(finished[1]) in beam
  assert repr(tfx_private.CACHED_MESSAGE) in inspect.getsource(launcher)
  for module in (launcher, resolver_node_handler):
    assert repr(tfx_private.INPUT_ERROR_MESSAGE) in inspect.getsource(module)


def test_error_property_keys_match_tfx_where_it_ships_them():
  try:
    constants = importlib.import_module(
        'tfx.orchestration.experimental.core.constants')
  except ImportError:  # 1.16: not in the wheel; the copies stand alone
    constants = None
  if constants is not None:
    assert constants.EXECUTION_ERROR_CODE_KEY == tfx_private.ERROR_CODE_KEY
    assert constants.EXECUTION_ERROR_MSG_KEY == tfx_private.ERROR_MSG_KEY
  from google.rpc import code_pb2  # pylint: disable=g-import-not-at-top
  assert tfx_private.CANCELLED_CODE == code_pb2.CANCELLED
  assert tfx_private.UNKNOWN_CODE == code_pb2.UNKNOWN


def test_executor_context_holds_the_execution():
  # pylint: disable=g-import-not-at-top
  from tfx.components.pusher import executor as pusher_executor
  from tfx.dsl.components.base import base_executor
  from tfx.proto.orchestration import pipeline_pb2
  # pylint: enable=g-import-not-at-top
  assert {'unique_id', 'pipeline_node', 'pipeline_info',
          'pipeline_run_id'} <= set(inspect.signature(
              base_executor.BaseExecutor.Context).parameters)
  node = pipeline_pb2.PipelineNode()
  node.node_info.id = 'Pusher'
  context = base_executor.BaseExecutor.Context(
      unique_id='17', pipeline_node=node,
      pipeline_info=pipeline_pb2.PipelineInfo(id='taxi'),
      pipeline_run_id='run-1')
  assert tfx_private.execution_info(pusher_executor.Executor(context)) == {
      'pipeline_name': 'taxi', 'pipeline_run_id': 'run-1',
      'node_id': 'Pusher', 'execution_id': 17}
  assert tfx_private.execution_info(pusher_executor.Executor()) == {
      'pipeline_name': None, 'pipeline_run_id': None, 'node_id': None,
      'execution_id': None}


def test_pusher_marks_set_the_properties_readers_read():
  # pylint: disable=g-import-not-at-top
  from tfx.components.pusher import executor as pusher_executor
  from tfx.types import standard_artifacts
  # pylint: enable=g-import-not-at-top
  executor = pusher_executor.Executor()
  tfx_private.log_startup(executor, {}, {}, {})
  pushed = standard_artifacts.PushedModel()
  tfx_private.mark_pushed(executor, pushed, pushed_destination='/s/taxi/7',
                          pushed_version='7')
  assert pushed.get_int_custom_property('pushed') == 1
  assert pushed.get_string_custom_property('pushed_destination') == (
      '/s/taxi/7')
  assert pushed.get_string_custom_property('pushed_version') == '7'
  not_pushed = standard_artifacts.PushedModel()
  tfx_private.mark_not_pushed(executor, not_pushed)
  assert not_pushed.get_int_custom_property('pushed') == 0


def test_byte_size_batching_is_a_tfx_bsl_flag():
  from absl import flags  # pylint: disable=g-import-not-at-top
  from tfx_bsl.coders import batch_util  # pylint: disable=g-import-not-at-top
  assert flags.FLAGS['tfxio_use_byte_size_batching'].default is False
  assert 'batch_size' in inspect.signature(
      batch_util.GetBatchElementsKwargs).parameters


def test_any_dependency_flag_stops_tfx_from_building_its_sdist(monkeypatch):
  from tfx.utils import dependency_utils  # pylint: disable=g-import-not-at-top

  def build_ephemeral_package():
    raise AssertionError('TFX would build an sdist of itself')

  monkeypatch.setattr(dependency_utils, 'build_ephemeral_package',
                      build_ephemeral_package)
  for flag in tfx_private.BEAM_DEPENDENCY_FLAGS:
    args = [f'--{flag}=x']
    assert dependency_utils.make_beam_dependency_flags(args) == args, flag
  with pytest.raises(AssertionError, match='sdist'):
    dependency_utils.make_beam_dependency_flags([])
