"""Lineage queries (lineage/graph.py, `python -m lineage`) on real pipeline
runs over small spans.

The session's pipeline world (tests/conftest.py PIPELINE_HISTORY) holds
two pushed versions whose lineage differs in data and hyperparameters: A
trained on spans 1-2, B on spans 2-3 with another learning rate. Its run
'here' repeats B's to show that the git commit recorded with each run is no
part of any cache key. The Tuner's run changes the store: it runs on a copy.
"""

import dataclasses
import hashlib
import json
import math
import os
import re
import subprocess
import sys

import pytest

from pipeline import configs
from lineage import graph
from lineage import provenance
from lineage import metadata_store
from lineage import readers
from lineage import report
from serving import base_path
from tests import helpers



def _run(cfg):
  from pipeline.run_pipeline import run_pipeline  # pylint: disable=g-import-not-at-top
  from tfx.orchestration.local.local_dag_runner import LocalDagRunner  # pylint: disable=g-import-not-at-top
  return run_pipeline(cfg, LocalDagRunner)


def _git(*args: str) -> str:
  return subprocess.run(['git', '-C', helpers.REPO, *args], check=True,
                        capture_output=True, text=True).stdout.strip()


@dataclasses.dataclass
class Runs:
  cfg_a: configs.PipelineConfig
  cfg_b: configs.PipelineConfig
  a: object  # summary.RunOutcome
  b: object
  run_b: str  # B's pipeline_run context name
  world: object  # tests.world.PipelineWorld

  def store(self):
    return self.world.store()


@pytest.fixture(scope='module')
def runs(pipeline_world):
  """A ('first') and B ('second') of the pipeline world (read only)."""
  a = pipeline_world.outcome('first')
  b = pipeline_world.outcome('second')
  assert a.ok and a.pushed_version, a.error
  assert b.ok and b.pushed_version, b.error
  return Runs(pipeline_world.cfg('first'), pipeline_world.cfg('second'), a, b,
              b.run_id, pipeline_world)


@pytest.mark.integration
def test_version_lineage_names_executions_spans_and_config(runs):
  found = provenance.version_lineage(runs.store(), runs.b.pushed_version)
  nodes = runs.b.nodes
  assert found.destination == runs.b.pushed_path
  assert found.model.id == nodes['Trainer'].outputs['model'][0].id
  for name in ('Pusher', 'Evaluator', 'Trainer', 'Transform'):
    execution = getattr(found, name.lower())
    assert execution.node == name
    assert execution.state == 'COMPLETE' and execution.run == runs.run_b
    assert execution.started <= execution.finished
  assert found.trainer.started <= found.evaluator.started <= (
      found.pusher.started)
  assert [s.span for s in found.spans] == [2, 3]
  assert [s.id for s in found.spans] == sorted(
      a.id for a in nodes['Trainer'].inputs['examples'])
  assert all(os.path.isdir(s.uri) for s in found.spans)
  assert found.transform_graph.id == (
      nodes['Transform'].outputs['transform_graph'][0].id)
  with open(runs.cfg_a.schema_path, 'rb') as f:
    assert found.schema_digest == hashlib.sha256(f.read()).hexdigest()[:16]
  assert found.schema.id == nodes['ImportSchemaGen'].outputs['schema'][0].id
  assert found.hparams == runs.cfg_b.hparams
  assert found.train_steps == runs.cfg_b.train_steps
  assert found.trainer_code_version and found.transform_code_version
  assert found.blessed is True
  assert found.baseline_versions == [runs.a.pushed_version]


