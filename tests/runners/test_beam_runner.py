"""beam_runner.py: the same pipeline on BeamDagRunner, run as a user runs it.

Flag handling is checked in-process (beam_runner imports nothing heavy);
the pipeline itself runs in a subprocess on two small spans of real rows
(the data and flags of the session's pipeline world's first run,
tests/conftest.py): once in the default DirectRunner mode to a pushed model,
which must be the world's (LocalDagRunner's) model with its metrics and
decision; once on a real local Flink cluster (2 TaskManagers, cluster/),
which must make the same examples, statistics, transform, metrics and
blessing; then, on a bad third span, with Beam worker processes, which must
stop the run with exit 1.
"""

import glob
import json
import os
import re
import subprocess
import sys
import urllib.request

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
from google.protobuf import json_format
from tensorflow_metadata.proto.v0 import statistics_pb2

import beam_runner
from cluster import flink
from lineage import graph
from lineage import metadata_store
from lineage import readers
from pipeline import beam_args
from tests import flink_cluster
from tests import helpers

SETUP_FLAG = f'--setup_file={os.path.join(helpers.REPO, "setup.py")}'
COMPONENTS = ['CsvExampleGen', 'StatisticsGen', 'ImportSchemaGen',
              'ExampleValidator', 'DataValidationGate', 'Transform', 'Trainer',
              'Evaluator', 'Pusher']
FAST = helpers.as_flags(helpers.FAST_PIPELINE)


def test_help_is_fast_and_explains_beam_flags():
  out = subprocess.run([sys.executable, 'beam_runner.py', '--help'],
                       cwd=helpers.REPO, capture_output=True, text=True,
                       timeout=60, check=True).stdout
  for text in ('--direct-running-mode', '--direct-num-workers',
               '--pipeline-root', '--train-steps', '[-- beam flags]',
               '--runner=PortableRunner', '--runner=SparkRunner',
               '--runner=DataflowRunner', '--setup_file',
               '--skip-served-prediction'):
    assert text in out, text


def test_flags_after_double_dash_go_to_beam():
  ours, beam = beam_args.split_beam_args(
      ['--train-steps', '5', '--', '--runner=FlinkRunner', '--', 'x'])
  assert ours == ['--train-steps', '5']
  assert beam == ['--runner=FlinkRunner', '--', 'x']
  assert beam_args.split_beam_args(['--span', '3']) == (['--span', '3'], [])


def test_unknown_flag_before_double_dash_is_refused():
  result = subprocess.run(
      [sys.executable, 'beam_runner.py', '--runner=FlinkRunner'],
      cwd=helpers.REPO, capture_output=True, text=True, timeout=60)
  assert result.returncode == 2
  assert '--runner=FlinkRunner' in result.stderr


def test_direct_runner_gets_mode_workers_and_setup_file():
  args = beam_args.beam_pipeline_args([], 'multi_processing', 2)
  assert args == ['--direct_running_mode=multi_processing',
                  '--direct_num_workers=2', SETUP_FLAG]
  assert beam_args.uses_worker_processes(args)
  assert not beam_args.uses_worker_processes(
      beam_args.beam_pipeline_args([], 'in_memory', 1))


@pytest.mark.parametrize('runner', ['--runner=direct', '--runner=DirectRunner',
                                    '--runner=directrunner'])
def test_any_spelling_of_the_direct_runner_gets_direct_flags(runner):
  args = beam_args.beam_pipeline_args([runner], 'multi_threading', 2)
  assert args == ['--direct_running_mode=multi_threading',
                  '--direct_num_workers=2', SETUP_FLAG, runner]


def test_remote_runner_gets_setup_file_and_user_flags_last():
  user = ['--runner=DataflowRunner', '--project=p', '--region=r',
          '--temp_location=gs://b/tmp']
  args = beam_args.beam_pipeline_args(user, 'multi_processing', 2)
  assert args == [SETUP_FLAG] + user
  assert not any(a.startswith('--direct_') for a in args)
  assert not beam_args.uses_worker_processes(args)


@pytest.mark.parametrize('flag', [
    '--setup_file=/src/setup.py', '--extra_package=/dist/x.tar.gz',
    '--requirements_file=req.txt', '--sdk_container_image=img'])
def test_a_given_dependency_flag_replaces_setup_file(flag):
  args = beam_args.beam_pipeline_args(['--runner=FlinkRunner', flag],
                                        'in_memory', 1)
  assert args == ['--runner=FlinkRunner', flag]


@pytest.fixture(scope='module')
def root(tmp_path_factory):
  root = tmp_path_factory.mktemp('beam')
  helpers.cold_root(str(root))
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
  # The same ending as local_runner.py: the pushed version served and asked.
  version = match.group(1)
  assert re.search(rf'^Served prediction \(python -m serving, version '
                   rf'{version}, ', out, re.M), out
  for api in ('REST', 'gRPC'):
    assert re.search(rf'^  {api}  :\d+ +P\(tip > 20% of fare\) = \d\.\d{{4}}$',
                     out, re.M), out
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


