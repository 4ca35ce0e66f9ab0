"""The whole pipeline with LocalDagRunner on a small real sample.

The session's pipeline world (tests/conftest.py PIPELINE_HISTORY) ran the
pipeline the way a user's runs would: a first run pushing version A, a
cached rerun, a stricter threshold, a 1-step model, a span that must be
stopped, a good one after it (version B), a span from another data root,
a run on an earlier span. The tests here read those runs back from its ML
Metadata store. Runs that change the world happen on copies of it: more
bad spans that must be stopped, and the baseline through a rollback and a
CD rejection. That the same data and flags give the same model and
decision in a cold root is checked against the world's first run by every
other cold run of it: BeamDagRunner's (tests/runners/test_beam_runner.py),
a killed and resumed one (test_dead_runs.py) and one on MySQL
(tests/lineage/test_metadata_mysql.py).
"""

import os
import shutil
import sqlite3

import pytest
import tensorflow as tf

from pipeline import configs
from lineage import graph
from lineage import provenance
from lineage import metadata_store
from pipeline.run_pipeline import run_pipeline
from tests import helpers

pytestmark = pytest.mark.integration

COMPONENTS = helpers.PIPELINE_COMPONENTS
EXPECTED_OUTPUTS = helpers.EXPECTED_OUTPUTS


def _run(cfg):
  from tfx.orchestration.local.local_dag_runner import LocalDagRunner  # pylint: disable=g-import-not-at-top
  return run_pipeline(cfg, LocalDagRunner)


_versions = helpers.pushed_versions


def _store(cfg):
  return metadata_store.open_store(
      metadata_store.sqlite_config(cfg.metadata_path))


@pytest.fixture(scope='module')
def cfg(pipeline_world):
  """The first run's flags and paths, in the world (read only)."""
  return pipeline_world.cfg('first')


@pytest.fixture(scope='module')
def first_run(pipeline_world):
  return pipeline_world.outcome('first')


def _versions_after(pipeline_world, name):
  """The versions on disk when run `name` of the history ended."""
  return pipeline_world.runs[name]['versions_after']


def test_first_run_pushes_a_blessed_model(pipeline_world, first_run):
  """The tests' short budget trains a real model: it passes the default
  blessing rule (only max_auc_drop is loosened, and there is no baseline)."""
  assert first_run.ok, first_run.error
  assert first_run.span == 2 and first_run.window == [1, 2]
  assert first_run.blessed is True and first_run.blessing_failures == []
  assert _versions_after(pipeline_world, 'first') == [first_run.pushed_version]
  m = first_run.metrics
  defaults = configs.PipelineConfig()
  assert m['auc'] >= defaults.min_auc
  assert m['balanced_accuracy'] >= defaults.min_balanced_accuracy
  # Better than saying "no big tip" to every trip.
  assert m['binary_accuracy'] > 1 - m['mean_label']
  assert m['example_count'] > 0
  assert first_run.baseline_versions == []


def test_every_component_completed_with_its_artifacts(first_run):
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
  trainer = first_run.nodes['Trainer']
  execution = _execution_of(store, trainer, first_run.run_id)
  inputs = {}
  for event in store.get_events_by_execution_ids([execution.id]):
    if event.type == event.INPUT:
      inputs.setdefault(event.path.steps[0].key, []).append(event.artifact_id)
  assert len(inputs['examples']) == 2  # one Examples artifact per span
  spans = sorted(int(a.custom_properties['span'].int_value)
                 for a in store.get_artifacts_by_id(inputs['examples']))
  assert spans == [1, 2]
  graph = first_run.nodes['Transform'].outputs['transform_graph'][0]
  assert inputs['transform_graph'] == [graph.id]


def _execution_of(store, node, run_id):
  """The execution of `node` (a NodeRun) in pipeline run `run_id`."""
  run = store.get_context_by_type_and_name('pipeline_run', run_id)
  context = store.get_context_by_type_and_name('node', f'taxi.{node.node_id}')
  [execution] = [e for e in store.get_executions_by_context(context.id)
                 if e.id in {x.id for x in store.get_executions_by_context(
                     run.id)}]
  return execution


