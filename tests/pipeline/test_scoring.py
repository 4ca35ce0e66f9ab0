"""Batch scoring (pipeline/scoring.py): which model scored these rows.

On a copy of the session's pipeline world (tests/conftest.py), which
serves version B over A: the scoring run scores span 1 with the served
version through TFX's BulkInferrer. Its predictions are checked against a
real `python -m serving` on the same base path, its CSV against its
PredictionLogs, its lineage back to the Model the push record names (in ML
Metadata and through `python -m lineage scores`). Then the served version
changes (a `stable` label on A, then on B again) and the scoring follows
it; with nothing this store can trace served, nothing runs.
"""

import csv
import dataclasses
import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from lineage import graph
from lineage import metadata_store
from components import baseline
from pipeline import scoring
from serving import base_path
from serving import client
from serving import server_process
from tensorflow_serving.apis import prediction_log_pb2
from tests import helpers
from tests import world

pytestmark = pytest.mark.integration

SPAN = 1


def _runner():
  from tfx.orchestration.local.local_dag_runner import LocalDagRunner  # pylint: disable=g-import-not-at-top
  return LocalDagRunner


@pytest.fixture(scope='module')
def root(pipeline_world, tmp_path_factory):
  root = tmp_path_factory.mktemp('scoring')
  pipeline_world.copy(root / 'world')
  return root


@pytest.fixture(scope='module')
def cfg(root):
  return world.PipelineWorld.load(root / 'world').cfg('first')


@pytest.fixture(scope='module')
def served_run(root):
  """The run that pushed the served version (B, the newest)."""
  outcome = world.PipelineWorld.load(root / 'world').outcome('second')
  assert outcome.ok and outcome.pushed_version, outcome.error
  return outcome


def _score(cfg, root):
  return scoring.run_scoring(cfg, _runner(), str(root / 'scores'), span=SPAN)


@pytest.fixture(scope='module')
def scored(cfg, root, served_run):
  outcome = _score(cfg, root)
  assert outcome.ok, outcome.error
  return outcome


def _store(cfg):
  return metadata_store.open_store(metadata_store.store_config(cfg))


def _prediction_logs(uri):
  """(tf.Example, probability) per PredictionLog BulkInferrer wrote."""
  files = sorted(glob.glob(os.path.join(uri, 'prediction_logs-*')))
  assert files, uri
  logs = []
  for record in tf.data.TFRecordDataset(
      files, compression_type='GZIP').as_numpy_iterator():
    log = prediction_log_pb2.PredictionLog.FromString(record).predict_log
    example = tf.train.Example.FromString(
        log.request.inputs['examples'].string_val[0])
    logs.append((example, log.response.outputs['outputs'].float_val[0]))
  return logs


def _value(example, key):
  feature = example.features.feature.get(key)
  kind = feature.WhichOneof('kind') if feature is not None else None
  values = getattr(feature, kind).value if kind else []
  if not values:
    return None
  return values[0].decode() if kind == 'bytes_list' else values[0]


def _trip(example):
  """A logged tf.Example as the model server's clients send a trip."""
  return {k: _value(example, k) for k in helpers.RAW_TYPES}


def _csv_rows(path):
  with open(path, newline='') as f:
    return list(csv.DictReader(f))


def _model_id(cfg, version):
  """The Model the Pusher's record in the version directory names."""
  record = base_path.read_push_record(
      os.path.join(cfg.serving_model_dir, str(version)))
  return int(record['model_id'])


def test_bulk_inferrer_predicts_what_the_model_server_serves(cfg, served_run,
                                                             scored):
  logs = _prediction_logs(scored.scoring.predictions.uri)
  assert len(logs) == len(helpers.read_span(
      1, data_root=cfg.data_root)) == scored.scoring.rows
  server = server_process.start(['--model_name', cfg.model_name,
                                 '--model_base_path', cfg.serving_model_dir])
  try:
    rest = client.RestClient(server.rest_url, cfg.model_name, helpers.TAXI)
    [status] = rest.status()
    assert status['version'] == served_run.pushed_version
    # The task reads each answer ([p] of a binary model) as one score.
    served = [helpers.TAXI.task.score(answer, 2) for answer in
              rest.predict([_trip(example) for example, _ in logs])]
  finally:
    server.stop()
  np.testing.assert_allclose([p for _, p in logs], served, rtol=0, atol=1e-6)
  assert 0.0 < np.mean(served) < 1.0 and np.std(served) > 0.01


