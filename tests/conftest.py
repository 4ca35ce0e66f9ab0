"""The session's shared worlds, built once for both workers (tests/world.py).

  trained_model    models.model.run_fn on 1,000 real rows (no pipeline):
                   a SavedModel, its transform graph and its FnArgs
  pipeline_world   the small pipeline's history (PIPELINE_HISTORY): spans
                   1-2 and version A, a cached rerun, a refused span 3, a
                   good one and version B over A, and more
  replay_world     three spans through the CT controller (span 3 with a
                   payment-type shift), then an on-demand run: the
                   replay's store and what it printed
  penguin_world    the penguin problem's `make run` (blessed, pushed,
                   served): its pipeline root, serving dir and summary

Read a world in place; change a copy (`world.copy`, or
`world.PipelineWorld.copy`). tests/README.md says which to use for what.
"""

import contextlib
import io
import json
import os
import pathlib
import tempfile

import pytest

from ops import reproducible
from tests import helpers
from tests import world


def pytest_configure(config):
  """The pipeline's runs are compared across processes (a world built here
  against local_runner.py, beam_runner.py, ...): every process needs the
  same hash seed. Like the entry points, pytest starts again with it if it
  is unset (before any test; pytest-xdist's workers inherit it), with its
  output capture suspended so that the new process prints to the console."""
  if 'PYTHONHASHSEED' not in os.environ:
    config.pluginmanager.getplugin('capturemanager').suspend_global_capture(
        in_=True)
    reproducible.fix_hash_seed()


def pytest_collection_modifyitems(config, items):  # pylint: disable=unused-argument
  """Heaviest files first (helpers.HEAVY_FIRST), so that the two workers
  start on the long ones and end together; the rest keep their order."""
  rank = {path: i for i, path in enumerate(helpers.HEAVY_FIRST)}
  last = len(rank)
  items.sort(key=lambda item: rank.get(item.nodeid.split('::')[0], last))


def pytest_terminal_summary(terminalreporter):
  """One line naming what was skipped for want of a system package, and
  the one command that installs them all."""
  missing = helpers.skipped_for_system_packages(
      terminalreporter.stats.get('skipped', []))
  if missing:
    terminalreporter.write_line(helpers.system_packages_line(missing),
                                yellow=True, bold=True)


# --- trained_model: run_fn on real rows, no pipeline -------------------------


def analyze_and_transform(instances, out_dir):
  """Runs the taxi problem's preprocessing through tf.Transform on Beam (in
  memory).

  Returns the transformed instances; writes the transform graph to out_dir.
  """
  import tensorflow_transform as tft  # pylint: disable=g-import-not-at-top
  import tensorflow_transform.beam as tft_beam  # pylint: disable=g-import-not-at-top
  from tensorflow_transform.tf_metadata import metadata_io  # pylint: disable=g-import-not-at-top
  from tensorflow_transform.tf_metadata import dataset_metadata  # pylint: disable=g-import-not-at-top
  from models.taxi import preprocessing  # pylint: disable=g-import-not-at-top

  metadata = dataset_metadata.DatasetMetadata(helpers.load_schema())
  # TFT's in-memory mode: a list in, a list out, on Beam's DirectRunner.
  with tft_beam.Context(temp_dir=tempfile.mkdtemp(dir=out_dir)):
    (transformed, _), transform_fn = (
        (instances, metadata)
        | tft_beam.AnalyzeAndTransformDataset(preprocessing.preprocessing_fn))
    _ = transform_fn | tft_beam.WriteTransformFn(out_dir)
  # TFX's Transform also writes the raw metadata; run_fn reads it.
  metadata_io.write_metadata(
      metadata, os.path.join(out_dir, tft.TFTransformOutput.RAW_METADATA_DIR))
  return transformed


@pytest.fixture(scope='session')
def train_rows():
  """Real rows from two bundled spans."""
  return helpers.read_span(5, 500) + helpers.read_span(6, 500)


@pytest.fixture(scope='session')
def eval_rows():
  return helpers.read_span(7, 200)