# --- The same pipeline on a real Flink cluster --------------------------------
# Runs before the bad-span test below, which adds a third span to root/data.
# What must agree, measured on these spans with 2 TaskManagers (docs/scale.md):
# the examples are the same; the statistics too, but for float64 standard
# deviations in their last bits (summed in another order); Transform's
# outputs are z-scores whose mean and variance were summed in another order,
# so every value moves by about the same absolute amount, 1 float32 ULP of
# 1.0 (CI saw 1.19e-7), which near 0 is a large relative difference (4e-5 at
# 0.016): floats are compared within TRANSFORM_ATOL, a few float32 epsilons,
# far below what a wrong mean or variance moves. The model is NOT the same: the
# Trainer reads ExampleGen's 2 shards instead of 1, i.e. the examples in
# another order (with 1 TaskManager the metrics were equal to 4 digits), so
# metrics get a tolerance (AUC moved 0.0009) and the blessing must agree.
STATS_RTOL = 1e-12
TRANSFORM_RTOL = 1e-6
TRANSFORM_ATOL = 4 * float(np.finfo(np.float32).eps)
AUC_ATOL = 0.01


@pytest.fixture(scope='module')
def flink_settings(tmp_path_factory):
  yield from flink_cluster.started(
      str(tmp_path_factory.mktemp('flink-state')), task_managers=2)


@pytest.fixture(scope='module')
def flink_run(root, first_run, flink_settings):
  assert first_run.returncode == 0
  return subprocess.run(
      [sys.executable, 'beam_runner.py', '--data-root', str(root / 'data'),
       '--pipeline-root', str(root / 'flink'),
       '--serving-dir', str(root / 'flink-serving'), *FAST,
       '--skip-served-prediction', '--', *flink.beam_flags(flink_settings)],
      cwd=helpers.REPO, capture_output=True, text=True, timeout=1800)


def _nodes(pipeline_root):
  store = metadata_store.open_store(metadata_store.sqlite_config(
      str(pipeline_root / 'metadata.sqlite')))
  return store, graph.run_nodes(store, graph.latest_run(store, 'taxi'),
                                'taxi')


def _rest(settings, path):
  url = f'http://127.0.0.1:{settings.rest_port}{path}'
  with urllib.request.urlopen(url, timeout=10) as response:
    return json.load(response)


@pytest.mark.integration
def test_flink_run_completes_on_both_task_managers(flink_run, flink_settings):
  out = flink_run.stdout
  assert flink_run.returncode == 0, out + flink_run.stderr[-3000:]
  for component in COMPONENTS:
    assert re.search(rf'^\s+{component}\s+ran\s', out, re.M), component
  assert re.search(r'pushed\s+version \d+ -> ', out), out
  jobs = _rest(flink_settings, '/jobs/overview')['jobs']
  # ExampleGen x2, StatisticsGen, Transform (analyze, then its statistics),
  # Evaluator: every one a finished Flink job, none failed.
  assert len(jobs) >= 5 and {j['state'] for j in jobs} == {'FINISHED'}, jobs
  task_managers = set()
  for job in jobs:
    for vertex in _rest(flink_settings, f'/jobs/{job["jid"]}')['vertices']:
      for tm in _rest(flink_settings, f'/jobs/{job["jid"]}/vertices/'
                      f'{vertex["id"]}/taskmanagers')['taskmanagers']:
        task_managers.add(tm['taskmanager-id'])
  assert task_managers == {'taskmanager-1', 'taskmanager-2'}


def _examples(store):
  """span -> split -> sorted serialized tf.Examples."""
  out = {}
  for artifact in graph.ingested_examples(store, 'taxi'):
    span = graph.prop(artifact, 'span')
    for split in os.listdir(artifact.uri):
      files = sorted(glob.glob(os.path.join(artifact.uri, split, '*')))
      records = tf.data.TFRecordDataset(files, compression_type='GZIP')
      # Re-serialized deterministically: a proto map's bytes (the features
      # of a tf.Example) come in any order, so raw bytes differ between
      # processes for the same example.
      out.setdefault(span, {})[split] = sorted(
          tf.train.Example.FromString(r.numpy()).SerializeToString(
              deterministic=True) for r in records)
  return out


