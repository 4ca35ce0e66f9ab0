"""The CT controller's decisions, one trigger at a time, on real ML Metadata.

Each test builds a small SQLite ML Metadata store and records what the
decision reads (ingested spans as ExampleGen's Examples in its node context,
earlier CTDecision executions) with ml_metadata's own API, so no pipeline
has to run; drift is measured on real and generated CSV spans.
(tests/continuous_training/test_replay.py runs the controller with the real
pipeline.)
"""

import dataclasses
import datetime
import json
import os
import subprocess
import sys

import pytest

from ml_metadata.proto import metadata_store_pb2
from continuous_training import config as ct_config
from continuous_training import controller
from continuous_training import decisions
from continuous_training import drift
from continuous_training import triggers
from data import spans as span_rules
from lineage import metadata_store
from monitoring import distribution
from pipeline import configs
from tests import helpers

DAY = datetime.timedelta(days=1)


@pytest.fixture
def cfg(tmp_path):
  # spans 1..3, 300 real rows each
  helpers.small_spans(str(tmp_path / 'data'), sources=(9, 10, 11))
  return configs.PipelineConfig(data_root=str(tmp_path / 'data'),
                                pipeline_root=str(tmp_path / 'pipeline'),
                                serving_dir=str(tmp_path / 'serving'))


@pytest.fixture
def store(cfg):
  return metadata_store.open_store(metadata_store.store_config(cfg))


def make_ct(tmp_path, **kwargs):
  return ct_config.CTConfig(
      monitoring_report=str(tmp_path / 'monitoring' / 'report.json'), **kwargs)


def _context(store, type_name, name):
  type_id = store.put_context_type(metadata_store_pb2.ContextType(
      name=type_name))
  found = store.get_context_by_type_and_name(type_name, name)
  if found is not None:
    return found.id
  [context_id] = store.put_contexts([metadata_store_pb2.Context(
      type_id=type_id, name=name)])
  return context_id


def _execution(store, type_name, contexts, outputs=(), **custom):
  """A COMPLETE execution in `contexts`, with OUTPUT events on `outputs`."""
  type_id = store.put_execution_type(metadata_store_pb2.ExecutionType(
      name=type_name))
  execution = metadata_store_pb2.Execution(
      type_id=type_id, last_known_state=metadata_store_pb2.Execution.COMPLETE)
  for key, value in custom.items():
    execution.custom_properties[key].string_value = value
  events = [(artifact, metadata_store_pb2.Event(
      type=metadata_store_pb2.Event.OUTPUT)) for artifact in outputs]
  execution_id, _, _ = store.put_execution(
      execution, artifact_and_events=events,
      contexts=store.get_contexts_by_id(contexts))
  return execution_id


def ingest(store, spans, data_root, pipeline_name='taxi'):
  """Records Examples of `spans` as CsvExampleGen makes them: an execution
  (with the data root it read) in its node context, outputting them."""
  examples_type = store.put_artifact_type(
      metadata_store_pb2.ArtifactType(name='Examples'))
  node = _context(store, 'node', f'{pipeline_name}.CsvExampleGen')
  for span in spans:
    artifact = metadata_store_pb2.Artifact(
        type_id=examples_type, uri=f'/examples/{span}',
        state=metadata_store_pb2.Artifact.LIVE)
    artifact.custom_properties['span'].int_value = span
    _execution(store, 'CsvExampleGen', [node], [artifact],
               input_base=data_root)


def trained(store, run_name, pipeline_name='taxi'):
  """A Trainer execution in its own pipeline_run context; the context id."""
  run = _context(store, 'pipeline_run', run_name)
  _execution(store, 'Trainer', [run, _context(store, 'node',
                                              f'{pipeline_name}.Trainer')])
  return run


def earlier_run(store, cfg, when, monitor=None, triggers=('new_span',)):
  """A CTDecision that started a training run at `when` (what decide reads
  back), attached to that run as decisions.attach_run does."""
  decision = decisions.Decision(
      run=True, triggers=list(triggers), notes=['earlier run'], span=3,
      now=when, monitor=monitor)
  execution_id = decisions.record(store, cfg.pipeline_name, decision)
  run = trained(store, f'run-{execution_id}')
  store.put_attributions_and_associations(
      [], [metadata_store_pb2.Association(execution_id=execution_id,
                                          context_id=run)])
  return execution_id


def write_report(tmp_path, **fields):
  report = {'model_version': '100', 'live_accuracy': 0.55, 'degraded': True,
            'reason': 'live accuracy 0.55 < 0.70', 'created':
            '2016-05-01T00:00:00+00:00', **fields}
  path = tmp_path / 'monitoring' / 'report.json'
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(report))
  return report


