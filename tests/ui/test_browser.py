"""The web UI in a real browser (Debian's chromium, driven by Playwright)
against the store a real replay left (a copy of tests/conftest.py's
`replay_world`: three pipeline runs through the CT controller, span 3 with a
payment-type shift, then an on-demand run).

`python -m ui --replay <out> --port 0` runs as the README starts it. Every
page reachable from the overview loads without a console error and every
link answers; the figures on the pages equal what the pipeline recorded,
read here another way: rows against the span CSVs, AUC against
tfma.load_metrics, blessings and drift against ML Metadata, versions
against the disk. Without /usr/bin/chromium the module is skipped locally
and fails under CI=true (.ci/run installs it).
"""

import json
import os
import re
import urllib.parse

import pytest

from continuous_training import decisions
from lineage import graph
from lineage import provenance
from lineage import metadata_store
from monitoring import config as monitor_config
from monitoring import monitor
from project import paths
from serving import base_path
from serving import model_config
from tests import helpers
from tests import world as tests_world

pytestmark = pytest.mark.integration
CHROMIUM = '/usr/bin/chromium'
MAX_PAGES = 80  # the crawl's bound (the replay's store has ~50 pages)


def _need_chromium():
  helpers.require(os.path.exists(CHROMIUM), f'{CHROMIUM} is missing',
                  system_package='Chromium')


@pytest.fixture(scope='module')
def world(replay_world, replay_result, tmp_path_factory):
  """A copy of the replay's outputs, plus a label and a monitoring report,
  as a user would add them: a TF Serving model config pointing `stable` at
  the newest version, and the monitor's real report (no traffic logged
  yet)."""
  code, printed = replay_result
  assert code == 0, printed
  out = tests_world.copy(replay_world,
                         tmp_path_factory.mktemp('replay')) / 'out'
  base = out / 'serving' / paths.DEFAULT_PROBLEM
  served = model_config.versions_on_disk(str(base))
  assert served, 'the replay pushed nothing'
  config = out / 'models.config'
  config.write_text(
      'model_config_list { config { name: "taxi" base_path: "%s" '
      'model_platform: "tensorflow" model_version_policy { specific { '
      'versions: %d } } version_labels { key: "stable" value: %d } } }\n'
      % (base, served[-1], served[-1]))
  report = monitor.run(helpers.TAXI, str(out / 'no-logs-yet' / 'log'),
                       monitor_config.Thresholds())
  monitor.write_json_atomically(monitor_config.report_path(str(out)), report)
  store = metadata_store.open_store(metadata_store.sqlite_config(
      paths.metadata_path(str(out / 'pipeline'))))
  return {'out': out, 'base': base, 'served': served, 'config': config,
          'report': report, 'store': store}


@pytest.fixture(scope='module')
def ui_url(world):
  with helpers.UiProcess(['--replay', str(world['out']), '--model-config-file',
                          str(world['config']), '--log-file',
                          str(world['out'] / 'ui.log')]) as ui:
    yield ui.url


@pytest.fixture(scope='module')
def browser():
  _need_chromium()
  from playwright.sync_api import sync_playwright  # pylint: disable=g-import-not-at-top
  with sync_playwright() as p:
    launched = p.chromium.launch(executable_path=CHROMIUM,
                                 args=['--no-sandbox'])
    yield launched
    launched.close()


@pytest.fixture
def page(browser):
  context = browser.new_context(viewport={'width': 1280, 'height': 900})
  opened = context.new_page()
  opened.problems = []
  opened.on('console', lambda m: opened.problems.append(
      f'console {m.type}: {m.text}') if m.type in ('error', 'warning')
            else None)
  opened.on('pageerror', lambda e: opened.problems.append(f'error: {e}'))
  yield opened
  context.close()


def _open(page, url):
  # networkidle: what a page loads after it (an icon) is checked with it.
  response = page.goto(url, wait_until='networkidle')
  assert response.status == 200, (url, response.status, page.content()[:500])
  assert page.problems == [], (url, page.problems)
  return page


def test_every_page_reachable_from_the_overview_loads_cleanly(page, ui_url):
  seen, queue = set(), ['/']
  while queue and len(seen) < MAX_PAGES:
    path = queue.pop(0)
    if path in seen:
      continue
    seen.add(path)
    _open(page, ui_url + path)
    for href in page.eval_on_selector_all(
        'a[href]', 'els => els.map(e => e.getAttribute("href"))'):
      target = urllib.parse.urlsplit(href)
      assert not target.netloc, f'{path} links outside: {href}'
      if target.path not in seen:
        queue.append(target.path)
  kinds = {p.split('/')[1] for p in seen if p != '/'}
  # Every kind of page was reached by a link, not typed in.
  assert {'runs', 'data', 'models', 'serving', 'versions', 'artifacts',
          'executions'} <= kinds, sorted(seen)
  assert any(p.endswith('/model_card') for p in seen), sorted(seen)


