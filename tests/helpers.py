"""Test helpers: real bundled rows turned into the tf.Examples TFX would make."""

import csv
import json
import os
import shutil
import urllib.error
import urllib.request
from typing import Dict, List, Optional

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import tensorflow as tf  # pylint: disable=g-import-not-at-top
from tensorflow_metadata.proto.v0 import schema_pb2
from google.protobuf import text_format
from models import problem as problems
from project import paths
from serving import server_process

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Most tests exercise the default problem, taxi, on its bundled data; the
# penguin tests (tests/e2e/test_penguin.py) and the generated problem
# (tests/e2e/test_adapt.py) name theirs.
TAXI = problems.load('taxi')
RAW_TYPES = TAXI.raw_types
DATA_ROOT = paths.data_root('taxi')
SCHEMA_PATH = paths.schema_path('taxi')


def load_schema() -> schema_pb2.Schema:
  with open(SCHEMA_PATH) as f:
    return text_format.Parse(f.read(), schema_pb2.Schema())


def read_span(span: int, limit: Optional[int] = None,
              data_root: str = DATA_ROOT) -> List[Dict[str, str]]:
  """Rows of a bundled span as CSV text (missing cells are '')."""
  with open(os.path.join(data_root, f'span-{span}', 'data.csv'),
            newline='') as f:
    rows = list(csv.DictReader(f))
  return rows[:limit] if limit else rows


# PipelineConfig knobs for a whole run in about half a minute on
# `small_spans` (2 spans of 300 rows, a window of both). A short budget that
# still trains a real model: its models pass the default blessing rule
# (docs/decisions.md has the table). The eval split has ~200 rows, so two
# models' AUC differ by noise more than the default 0.01 allows:
# max_auc_drop is the only threshold loosened.
FAST_PIPELINE = dict(window_spans=2, train_steps=120, eval_steps=10,
                     batch_size=32, hidden_units=[16, 8], learning_rate=0.02,
                     max_auc_drop=0.2)
# The components of every full run, and what each must output.
PIPELINE_COMPONENTS = ['CsvExampleGen', 'StatisticsGen', 'ImportSchemaGen',
                       'ExampleValidator', 'DataValidationGate', 'Transform',
                       'Trainer', 'Evaluator', 'Pusher']
EXPECTED_OUTPUTS = {
    'CsvExampleGen': {'examples'},
    'StatisticsGen': {'statistics'},
    'ImportSchemaGen': {'schema'},
    'ExampleValidator': {'anomalies'},
    'Transform': {'transform_graph'},
    'Trainer': {'model', 'model_run'},
    'Evaluator': {'evaluation', 'blessing'},
    'Pusher': {'pushed_model'},
}


def latest_execution(store, node_id: str, pipeline_name: str = 'taxi'):
  """The newest execution of node `node_id` in an ML Metadata store."""
  context = store.get_context_by_type_and_name('node',
                                               f'{pipeline_name}.{node_id}')
  return max(store.get_executions_by_context(context.id), key=lambda e: e.id)