def test_new_span_triggers_a_run_on_the_newest(cfg, store, tmp_path):
  ingest(store, [1, 2], cfg.data_root)
  decision = triggers.decide(cfg, make_ct(tmp_path), store,
                                  span_rules.logical_date(3))
  assert decision.run and decision.span == 3
  assert 'new_span' in decision.triggers
  assert 'new span(s) 3 on disk' in decision.reason
  # The new span was compared with the previous one before deciding.
  assert decision.drift is not None
  assert (decision.drift.span, decision.drift.previous_span) == (3, 2)


def test_nothing_changed_means_no_run_and_the_no_is_recorded(cfg, store,
                                                            tmp_path):
  ingest(store, [1, 2, 3], cfg.data_root)
  last = span_rules.logical_date(3)
  earlier_run(store, cfg, last)
  decision = triggers.decide(cfg, make_ct(tmp_path), store,
                                  last + 30 * DAY)
  assert not decision.run and decision.triggers == []
  assert 'no new span' in decision.reason
  assert 'schedule: next run due' in decision.reason
  assert 'monitor: no report' in decision.reason

  execution_id = decisions.record(store, cfg.pipeline_name, decision)
  [execution] = store.get_executions_by_id([execution_id])
  assert execution.type == 'CTDecision'
  assert execution.properties['trigger'].string_value == 'none'
  assert execution.properties['run'].int_value == 0
  assert 'no new span' in execution.properties['reason'].string_value
  assert execution.last_known_state == metadata_store_pb2.Execution.COMPLETE
  [context] = store.get_contexts_by_execution(execution_id)
  assert (context.type, context.name) == ('ct_controller', 'taxi')


def test_schedule_interval_passed_triggers(cfg, store, tmp_path):
  ingest(store, [1, 2, 3], cfg.data_root)
  last = span_rules.logical_date(3)
  earlier_run(store, cfg, last)
  ct = make_ct(tmp_path, schedule_days=90)
  assert not triggers.decide(cfg, ct, store, last + 89 * DAY).run
  decision = triggers.decide(cfg, ct, store, last + 91 * DAY)
  assert decision.run and decision.triggers == ['schedule']
  assert '91 days since the last training run (2013-10-01, CT decision' in (
      decision.reason)


def test_schedule_reads_the_last_training_run_whoever_started_it(cfg, store,
                                                                 tmp_path):
  """A pipeline run by hand (no CT decision) counts, on the wall clock; a
  controller that never ran is no reason to wait forever."""
  ingest(store, [1, 2, 3], cfg.data_root)
  ct = make_ct(tmp_path, schedule_days=90)
  first = triggers.decide(cfg, ct, store, span_rules.logical_date(3))
  assert not first.run
  assert 'schedule: no earlier training run in ML Metadata' in first.reason
  trained(store, 'by-hand')
  now = datetime.datetime.now(datetime.timezone.utc)
  assert not triggers.decide(cfg, ct, store, now + 89 * DAY).run
  later = triggers.decide(cfg, ct, store, now + 91 * DAY)
  assert later.run and later.triggers == ['schedule']
  assert 'pipeline run by-hand' in later.reason
  assert decisions.past_decisions(store, cfg.pipeline_name) == []


def test_spans_ingested_from_another_data_root_are_new_here(cfg, store,
                                                            tmp_path):
  ingest(store, [1, 2, 3], str(tmp_path / 'elsewhere'))
  decision = triggers.decide(cfg, make_ct(tmp_path), store,
                                  span_rules.logical_date(3))
  assert decision.run and 'new span(s) 1, 2, 3 on disk' in decision.reason
  ingest(store, [1, 2, 3], cfg.data_root)
  assert not triggers.decide(cfg, make_ct(tmp_path), store,
                                  span_rules.logical_date(3)).run


def test_skew_in_the_monitor_report_is_reported_not_a_trigger(cfg, store,
                                                               tmp_path):
  ingest(store, [1, 2, 3], cfg.data_root)
  last = span_rules.logical_date(3)
  earlier_run(store, cfg, last)
  (tmp_path / 'serving' / 'taxi' / '100').mkdir(parents=True)
  write_report(tmp_path, degraded=False, skew_detected=True, skew={
      'fare': {'anomalous': True}, 'company': {'anomalous': False}})
  decision = triggers.decide(cfg, make_ct(tmp_path), store, last + DAY)
  assert not decision.run
  assert 'monitor: training/serving skew in fare reported; not a ' in (
      decision.reason)