@pytest.mark.integration
def test_metrics_match_tfma(runs):
  """The TF-free reader agrees with TFMA's own loader, candidate and baseline."""
  import tensorflow_model_analysis as tfma  # pylint: disable=g-import-not-at-top
  found = provenance.version_lineage(runs.store(), runs.b.pushed_version)
  expected = {}
  for metrics in tfma.load_metrics(found.evaluation.uri):
    if metrics.slice_key.single_slice_keys:
      continue
    for kv in metrics.metric_keys_and_values:
      if not kv.key.is_diff and kv.value.HasField('double_value'):
        model = 'baseline' if kv.key.model_name == 'baseline' else 'candidate'
        expected.setdefault(model, {})[kv.key.name] = (
            kv.value.double_value.value)
  assert found.metrics == expected
  assert {'auc', 'binary_accuracy', 'example_count'} <= set(
      found.metrics['candidate'])
  assert set(found.metrics['baseline']) == set(found.metrics['candidate'])


def _slice_name(slice_key) -> str:
  import tensorflow_model_analysis as tfma  # pylint: disable=g-import-not-at-top
  parts = []
  for column, value in tfma.slicer.deserialize_slice_key(slice_key):
    parts.append(f'{column}='
                 f'{value.decode() if isinstance(value, bytes) else value}')
  return ', '.join(parts) or 'overall'


@pytest.mark.integration
def test_a_pushed_versions_model_card_has_the_evaluators_figures(runs):
  """The card inside version B equals what ML Metadata and TFMA say."""
  import tensorflow_model_analysis as tfma  # pylint: disable=g-import-not-at-top
  found = provenance.version_lineage(runs.store(), runs.b.pushed_version)
  assert found.model_card == base_path.model_card_path(runs.b.pushed_path)
  with open(base_path.model_card_path(runs.b.pushed_path, 'json')) as f:
    card = json.load(f)
  details = card['model_details']
  assert details['version'] == int(runs.b.pushed_version)
  assert details['model_id'] == found.model.id
  assert details['code_commit'] == readers.git_revision()[0]
  # Every slice's candidate and baseline metrics, as TFMA's loader reads
  # them (the card reads them without TFMA).
  expected = {}
  for metrics in tfma.load_metrics(found.evaluation.uri):
    for kv in metrics.metric_keys_and_values:
      if not kv.key.is_diff and kv.value.HasField('double_value'):
        model = 'baseline' if kv.key.model_name == 'baseline' else 'candidate'
        expected.setdefault(_slice_name(metrics.slice_key), {}).setdefault(
            model, {})[kv.key.name] = kv.value.double_value.value
  slices = {s['slice']: s for s in card['evaluation']['slices']}
  assert set(slices) == set(expected)
  assert {'overall', 'payment_type=Credit Card', 'payment_type=Cash'} <= set(
      slices)
  for name, per_model in expected.items():
    for model in ('candidate', 'baseline'):
      shown = slices[name][model]
      assert shown and set(shown) <= set(per_model[model]), (name, model)
      for metric, value in shown.items():
        if value is None:  # JSON has no NaN: the card says "undefined"
          assert math.isnan(per_model[model][metric]), (name, model, metric)
        else:
          assert value == pytest.approx(per_model[model][metric], abs=0,
                                        rel=1e-12), (name, model, metric)
  # The data: B's window is spans 2-3, each 300 CSV rows split train/eval.
  assert [s['span'] for s in card['data']['spans']] == [2, 3]
  assert [s['examples_id'] for s in card['data']['spans']] == [
      s.id for s in found.spans]
  assert all(sum(s['rows'].values()) == 300 for s in card['data']['spans'])
  assert card['data']['schema_digest'] == found.schema_digest
  # The training and the decision.
  assert card['training']['hparams'] == runs.cfg_b.hparams == found.hparams
  assert card['training']['train_steps'] == runs.cfg_b.train_steps
  assert card['training']['tuned'] == [] and not found.tuner
  decision = card['decision']
  assert decision['blessed'] is True and decision['failures'] == []
  assert decision['baseline_model_id'] == found.baseline_model.id
  assert decision['infra']['blessed'] is True
  assert 'AUC >= 0 (overall)' in decision['rule']
  overall_auc = slices['overall']['candidate']['auc']
  for kind in ('md', 'html'):
    with open(base_path.model_card_path(runs.b.pushed_path, kind)) as f:
      text = f.read()
    assert f'version {runs.b.pushed_version}' in text
    assert f'{overall_auc:.4g}' in text
  # The Pusher's record names it.
  record = base_path.read_push_record(runs.b.pushed_path)
  assert record['model_card'] == base_path.model_card_path('')