# The fixture model's budget: the tests' short budget (helpers.FAST_PIPELINE)
# on 1,000 real rows, which trains a model that passes the blessing rule.
TRAINED_MODEL_STEPS = 150
TRAINED_MODEL_HPARAMS = {'hidden_units': [16, 8], 'learning_rate': 0.02,
                         'batch_size': 32, 'seed': 7}


def write_split_examples(root, train_rows, eval_rows):
  """An Examples artifact at <root>/examples: train and eval splits of
  GZIP tf.Examples, as ExampleGen writes them."""
  examples = _examples_artifact(root)
  helpers.write_examples(
      os.path.join(examples.uri, 'Split-train', 'data.gz'), train_rows)
  helpers.write_examples(
      os.path.join(examples.uri, 'Split-eval', 'data.gz'), eval_rows)
  return examples


def _examples_artifact(root):
  from tfx.types import standard_artifacts  # pylint: disable=g-import-not-at-top
  from tfx.types import artifact_utils  # pylint: disable=g-import-not-at-top
  examples = standard_artifacts.Examples()
  examples.uri = os.path.join(root, 'examples')
  examples.split_names = artifact_utils.encode_split_names(['train', 'eval'])
  return examples


def fn_args(root, transform_dir, train_steps, hparams, hyperparameters=None):
  """The FnArgs the Trainer passes run_fn for the examples under `root`."""
  from tfx.components.trainer.fn_args_utils import DataAccessor  # pylint: disable=g-import-not-at-top
  from tfx.components.trainer.fn_args_utils import FnArgs  # pylint: disable=g-import-not-at-top
  from tfx.components.util import tfxio_utils  # pylint: disable=g-import-not-at-top
  examples = _examples_artifact(root)
  return FnArgs(
      train_files=[os.path.join(examples.uri, 'Split-train', '*')],
      eval_files=[os.path.join(examples.uri, 'Split-eval', '*')],
      transform_output=transform_dir,
      serving_model_dir=os.path.join(root, 'serving_model'),
      model_run_dir=os.path.join(root, 'model_run'),
      train_steps=train_steps,
      eval_steps=5,
      hyperparameters=hyperparameters,
      custom_config={'hparams': dict(hparams), 'problem': 'taxi'},
      data_accessor=DataAccessor(
          tf_dataset_factory=tfxio_utils.get_tf_dataset_factory_from_artifact(
              [examples], []),
          record_batch_factory=None,
          data_view_decode_fn=None))


def train(root, transform_dir, train_rows, eval_rows, train_steps,
          hparams, hyperparameters=None):
  """models.model.run_fn run for real on raw examples; returns its FnArgs.

  `hyperparameters`: what the Trainer passes from a HyperParameters input
  (a KerasTuner HyperParameters config), or None, as without a Tuner.
  """
  from models import model  # pylint: disable=g-import-not-at-top
  write_split_examples(root, train_rows, eval_rows)
  args = fn_args(root, transform_dir, train_steps, hparams, hyperparameters)
  model.run_fn(args)
  return args


@pytest.fixture(scope='session')
def trained_world(tmp_path_factory, train_rows, eval_rows):
  """The tf.Transform graph (transform/) and the trained model (trainer/)."""
  def build(root):
    schema = helpers.load_schema()
    os.makedirs(root / 'transform')
    analyze_and_transform([helpers.to_instance(r, schema) for r in train_rows],
                          str(root / 'transform'))
    train(str(root / 'trainer'), str(root / 'transform'), train_rows,
          eval_rows, TRAINED_MODEL_STEPS, TRAINED_MODEL_HPARAMS)
  return world.once(tmp_path_factory, 'trained-model', build)


@pytest.fixture(scope='session')
def transform_dir(trained_world):
  """tf.Transform graph analyzed on train_rows (read only)."""
  return str(trained_world / 'transform')


@pytest.fixture(scope='session')
def trained_model(trained_world, transform_dir):
  """A real model (run_fn) on real rows; its FnArgs (read only)."""
  return fn_args(str(trained_world / 'trainer'), transform_dir,
                 TRAINED_MODEL_STEPS, TRAINED_MODEL_HPARAMS)