def test_the_csv_rows_are_the_prediction_logs(cfg, served_run, scored):
  """Each CSV row, found again by its split and place in the Examples
  artifact, carries that example's logged prediction and features."""
  logs = {example.SerializeToString(deterministic=True): p
          for example, p in _prediction_logs(scored.scoring.predictions.uri)}
  rows = _csv_rows(scored.scoring.csv_path)
  assert len(rows) == len(logs) == scored.scoring.rows
  assert list(rows[0]) == ['span', 'split', 'row', 'trip_start_timestamp',
                           'fare', 'trip_miles', 'payment_type', 'company',
                           'big_tip', 'prediction', 'version']
  by_place = {(r['split'], int(r['row'])): r for r in rows}
  examples_uri = scored.scoring.examples.uri
  for split in ('train', 'eval'):
    files = sorted(glob.glob(os.path.join(examples_uri, f'Split-{split}', '*')))
    for row, record in enumerate(tf.data.TFRecordDataset(
        files, compression_type='GZIP').as_numpy_iterator()):
      example = tf.train.Example.FromString(record)
      line = by_place.pop((split, row))
      assert np.float32(line['prediction']) == np.float32(
          logs[example.SerializeToString(deterministic=True)])
      assert np.float32(line['fare']) == _value(example, 'fare')
      assert line['company'] == (_value(example, 'company') or '')
      label = helpers.TAXI.label_of(
          {'tips': _value(example, 'tips'), 'fare': _value(example, 'fare')})
      assert line['big_tip'] == ('' if label is None else str(label))
      assert (line['span'], line['version']) == (str(SPAN),
                                                 served_run.pushed_version)
  assert by_place == {}
  with open(scored.copied_to) as copy, open(scored.scoring.csv_path) as made:
    assert copy.read() == made.read()
  assert scored.copied_to.endswith(f'span-{SPAN}.csv')


def _lineage_cli(cfg, *args):
  """`python -m lineage` in a fresh process; fails if it loaded TFX or TF."""
  code = ('import sys\n'
          'from lineage import __main__ as cli\n'
          'code = cli.main(sys.argv[1:])\n'
          "heavy = sorted({m.split('.')[0] for m in sys.modules} & "
          "{'tfx', 'tensorflow', 'apache_beam'})\n"
          'assert not heavy, heavy\n'
          'sys.exit(code)\n')
  return subprocess.run(
      [sys.executable, '-c', code, *args, '--metadata-path',
       cfg.metadata_path], cwd=helpers.REPO, capture_output=True, text=True,
      timeout=120)


def test_lineage_leads_from_the_csv_to_the_pushed_model(cfg, served_run,
                                                        scored):
  store = _store(cfg)
  model_id = _model_id(cfg, served_run.pushed_version)
  assert model_id == served_run.nodes['Trainer'].outputs['model'][0].id
  # The CSV's writer read the PredictionLogs, the span's Examples and the
  # Model; BulkInferrer made the PredictionLogs from that Model and the
  # blessing its Evaluator gave it.
  writer = graph.producer(store, scored.scoring.csv.id)
  inputs, _ = graph.execution_artifacts(store, writer.id)
  [predictions], [model] = inputs['inference_result'], inputs['model']
  assert model.id == model_id
  bulk = graph.producer(store, predictions.id)
  assert graph.node_id(store.get_contexts_by_execution(bulk.id)) == (
      'BulkInferrer')
  bulk_inputs, _ = graph.execution_artifacts(store, bulk.id)
  assert [a.id for a in bulk_inputs['model']] == [model_id]
  [blessing] = bulk_inputs['model_blessing']
  assert metadata_store.custom_property(blessing, 'current_model_id') == (
      model_id)
  assert metadata_store.custom_property(blessing, 'blessed') == 1
  [examples] = bulk_inputs['examples']
  assert examples.id == inputs['examples'][0].id
  assert metadata_store.property_value(examples, 'span') == SPAN
  assert graph.producer(store, model_id).id == scored.scoring.trainer.id

  shown = _lineage_cli(cfg, 'scores', str(SPAN), '--json')
  assert shown.returncode == 0, shown.stderr
  [data] = json.loads(shown.stdout)
  assert data['served_version'] == served_run.pushed_version
  assert data['model']['id'] == model_id
  assert data['predictions']['uri'] == predictions.uri
  assert data['csv_path'] == scored.scoring.csv_path
  assert data['examples']['id'] == examples.id and data['span'] == SPAN
  text = _lineage_cli(cfg, 'scores').stdout  # the newest scoring
  assert text.startswith(f'Span {SPAN} scored by version '
                         f'{served_run.pushed_version} (Model #{model_id})')
  missing = _lineage_cli(cfg, 'scores', '3')
  assert missing.returncode == 1 and 'No scoring of span 3' in missing.stderr