def assert_same_model_and_decision(outcome, reference) -> None:
  """Two runs of the same data and flags (RunOutcomes) made the same
  model (predictions on 50 rows of another span within 1e-6), the same
  metrics and the same blessing. Metrics: counts equal, the rest within
  1e-6 relative (TFMA sums float32 predictions in another order in
  another process: calibration moved by 6e-9 between two)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import pytest  # pylint: disable=g-import-not-at-top
  assert outcome.ok and reference.ok, (outcome.error, reference.error)
  assert outcome.window == reference.window
  assert outcome.blessed == reference.blessed is True
  assert outcome.metrics == pytest.approx(reference.metrics, rel=1e-6,
                                          abs=0)
  assert outcome.metrics['example_count'] == reference.metrics[
      'example_count']
  rows = read_span(12, 50)
  ours = in_process(outcome.pushed_path or pushed_path(outcome), rows)
  theirs = in_process(reference.pushed_path or pushed_path(reference), rows)
  assert np.abs(ours - theirs).max() <= 1e-6


def pushed_path(outcome) -> str:
  """Where the Pusher of `outcome`'s run put its model (pushed by this run
  or, for a cached Pusher, by the run it reuses)."""
  from lineage import metadata_store  # pylint: disable=g-import-not-at-top
  [pushed] = outcome.nodes['Pusher'].outputs['pushed_model']
  return metadata_store.custom_property(pushed, 'pushed_destination')


# Thresholds no model fails, for tests that need every run pushed.
BLESS_ANY = dict(min_auc=0.0, min_balanced_accuracy=0.0, min_calibration=0.0,
                 max_calibration=1e9, min_slice_calibration=0.0,
                 max_slice_calibration=1e9, max_auc_drop=1.0)


def small_spans(data_root: str, sources=(9, 10), rows: int = 300) -> None:
  """Spans 1..N under data_root: `rows` real rows of consecutive quarters."""
  for span, source in enumerate(sources, start=1):
    write_csv(os.path.join(data_root, f'span-{span}', 'data.csv'),
              read_span(source, rows))


def cold_root(root) -> 'configs.PipelineConfig':
  """The small data (small_spans) in a new folder `root`, and the config of
  the pipeline world's first run there: a cold run of the same data and
  flags (compare it with assert_same_model_and_decision)."""
  small_spans(os.path.join(root, 'data'))
  return cold_config(root)


def cold_config(root) -> 'configs.PipelineConfig':
  """cold_root's config, for a root cold_root made."""
  from pipeline import configs  # pylint: disable=g-import-not-at-top
  return configs.PipelineConfig(
      data_root=os.path.join(root, 'data'),
      pipeline_root=os.path.join(root, 'pipeline'),
      serving_dir=os.path.join(root, 'serving'), **FAST_PIPELINE)


def as_flags(knobs: Dict) -> List[str]:
  """PipelineConfig fields as the runners' flags (--train-steps 120 ...)."""
  flags = []
  for name, value in knobs.items():
    text = ','.join(map(str, value)) if isinstance(value, list) else str(value)
    flags += ['--' + name.replace('_', '-'), text]
  return flags


def write_csv(path: str, rows: List[Dict[str, str]],
              columns: Optional[List[str]] = None) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  columns = columns or list(rows[0])
  with open(path, 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=columns, extrasaction='ignore')
    writer.writeheader()
    writer.writerows(rows)


def to_example(row: Dict[str, str], schema: schema_pb2.Schema,
               drop_label: bool = False) -> tf.train.Example:
  """A CSV row as CsvExampleGen encodes it: an empty cell -> empty list."""
  example = tf.train.Example()
  for feature in schema.feature:
    if drop_label and feature.name == 'tips':
      continue
    text = row.get(feature.name, '')
    target = example.features.feature[feature.name]
    if feature.type == schema_pb2.INT:
      target.int64_list.value.extend([int(float(text))] if text else [])
    elif feature.type == schema_pb2.FLOAT:
      target.float_list.value.extend([float(text)] if text else [])
    else:
      target.bytes_list.value.extend([text.encode()] if text else [])
  return example


def to_instance(row: Dict[str, str], schema: schema_pb2.Schema) -> Dict:
  """A CSV row as a tf.Transform instance dict (VarLen -> list of values)."""
  instance = {}
  for feature in schema.feature:
    text = row.get(feature.name, '')
    if feature.type == schema_pb2.INT:
      instance[feature.name] = [int(float(text))] if text else []
    elif feature.type == schema_pb2.FLOAT:
      instance[feature.name] = [float(text)] if text else []
    else:
      instance[feature.name] = [text.encode()] if text else []
  return instance


def write_examples(path: str, rows: List[Dict[str, str]]) -> None:
  """GZIP TFRecord of tf.Examples, as ExampleGen writes them."""
  schema = load_schema()
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with tf.io.TFRecordWriter(path, options='GZIP') as writer:
    for row in rows:
      writer.write(to_example(row, schema).SerializeToString())


