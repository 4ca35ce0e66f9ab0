"""dags/pipeline_dag.py in a real Airflow 2.10 (the .venv-airflow of `make airflow-venv`).

Airflow runs in subprocesses with that venv's python and a throwaway
AIRFLOW_HOME: a DagBag loads the DAG folder (tests/dags/airflow_probe.py
reports what Airflow sees), then `airflow dags test` runs the DAG once on
three small spans, every component for real, and ML Metadata, Airflow's own
task records and the serving directory are checked.

Without .venv-airflow the module is skipped locally and fails under CI=true
(.ci/run builds it). TAXI_AIRFLOW_REJECTION_TEST=1 adds two more DAG runs
(a span that breaks the schema, then a good one; ~4 min): the rejected span
must stop its run and stay out of the next run's training window.

Measured on a 2-core machine shared with other jobs (load ~6): DagBag load
65 s, `airflow db migrate` + `dags test` 147 s (migrate alone ~15 s, one
full DAG run ~130 s; ~75 s on an idle machine), the opt-in runs 214 s.
"""

import json
import os
import sqlite3
import subprocess

import pytest

from pipeline import configs
from tests import helpers

pytestmark = pytest.mark.integration

AIRFLOW_PYTHON = os.path.join(helpers.REPO, '.venv-airflow', 'bin', 'python')
DAGS_FOLDER = os.path.join(helpers.REPO, 'dags')
DAG_ID = configs.PipelineConfig().pipeline_name  # the default problem's


@pytest.fixture(scope='module')
def airflow_python():
  """.venv-airflow's python (`make test` builds it; `make airflow-venv`)."""
  helpers.require(os.access(AIRFLOW_PYTHON, os.X_OK),
                  f'{AIRFLOW_PYTHON} missing: run `make airflow-venv`')
  return AIRFLOW_PYTHON


@pytest.fixture(scope='module')
def deployment(tmp_path_factory):
  """Data, pipeline root, serving dir and AIRFLOW_HOME of one deployment."""
  root = tmp_path_factory.mktemp('airflow')
  helpers.small_spans(str(root / 'data'), sources=(9, 10, 11))
  cfg = configs.PipelineConfig(
      data_root=str(root / 'data'),
      pipeline_root=str(root / 'pipeline'),
      serving_dir=str(root / 'serving'),
      **helpers.FAST_PIPELINE)
  flags = helpers.as_flags({'data_root': cfg.data_root,
                            'pipeline_root': cfg.pipeline_root,
                            'serving_dir': cfg.serving_dir,
                            **helpers.FAST_PIPELINE})
  env = {
      **os.environ,
      'AIRFLOW_HOME': str(root / 'airflow'),
      'AIRFLOW__CORE__DAGS_FOLDER': DAGS_FOLDER,
      'AIRFLOW__CORE__LOAD_EXAMPLES': 'False',
      # Parsing imports TF and TFX: ~15 s alone, more on a busy machine.
      'AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT': '600',
      'PIPELINE_FLAGS': ' '.join(flags),
      'PYTHONWARNINGS': 'ignore',
  }
  return cfg, env


def _airflow(airflow_python, env, *args, timeout=900):
  """Runs an Airflow CLI command; its whole output is the failure message."""
  result = subprocess.run(
      [airflow_python, '-m', 'airflow', *args], env=env, cwd=helpers.REPO,
      capture_output=True, text=True, timeout=timeout)
  return result.returncode, result.stdout + result.stderr


@pytest.fixture(scope='module')
def seen_by_airflow(airflow_python, deployment):
  _, env = deployment
  result = subprocess.run(
      [airflow_python, os.path.join(os.path.dirname(__file__),
                                    'airflow_probe.py'), DAGS_FOLDER],
      env=env, capture_output=True, text=True, timeout=600)
  lines = [l for l in result.stdout.splitlines()
           if l.startswith('AIRFLOW_PROBE ')]
  assert result.returncode == 0 and lines, result.stdout + result.stderr
  return json.loads(lines[-1][len('AIRFLOW_PROBE '):])


@pytest.fixture(scope='module')
def taxi_pipeline(deployment):
  """The TFX pipeline the DAG must mirror, built here, outside Airflow."""
  from pipeline import run_pipeline  # pylint: disable=g-import-not-at-top
  cfg, _ = deployment
  return run_pipeline.local_pipeline(cfg)


def test_dagbag_loads_the_dag_without_import_errors(seen_by_airflow):
  assert seen_by_airflow['import_errors'] == {}
  assert list(seen_by_airflow['dags']) == [DAG_ID]


def test_one_task_per_pipeline_node_with_the_pipeline_edges(
    seen_by_airflow, taxi_pipeline):
  dag = seen_by_airflow['dags'][DAG_ID]
  nodes = taxi_pipeline.components
  assert set(dag['upstream']) == {n.id for n in nodes}
  assert dag['upstream'] == {
      n.id: sorted(u.id for u in n.upstream_nodes) for n in nodes}
  assert dag['downstream'] == {
      n.id: sorted(d.id for d in n.downstream_nodes) for n in nodes}