def test_pushed_model_loads_and_predicts(first_run):
  loaded = tf.saved_model.load(first_run.pushed_path)
  schema = helpers.load_schema()
  rows = helpers.read_span(12, 5)
  out = loaded.signatures['serving_default'](examples=tf.constant([
      helpers.to_example(r, schema, drop_label=True).SerializeToString()
      for r in rows]))['outputs'].numpy()
  assert out.shape == (5, 1)
  assert ((out >= 0) & (out <= 1)).all()


def test_rerun_after_a_push_is_fully_cached(pipeline_world, first_run):
  """The model just pushed is the candidate itself, so it is never its own
  baseline: the Evaluator sees the inputs of the first run and is cached."""
  second = pipeline_world.outcome('rerun')
  assert second.ok, second.error
  for component in COMPONENTS:
    assert second.nodes[component].state == 'CACHED', component
  assert second.fully_cached
  assert second.blessed is True and second.pushed_version is None
  assert second.already_pushed_version == first_run.pushed_version
  assert second.baseline_versions == []
  assert 'every component reused its earlier execution' in (
      pipeline_world.runs['rerun']['printed'])
  assert _versions_after(pipeline_world, 'rerun') == [
      first_run.pushed_version]


def test_impossible_threshold_pushes_nothing_and_keeps_version(pipeline_world,
                                                               first_run):
  outcome = pipeline_world.outcome('strict')
  assert pipeline_world.runs['strict']['knobs']['min_auc'] == 1.01
  assert outcome.ok, outcome.error
  assert outcome.nodes['Trainer'].state == 'CACHED'
  assert outcome.nodes['Evaluator'].state == 'COMPLETE'
  assert outcome.blessed is False
  assert any(f.startswith('auc ') and '< 1.01 (overall)' in f
             for f in outcome.blessing_failures), outcome.blessing_failures
  assert outcome.pushed_version is None
  assert _versions_after(pipeline_world, 'strict') == [
      first_run.pushed_version]


def test_a_one_step_model_is_not_blessed(pipeline_world, first_run):
  """One training step: the untrained model predicts the base rate for
  every trip (its output bias starts there), so its accuracy is the
  majority class's, yet its AUC can look fine. The rule must refuse it."""
  outcome = pipeline_world.outcome('one-step')
  assert pipeline_world.runs['one-step']['knobs']['train_steps'] == 1
  assert outcome.ok, outcome.error
  assert outcome.nodes['Transform'].state == 'CACHED'
  assert outcome.nodes['Trainer'].state == 'COMPLETE'
  assert outcome.blessed is False and outcome.pushed_version is None
  failed = ' '.join(outcome.blessing_failures)
  assert 'balanced_accuracy' in failed, outcome.blessing_failures
  assert outcome.baseline_versions == [first_run.pushed_version]
  assert _versions_after(pipeline_world, 'one-step') == [
      first_run.pushed_version]


@pytest.fixture(scope='module')
def changed(pipeline_world, tmp_path_factory):
  """A copy of the pipeline world for the bad-span runs below (each leaves
  it as it found it)."""
  return pipeline_world.copy(tmp_path_factory.mktemp('pipeline'))


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
def test_bad_span_stops_before_training_and_keeps_state(changed, kind,
                                                        must_name):
  cfg = changed.cfg('second')
  served = helpers.pushed_versions(cfg)
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
  assert _versions(cfg) == served
  assert tf.saved_model.load(os.path.join(cfg.serving_model_dir,
                                          served[-1])) is not None
  store = _store(cfg)
  assert len(store.get_artifacts_by_type('Model')) == models_before
  assert len(store.get_artifacts_by_type('PushedModel')) == pushed_before
  with sqlite3.connect(cfg.metadata_path) as db:
    assert db.execute('PRAGMA integrity_check').fetchone()[0] == 'ok'


