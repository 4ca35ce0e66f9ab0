"""The replay command on three small real spans, the third with a known shift.

Runs the real pipeline three times through the CT controller (LocalDagRunner,
few train steps), then checks what a learner reads (the printed table, the
HTML report) against what ML Metadata recorded.
"""

import os
import re

import pytest

from continuous_training import config as ct_config
from continuous_training import controller
from continuous_training import decisions
from continuous_training import report
from data import spans as span_rules
from lineage import metadata_store
from pipeline import configs

pytestmark = pytest.mark.integration
# The replay itself (three real runs) is the session fixture `replayed` /
# `replay_result` of tests/conftest.py: the UI's browser tests (tests/ui)
# read the same store.


@pytest.fixture(scope='module')
def result(replay_result):
  return replay_result


def _table(text):
  """Rows of the printed table: {span: {column: cell}}."""
  lines = text.splitlines()
  start = next(i for i, l in enumerate(lines) if l.startswith('span  quarter'))
  widths = [len(c) for c in lines[start + 1].split('  ')]
  rows = {}
  for line in lines[start + 2:]:
    if not line.strip():
      break
    cells, pos = [], 0
    for w in widths:
      cells.append(line[pos:pos + w].strip())
      pos += w + 2
    rows[int(cells[0])] = dict(zip(report.TABLE_COLUMNS, cells))
  return rows


def test_table_has_a_row_per_span_with_trigger_and_drift(result):
  code, text = result
  assert code == 0, text
  rows = _table(text)
  assert sorted(rows) == [1, 2, 3]
  assert rows[1]['trigger'] == 'new_span'
  assert rows[1]['drift found'] == '-'  # nothing earlier to compare with
  assert rows[3]['trigger'] == 'new_span+drift'
  assert 'payment_type' in rows[3]['drift found']
  assert rows[3]['window'] == '1-3'
  for span, row in rows.items():
    assert re.fullmatch(r'0\.\d{3}', row['AUC']), row
    assert row['blessed'] in ('yes', 'NO'), row
  assert rows[1]['baseline AUC'] == '-'
  assert 'drift detected     3' in text


def test_every_decision_is_in_ml_metadata_with_its_run(replayed, result):
  out, _ = replayed
  cfg = configs.PipelineConfig(pipeline_root=str(out / 'pipeline'))
  store = metadata_store.open_store(metadata_store.store_config(cfg))
  made = decisions.past_decisions(store, 'taxi')
  assert [e.properties['span'].int_value for e in made] == [1, 2, 3]
  runs = set()
  for e in made:
    assert e.properties['run'].int_value == 1
    assert e.last_known_state == e.COMPLETE
    run = [c for c in store.get_contexts_by_execution(e.id)
           if c.type == 'pipeline_run']
    assert len(run) == 1 and run[0].name == e.properties[
        'pipeline_run'].string_value
    # The run it is attached to is the one that ingested its span.
    trainer = [x for x in store.get_executions_by_context(run[0].id)
               if x.type.endswith('Trainer')]
    assert trainer, e
    runs.add(run[0].id)
  assert len(runs) == 3
  assert made[2].properties['drift_found'].int_value == 1
  assert 'payment_type' in made[2].properties['reason'].string_value
  # Span 2's drift check read span 1's Examples from ML Metadata.
  assert 'Examples artifact' in made[1].properties[
      'drift'].string_value


def test_html_report_shows_statistics_drift_metrics_and_lineage(replayed,
                                                               result):
  out, _ = replayed
  page = (out / 'report.html').read_text()
  for heading in ('Data statistics and anomalies', 'Drift against the previous '
                  'span', 'Evaluation and push decisions',
                  'Lineage of pushed versions'):
    assert heading in page
  assert '<script' not in page and 'http' not in page  # self-contained
  assert 'payment_type (L-inf)' in page and 'fare (JSD)' in page
  # The UI's charts (ui/charts.py): drift per feature, AUC per span.
  assert 'L-inf distance to the previous span (drifted: payment_type at ' \
         'span 3)' in page
  assert '<circle class="point" ' in page and 'data-series="payment_type"' in page
  assert 'AUC per span: the candidate and the served baseline' in page
  pushed = sorted(os.listdir(out / 'serving' / 'taxi'))
  pushed = [v for v in pushed if v.isdigit()]
  assert pushed, 'no model was pushed'
  lineage = report.pushed_lineage(configs.PipelineConfig(
      pipeline_root=str(out / 'pipeline')))
  assert [p.version for p in lineage] == pushed
  for p in lineage:
    assert p.version in page
    assert p.spans and set(p.spans) <= {1, 2, 3}
    assert p.decision.startswith('CTDecision ')


def test_an_on_demand_run_reuses_the_ingestion_and_is_cached(replayed, result):
  """`make ct ARGS='--reason ...'` after the replay: the span it runs on is
  ingested already, so ExampleGen and everything after it is a cache hit
  (it used to re-ingest, re-run Transform and report a changed graph)."""
  from tfx.orchestration.local.local_dag_runner import LocalDagRunner  # pylint: disable=g-import-not-at-top
  out, _ = replayed
  assert result[0] == 0
  cfg = configs.PipelineConfig(
      data_root=str(out / 'data'), pipeline_root=str(out / 'pipeline'),
      serving_dir=str(out / 'serving'), window_spans=3, eval_steps=10,
      max_auc_drop=0.2, train_steps=ct_config.REPLAY_DEFAULTS['train_steps'])
  ct = ct_config.CTConfig(
      monitoring_report=str(out / 'monitoring' / 'report.json'))
  again = controller.run_once(cfg, ct, LocalDagRunner,
                                 now=span_rules.logical_date(3),
                                 force_reason='check the cache')
  assert again.decision.triggers == ['on_demand'] and again.decision.span == 3
  outcome = again.outcome
  assert outcome.ok, outcome.error
  for node in ('CsvExampleGen', 'StatisticsGen', 'Transform', 'Trainer'):
    assert outcome.nodes[node].state == 'CACHED', node
  assert outcome.fully_cached