def test_known_dependencies(seen_by_airflow):
  upstream = seen_by_airflow['dags'][DAG_ID]['upstream']
  assert upstream['CsvExampleGen'] == []
  assert 'CsvExampleGen' in upstream['StatisticsGen']
  # The window is resolved only after this run's span passed the gate.
  assert upstream['span_window_resolver'] == ['DataValidationGate']
  assert 'Transform' in upstream['Trainer']
  assert 'Trainer' in upstream['Evaluator']
  # The baseline is resolved after training: it must not be the candidate.
  assert upstream['served_model_resolver'] == ['Trainer']
  assert 'served_model_resolver' in upstream['Evaluator']
  assert 'Evaluator' in upstream['Pusher']


def test_schedule_runs_one_at_a_time_without_catchup(seen_by_airflow):
  dag = seen_by_airflow['dags'][DAG_ID]
  assert dag['schedule'] == '@daily'
  assert dag['catchup'] is False
  assert dag['max_active_runs'] == 1
  assert dag['max_active_tasks'] == 1  # SQLite ML Metadata: one writer


def _task_states(env, run_date):
  db = os.path.join(env['AIRFLOW_HOME'], 'airflow.db')
  with sqlite3.connect(db) as conn:
    rows = conn.execute(
        'SELECT ti.task_id, ti.state FROM task_instance ti JOIN dag_run dr '
        'ON ti.dag_id = dr.dag_id AND ti.run_id = dr.run_id '
        'WHERE ti.dag_id = ? AND dr.execution_date LIKE ?',
        (DAG_ID, run_date + '%')).fetchall()
  return dict(rows)


def _trained_on(cfg):
  """Spans of the Examples each Trainer execution read, oldest run first."""
  from lineage import metadata_store  # pylint: disable=g-import-not-at-top
  store = metadata_store.open_store(
      metadata_store.sqlite_config(cfg.metadata_path))
  windows = []
  for execution in sorted(store.get_executions(), key=lambda e: e.id):
    if execution.properties['component_id'].string_value != 'Trainer':
      continue
    inputs = [e.artifact_id
              for e in store.get_events_by_execution_ids([execution.id])
              if e.type == e.INPUT and e.path.steps[0].key == 'examples']
    windows.append(sorted(
        metadata_store.custom_property(a, 'span')
        for a in store.get_artifacts_by_id(inputs)))
  return windows


@pytest.fixture(scope='module')
def first_dag_run(airflow_python, deployment):
  _, env = deployment
  code, out = _airflow(airflow_python, env, 'db', 'migrate', timeout=300)
  assert code == 0, out[-5000:]
  code, out = _airflow(airflow_python, env, 'dags', 'test', DAG_ID,
                       '2024-01-02')
  return code, out


def test_dags_test_runs_every_task_and_pushes(deployment, taxi_pipeline,
                                              first_dag_run):
  cfg, env = deployment
  code, out = first_dag_run
  assert code == 0, out[-8000:]
  states = _task_states(env, '2024-01-02')
  assert states == {n.id: 'success' for n in taxi_pipeline.components}, out[-8000:]
  # Empty store, no backfill: the first window is the span this run ingested.
  assert _trained_on(cfg) == [[3]]
  versions = [n for n in os.listdir(cfg.serving_model_dir) if n.isdigit()]
  assert len(versions) == 1, versions
  assert os.path.isfile(
      os.path.join(cfg.serving_model_dir, versions[0], 'saved_model.pb'))


@pytest.mark.skipif(os.environ.get('TAXI_AIRFLOW_REJECTION_TEST') != '1',
                    reason='two more DAG runs (~4 min): set '
                    'TAXI_AIRFLOW_REJECTION_TEST=1')
def test_rejected_span_stops_its_run_and_stays_out_of_the_window(
    airflow_python, deployment, first_dag_run):
  cfg, env = deployment
  assert first_dag_run[0] == 0
  rows = helpers.read_span(12, 300)
  broken = [c for c in rows[0] if c != 'fare']  # a required column missing
  helpers.write_csv(os.path.join(cfg.data_root, 'span-4', 'data.csv'), rows,
                    columns=broken)
  code, out = _airflow(airflow_python, env, 'dags', 'test', DAG_ID,
                       '2024-01-03')
  assert code != 0 and 'DataAnomaliesError: span 4' in out, out[-8000:]
  states = _task_states(env, '2024-01-03')
  assert states['DataValidationGate'] == 'failed'
  assert states['Trainer'] == 'upstream_failed'

  helpers.write_csv(os.path.join(cfg.data_root, 'span-5', 'data.csv'),
                    helpers.read_span(13, 300))
  code, out = _airflow(airflow_python, env, 'dags', 'test', DAG_ID,
                       '2024-01-04')
  assert code == 0, out[-8000:]
  assert _trained_on(cfg) == [[3], [3, 5]]
  assert any(n.isdigit() for n in os.listdir(cfg.serving_model_dir))
