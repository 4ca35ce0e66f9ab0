"""The replay command on three small real spans, the third with a known shift.

Runs the real pipeline three times through the CT controller (LocalDagRunner,
few train steps), then checks what a learner reads (the printed table, the
HTML report) against what ML Metadata recorded.
"""

import json
import os
import re

import pytest

from continuous_training import decisions
from continuous_training import report
from lineage import metadata_store
from pipeline import configs
from tests import helpers

pytestmark = pytest.mark.integration
# The replay itself (three real runs, then an on-demand run) is the session's
# `replay_world` (tests/conftest.py): the UI's browser tests (tests/ui) read
# a copy of the same store.


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
    rows[int(cells[0])] = dict(zip(report.table_columns(helpers.TAXI.task), cells))
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
  # The replay's three, then the on-demand run's (test below).
  made = decisions.past_decisions(store, 'taxi')
  assert [e.properties['span'].int_value for e in made] == [1, 2, 3, 3]
  assert [e.properties['run'].int_value for e in made] == [1, 1, 1, 1]
  made = made[:3]
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
  # The UI's charts (project/charts.py): drift per feature, AUC per span.
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


def test_an_on_demand_run_reuses_the_ingestion_and_is_cached(replay_world,
                                                            result):
  """`make ct ARGS='--reason ...'` after the replay (the replay world's last
  run, tests/conftest.py): the span it runs on is ingested already, so
  ExampleGen and everything after it is a cache hit (it used to re-ingest,
  re-run Transform and report a changed graph)."""
  from pipeline import run_pipeline  # pylint: disable=g-import-not-at-top
  from lineage import metadata_store  # pylint: disable=g-import-not-at-top
  from tests import conftest  # pylint: disable=g-import-not-at-top
  assert result[0] == 0
  again = json.loads((replay_world / 'replay.json').read_text())['on_demand']
  assert again['triggers'] == ['on_demand'] and again['span'] == 3
  assert again['ok'], again['error']
  cfg = conftest.replay_cfg(replay_world / 'out')
  outcome = run_pipeline.read_outcome(
      cfg, metadata_store.store_config(cfg), True, None, again['window'], 0.0,
      again['run_id'])
  for node in ('CsvExampleGen', 'StatisticsGen', 'Transform', 'Trainer'):
    assert outcome.nodes[node].state == 'CACHED', node
    assert again['states'][node] == 'CACHED', node
  assert again['fully_cached']
  # In ML Metadata, the run's one execution that ran is the CT decision the
  # controller attached to it.
  ran = [n for n, r in outcome.nodes.items() if r.state != 'CACHED'
         and not n.endswith('_resolver')]
  assert len(ran) == 1 and ran[0] not in again['states'], ran