def _close(a, b, rtol, where=''):
  """Equal structures; floats within rtol. Returns the differences."""
  if isinstance(a, dict) and isinstance(b, dict):
    if set(a) != set(b):
      return [f'{where}: keys {sorted(set(a) ^ set(b))}']
    return [d for k in a for d in _close(a[k], b[k], rtol, f'{where}.{k}')]
  if isinstance(a, list) and isinstance(b, list):
    if len(a) != len(b):
      return [f'{where}: {len(a)} vs {len(b)} items']
    return [d for i, (x, y) in enumerate(zip(a, b))
            for d in _close(x, y, rtol, f'{where}[{i}]')]
  if isinstance(a, float) or isinstance(b, float):
    if np.isclose(a, b, rtol=rtol, atol=0) or a == b:
      return []
  elif a == b:
    return []
  return [f'{where}: {a!r} vs {b!r}']


def _statistics(uri):
  out = {}
  for split in sorted(os.listdir(uri)):
    with open(os.path.join(uri, split, 'FeatureStats.pb'), 'rb') as f:
      stats = statistics_pb2.DatasetFeatureStatisticsList.FromString(f.read())
    dataset = json_format.MessageToDict(stats)['datasets'][0]
    # Features keyed by path: their order in the proto is the runner's.
    dataset['features'] = {'.'.join(f.pop('path')['step']): f
                           for f in dataset['features']}
    out[split] = dataset
  return out


def _transformed(transform_uri, serialized):
  output = tft.TFTransformOutput(transform_uri)
  raw = tf.io.parse_example(serialized, output.raw_feature_spec())
  return {k: tf.sparse.to_dense(v).numpy() if isinstance(v, tf.SparseTensor)
          else v.numpy() for k, v in output.transform_raw_features(raw).items()}


@pytest.mark.integration
def test_flink_and_the_direct_runner_make_the_same_artifacts(root, flink_run):
  assert flink_run.returncode == 0, flink_run.stdout
  direct_store, direct = _nodes(root / 'pipeline')
  flink_store, on_flink = _nodes(root / 'flink')

  # Examples: the same serialized records in each split of each span.
  direct_examples = _examples(direct_store)
  assert sorted(direct_examples) == [1, 2]
  assert {s: {k: len(v) for k, v in splits.items()}
          for s, splits in direct_examples.items()} == {
              s: {k: len(v) for k, v in splits.items()}
              for s, splits in _examples(flink_store).items()}
  assert direct_examples == _examples(flink_store)

  # Statistics: counts exact, floats within STATS_RTOL.
  uri = lambda nodes, node, key: nodes[node].outputs[key][0].uri
  assert _close(_statistics(uri(direct, 'StatisticsGen', 'statistics')),
                _statistics(uri(on_flink, 'StatisticsGen', 'statistics')),
                STATS_RTOL) == []

  # Transform: both graphs applied to the same 64 eval examples.
  sample = direct_examples[2]['Split-eval'][:64]
  a = _transformed(uri(direct, 'Transform', 'transform_graph'), sample)
  b = _transformed(uri(on_flink, 'Transform', 'transform_graph'), sample)
  assert sorted(a) == sorted(b)
  for key in a:
    if a[key].dtype.kind in 'iub':
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    else:
      np.testing.assert_allclose(a[key], b[key], rtol=TRANSFORM_RTOL,
                                 atol=TRANSFORM_ATOL, err_msg=key)

  # Evaluation (the Trainer ran locally in both) and the blessing.
  metrics_a = readers.evaluation_metrics(uri(direct, 'Evaluator',
                                             'evaluation'))['candidate']
  metrics_b = readers.evaluation_metrics(uri(on_flink, 'Evaluator',
                                             'evaluation'))['candidate']
  assert sorted(metrics_a) == sorted(metrics_b)
  for name in ('example_count', 'mean_label'):  # the same eval examples
    assert metrics_a[name] == metrics_b[name], name
  assert abs(metrics_a['auc'] - metrics_b['auc']) <= AUC_ATOL, (
      metrics_a, metrics_b)
  blessed = lambda nodes: graph.prop(nodes['Evaluator'].outputs['blessing'][0],
                                     'blessed')
  assert blessed(direct) == blessed(on_flink) == 1


@pytest.mark.integration
def test_beam_and_local_dag_runners_give_the_same_model_and_decision(
    root, first_run, pipeline_world):
  """Same data and flags in a cold root, another orchestrator: the model
  (predictions to 1e-6), metrics and blessing of the pipeline world's first
  run (LocalDagRunner). After the Flink run: by then the world is built
  (it may be building in the other worker when this module starts)."""
  from pipeline import run_pipeline  # pylint: disable=g-import-not-at-top
  assert first_run.returncode == 0
  cfg = helpers.cold_config(str(root))
  on_beam = run_pipeline.read_outcome(
      cfg, metadata_store.store_config(cfg), True, None, [], 0.0)
  helpers.assert_same_model_and_decision(on_beam,
                                         pipeline_world.outcome('first'))


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