def _versions_column(outcome):
  return _versions_column_of(outcome.scoring.csv_path)


def _label_stable(cfg, version, path):
  """A TF Serving model config whose `stable` label names `version`."""
  path.write_text(
      f'model_config_list {{ config {{ name: "{cfg.model_name}" base_path: '
      f'"{cfg.serving_model_dir}" model_platform: "tensorflow" '
      f'version_labels {{ key: "stable" value: {version} }} }} }}')
  return dataclasses.replace(cfg, model_config_file=str(path))


def test_the_served_version_decides_which_model_scores(cfg, root, served_run,
                                                       scored, tmp_path):
  v2 = served_run.pushed_version
  v1 = world.PipelineWorld.load(root / 'world').runs['first'][
      'pushed_version']
  assert int(v2) > int(v1) and scored.served.version == int(v2)
  # Rolled back by label: `stable` names the first version: it scores.
  older = _score(_label_stable(cfg, v1, tmp_path / 'v1.config'), root)
  assert older.ok, older.error
  assert older.served.version == int(v1) and 'stable' in older.served.why
  assert older.scoring.model.id == _model_id(cfg, v1) != _model_id(cfg, v2)
  assert older.nodes['BulkInferrer'].state == 'COMPLETE'
  assert _versions_column(older) == {v1}

  # `stable` on the second version again: it scores.
  stable = _score(_label_stable(cfg, v2, tmp_path / 'v2.config'), root)
  assert stable.ok, stable.error
  assert stable.served.version == int(v2) and 'stable' in stable.served.why
  assert stable.scoring.model.id == _model_id(cfg, v2)
  assert _versions_column(stable) == {v2}
  # Its CSV is the first scoring's (same span, same model: cached), and it
  # is now the newest scoring of the span.
  assert stable.scoring.csv.id == scored.scoring.csv.id
  [newest] = json.loads(_lineage_cli(cfg, 'scores', '--json').stdout)
  assert newest['served_version'] == v2


def _run_contexts(cfg):
  store = _store(cfg)
  return {c.name for c in store.get_contexts_by_type('pipeline_run')}


def test_nothing_traceable_served_is_an_error_and_no_run(cfg, root, scored,
                                                        tmp_path):
  before = _run_contexts(cfg)
  empty = dataclasses.replace(cfg, serving_dir=str(tmp_path / 'empty'))
  with pytest.raises(SystemExit, match='Nothing is served from'):
    _score(empty, root)
  # A version no Pusher of this store recorded (pushed from another store).
  elsewhere = tmp_path / 'elsewhere'
  os.makedirs(elsewhere / cfg.model_name / '7')
  with pytest.raises(SystemExit, match='Version 7 is served .* no Pusher in '
                     'this ML Metadata store recorded it'):
    _score(dataclasses.replace(cfg, serving_dir=str(elsewhere)), root)
  assert _run_contexts(cfg) == before


def test_score_runner_scores_and_says_where(cfg, scored, tmp_path):
  """The CLI (`make score`): its flags reach the run, the console shows
  progress and the summary, the CSV lands in --scores-dir."""
  result = subprocess.run(
      [sys.executable, 'score_runner.py', '--span', str(SPAN),
       '--data-root', cfg.data_root, '--pipeline-root', cfg.pipeline_root,
       '--serving-dir', cfg.serving_dir, '--scores-dir', str(tmp_path)],
      cwd=helpers.REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stdout + result.stderr
  out = result.stdout
  served = baseline.served_version(cfg.serving_model_dir)
  assert f'Scoring span {SPAN} with version {served} ' in out
  assert '  BulkInferrer ' in out and '  PredictionsToCsv ' in out
  assert f'  rows scored        {scored.scoring.rows}\n' in out
  assert f'python -m lineage scores {SPAN} --metadata-path' in out
  copied = tmp_path / f'span-{SPAN}.csv'
  assert f'  copied to          {copied}\n' in out
  assert _versions_column_of(str(copied)) == {str(served)}


def _versions_column_of(path):
  return {r['version'] for r in _csv_rows(path)}
