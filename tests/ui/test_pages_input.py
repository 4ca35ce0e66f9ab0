"""ui/pages.py on records it cannot read, and on names a URL must quote.

A hand-made ML Metadata store (what TFX and the CT controller record,
written with ml_metadata's own API) and files on disk; pages asked through
`pages.render`, the one call the server makes. Every page answers 200 with
a notice naming what it skipped, never 500; a run's name with a `/` in it
is reachable by the link the pages render. Fast: no pipeline runs.
"""

import html
import json
import os
import re

import pytest
from ml_metadata.proto import metadata_store_pb2

from continuous_training import decisions as ct_decisions
from lineage import metadata_store
from monitoring import config as monitor_config
from ui import pages
from ui import views

Execution = metadata_store_pb2.Execution
RUN = 'a/b'  # a run name a URL path must quote


def _context(store, type_name, name):
  type_id = store.put_context_type(metadata_store_pb2.ContextType(
      name=type_name))
  [context_id] = store.put_contexts([metadata_store_pb2.Context(
      type_id=type_id, name=name)])
  return store.get_contexts_by_id([context_id])[0]


def _sources(root, config_file=None) -> views.Sources:
  return views.Sources(
      connection=metadata_store.sqlite_config(
          os.path.join(root, 'metadata.sqlite')),
      pipeline_name='taxi', model_base_path=os.path.join(root, 'serving',
                                                         'taxi'),
      monitoring_report=monitor_config.report_path(root),
      model_config_file=config_file)


@pytest.fixture
def world(tmp_path):
  """(sources, store, ids): ExampleGen's span 1 in run `a/b`."""
  sources = _sources(str(tmp_path))
  store = metadata_store.open_store(sources.connection)
  contexts = [_context(store, 'pipeline', 'taxi'),
              _context(store, 'node', 'taxi.CsvExampleGen'),
              _context(store, 'pipeline_run', RUN)]
  execution = Execution(
      type_id=store.put_execution_type(metadata_store_pb2.ExecutionType(
          name='CsvExampleGen')), last_known_state=Execution.COMPLETE,
      create_time_since_epoch=1000, last_update_time_since_epoch=2000)
  examples = metadata_store_pb2.Artifact(
      type_id=store.put_artifact_type(metadata_store_pb2.ArtifactType(
          name='Examples')), uri=str(tmp_path / 'examples'),
      state=metadata_store_pb2.Artifact.LIVE)
  examples.custom_properties['span'].int_value = 1
  output = metadata_store_pb2.Event(type=metadata_store_pb2.Event.OUTPUT)
  output.path.steps.add().key = 'examples'
  execution_id, [examples_id], _ = store.put_execution(
      execution, [(examples, output)], contexts)
  return sources, store, {'execution': execution_id, 'examples': examples_id}


def _get(sources, path):
  page = pages.render(sources, path)
  return page.status, page.body.decode('utf-8')


def _run_hrefs(text):
  """Every link to a run's page, as the browser would request it."""
  return [html.unescape(h) for h in re.findall(r'href="(/runs/[^"]+)"', text)]


# --- A run whose name has a `/` ----------------------------------------------


@pytest.mark.parametrize('page', ['/runs', '/data', 'execution'])
def test_every_link_to_a_run_reaches_it(world, page):
  sources, _, ids = world
  path = f'/executions/{ids["execution"]}' if page == 'execution' else page
  status, text = _get(sources, path)
  assert status == 200
  hrefs = _run_hrefs(text)
  assert hrefs, f'{path} links to no run'
  for href in hrefs:
    assert href == '/runs/a%2Fb', href
    status, run_page = _get(sources, href)
    assert status == 200, (href, run_page)
    assert f'<h1>Run {RUN}</h1>' in run_page
    assert 'data-node="CsvExampleGen"' in run_page


def test_the_timeline_links_the_same_way(world):
  sources, _, _ = world
  _, text = _get(sources, '/')
  assert set(_run_hrefs(text)) == {'/runs/a%2Fb'}


# --- A CT decision whose drift record is ill-typed ----------------------------


def _decision(store, drift_text):
  type_id = store.put_execution_type(
      metadata_store_pb2.ExecutionType(
          name=ct_decisions.EXECUTION_TYPE,
          properties=ct_decisions.EXECUTION_PROPERTIES), can_add_fields=True)
  e = Execution(type_id=type_id, last_known_state=Execution.COMPLETE)
  e.properties['pipeline'].string_value = 'taxi'
  e.properties['trigger'].string_value = 'drift'
  e.properties['drift'].string_value = drift_text
  [execution_id] = store.put_executions([e])
  return execution_id


def _drift(span, threshold):
  return json.dumps({
      'span': span, 'previous_span': 1, 'sources': {},
      'features': {'payment_type': {
          'comparator': 'L-inf', 'distance': 0.3, 'threshold': threshold,
          'p_value': 0.001, 'alpha': 0.01, 'drifted': True}}})


@pytest.mark.parametrize('bad', [
    _drift(3, 'high'), _drift('three', 0.2), '{"span": 3}', '[1, 2]',
    'not json', json.dumps({'span': 3, 'previous_span': 2, 'sources': {},
                            'features': {'x': 'y'}}),
], ids=['threshold "high"', 'span "three"', 'no features', 'a list',
        'not json', 'feature not an object'])
def test_an_unreadable_drift_record_is_skipped_and_named(world, bad):
  sources, store, _ = world
  good = _decision(store, _drift(2, 0.2))
  skipped = _decision(store, bad)
  status, text = _get(sources, '/data')
  assert status == 200, text
  notices = re.findall(r'<li class="skipped">(.*?)</li>', text, re.S)
  assert len(notices) == 1 and f'CT decision {skipped}' in notices[0], (
      notices)
  assert f'CT decision {good}' not in text
  assert 'payment_type' in text  # the readable record is drawn


# --- A model config file that cannot be read ----------------------------------


@pytest.mark.parametrize('data, problem', [
    (b'model_config_list { config { name: "taxi\xff\xfe" } }\n', 'UTF-8'),
    (b'model_config_list { config { nme: "taxi" } }\n', 'does not parse'),
    (b'model_config_list { config { name: "other" base_path: "/x" } }\n',
     "model &#39;taxi&#39; is not in"),
], ids=['not UTF-8', 'not a config', 'another model'])
@pytest.mark.parametrize('store', [False, True], ids=['no store', 'store'])
def test_an_unreadable_model_config_is_a_notice_not_a_500(
    world, tmp_path, data, problem, store):
  config = str(tmp_path / 'models.config')
  with open(config, 'wb') as f:
    f.write(data)
  root = str(tmp_path) if store else str(tmp_path / 'nothing-ran')
  sources = _sources(root, config)
  os.makedirs(os.path.join(sources.model_base_path, '4'))
  for path in ('/', '/serving'):
    status, text = _get(sources, path)
    assert status == 200, (path, text)
    [notice] = re.findall(r'<p class="bad" id="model-config-problem">(.*?)</p>',
                          text, re.S)
    assert html.escape(config) in notice and problem in notice, notice
  assert '<tr data-version="4">' in text  # the rest of the page is there