# --- Pipeline worlds: real runs of the small pipeline ------------------------


# The pipeline world's history: runs in order, each (name, knobs over
# helpers.FAST_PIPELINE); `_before_run` writes the data each one finds.
# Every run that a later one's cache hits depend on is here, because a
# copy of a world (tests/world.py) cannot hit TFX's cache: its keys hash
# the artifacts' URIs and the paths among the execution properties.
SECOND_RUN = {'learning_rate': 0.05, **helpers.BLESS_ANY}
PIPELINE_HISTORY = (
    # Spans 1-2: version A pushed.
    ('first', {}),
    # The same inputs again: every component a cache hit, nothing pushed.
    ('rerun', {}),
    # A threshold no model meets: the Evaluator runs again, no blessing.
    ('strict', {'min_auc': 1.01}),
    # One training step: a model that must not be blessed.
    ('one-step', {'train_steps': 1}),
    # Span 3 with text where the schema wants numbers: stopped.
    ('refused', {}),
    # Span 3 again, good, with another learning rate and thresholds nobody
    # fails (lineage diffs A and B): version B pushed over A.
    ('second', SECOND_RUN),
    # Spans 4-5 of another data root into the same store (pushed elsewhere).
    ('elsewhere', {**SECOND_RUN, 'train_steps': 30}),
    # B's flags again: its inputs are this root's spans 2-3, cached.
    ('here', SECOND_RUN),
    # A's flags on span 2: a window of spans 1-2 only.
    ('earlier', {'span': 2}),
)


def _before_run(root, name):
  """Writes the data run `name` of PIPELINE_HISTORY finds; returns the
  knobs that point it elsewhere."""
  span_3 = str(root / 'data' / 'span-3' / 'data.csv')
  if name == 'first':
    helpers.small_spans(str(root / 'data'))
  elif name == 'refused':
    helpers.write_csv(span_3, [dict(r, fare='twelve dollars')
                               for r in helpers.read_span(11, 300)])
  elif name == 'second':
    helpers.write_csv(span_3, helpers.read_span(11, 300))
  elif name == 'elsewhere':
    for span, source in ((4, 13), (5, 14)):
      helpers.write_csv(str(root / 'other-data' / f'span-{span}' / 'data.csv'),
                        helpers.read_span(source, 200))
    return {'data_root': str(root / 'other-data'),
            'serving_dir': str(root / 'other-serving')}
  return {}


def _build_pipeline(root):
  history = world.PipelineWorld.load(root)
  for name, knobs in PIPELINE_HISTORY:
    outcome = history.run(name, **knobs, **_before_run(root, name))
    assert outcome.ok == (name != 'refused'), (name, outcome.error)


@pytest.fixture(scope='session')
def pipeline_world(tmp_path_factory) -> world.PipelineWorld:
  """The small pipeline's history (PIPELINE_HISTORY), run once: read its
  runs with `.outcome(name)`; change a `.copy(tmp_path)`, not it."""
  return world.PipelineWorld.load(world.once(tmp_path_factory, 'pipeline',
                                             _build_pipeline))


# --- The replay: three small real spans through the CT controller ------------

# (train steps: the replay's default, a budget that trains real models with
# its default hyperparameters; 120 steps left all three unblessed)
REPLAY_ARGV = ['--spans', '1-3', '--window-spans', '3', '--eval-steps', '10',
               '--max-auc-drop', '0.2']


def _build_replay(root):
  from continuous_training import replay  # pylint: disable=g-import-not-at-top
  source = root / 'source'
  helpers.small_spans(str(source), sources=(9, 10, 11))
  # Span 3: every Cash trip paid by card instead (tips untouched), a shift
  # in payment_type's distribution that breaks no schema rule.
  rows = helpers.read_span(3, data_root=str(source))
  for row in rows:
    if row['payment_type'] == 'Cash':
      row['payment_type'] = 'Credit Card'
  helpers.write_csv(str(source / 'span-3' / 'data.csv'), rows)
  out = root / 'out'
  argv = ['--data-root', str(source), '--out', str(out), *REPLAY_ARGV]
  buffer = io.StringIO()
  with contextlib.redirect_stdout(buffer):
    code = replay.main(argv)
  recorded = {'code': code, 'printed': buffer.getvalue()}
  if code == 0:
    recorded['on_demand'] = _on_demand_run(out)
  (root / 'replay.json').write_text(json.dumps(recorded))