@pytest.mark.integration
def test_span_lists_the_models_trained_on_it(runs):
  """Every model trained on a span, pushed or not: A, the history's 1-step
  model (refused) and B."""
  store = runs.store()
  model_a = runs.a.nodes['Trainer'].outputs['model'][0].id
  model_b = runs.b.nodes['Trainer'].outputs['model'][0].id
  one_step = runs.world.outcome('one-step').nodes['Trainer'].outputs[
      'model'][0].id
  by_span = {span: provenance.span_models(store, span) for span in (1, 2, 3)}
  assert [u.model.id for u in by_span[1]] == [model_a, one_step]
  assert [u.model.id for u in by_span[2]] == [model_a, one_step, model_b]
  assert [u.model.id for u in by_span[3]] == [model_b]
  a, refused, b = by_span[2]
  assert a.versions == [runs.a.pushed_version] and a.spans == [1, 2]
  assert b.versions == [runs.b.pushed_version] and b.spans == [2, 3]
  assert a.blessed is True and a.trainer.node == 'Trainer'
  assert refused.versions == [] and refused.blessed is False
  assert provenance.span_models(store, 7) == []


@pytest.mark.integration
def test_diff_shows_spans_hparams_and_metrics(runs):
  store = runs.store()
  a = provenance.version_lineage(store, runs.a.pushed_version)
  b = provenance.version_lineage(store, runs.b.pushed_version)
  d = provenance.diff(a, b)
  assert d['spans_added'] == [3] and d['spans_removed'] == [1]
  assert d['spans_reingested'] == []
  assert d['hparams'] == {'learning_rate': [0.02, 0.05]}
  assert d['schema_changed'] is False
  assert d['transform_graph_changed'] is True  # analyzed on other spans
  assert d['code'] == {}  # same code, same commit
  auc = d['metrics']['auc']
  assert auc['delta'] == pytest.approx(
      b.metrics['candidate']['auc'] - a.metrics['candidate']['auc'])
  text = report.format_diff(d)
  assert 'learning_rate 0.02 -> 0.05' in text and 'spans added      3' in text


@pytest.mark.integration
def test_git_commit_is_recorded_per_run_and_in_no_cache_key(runs):
  store = runs.store()
  head = _git('rev-parse', 'HEAD')
  dirty = bool(_git('status', '--porcelain'))
  found = provenance.version_lineage(store, runs.b.pushed_version)
  assert (found.trainer.git_commit, found.trainer.git_dirty) == (head, dirty)
  # Every run, the one-span ingest runs included.
  for run in store.get_contexts_by_type('pipeline_run'):
    assert metadata_store.custom_property(
        run, graph.GIT_COMMIT_KEY) == head, run.name
  # Nothing a component's cache key is made of carries it ...
  for execution in store.get_executions():
    recorded = str(execution.properties) + str(execution.custom_properties)
    assert head not in recorded, execution.type
  # ... so the same inputs under a new run ('here': B's flags again) are
  # served from the cache.
  rerun = runs.world.outcome('here')
  assert runs.world.runs['here']['knobs'] == runs.world.runs['second']['knobs']
  assert rerun.ok, rerun.error
  for node in ('CsvExampleGen', 'Transform', 'Trainer'):
    assert rerun.nodes[node].state == 'CACHED', node
  assert rerun.run_id != runs.run_b
  assert metadata_store.custom_property(
      store.get_context_by_type_and_name('pipeline_run', rerun.run_id),
      graph.GIT_COMMIT_KEY) == head
  newest = graph.latest_run(store, runs.cfg_b.pipeline_name)
  assert metadata_store.custom_property(
      newest, graph.GIT_COMMIT_KEY) == head
  # A run keeps the commit it ran with.
  assert graph.record_git_revision(
      store, runs.cfg_b.pipeline_name, ('0' * 40, False)) is None
  assert metadata_store.custom_property(
      graph.latest_run(store, runs.cfg_b.pipeline_name),
      graph.GIT_COMMIT_KEY) == head