class UiProcess:
  """`python -m ui ARGV --port 0` as the README starts it; `url` is where it
  listens (read from its first line). A context manager: always stopped."""

  def __init__(self, argv: List[str], env: Optional[Dict[str, str]] = None):
    import re  # pylint: disable=g-import-not-at-top
    import subprocess  # pylint: disable=g-import-not-at-top
    import sys  # pylint: disable=g-import-not-at-top
    self.process = subprocess.Popen(
        [sys.executable, '-m', 'ui', '--port', '0'] + argv, cwd=REPO,
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    self.first_line = self.process.stdout.readline()
    found = re.search(r'http://127\.0\.0\.1:\d+', self.first_line)
    if not found:
      self.stop()
      raise AssertionError('python -m ui did not start: ' + self.first_line
                           + self.process.stdout.read())
    self.url = found.group(0)

  def stop(self) -> str:
    """Stops it; returns the rest of what it printed."""
    self.process.terminate()
    rest, _ = self.process.communicate(timeout=30)
    return self.first_line + (rest or '')

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    if self.process.poll() is None:
      self.stop()


# --- What a test needs from the machine --------------------------------------

# The system packages some tests need, installed as root by this one command
# (CI runs it too). A test that finds one missing is skipped with
# SYSTEM_SKIP in its reason (under CI=true it fails instead), and the session
# ends with one line naming them all (tests/conftest.py).
SYSTEM_PACKAGES_COMMAND = 'sudo .ci/system-packages'
SYSTEM_SKIP = 'needs a system package: '


def on_ci() -> bool:
  return os.environ.get('CI', '').lower() in ('1', 'true', 'yes')


def require(found: bool, reason: str,
            system_package: Optional[str] = None) -> None:
  """Skips the calling test or fixture unless `found` (fails under CI=true:
  CI must run it). `system_package`: what .ci/system-packages installs that
  would make it found, named in the session's last line."""
  import pytest  # pylint: disable=g-import-not-at-top
  if found:
    return
  if system_package:
    reason = f'{SYSTEM_SKIP}{system_package} ({reason})'
  if on_ci():
    pytest.fail(f'CI must run this: {reason}', pytrace=False)
  pytest.skip(reason)


def skipped_for_system_packages(reports) -> Dict[str, int]:
  """{system package: tests skipped for want of it} of skipped reports."""
  counts: Dict[str, int] = {}
  for report in reports:
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    reason = reason.split('Skipped: ', 1)[-1]
    if reason.startswith(SYSTEM_SKIP):
      package = reason[len(SYSTEM_SKIP):].split(' (', 1)[0]
      counts[package] = counts.get(package, 0) + 1
  return counts


def system_packages_line(counts: Dict[str, int]) -> str:
  total = sum(counts.values())
  return (f'Skipped {total} test{"s" if total > 1 else ""} that need '
          f'{", ".join(sorted(counts))}: install them with '
          f'`{SYSTEM_PACKAGES_COMMAND}` (Debian or Ubuntu), then run the '
          'tests again.')


# Test files in the order the two workers should start them: the ones that
# run whole pipelines or build a shared world first, longest first (CI's
# --durations has the figures), so that both workers finish together.
# Files not named here follow, in collection order.
HEAVY_FIRST = [
    'tests/runners/test_beam_runner.py',
    'tests/pipeline/test_pipeline_local.py',
    'tests/pipeline/test_release_gate.py',
    'tests/pipeline/test_release.py',
    'tests/continuous_training/test_replay.py',
    'tests/e2e/test_readme_commands.py',
    'tests/e2e/test_adapt.py',
    'tests/e2e/test_penguin.py',
    'tests/dags/test_pipeline_dag.py',
    'tests/lineage/test_metadata_mysql.py',
    'tests/ops/test_dead_runs.py',
    'tests/serving/test_model_server.py',
    'tests/ui/test_browser.py',
    'tests/lineage/test_lineage.py',
    'tests/pipeline/test_scoring.py',
    'tests/delivery/test_cd.py',
    'tests/models/test_tuning.py',
    'tests/pipeline/test_blessing.py',
    'tests/serving/test_hostile_input.py',
]


# --- Versions under a model base path, and pushes ----------------------------


def pushed_versions(cfg) -> List[str]:
  """The version directories under cfg's model base path, oldest first."""
  base = cfg.serving_model_dir
  return sorted(n for n in os.listdir(base) if n.isdigit()) if os.path.isdir(
      base) else []


def copy_version(src: str, base: str, version) -> None:
  """Like the Pusher: copy to a hidden dir, then rename into place."""
  import shutil  # pylint: disable=g-import-not-at-top
  incoming = os.path.join(base, f'.incoming-{version}')
  shutil.copytree(src, incoming)
  os.rename(incoming, os.path.join(base, str(version)))


# The ids push() gives the Model, its ModelBlessing and the Pusher's run.
MODEL_ID, BLESSING_ID, EXECUTION_ID = 11, 12, 42


def push(root, model, base, run_id: str = 'run-1', infra_blessing=None):
  """components.pusher.Executor.Do as TFX's launcher calls it: a blessed
  Model (`model`: a SavedModel dir, laid out as the Trainer writes it, or a
  Model artifact), its ModelBlessing, the run's context and, if given, the
  InfraValidator's InfraBlessing; returns the PushedModel."""
  import shutil  # pylint: disable=g-import-not-at-top
  from components import pusher  # pylint: disable=g-import-not-at-top
  from tfx.dsl.components.base import base_executor  # pylint: disable=g-import-not-at-top
  from tfx.proto import pusher_pb2  # pylint: disable=g-import-not-at-top
  from tfx.proto.orchestration import pipeline_pb2  # pylint: disable=g-import-not-at-top
  from tfx.types import standard_artifacts  # pylint: disable=g-import-not-at-top
  from tfx.utils import proto_utils  # pylint: disable=g-import-not-at-top
  root = str(root)
  if isinstance(model, str):
    model_dir, model = model, standard_artifacts.Model()
    model.uri, model.id = os.path.join(root, 'Trainer', 'model', '3'), MODEL_ID
    if not os.path.exists(os.path.join(model.uri, 'Format-Serving')):
      shutil.copytree(model_dir, os.path.join(model.uri, 'Format-Serving'))
  blessing = standard_artifacts.ModelBlessing()
  blessing.uri = os.path.join(root, 'Evaluator', 'blessing', '4')
  blessing.id = BLESSING_ID
  blessing.set_int_custom_property('blessed', 1)
  pushed = standard_artifacts.PushedModel()
  pushed.uri = os.path.join(root, 'Pusher', 'pushed_model', run_id)
  node = pipeline_pb2.PipelineNode()
  node.node_info.id = 'Pusher'
  context = base_executor.BaseExecutor.Context(
      tmp_dir=os.path.join(root, '.temp'), unique_id=str(EXECUTION_ID),
      pipeline_node=node,
      pipeline_info=pipeline_pb2.PipelineInfo(id='taxi_pipeline'),
      pipeline_run_id=run_id)
  destination = pusher_pb2.PushDestination(
      filesystem=pusher_pb2.PushDestination.Filesystem(
          base_directory=str(base)))
  inputs = {'model': [model], 'model_blessing': [blessing]}
  if infra_blessing is not None:
    inputs['infra_blessing'] = [infra_blessing]
  pusher.Executor(context).Do(
      inputs, {'pushed_model': [pushed]},
      {'push_destination': proto_utils.proto_to_json(destination)})
  return pushed


# --- A model server, and requests to it --------------------------------------


def wait_for(predicate, seconds: float = 30) -> bool:
  """Polls `predicate` every 0.2 s until it is true (True) or `seconds`
  pass (False)."""
  import time  # pylint: disable=g-import-not-at-top
  deadline = time.time() + seconds
  while time.time() < deadline:
    if predicate():
      return True
    time.sleep(0.2)
  return False


def raw_rows(rows: List[Dict[str, str]]) -> List[Dict]:
  """CSV rows as the raw signature's JSON instances (missing: NaN / 0 / '')."""
  import math  # pylint: disable=g-import-not-at-top
  out = []
  for row in rows:
    item = {}
    for key, kind in RAW_TYPES.items():
      text = row[key]
      if kind == 'string':
        item[key] = text
      elif kind == 'float':
        item[key] = float(text) if text else math.nan
      else:
        item[key] = int(float(text)) if text else 0
    out.append(item)
  return out


def raw_columns(rows: List[Dict[str, str]]) -> Dict:
  """CSV rows as the raw signature's input columns (numpy arrays)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  raw = raw_rows(rows)
  columns = {}
  for key, kind in RAW_TYPES.items():
    dtype = {'float': np.float32, 'int': np.int64, 'string': object}[kind]
    columns[key] = np.array([r[key] for r in raw], dtype=dtype)
  return columns


def raw_request(rows: List[Dict[str, str]], name: str = 'taxi',
                version: Optional[int] = None):
  """A gRPC PredictRequest of `rows` to the raw signature."""
  from models import features  # pylint: disable=g-import-not-at-top
  from tensorflow_serving.apis import predict_pb2  # pylint: disable=g-import-not-at-top
  request = predict_pb2.PredictRequest()
  request.model_spec.name = name
  request.model_spec.signature_name = features.RAW_SIGNATURE
  if version is not None:
    request.model_spec.version.value = version
  for key, values in raw_columns(rows).items():
    request.inputs[key].CopyFrom(tf.make_tensor_proto(values))
  return request


def in_process(model_dir: str, rows: List[Dict[str, str]]):
  """serving_default of the SavedModel at `model_dir`, loaded here, on
  `rows` as tf.Examples: the probabilities, shape (len(rows), 1)."""
  loaded = tf.saved_model.load(model_dir)
  schema = load_schema()
  examples = tf.constant([to_example(r, schema, drop_label=True)
                          .SerializeToString() for r in rows])
  return loaded.signatures['serving_default'](
      examples=examples)['outputs'].numpy()


def status_kb(pid: int, field: str) -> int:
  """A /proc/<pid>/status figure in kB (VmRSS, VmHWM: peak RSS)."""
  with open(f'/proc/{pid}/status') as f:
    for line in f:
      if line.startswith(field + ':'):
        return int(line.split()[1])
  raise KeyError(field)


def versions_cli(*args: str):
  """`python -m delivery.versions ARGS` run to its end (CompletedProcess)."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  return subprocess.run([sys.executable, '-m', 'delivery.versions', *args],
                        cwd=REPO, capture_output=True, text=True, timeout=300)