def test_runs_and_decisions_are_those_in_ml_metadata(page, ui_url, world):
  store = world['store']
  runs = {c.name for c in store.get_contexts_by_type('pipeline_run')}
  _open(page, ui_url + '/runs')
  shown = set(page.eval_on_selector_all(
      '#runs tr[data-run]', 'rows => rows.map(r => r.dataset.run)'))
  assert shown == runs
  made = decisions.past_decisions(store, 'taxi')
  rows = page.query_selector_all('#decisions tr[data-decision]')
  assert sorted(int(r.get_attribute('data-decision')) for r in rows) == sorted(
      e.id for e in made)
  # Span 3's decision says why it ran: new span and drift.
  third = page.query_selector(f'#decisions tr[data-decision="{made[2].id}"]')
  assert 'new_span+drift' in third.inner_text()
  _open(page, ui_url + '/')
  assert int(page.inner_text('#run-count')) == len(runs)
  assert int(page.inner_text('#decision-count')) == len(made)


def test_span_rows_equal_the_csvs_and_drift_equals_the_decisions(
    page, ui_url, world):
  _open(page, ui_url + '/data')
  source = world['out'] / 'data'
  for span in (1, 2, 3):
    row = page.query_selector(f'#spans tr[data-span="{span}"]')
    train, evaluated = (int(x) for x in row.query_selector(
        '.rows').inner_text().split(' / '))
    assert train + evaluated == len(helpers.read_span(
        span, data_root=str(source))), span
    assert 'passed' in row.inner_text()
  # payment_type's L-inf distance at span 3, as the CT decision recorded it.
  made = decisions.past_decisions(world['store'], 'taxi')
  recorded = json.loads(graph.property_value(made[2], 'drift'))
  expected = recorded['features']['payment_type']
  assert expected['drifted']
  point = page.query_selector(
      'circle.point[data-series="payment_type"][data-x="3"]')
  assert float(point.get_attribute('data-y')) == pytest.approx(
      expected['distance'], abs=1e-6)
  assert 'payment_type at span 3' in page.inner_text('#drift-charts')


def test_model_metrics_equal_tfma_and_blessings_equal_ml_metadata(
    page, ui_url, world):
  import tensorflow_model_analysis as tfma  # pylint: disable=g-import-not-at-top
  store = world['store']
  _open(page, ui_url + '/models')
  rows = page.query_selector_all('#models tr[data-evaluation]')
  assert rows
  for row in rows:
    evaluation_id = int(row.get_attribute('data-evaluation'))
    [evaluation] = store.get_artifacts_by_id([evaluation_id])
    overall = next(m for m in tfma.load_metrics(evaluation.uri)
                   if not m.slice_key.single_slice_keys)
    auc = next(kv.value.double_value.value
               for kv in overall.metric_keys_and_values
               if kv.key.name == 'auc' and not kv.key.model_name == 'baseline'
               and not kv.key.is_diff)
    assert float(row.query_selector('.auc').inner_text()) == pytest.approx(
        auc, abs=5e-5)
    evaluator = graph.producer(store, evaluation_id)
    _, outputs = graph.execution_artifacts(store, evaluator.id)
    blessed = graph.prop(outputs['blessing'][0], 'blessed') == 1
    assert row.query_selector('.blessed').inner_text() == (
        'yes' if blessed else 'NO')
  assert 'AUC >= 0.7 (overall)' in page.inner_text('#rule')
  # The replay trains span N on spans 1..N (window 3): what the Trainers read.
  assert [row.query_selector('.spans').inner_text() for row in rows] == [
      '1', '1-2', '1-3']


def test_serving_shows_the_versions_labels_history_and_monitor(page, ui_url,
                                                               world):
  _open(page, ui_url + '/serving')
  shown = sorted(int(v) for v in page.eval_on_selector_all(
      '#versions tr[data-version]', 'rows => rows.map(r => r.dataset.version)'))
  assert shown == world['served']
  newest = page.query_selector(f'#versions tr[data-version="{world["served"][-1]}"]')
  assert newest.query_selector('.labels').inner_text() == 'stable'
  assert newest.query_selector('.state').inner_text() == 'served (latest)'
  log = os.path.join(world['base'], base_path.ACTION_LOG)
  with open(log) as f:
    logged = [json.loads(line)['action'] for line in f if line.strip()]
  assert page.eval_on_selector_all(
      '#history td.action', 'cells => cells.map(c => c.textContent)') == (
          logged[::-1])
  assert page.inner_text('#degraded') == 'no'
  assert world['report']['reason'] in page.inner_text('#monitoring')


def test_a_versions_lineage_graph_shows_its_spans_and_links_to_artifacts(
    page, ui_url, world):
  version = str(world['served'][-1])
  lineage = provenance.version_lineage(world['store'], version)
  _open(page, ui_url + f'/versions/{version}')
  labels = page.eval_on_selector_all(
      'svg.lineage a.node', 'nodes => nodes.map(n => n.textContent)')
  spans_drawn = sorted(int(m) for text in labels
                       for m in re.findall(r'^Examplesspan (\d+)', text))
  assert spans_drawn == sorted(s.span for s in lineage.spans)
  assert any(text.startswith('Trainer') for text in labels)
  # Clicking the model's node opens the Model artifact the version came from.
  page.click(f'svg.lineage a.node[data-key="a{lineage.model.id}"]')
  page.wait_for_url(f'**/artifacts/{lineage.model.id}')
  assert page.problems == []
  assert page.inner_text('h1') == f'Model #{lineage.model.id}'
