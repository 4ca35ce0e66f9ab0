"""The whole pipeline with LocalDagRunner on a small real sample.

One module-scoped pipeline root; tests run in file order and build on each
other's runs the way a user's runs would (first run, cached rerun, stricter
threshold, a 1-step model, bad spans that must be stopped, a good span,
then the baseline through a push, a rollback and a CD rejection, and a
span from another data root). A second, cold pipeline root checks that the
same data and flags give the same model and the same decision.
"""

import os
import shutil
import sqlite3

import pytest
import tensorflow as tf

from pipeline import configs
from lineage import graph
from lineage import metadata_store
from pipeline.run_pipeline import run_pipeline
from tests import helpers

pytestmark = pytest.mark.integration

COMPONENTS = ['CsvExampleGen', 'StatisticsGen', 'ImportSchemaGen',
              'ExampleValidator', 'DataValidationGate', 'Transform', 'Trainer',
              'Evaluator', 'Pusher']
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


def _run(cfg):
  from tfx.orchestration.local.local_dag_runner import LocalDagRunner  # pylint: disable=g-import-not-at-top
  return run_pipeline(cfg, LocalDagRunner)


def _versions(cfg):
  base = cfg.serving_model_dir
  return sorted(n for n in os.listdir(base) if n.isdigit()) if os.path.isdir(base) else []


def _store(cfg):
  return metadata_store.open_store(
      metadata_store.sqlite_config(cfg.metadata_path))


def _latest_execution(store, node_id):
  context = store.get_context_by_type_and_name('node', f'taxi.{node_id}')
  return max(store.get_executions_by_context(context.id), key=lambda e: e.id)


@pytest.fixture(scope='module')
def cfg(tmp_path_factory):
  root = tmp_path_factory.mktemp('pipeline')
  data_root = root / 'data'
  # Three small spans of real rows (300 each) from consecutive quarters.
  helpers.small_spans(str(data_root))
  return configs.PipelineConfig(
      data_root=str(data_root),
      pipeline_root=str(root / 'pipeline'),
      serving_dir=str(root / 'serving'),
      **helpers.FAST_PIPELINE)


@pytest.fixture(scope='module')
def first_run(cfg):
  return _run(cfg)


def test_first_run_pushes_a_blessed_model(cfg, first_run):
  """The tests' short budget trains a real model: it passes the default
  blessing rule (only max_auc_drop is loosened, and there is no baseline)."""
  assert first_run.ok, first_run.error
  assert first_run.span == 3 and first_run.window == [1, 2, 3]
  assert first_run.blessed is True and first_run.blessing_failures == []
  assert _versions(cfg) == [first_run.pushed_version]
  m = first_run.metrics
  defaults = configs.PipelineConfig()
  assert m['auc'] >= defaults.min_auc
  assert m['balanced_accuracy'] >= defaults.min_balanced_accuracy
  # Better than saying "no big tip" to every trip.
  assert m['binary_accuracy'] > 1 - m['mean_label']
  assert m['example_count'] > 0
  assert first_run.baseline_versions == []


def test_every_component_completed_with_its_artifacts(cfg, first_run):
  nodes = first_run.nodes
  for component in COMPONENTS:
    assert nodes[component].state == 'COMPLETE', (component, nodes[component])
  for component, keys in EXPECTED_OUTPUTS.items():
    assert keys <= set(nodes[component].outputs), component
    for key in keys:
      for artifact in nodes[component].outputs[key]:
        assert tf.io.gfile.exists(artifact.uri), (component, key)


def test_lineage_inputs_link_components(cfg, first_run):
  """Trainer read the window's Examples and Transform's graph (MLMD events)."""
  store = _store(cfg)
  trainer = _latest_execution(store, 'Trainer')
  inputs = {}
  for event in store.get_events_by_execution_ids([trainer.id]):
    if event.type == event.INPUT:
      inputs.setdefault(event.path.steps[0].key, []).append(event.artifact_id)
  assert len(inputs['examples']) == 3  # one Examples artifact per span
  spans = sorted(int(a.custom_properties['span'].int_value)
                 for a in store.get_artifacts_by_id(inputs['examples']))
  assert spans == [1, 2, 3]
  graph = first_run.nodes['Transform'].outputs['transform_graph'][0]
  assert inputs['transform_graph'] == [graph.id]


def test_pushed_model_loads_and_predicts(cfg, first_run):
  loaded = tf.saved_model.load(first_run.pushed_path)
  schema = helpers.load_schema()
  rows = helpers.read_span(12, 5)
  out = loaded.signatures['serving_default'](examples=tf.constant([
      helpers.to_example(r, schema, drop_label=True).SerializeToString()
      for r in rows]))['outputs'].numpy()
  assert out.shape == (5, 1)
  assert ((out >= 0) & (out <= 1)).all()