def test_git_revision_of_a_checkout_and_of_no_checkout(tmp_path):
  repo = tmp_path / 'repo'
  repo.mkdir()
  git = ['git', '-C', str(repo), '-c', 'user.name=t', '-c',
         'user.email=t@example.com']
  subprocess.run(git + ['init', '-q'], check=True)
  (repo / 'README.md').write_text('docs\n')
  subprocess.run(git + ['add', '.'], check=True)
  subprocess.run(git + ['commit', '-q', '-m', 'docs'], check=True)
  commit = subprocess.run(git + ['rev-parse', 'HEAD'], check=True,
                          capture_output=True, text=True).stdout.strip()
  assert readers.git_revision(str(repo)) == (commit, False)
  (repo / 'README.md').write_text('more docs\n')
  assert readers.git_revision(str(repo)) == (commit, True)
  elsewhere = tmp_path / 'not-a-checkout'
  elsewhere.mkdir()
  assert readers.git_revision(str(elsewhere)) == ('unknown', None)


def _cli(runs, *args):
  """The CLI in a fresh process; fails if it imported TFX or TensorFlow."""
  code = ('import sys\n'
          'from lineage import __main__ as cli\n'
          'code = cli.main(sys.argv[1:])\n'
          "heavy = sorted({m.split('.')[0] for m in sys.modules} & "
          "{'tfx', 'tensorflow', 'tensorflow_model_analysis', 'apache_beam'})\n"
          "assert not heavy, heavy\n"
          'sys.exit(code)\n')
  return subprocess.run(
      [sys.executable, '-c', code, *args, '--metadata-path',
       runs.cfg_a.metadata_path], cwd=helpers.REPO, capture_output=True,
      text=True, timeout=120)


@pytest.mark.integration
def test_cli_text_and_json_without_tfx(runs):
  shown = _cli(runs, 'version', runs.b.pushed_version)
  assert shown.returncode == 0, shown.stderr
  assert f'Model version {runs.b.pushed_version}' in shown.stdout
  assert 'learning_rate' in shown.stdout and 'spans 2-3' in shown.stdout
  for args in (['version', runs.b.pushed_version], ['span', '2'],
               ['diff', runs.a.pushed_version, runs.b.pushed_version]):
    result = _cli(runs, *args, '--json')
    assert result.returncode == 0, (args, result.stderr)
    data = json.loads(result.stdout)
    if args[0] == 'version':
      assert [s['span'] for s in data['spans']] == [2, 3]
      assert data['trainer']['git_commit'] == _git('rev-parse', 'HEAD')
    elif args[0] == 'span':
      # A, the history's 1-step model (never pushed), B.
      assert [m['versions'] for m in data['models']] == [
          [runs.a.pushed_version], [], [runs.b.pushed_version]]
    else:
      assert data['spans_added'] == [3]
  shown = _cli(runs, 'run')
  assert shown.returncode == 0, shown.stderr
  assert shown.stdout.startswith(f"Pipeline '{runs.cfg_a.pipeline_name}', run ")
  assert re.search(r'^  Trainer +(COMPLETE|CACHED)$', shown.stdout, re.M)
  missing = _cli(runs, 'version', '12345')
  assert missing.returncode == 1
  assert 'No Pusher recorded version 12345' in missing.stderr


