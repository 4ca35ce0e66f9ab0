"""The CT controller's decisions, one trigger at a time, on real ML Metadata.

Each test builds a small SQLite ML Metadata store and records what the
decision reads (ingested spans as ExampleGen's Examples in its node context,
earlier CTDecision executions) with ml_metadata's own API, so no pipeline
has to run; drift is measured by TFDV on real CSV spans.
(tests/pipeline/test_replay.py runs the controller with the real pipeline.)
"""

import datetime
import json
import os
import subprocess
import sys

import pytest

from ml_metadata.proto import metadata_store_pb2
from pipeline import configs
from pipeline import ct_controller
from pipeline import drift
from pipeline import metadata_store
from tests import helpers

DAY = datetime.timedelta(days=1)


@pytest.fixture
def cfg(tmp_path):
  helpers.small_spans(str(tmp_path / 'data'))  # spans 1..3, 300 real rows each
  return configs.PipelineConfig(data_root=str(tmp_path / 'data'),
                                pipeline_root=str(tmp_path / 'pipeline'),
                                serving_dir=str(tmp_path / 'serving'))


@pytest.fixture
def store(cfg):
  return metadata_store.open_store(metadata_store.store_config(cfg))


def ct_config(tmp_path, **kwargs):
  return ct_controller.CTConfig(
      monitoring_report=str(tmp_path / 'monitoring' / 'report.json'), **kwargs)


def ingest(store, spans, pipeline_name='taxi'):
  """Records Examples of `spans` as CsvExampleGen's, as TFX would."""
  examples_type = store.put_artifact_type(
      metadata_store_pb2.ArtifactType(name='Examples'))
  node_type = store.put_context_type(metadata_store_pb2.ContextType(name='node'))
  context = store.get_context_by_type_and_name(
      'node', f'{pipeline_name}.CsvExampleGen')
  if context is None:
    [context_id] = store.put_contexts([metadata_store_pb2.Context(
        type_id=node_type, name=f'{pipeline_name}.CsvExampleGen')])
  else:
    context_id = context.id
  for span in spans:
    artifact = metadata_store_pb2.Artifact(
        type_id=examples_type, uri=f'/examples/{span}',
        state=metadata_store_pb2.Artifact.LIVE)
    artifact.custom_properties['span'].int_value = span
    [artifact_id] = store.put_artifacts([artifact])
    store.put_attributions_and_associations(
        [metadata_store_pb2.Attribution(artifact_id=artifact_id,
                                        context_id=context_id)], [])


def earlier_run(store, cfg, when, monitor=None, triggers=('new_span',)):
  """A CTDecision that started a run at `when` (what decide reads back)."""
  decision = ct_controller.Decision(
      run=True, triggers=list(triggers), notes=['earlier run'], span=3,
      now=when, monitor=monitor)
  return ct_controller.record(store, cfg.pipeline_name, decision)


def write_report(tmp_path, **fields):
  report = {'model_version': '100', 'live_accuracy': 0.55, 'degraded': True,
            'reason': 'live accuracy 0.55 < 0.70', 'created':
            '2016-05-01T00:00:00+00:00', **fields}
  path = tmp_path / 'monitoring' / 'report.json'
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(report))
  return report


def test_logical_dates_are_quarter_ends():
  assert ct_controller.logical_date(1).date() == datetime.date(2013, 4, 1)
  assert ct_controller.logical_date(4).date() == datetime.date(2014, 1, 1)
  assert ct_controller.logical_date(16).date() == datetime.date(2017, 1, 1)


def test_new_span_triggers_a_run_on_the_newest(cfg, store, tmp_path):
  ingest(store, [1, 2])
  decision = ct_controller.decide(cfg, ct_config(tmp_path), store,
                                  ct_controller.logical_date(3))
  assert decision.run and decision.span == 3
  assert 'new_span' in decision.triggers
  assert 'new span(s) 3 on disk' in decision.reason
  # The new span was compared with the previous one before deciding.
  assert decision.drift is not None
  assert (decision.drift.span, decision.drift.previous_span) == (3, 2)


def test_nothing_changed_means_no_run_and_the_no_is_recorded(cfg, store,
                                                            tmp_path):
  ingest(store, [1, 2, 3])
  last = ct_controller.logical_date(3)
  earlier_run(store, cfg, last)
  decision = ct_controller.decide(cfg, ct_config(tmp_path), store,
                                  last + 30 * DAY)
  assert not decision.run and decision.triggers == []
  assert 'no new span' in decision.reason
  assert 'schedule: next run due' in decision.reason
  assert 'monitor: no report' in decision.reason

  execution_id = ct_controller.record(store, cfg.pipeline_name, decision)
  [execution] = store.get_executions_by_id([execution_id])
  assert execution.type == 'CTDecision'
  assert execution.properties['trigger'].string_value == 'none'
  assert execution.properties['run'].int_value == 0
  assert 'no new span' in execution.properties['reason'].string_value
  assert execution.last_known_state == metadata_store_pb2.Execution.COMPLETE
  [context] = store.get_contexts_by_execution(execution_id)
  assert (context.type, context.name) == ('ct_controller', 'taxi')