def test_rerun_after_a_push_is_fully_cached(cfg, first_run, capsys):
  """The model just pushed is the candidate itself, so it is never its own
  baseline: the Evaluator sees the inputs of the first run and is cached."""
  second = _run(cfg)
  assert second.ok, second.error
  for component in COMPONENTS:
    assert second.nodes[component].state == 'CACHED', component
  assert second.fully_cached
  assert second.blessed is True and second.pushed_version is None
  assert second.already_pushed_version == first_run.pushed_version
  assert second.baseline_versions == []
  assert 'every component reused its earlier execution' in (
      capsys.readouterr().out)
  assert _versions(cfg) == [first_run.pushed_version]


def test_impossible_threshold_pushes_nothing_and_keeps_version(cfg, first_run):
  strict = configs.PipelineConfig(**{**cfg.__dict__, 'min_auc': 1.01})
  outcome = _run(strict)
  assert outcome.ok, outcome.error
  assert outcome.nodes['Trainer'].state == 'CACHED'
  assert outcome.nodes['Evaluator'].state == 'COMPLETE'
  assert outcome.blessed is False
  assert any(f.startswith('auc ') and '< 1.01 (overall)' in f
             for f in outcome.blessing_failures), outcome.blessing_failures
  assert outcome.pushed_version is None
  assert _versions(cfg) == [first_run.pushed_version]


def test_a_one_step_model_is_not_blessed(cfg, first_run):
  """One training step: the untrained model predicts the base rate for
  every trip (its output bias starts there), so its accuracy is the
  majority class's, yet its AUC can look fine. The rule must refuse it."""
  outcome = _run(configs.PipelineConfig(**{**cfg.__dict__, 'train_steps': 1}))
  assert outcome.ok, outcome.error
  assert outcome.nodes['Transform'].state == 'CACHED'
  assert outcome.nodes['Trainer'].state == 'COMPLETE'
  assert outcome.blessed is False and outcome.pushed_version is None
  failed = ' '.join(outcome.blessing_failures)
  assert 'balanced_accuracy' in failed, outcome.blessing_failures
  assert outcome.baseline_versions == [first_run.pushed_version]
  assert _versions(cfg) == [first_run.pushed_version]


def _bad_rows(kind):
  rows = [dict(r) for r in helpers.read_span(12, 300)]
  columns = list(rows[0])
  if kind == 'missing_column':
    columns.remove('fare')
  elif kind == 'wrong_type':
    for r in rows:
      r['fare'] = 'twelve dollars'
  elif kind == 'unseen_category':
    for r in rows[::3]:
      r['payment_type'] = 'Bitcoin'
      r['trip_start_hour'] = '250'
  return rows, columns


@pytest.mark.parametrize('kind, must_name', [
    ('missing_column', ["'fare'"]),
    ('wrong_type', ["'fare'"]),
    ('unseen_category', ["'payment_type'", "'trip_start_hour'"]),
    ('empty_file', ['span-4']),
])
def test_bad_span_stops_before_training_and_keeps_state(cfg, first_run, kind,
                                                        must_name):
  span_dir = os.path.join(cfg.data_root, 'span-4')
  path = os.path.join(span_dir, 'data.csv')
  if kind == 'empty_file':
    os.makedirs(span_dir)
    open(path, 'w').close()
  else:
    rows, columns = _bad_rows(kind)
    helpers.write_csv(path, rows, columns)
  store = _store(cfg)
  models_before = len(store.get_artifacts_by_type('Model'))
  pushed_before = len(store.get_artifacts_by_type('PushedModel'))
  try:
    outcome = _run(cfg)
  finally:
    shutil.rmtree(span_dir)

  assert not outcome.ok
  for name in must_name:
    assert name in outcome.error, outcome.error
  assert 'span-4' in outcome.error or 'span 4' in outcome.error
  for component in ('Transform', 'Trainer', 'Evaluator', 'Pusher'):
    assert component not in outcome.nodes, component
  # Nothing served or recorded before this run was touched.
  assert _versions(cfg) == [first_run.pushed_version]
  assert tf.saved_model.load(first_run.pushed_path) is not None
  store = _store(cfg)
  assert len(store.get_artifacts_by_type('Model')) == models_before
  assert len(store.get_artifacts_by_type('PushedModel')) == pushed_before
  with sqlite3.connect(cfg.metadata_path) as db:
    assert db.execute('PRAGMA integrity_check').fetchone()[0] == 'ok'


def test_rejected_spans_never_enter_the_training_window(cfg, first_run):
  """After the bad span-4 runs, a good span 4 trains on spans 2..4 only."""
  helpers.write_csv(os.path.join(cfg.data_root, 'span-4', 'data.csv'),
                    helpers.read_span(12, 300))
  outcome = _run(cfg)
  assert outcome.ok, outcome.error
  assert outcome.window == [2, 3, 4]
  store = _store(cfg)
  transform = _latest_execution(store, 'Transform')
  ids = [e.artifact_id for e in store.get_events_by_execution_ids(
      [transform.id]) if e.type == e.INPUT and e.path.steps[0].key == 'examples']
  examples = store.get_artifacts_by_id(ids)
  assert sorted(a.custom_properties['span'].int_value for a in examples) == [
      2, 3, 4]
  # The span-4 Examples used is the good one: it passed validation.
  good = outcome.nodes['CsvExampleGen'].outputs['examples'][0]
  assert good.id in ids