@pytest.mark.integration
def test_a_version_ml_metadata_never_recorded_is_named_by_its_push_record(
    runs, tmp_path):
  """A run killed after the Pusher's rename and before ML Metadata recorded
  the push: the version is served, only its push record names its model."""
  import shutil  # pylint: disable=g-import-not-at-top
  from serving import base_path  # pylint: disable=g-import-not-at-top
  base = tmp_path / 'serving' / runs.cfg_b.model_name
  orphan = base / base_path.ROLLED_BACK_DIR / '12346'
  shutil.copytree(os.path.join(runs.cfg_b.serving_model_dir,
                               runs.b.pushed_version), orphan)
  record_path = orphan / base_path.PUSH_RECORD
  record = json.loads(record_path.read_text())
  assert record['model_id'], record
  record_path.write_text(json.dumps({**record, 'version': 12346}))

  assert _cli(runs, 'version', '12346').returncode == 1  # not in the store
  shown = _cli(runs, 'version', '12346', '--serving-dir',
               str(tmp_path / 'serving'), '--json')
  assert shown.returncode == 0, shown.stderr
  data = json.loads(shown.stdout)
  assert data['version'] == '12346' and data['blessed'] is True
  assert [s['span'] for s in data['spans']] == [2, 3]


@pytest.mark.integration
def test_tuned_hyperparameters_train_the_model_and_lineage_names_the_tuner(
    runs, tmp_path):
  """--tune: the Tuner's best values are what the Trainer trained with (read
  back from ML Metadata and the Trainer's record), the version's lineage
  and card name the tuning run, and a later run without --tune reuses them.
  On a copy of the world: it changes which hyperparameters later runs
  get."""
  world = runs.world.copy(tmp_path / 'world')
  # Configured values far from the search space's: a tuning that changes
  # nothing would show here.
  cfg = world.cfg('second', tune=True, tuner_trials=3, learning_rate=0.0003,
                  hidden_units=[4])
  tuned_run = _run(cfg)
  assert tuned_run.ok, tuned_run.error
  store = world.store()
  tuner = tuned_run.nodes['Tuner']
  best = tuner.outputs['best_hyperparameters'][0]
  with open(os.path.join(best.uri, 'best_hyperparameters.txt')) as f:
    values = json.load(f)['values']
  trainer = tuned_run.nodes['Trainer']
  assert [a.id for a in trainer.inputs['hyperparameters']] == [best.id]
  history = readers.training_history(trainer.outputs['model_run'][0].uri)
  used = history['hparams']
  assert used['seed'] == cfg.seed
  assert history['tuned'] == sorted(values)
  assert used['learning_rate'] == values['learning_rate']
  assert used['batch_size'] == values['batch_size']
  assert ','.join(map(str, used['hidden_units'])) == values['hidden_units']
  assert (used['learning_rate'], used['hidden_units']) != (0.0003, [4])

  assert tuned_run.pushed_version, tuned_run
  found = provenance.version_lineage(store, tuned_run.pushed_version)
  assert found.hyperparameters.id == best.id
  assert found.tuner.node == 'Tuner' and found.tuner.run == tuned_run.run_id
  assert found.hparams == used and found.tuned == history['tuned']
  text = report.format_version(found)
  assert f'HyperParameters #{best.id}, by Tuner execution {found.tuner.id}' in (
      text)
  with open(base_path.model_card_path(tuned_run.pushed_path, 'json')) as f:
    card = json.load(f)
  assert card['training']['hparams'] == used
  assert card['training']['tuned'] == history['tuned']
  assert card['training']['hyperparameters_id'] == best.id

  # Without --tune: the latest tuned values, through the Resolver; the
  # Trainer's inputs are the tuned run's, so it is a cache hit.
  again = _run(dataclasses.replace(cfg, tune=False))
  assert again.ok, again.error
  assert 'Tuner' not in again.nodes
  assert [a.id for a in again.nodes['Trainer'].inputs['hyperparameters']] == [
      best.id]
  assert again.nodes['Trainer'].state == 'CACHED'