def one_error_line(result) -> str:
  """The CLI's own stderr lines (not TF's import chatter): exactly one."""
  assert 'Traceback' not in result.stderr, result.stderr
  (line,) = [l for l in result.stderr.splitlines()
             if l.startswith('python -m delivery.versions: error: ')]
  return line


class Server(server_process.ServerProcess):
  """A `python -m serving` process (serving.server_process) on free loopback
  ports that polls for versions every 0.2 s and takes requests of at most
  200 kB; stop it with .stop()."""

  def __init__(self, base_path, extra=()):
    source = (['--model_name', 'taxi', '--model_base_path', base_path]
              if base_path else [])
    started = server_process.start(
        [*source, *extra, '--file_system_poll_wait_seconds', '0.2',
         '--max_request_bytes', '200000'], cwd=REPO)
    super().__init__(started.proc, started.rest_port, started.grpc_port,
                     started.log)
    self.url = self.rest_url

  def request(self, path, body=None, raw=None):
    """(status, decoded JSON body) of a GET, or a POST of `body` / `raw`."""
    data = raw if raw is not None else (
        json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(self.url + path, data=data,
                                 method='POST' if data is not None else 'GET')
    try:
      with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
      return e.code, json.loads(e.read())


# --- Pipeline releases ---------------------------------------------------------


def copy_released_tree(dest) -> str:
  """This checkout's files a pipeline release holds (pipeline/release.py),
  copied to `dest`: a tree to release without touching the checkout."""
  from pipeline import release as release_lib  # pylint: disable=g-import-not-at-top
  for name in release_lib.source_files(paths.REPO_ROOT):
    os.makedirs(os.path.dirname(os.path.join(dest, name)), exist_ok=True)
    shutil.copy2(os.path.join(paths.REPO_ROOT, name), os.path.join(dest, name))
  return str(dest)


def append_to(source: str, relative: str, text: str) -> None:
  """Appends `text` to the file `relative` of the tree at `source`."""
  with open(os.path.join(source, relative), 'a') as f:
    f.write(text)
