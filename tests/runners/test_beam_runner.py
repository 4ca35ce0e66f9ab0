"""beam_runner.py: the same pipeline on BeamDagRunner, run as a user runs it.

Flag handling is checked in-process (beam_runner imports nothing heavy);
the pipeline itself runs in a subprocess on two small spans of real rows:
once in the default DirectRunner mode to a pushed model, then, on a bad third
span, with Beam worker processes, which must stop the run with exit 1.
"""

import glob
import os
import re
import subprocess
import sys

import pytest

import beam_runner
from lineage import graph
from lineage import metadata_store
from tests import helpers

SETUP_FLAG = f'--setup_file={os.path.join(helpers.REPO, "setup.py")}'
COMPONENTS = ['CsvExampleGen', 'StatisticsGen', 'ImportSchemaGen',
              'ExampleValidator', 'DataValidationGate', 'Transform', 'Trainer',
              'Evaluator', 'Pusher']
FAST = helpers.as_flags({**helpers.FAST_PIPELINE, 'window_spans': 2})


def test_help_is_fast_and_explains_beam_flags():
  out = subprocess.run([sys.executable, 'beam_runner.py', '--help'],
                       cwd=helpers.REPO, capture_output=True, text=True,
                       timeout=60, check=True).stdout
  for text in ('--direct-running-mode', '--direct-num-workers',
               '--pipeline-root', '--train-steps', '[-- beam flags]',
               '--runner=FlinkRunner', '--runner=SparkRunner',
               '--runner=DataflowRunner', '--setup_file'):
    assert text in out, text


def test_flags_after_double_dash_go_to_beam():
  ours, beam = beam_runner.split_beam_args(
      ['--train-steps', '5', '--', '--runner=FlinkRunner', '--', 'x'])
  assert ours == ['--train-steps', '5']
  assert beam == ['--runner=FlinkRunner', '--', 'x']
  assert beam_runner.split_beam_args(['--span', '3']) == (['--span', '3'], [])


def test_unknown_flag_before_double_dash_is_refused():
  result = subprocess.run(
      [sys.executable, 'beam_runner.py', '--runner=FlinkRunner'],
      cwd=helpers.REPO, capture_output=True, text=True, timeout=60)
  assert result.returncode == 2
  assert '--runner=FlinkRunner' in result.stderr


def test_direct_runner_gets_mode_workers_and_setup_file():
  args = beam_runner.beam_pipeline_args([], 'multi_processing', 2)
  assert args == ['--direct_running_mode=multi_processing',
                  '--direct_num_workers=2', SETUP_FLAG]
  assert beam_runner.uses_worker_processes(args)
  assert not beam_runner.uses_worker_processes(
      beam_runner.beam_pipeline_args([], 'in_memory', 1))


@pytest.mark.parametrize('runner', ['--runner=direct', '--runner=DirectRunner',
                                    '--runner=directrunner'])
def test_any_spelling_of_the_direct_runner_gets_direct_flags(runner):
  args = beam_runner.beam_pipeline_args([runner], 'multi_threading', 2)
  assert args == ['--direct_running_mode=multi_threading',
                  '--direct_num_workers=2', SETUP_FLAG, runner]


def test_remote_runner_gets_setup_file_and_user_flags_last():
  user = ['--runner=DataflowRunner', '--project=p', '--region=r',
          '--temp_location=gs://b/tmp']
  args = beam_runner.beam_pipeline_args(user, 'multi_processing', 2)
  assert args == [SETUP_FLAG] + user
  assert not any(a.startswith('--direct_') for a in args)
  assert not beam_runner.uses_worker_processes(args)


@pytest.mark.parametrize('flag', [
    '--setup_file=/src/setup.py', '--extra_package=/dist/x.tar.gz',
    '--requirements_file=req.txt', '--sdk_container_image=img'])
def test_a_given_dependency_flag_replaces_setup_file(flag):
  args = beam_runner.beam_pipeline_args(['--runner=FlinkRunner', flag],
                                        'in_memory', 1)
  assert args == ['--runner=FlinkRunner', flag]


@pytest.fixture(scope='module')
def root(tmp_path_factory):
  root = tmp_path_factory.mktemp('beam')
  for span, source in enumerate([9, 10], start=1):
    helpers.write_csv(str(root / 'data' / f'span-{span}' / 'data.csv'),
                      helpers.read_span(source, 300))
  return root


def _run(root, *extra):
  return subprocess.run(
      [sys.executable, 'beam_runner.py', '--data-root', str(root / 'data'),
       '--pipeline-root', str(root / 'pipeline'),
       '--serving-dir', str(root / 'serving'), *FAST, *extra],
      cwd=helpers.REPO, capture_output=True, text=True, timeout=1200)


def _log(out):
  match = re.search(r'full log\s+(\S+)', out)
  assert match, out
  path = match.group(1)
  with open(path if os.path.isabs(path) else
            os.path.join(helpers.REPO, path)) as f:
    return f.read()


@pytest.fixture(scope='module')
def first_run(root):
  return _run(root)


@pytest.mark.integration
def test_default_run_completes_every_component_and_pushes(root, first_run):
  out = first_run.stdout
  assert first_run.returncode == 0, out + first_run.stderr[-3000:]
  assert 'Ingesting 1 earlier span(s)' in out
  for component in COMPONENTS:
    assert re.search(rf'^\s+{component}\s+ran\s', out, re.M), component
  match = re.search(r'pushed\s+version (\d+) -> ', out)
  assert match, out
  assert os.path.isfile(os.path.join(root, 'serving', 'taxi', match.group(1),
                                     'saved_model.pb'))
  store = metadata_store.open_store(metadata_store.sqlite_config(
      str(root / 'pipeline' / 'metadata.sqlite')))
  nodes = graph.run_nodes(store, graph.latest_run(store, 'taxi'), 'taxi')
  for component in COMPONENTS:
    assert nodes[component].state == 'COMPLETE', (component, nodes[component])
  assert 'training window    spans 1-2' in out


@pytest.mark.integration
def test_no_tfx_sdist_is_built_for_the_beam_components(first_run):
  log = _log(first_run.stdout)
  assert 'Attempting to infer TFX Python dependency' not in log
  # ExampleGen x2, StatisticsGen, Transform, Evaluator.
  assert log.count('Nonempty beam arg setup_file already includes') >= 5


@pytest.mark.integration
def test_bad_span_with_worker_processes_stops_with_exit_1(root, first_run):
  assert first_run.returncode == 0
  rows = [dict(r, fare='twelve dollars') for r in helpers.read_span(11, 300)]
  helpers.write_csv(str(root / 'data' / 'span-3' / 'data.csv'), rows)
  result = _run(root, '--direct-running-mode', 'multi_processing',
                '--direct-num-workers', '1')
  out = result.stdout
  assert result.returncode == 1, out + result.stderr[-3000:]
  assert 'STOPPED' in out and "'fare'" in out and 'span-3' in out
  assert re.search(r'^\s+StatisticsGen\s+ran\s', out, re.M)
  assert 'Trainer' not in out.split('Summary')[0]
  # Workers re-import TensorFlow; their noise goes to a log, not the console.
  workers = glob.glob(str(root / 'pipeline' / 'logs' / 'workers-*.log'))
  assert len(workers) == 1 and os.path.getsize(workers[0]) > 0
  assert 'Traceback' not in result.stderr and 'Warning' not in result.stderr