def test_degraded_live_performance_triggers_once(cfg, store, tmp_path):
  ingest(store, [1, 2, 3], cfg.data_root)
  last = span_rules.logical_date(3)
  earlier_run(store, cfg, last)
  (tmp_path / 'serving' / 'taxi' / '100').mkdir(parents=True)
  report = write_report(tmp_path)
  ct = make_ct(tmp_path)
  decision = triggers.decide(cfg, ct, store, last + DAY)
  assert decision.run and decision.triggers == ['degraded']
  assert 'live accuracy 0.55 of version 100' in decision.reason
  assert decision.monitor == report

  # Once a run acted on that report, the same report triggers nothing.
  earlier_run(store, cfg, last + DAY, monitor=report, triggers=['degraded'])
  again = triggers.decide(cfg, ct, store, last + 2 * DAY)
  assert not again.run
  assert 'already acted on' in again.reason


@pytest.mark.parametrize('fields, note', [
    ({'degraded': False}, 'not degraded'),
    ({'model_version': '99'}, 'version 100 is served now'),
    ({'degraded': 'yes'}, "field 'degraded' must be a bool"),
])
def test_monitor_report_that_must_not_trigger(cfg, store, tmp_path, fields,
                                              note):
  ingest(store, [1, 2, 3], cfg.data_root)
  last = span_rules.logical_date(3)
  earlier_run(store, cfg, last)
  (tmp_path / 'serving' / 'taxi' / '100').mkdir(parents=True)
  write_report(tmp_path, **fields)
  decision = triggers.decide(cfg, make_ct(tmp_path), store, last + DAY)
  assert not decision.run
  assert note in decision.reason


def test_on_demand_runs_and_keeps_the_users_reason(cfg, store, tmp_path):
  ingest(store, [1, 2, 3], cfg.data_root)
  last = span_rules.logical_date(3)
  earlier_run(store, cfg, last)
  decision = triggers.decide(cfg, make_ct(tmp_path), store, last + DAY,
                                  force_reason='new feature engineering')
  assert decision.run and decision.triggers == ['on_demand']
  assert decision.span == 3
  assert 'on demand: new feature engineering' in decision.reason


def test_disabled_trigger_is_reported_but_does_not_run(cfg, store, tmp_path):
  ingest(store, [1, 2], cfg.data_root)
  decision = triggers.decide(
      cfg, make_ct(tmp_path, triggers=('schedule', 'degraded')), store,
      span_rules.logical_date(3))
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
  assert by_name['payment_type'].threshold == distribution.DRIFT_LINF_THRESHOLD
  assert by_name['payment_type'].p_value < by_name['payment_type'].alpha
  assert by_name['payment_type'].alpha == pytest.approx(
      distribution.DRIFT_ALPHA / len(by_name))  # Bonferroni
  assert by_name['fare'].comparator == 'JSD'
  assert by_name['fare'].threshold == distribution.DRIFT_JSD_THRESHOLD
  assert by_name['trip_start_hour'].comparator == 'L-inf'  # a category
  assert [f.feature for f in shifted.drifted] == ['payment_type']
  assert 'payment_type L-inf' in shifted.summary()
  assert set(by_name) == set(distribution.kinds_of(helpers.TAXI))
  assert 'trip_start_month' not in by_name  # quarters differ by design
  assert shifted.sources['span'].startswith('CSV ')
  assert shifted.sources['previous_span'].startswith('CSV ')  # no store

  unshifted = drift.detect(None, generated, 2, 1)
  assert unshifted.drifted == [], unshifted.summary()
  assert unshifted.summary().startswith('no drift')
  # The JSON recorded in ML Metadata reads back the same, to the precision
  # it records (distances to 6 decimals, p-values to 6 digits).
  again = drift.DriftReport.from_json(shifted.to_json())
  assert (again.span, again.previous_span, again.sources) == (
      shifted.span, shifted.previous_span, shifted.sources)
  by_feature = {f.feature: f for f in shifted.features}
  assert [f.feature for f in again.features] == sorted(by_feature)
  for read in again.features:
    made = by_feature[read.feature]
    assert (read.comparator, read.threshold, read.alpha, read.drifted) == (
        made.comparator, made.threshold, made.alpha, made.drifted)
    assert read.distance == pytest.approx(made.distance, abs=5e-7)
    assert read.p_value == pytest.approx(made.p_value, rel=1e-5, abs=1e-300)
  assert [f.feature for f in again.drifted] == ['payment_type']


def test_drift_records_written_before_the_test_read_back():
  """CTDecisions recorded with TFDV distances only (no p-value)."""
  old = json.dumps({'span': 3, 'previous_span': 2, 'sources': {},
                    'features': {'company': {'comparator': 'L-inf',
                                             'distance': 0.178,
                                             'threshold': 0.1,
                                             'drifted': True}}})
  report = drift.DriftReport.from_json(old)
  assert [f.feature for f in report.drifted] == ['company']