def _on_demand_run(out):
  """`make ct ARGS='--reason ...'` after the replay, on span 3 (its outcome
  is read by tests/continuous_training/test_replay.py)."""
  from continuous_training import config as ct_config  # pylint: disable=g-import-not-at-top
  from continuous_training import controller  # pylint: disable=g-import-not-at-top
  from data import spans as span_rules  # pylint: disable=g-import-not-at-top
  from tfx.orchestration.local.local_dag_runner import LocalDagRunner  # pylint: disable=g-import-not-at-top
  again = controller.run_once(
      replay_cfg(out), ct_config.CTConfig(
          monitoring_report=str(out / 'monitoring' / 'report.json')),
      LocalDagRunner, now=span_rules.logical_date(3),
      force_reason='check the cache')
  return {'triggers': again.decision.triggers, 'span': again.decision.span,
          'ok': again.outcome.ok, 'error': again.outcome.error,
          'run_id': again.outcome.run_id, 'window': again.outcome.window,
          # What the controller's outcome said (read before it attached
          # its CTDecision to the run, which then shows among its nodes).
          'states': {n: r.state for n, r in again.outcome.nodes.items()},
          'fully_cached': again.outcome.fully_cached}


def replay_cfg(out):
  """The PipelineConfig the replay's runs had (REPLAY_ARGV), under `out`."""
  from continuous_training import config as ct_config  # pylint: disable=g-import-not-at-top
  from pipeline import configs  # pylint: disable=g-import-not-at-top
  return configs.PipelineConfig(
      data_root=str(out / 'data'), pipeline_root=str(out / 'pipeline'),
      serving_dir=str(out / 'serving'), window_spans=3, eval_steps=10,
      max_auc_drop=0.2,
      train_steps=ct_config.REPLAY_DEFAULTS['train_steps'])


@pytest.fixture(scope='session')
def replay_world(tmp_path_factory) -> pathlib.Path:
  """The replay's folder: source/ (its spans), out/ (what it wrote) and
  replay.json (exit code, what it printed). Read only: copy to change."""
  return world.once(tmp_path_factory, 'replay', _build_replay)


@pytest.fixture(scope='session')
def replayed(replay_world):
  """(out dir, replay argv)."""
  return replay_world / 'out', ['--data-root', str(replay_world / 'source'),
                                '--out', str(replay_world / 'out'),
                                *REPLAY_ARGV]


@pytest.fixture(scope='session')
def replay_result(replay_world):
  """(exit code, what the replay printed)."""
  recorded = json.loads((replay_world / 'replay.json').read_text())
  return recorded['code'], recorded['printed']


# --- penguin_world: the second problem's `make run` -------------------------


def _build_penguin(root):
  """`make run ARGS='--problem penguin'` with its outputs under `root`;
  what it printed in run.txt."""
  import subprocess  # pylint: disable=g-import-not-at-top
  result = subprocess.run(
      ['make', '--no-print-directory', 'run',
       f'ARGS=--problem penguin --pipeline-root {root}/pipeline '
       f'--serving-dir {root}/serving'],
      cwd=helpers.REPO, capture_output=True, text=True, timeout=900)
  (root / 'run.txt').write_text(result.stdout)
  assert result.returncode == 0, result.stdout + result.stderr[-3000:]


@pytest.fixture(scope='session')
def penguin_world(tmp_path_factory) -> pathlib.Path:
  """The penguin problem run once, as the README runs it: pipeline/ (its
  artifacts and ML Metadata), serving/penguin/<version>/, run.txt."""
  return world.once(tmp_path_factory, 'penguin', _build_penguin)