def test_versions_cli_reports_lineage_of_pushed_versions(cfg, first_run):
  from delivery import versions  # pylint: disable=g-import-not-at-top
  infos = versions.list_versions(cfg.serving_model_dir, _store(cfg))
  by_version = {str(i.version): i for i in infos}
  info = by_version[first_run.pushed_version]
  assert info.blessed is True and not info.rolled_back
  assert info.run  # the pipeline_run context that pushed it
  assert info.hparams == cfg.hparams
  assert info.code_version


def _predict(model_dir, rows):
  loaded = tf.saved_model.load(model_dir)
  schema = helpers.load_schema()
  return loaded.signatures['serving_default'](examples=tf.constant([
      helpers.to_example(r, schema, drop_label=True).SerializeToString()
      for r in rows]))['outputs'].numpy().ravel()


def test_two_cold_runs_give_the_same_model_and_decision(cfg, first_run,
                                                        tmp_path):
  """Same data and flags in a fresh root: same predictions, same blessing."""
  helpers.small_spans(str(tmp_path / 'data'))
  cold = _run(configs.PipelineConfig(**{
      **cfg.__dict__, 'data_root': str(tmp_path / 'data'),
      'pipeline_root': str(tmp_path / 'pipeline'),
      'metadata_path': str(tmp_path / 'pipeline' / 'metadata.sqlite'),
      'serving_dir': str(tmp_path / 'serving')}))
  assert cold.ok, cold.error
  assert cold.blessed == first_run.blessed is True
  assert cold.metrics == first_run.metrics
  rows = helpers.read_span(12, 50)
  first = _predict(first_run.pushed_path, rows)
  again = _predict(cold.pushed_path, rows)
  assert abs(first - again).max() <= 1e-6
  # The seed is recorded with the hparams (and shown by the lineage CLI).
  found = graph.version_lineage(_store(cfg), first_run.pushed_version)
  assert found.hparams['seed'] == cfg.seed


def test_baseline_is_the_served_model_after_rollback_and_cd(cfg, first_run):
  """Push B, roll B back: the next run's baseline is the version served
  before B. A version whose CD verdict was a rollback but that stayed on
  disk (a label still pointed at it) is never a baseline either."""
  from delivery import versions  # pylint: disable=g-import-not-at-top
  base = cfg.serving_model_dir
  before = [int(v) for v in _versions(cfg)]
  run = lambda seed: _run(configs.PipelineConfig(**{  # pylint: disable=g-long-lambda
      **cfg.__dict__, **helpers.BLESS_ANY, 'seed': seed}))
  b = run(43)
  assert b.ok and b.pushed_version, b.error
  assert b.baseline_versions == [str(before[-1])]
  versions.rollback(base, int(b.pushed_version))
  c = run(44)
  assert c.ok and c.pushed_version, c.error
  assert c.baseline_versions == [str(before[-1])]  # not B: rolled back
  # CD rejected C but kept it on disk: its verdict is in the action log.
  versions._log_action(base, 'cd_done', version=int(c.pushed_version),  # pylint: disable=protected-access
                       decision='rolled_back', failed=['predictions'])
  d = run(45)
  assert d.ok, d.error
  assert str(c.pushed_version) in _versions(cfg)
  assert d.baseline_versions == [str(before[-1])]  # not C: rejected
  # The Evaluator read the Model artifact that version was pushed from.
  served = graph.version_lineage(_store(cfg), str(before[-1]),
                                   read_files=False)
  assert [a.id for a in d.nodes['Evaluator'].inputs['baseline_model']] == [
      served.model.id]


def test_the_window_is_this_runs_data_and_ends_at_its_span(cfg, first_run,
                                                          tmp_path):
  """Spans 4 and 5 ingested from another data root never enter a run on
  this root, and a run on span 3 trains on spans up to 3 only."""
  other = tmp_path / 'other-data'
  for span, source in ((4, 13), (5, 14)):
    helpers.write_csv(str(other / f'span-{span}' / 'data.csv'),
                      helpers.read_span(source, 200))
  elsewhere = _run(configs.PipelineConfig(**{
      **cfg.__dict__, 'data_root': str(other),
      'serving_dir': str(tmp_path / 'other-serving')}))
  assert elsewhere.ok, elsewhere.error
  assert elsewhere.window == [4, 5]  # this root has no spans 1-3
  here = _run(cfg)
  assert here.ok, here.error
  assert here.span == 4 and here.window == [2, 3, 4]
  store = _store(cfg)
  main_root = graph.normalized_root(cfg.data_root)
  for examples in here.nodes['Trainer'].inputs['examples']:
    assert graph.input_base(store, examples.id) == main_root
  earlier = _run(configs.PipelineConfig(**{**cfg.__dict__, 'span': 3}))
  assert earlier.ok, earlier.error
  assert earlier.span == 3 and earlier.window == [1, 2, 3]
