"""The whole pipeline with LocalDagRunner on a small real sample.

One module-scoped pipeline root; tests run in file order and build on each
other's runs the way a user's runs would (first run, cached rerun, stricter
threshold, then bad spans that must be stopped).
"""

import os
import shutil
import sqlite3

import pytest
import tensorflow as tf

from pipeline import configs
from pipeline import metadata_store
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
  return sorted(os.listdir(base)) if os.path.isdir(base) else []


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
  assert first_run.ok, first_run.error
  assert first_run.span == 3 and first_run.window == [1, 2, 3]
  assert first_run.blessed is True
  assert _versions(cfg) == [first_run.pushed_version]
  assert first_run.metrics['auc'] > 0.5
  assert first_run.metrics['example_count'] > 0


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


def test_reruns_reuse_cached_executions_and_push_nothing_new(cfg, first_run):
  second = _run(cfg)
  assert second.ok, second.error
  for component in COMPONENTS[:-2]:
    assert second.nodes[component].state == 'CACHED', component
  # The pushed model is now the baseline, so the Evaluator runs again and
  # blesses the model against itself; the Pusher must not push it twice.
  assert second.nodes['Evaluator'].state == 'COMPLETE'
  assert second.blessed is True and second.pushed_version is None
  assert second.already_pushed_version == first_run.pushed_version
  third = _run(cfg)
  for component in COMPONENTS:
    assert third.nodes[component].state == 'CACHED', component
  assert _versions(cfg) == [first_run.pushed_version]


def test_impossible_threshold_pushes_nothing_and_keeps_version(cfg, first_run):
  strict = configs.PipelineConfig(**{**cfg.__dict__, 'min_auc': 1.01})
  outcome = _run(strict)
  assert outcome.ok, outcome.error
  assert outcome.nodes['Trainer'].state == 'CACHED'
  assert outcome.nodes['Evaluator'].state == 'COMPLETE'
  assert outcome.blessed is False
  assert outcome.pushed_version is None
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
  from serving import versions  # pylint: disable=g-import-not-at-top
  infos = versions.list_versions(cfg.serving_model_dir, _store(cfg))
  by_version = {str(i.version): i for i in infos}
  info = by_version[first_run.pushed_version]
  assert info.blessed is True and not info.rolled_back
  assert info.run  # the pipeline_run context that pushed it
  assert info.hparams == cfg.hparams
  assert info.code_version