def test_schedule_interval_passed_triggers(cfg, store, tmp_path):
  ingest(store, [1, 2, 3])
  last = ct_controller.logical_date(3)
  earlier_run(store, cfg, last)
  ct = ct_config(tmp_path, schedule_days=90)
  assert not ct_controller.decide(cfg, ct, store, last + 89 * DAY).run
  decision = ct_controller.decide(cfg, ct, store, last + 91 * DAY)
  assert decision.run and decision.triggers == ['schedule']
  assert '91 days since the last run (2013-10-01)' in decision.reason


def test_degraded_live_performance_triggers_once(cfg, store, tmp_path):
  ingest(store, [1, 2, 3])
  last = ct_controller.logical_date(3)
  earlier_run(store, cfg, last)
  (tmp_path / 'serving' / 'taxi' / '100').mkdir(parents=True)
  report = write_report(tmp_path)
  ct = ct_config(tmp_path)
  decision = ct_controller.decide(cfg, ct, store, last + DAY)
  assert decision.run and decision.triggers == ['degraded']
  assert 'live accuracy 0.55 of version 100' in decision.reason
  assert decision.monitor == report

  # Once a run acted on that report, the same report triggers nothing.
  earlier_run(store, cfg, last + DAY, monitor=report, triggers=['degraded'])
  again = ct_controller.decide(cfg, ct, store, last + 2 * DAY)
  assert not again.run
  assert 'already acted on' in again.reason


@pytest.mark.parametrize('fields, note', [
    ({'degraded': False}, 'not degraded'),
    ({'model_version': '99'}, 'version 100 is served now'),
    ({'degraded': 'yes'}, "field 'degraded' must be a bool"),
])
def test_monitor_report_that_must_not_trigger(cfg, store, tmp_path, fields,
                                              note):
  ingest(store, [1, 2, 3])
  last = ct_controller.logical_date(3)
  earlier_run(store, cfg, last)
  (tmp_path / 'serving' / 'taxi' / '100').mkdir(parents=True)
  write_report(tmp_path, **fields)
  decision = ct_controller.decide(cfg, ct_config(tmp_path), store, last + DAY)
  assert not decision.run
  assert note in decision.reason


def test_on_demand_runs_and_keeps_the_users_reason(cfg, store, tmp_path):
  ingest(store, [1, 2, 3])
  last = ct_controller.logical_date(3)
  earlier_run(store, cfg, last)
  decision = ct_controller.decide(cfg, ct_config(tmp_path), store, last + DAY,
                                  force_reason='new feature engineering')
  assert decision.run and decision.triggers == ['on_demand']
  assert decision.span == 3
  assert 'on demand: new feature engineering' in decision.reason


def test_disabled_trigger_is_reported_but_does_not_run(cfg, store, tmp_path):
  ingest(store, [1, 2])
  decision = ct_controller.decide(
      cfg, ct_config(tmp_path, triggers=('schedule', 'degraded')), store,
      ct_controller.logical_date(3))
  assert not decision.run
  assert '(trigger new_span disabled)' in decision.reason


@pytest.fixture(scope='module')
def generated(tmp_path_factory):
  """3 generated spans; span 3 moves 70% of Cash trips to Credit Card."""
  out = tmp_path_factory.mktemp('generated')
  subprocess.run([sys.executable, os.path.join(helpers.REPO, 'data',
                                               'generate_spans.py'),
                  '--out', str(out), '--rows', '1500', '--spans', '3',
                  '--drift', 'payment_type=0.7', '--drift-spans', '3'],
                 check=True, capture_output=True)
  return configs.PipelineConfig(data_root=str(out),
                                pipeline_root=str(out / 'pipeline'))


def test_drift_found_on_a_shifted_span_and_not_on_an_unshifted_one(generated):
  shifted = drift.detect(None, generated, 3, 2)
  by_name = {f.feature: f for f in shifted.features}
  assert by_name['payment_type'].comparator == 'L-inf'
  assert by_name['payment_type'].drifted
  assert by_name['payment_type'].distance > 0.3  # ~0.7 x the Cash share
  assert by_name['payment_type'].threshold == configs.DRIFT_LINF_THRESHOLD
  assert by_name['fare'].comparator == 'JSD'
  assert 'payment_type L-inf' in shifted.summary()
  assert set(by_name) == set(configs.DRIFT_CATEGORICAL_FEATURES
                             + configs.DRIFT_NUMERIC_FEATURES)

  unshifted = drift.detect(None, generated, 2, 1)
  assert unshifted.drifted == [], unshifted.summary()
  assert unshifted.summary().startswith('no drift')
  # The JSON recorded in ML Metadata reads back the same.
  again = drift.DriftReport.from_json(shifted.to_json())
  assert [f.feature for f in again.drifted] == [
      f.feature for f in shifted.drifted]


def test_drift_triggers_the_controller_and_is_recorded(generated, tmp_path):
  store = metadata_store.open_store(metadata_store.store_config(generated))
  ingest(store, [1, 2])
  ct = ct_config(tmp_path, triggers=('drift',))  # drift alone decides
  decision = ct_controller.decide(generated, ct, store,
                                  ct_controller.logical_date(3))
  assert decision.run and decision.triggers == ['drift']
  assert 'payment_type L-inf' in decision.reason
  execution_id = ct_controller.record(store, 'taxi', decision)
  [execution] = store.get_executions_by_id([execution_id])
  assert execution.properties['drift_found'].int_value == 1
  recorded = json.loads(execution.properties['drift'].string_value)
  assert recorded['features']['payment_type']['drifted'] is True
  assert execution.last_known_state == metadata_store_pb2.Execution.RUNNING