def test_rejected_spans_never_enter_the_training_window(pipeline_world):
  """After span 3 was refused, the good span 3 trains on spans 2..3 only,
  with the good span's Examples."""
  refused = pipeline_world.outcome('refused')
  second = pipeline_world.outcome('second')
  assert not refused.ok and "'fare'" in refused.error
  assert 'span-3' in refused.error or 'span 3' in refused.error
  for component in ('Transform', 'Trainer', 'Evaluator', 'Pusher'):
    assert component not in refused.nodes, component
  rejected = refused.nodes['CsvExampleGen'].outputs['examples'][0]
  assert second.ok, second.error
  assert second.window == [2, 3]
  ids = [a.id for a in second.nodes['Transform'].inputs['examples']]
  examples = pipeline_world.store().get_artifacts_by_id(ids)
  assert sorted(a.custom_properties['span'].int_value for a in examples) == [
      2, 3]
  # The span-3 Examples used is the good one: it passed validation.
  good = second.nodes['CsvExampleGen'].outputs['examples'][0]
  assert good.id in ids and rejected.id not in ids
  assert second.nodes['Trainer'].state == 'COMPLETE'
  assert second.pushed_version and second.baseline_versions == [
      pipeline_world.runs['first']['pushed_version']]


def test_versions_cli_reports_lineage_of_pushed_versions(cfg, first_run):
  from delivery import version_list  # pylint: disable=g-import-not-at-top
  infos = version_list.list_versions(cfg.serving_model_dir, _store(cfg))
  by_version = {str(i.version): i for i in infos}
  info = by_version[first_run.pushed_version]
  assert info.blessed is True and not info.rolled_back
  assert info.run == first_run.run_id  # the pipeline_run that pushed it
  assert info.hparams == cfg.hparams
  assert info.code_version
  # The seed is recorded with the hparams (and shown by the lineage CLI).
  found = provenance.version_lineage(_store(cfg), first_run.pushed_version)
  assert found.hparams['seed'] == cfg.seed


def test_baseline_is_the_served_model_after_rollback_and_cd(pipeline_world,
                                                           tmp_path):
  """B pushed over A, then rolled back: the next run's baseline is A, the
  version served before B. A version whose CD verdict was a rollback but
  that stayed on disk (a label still pointed at it) is never a baseline
  either. (On a copy of the world: its runs are no cache hits.)"""
  from delivery import versions  # pylint: disable=g-import-not-at-top
  history = pipeline_world.copy(tmp_path / 'world')
  a = history.runs['first']['pushed_version']
  b = history.runs['second']['pushed_version']
  cfg = history.cfg('second')
  base = cfg.serving_model_dir
  assert _versions(cfg) == [a, b]
  versions.rollback(base, int(b))
  # Each run trains another model (another seed), with thresholds nobody
  # fails and a short budget: the decision here is the baseline.
  run = lambda seed: _run(history.cfg('second', seed=seed, train_steps=30))
  c = run(44)
  assert c.ok and c.pushed_version, c.error
  assert c.baseline_versions == [a]  # not B: rolled back
  # CD rejected C but kept it on disk: its verdict is in the action log.
  versions._log_action(base, 'cd_done', version=int(c.pushed_version),  # pylint: disable=protected-access
                       decision='rolled_back', failed=['predictions'])
  d = run(45)
  assert d.ok, d.error
  assert str(c.pushed_version) in _versions(cfg)
  assert d.baseline_versions == [a]  # not C: rejected
  # The Evaluator read the Model artifact that version was pushed from.
  served = provenance.version_lineage(history.store(), a, read_files=False)
  assert [x.id for x in d.nodes['Evaluator'].inputs['baseline_model']] == [
      served.model.id]


def test_the_window_is_this_runs_data_and_ends_at_its_span(pipeline_world):
  """Spans 4 and 5 ingested from another data root never enter a run on
  this root, and a run on span 2 trains on spans up to 2 only."""
  elsewhere = pipeline_world.outcome('elsewhere')
  assert elsewhere.ok, elsewhere.error
  assert elsewhere.window == [4, 5]  # that root has no spans 1-3
  assert pipeline_world.cfg('elsewhere').data_root != pipeline_world.cfg(
      'here').data_root
  here = pipeline_world.outcome('here')
  assert here.ok, here.error
  assert here.span == 3 and here.window == [2, 3]
  store = pipeline_world.store()
  main_root = graph.normalized_root(pipeline_world.cfg('here').data_root)
  for examples in here.nodes['Trainer'].inputs['examples']:
    assert graph.input_base(store, examples.id) == main_root
  # (A's flags: its Transform and Trainer are cache hits)
  earlier = pipeline_world.outcome('earlier')
  assert earlier.ok, earlier.error
  assert earlier.span == 2 and earlier.window == [1, 2]
  assert earlier.nodes['Trainer'].state == 'CACHED'