def test_drift_reads_the_previous_span_from_its_examples(generated, tmp_path):
  """The Examples ExampleGen made of the previous span win over its CSV
  (what the pipeline ingested, even if the file changed since)."""
  store = metadata_store.open_store(metadata_store.store_config(
      dataclasses.replace(generated, pipeline_root=str(tmp_path / 'p'))))
  ingest(store, [2], generated.data_root)
  [examples] = [a for a in store.get_artifacts_by_type('Examples')]
  # As ingested, span 2 looked like span 3 does now (card-heavy).
  uri = tmp_path / 'examples'
  rows = helpers.read_span(3, data_root=generated.data_root)
  helpers.write_examples(str(uri / 'Split-train' / 'data.gz'), rows[:1000])
  helpers.write_examples(str(uri / 'Split-eval' / 'data.gz'), rows[1000:])
  examples.uri = str(uri)
  store.put_artifacts([examples])
  report = drift.detect(store, generated, 3, 2)
  assert report.sources['previous_span'] == (
      f'Examples artifact {examples.id} (splits eval, train; 1500 rows)')
  assert report.drifted == [], report.summary()
  # Without readable files the CSV is used, as for a span never ingested.
  examples.uri = str(tmp_path / 'gone')
  store.put_artifacts([examples])
  report = drift.detect(store, generated, 3, 2)
  assert report.sources['previous_span'].startswith('CSV ')
  assert [f.feature for f in report.drifted] == ['payment_type']


def test_drift_thresholds_are_flags(tmp_path):
  import argparse  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser()
  ct_config.add_flags(parser)
  default = ct_config.from_flags(parser.parse_args([])).thresholds()
  assert (default.alpha, default.categorical_floor, default.numeric_floor) == (
      distribution.DRIFT_ALPHA, distribution.DRIFT_LINF_THRESHOLD,
      distribution.DRIFT_JSD_THRESHOLD)
  rule = ct_config.from_flags(parser.parse_args(
      ['--drift-alpha', '0.05', '--drift-linf-threshold', '0.3',
       '--drift-jsd-threshold', '0.2'])).thresholds()
  assert (rule.alpha, rule.categorical_floor, rule.numeric_floor) == (
      0.05, 0.3, 0.2)


def test_drift_triggers_the_controller_and_is_recorded(generated, tmp_path):
  store = metadata_store.open_store(metadata_store.store_config(generated))
  ingest(store, [1, 2], generated.data_root)
  ct = make_ct(tmp_path, triggers=('drift',))  # drift alone decides
  decision = triggers.decide(generated, ct, store,
                                  span_rules.logical_date(3))
  assert decision.run and decision.triggers == ['drift']
  assert 'payment_type L-inf' in decision.reason
  execution_id = decisions.record(store, 'taxi', decision)
  [execution] = store.get_executions_by_id([execution_id])
  assert execution.properties['drift_found'].int_value == 1
  recorded = json.loads(execution.properties['drift'].string_value)
  assert recorded['features']['payment_type']['drifted'] is True
  assert recorded['features']['payment_type']['p_value'] < (
      recorded['features']['payment_type']['alpha'])
  assert recorded['features']['company']['drifted'] is False
  assert execution.last_known_state == metadata_store_pb2.Execution.RUNNING


def test_a_run_that_never_started_links_the_decision_to_no_run(cfg, store,
                                                               tmp_path):
  """A new span the pipeline cannot read (a NUL byte): the decision is
  FAILED with the reason, and not attached to the earlier run's context
  (it used to be linked to whatever run was newest)."""
  earlier_run(store, cfg, span_rules.logical_date(2))
  ingest(store, [1, 2], cfg.data_root)
  bad = os.path.join(cfg.data_root, 'span-3', 'data.csv')
  with open(bad, 'rb') as f:
    lines = f.read().split(b'\n')
  lines[5] = lines[5][:3] + b'\x00' + lines[5][3:]
  with open(bad, 'wb') as f:
    f.write(b'\n'.join(lines))
  from tfx.orchestration.local.local_dag_runner import LocalDagRunner  # pylint: disable=g-import-not-at-top
  result = controller.run_once(cfg, make_ct(tmp_path), LocalDagRunner,
                                  now=span_rules.logical_date(3))
  assert result.decision.run and not result.outcome.ok
  assert any('drift: not measured, span 3' in n for n in result.decision.notes)
  [execution] = store.get_executions_by_id([result.decision.execution_id])
  assert execution.last_known_state == metadata_store_pb2.Execution.FAILED
  assert 'line 6' in execution.properties['outcome'].string_value
  assert execution.properties['pipeline_run'].string_value == ''
  assert [c.type for c in store.get_contexts_by_execution(execution.id)] == [
      decisions.CONTEXT_TYPE]
