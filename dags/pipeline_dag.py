"""A problem's pipeline as an Airflow DAG (TFX's AirflowDagRunner, Airflow 2.10).

The same `pipeline.pipeline.create_pipeline` every runner uses, with the
choices of a local run (`pipeline_for`); only the runner differs. Each TFX
node becomes one Airflow task (a PythonOperator that runs
the component in the worker), with the pipeline's dependencies as edges.

Configuration: the same flags as local_runner.py, in one variable read when
Airflow parses this file (the scheduler, and every worker before a task):

  PIPELINE_FLAGS='--pipeline-root /srv/tfx/taxi --serving-dir /srv/models'
  AIRFLOW_SCHEDULE='@daily'   # cron or preset; 'none': triggered runs only

What a deployment does, and what differs from `make run`:
  * Every scheduled run ingests the latest span on disk (or `--span`) and
    trains on the latest `--window-spans` valid spans ingested so far. A run
    with no new span reuses the cached ingestion and pushes nothing new.
  * There is no backfill: local runs ingest the window's earlier spans first,
    this DAG does not. On an empty metadata store the window starts with the
    first span the DAG ingests and grows by one span per run that finds new
    data. To seed history, trigger one run per earlier span with
    `--span N` in PIPELINE_FLAGS.
  * AirflowDagRunner drives TFX's pre-IR launcher, which records lineage in ML
    Metadata under other context types than LocalDagRunner's: give the DAG its
    own pipeline root / metadata store, do not share one with `make run`.
  * catchup=False and one active run at a time: each run ingests the latest
    span, so replaying missed intervals would only repeat it, and two runs
    would race for the training window. With SQLite ML Metadata (one writer,
    tfx#199) tasks also run one at a time; use MySQL to let independent tasks
    run in parallel.
  * Parsing this file builds the pipeline, which writes the curated schema's
    content-addressed copy under the pipeline root if missing
    (pipeline.cache_keys.schema_snapshot): the scheduler needs write access
    there.
    It also imports TFX and TensorFlow (~15 s): keep Airflow's
    dagbag_import_timeout (30 s by default) above that.
  * Start the workers with PYTHONHASHSEED=0 (ops/reproducible.py): Beam
    combines in an order that follows Python's per-process hash seed, which
    can change the model a span trains; the local runners set it themselves.
    Parsing this file turns on tfx_bsl's byte-size batching in the worker
    (reproducible.fix_batching), the other half of the same-model rule.
"""

import contextlib
import datetime
import logging
import os
import shlex
from typing import Any, Optional

from pipeline import configs
from ops import console
from project import cli

FLAGS_ENV = 'PIPELINE_FLAGS'
SCHEDULE_ENV = 'AIRFLOW_SCHEDULE'
DEFAULT_SCHEDULE = '@daily'
# Fixed: a start date that moves (e.g. "yesterday") makes Airflow reschedule.
START_DATE = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)


def pipeline_config() -> configs.PipelineConfig:
  """PipelineConfig from $PIPELINE_FLAGS (local_runner.py's flags)."""
  parser = cli.ArgumentParser(prog=f'${FLAGS_ENV}')
  configs.add_flags(parser)
  return configs.from_flags(
      parser.parse_args(shlex.split(os.environ.get(FLAGS_ENV, ''))))


def schedule() -> Optional[str]:
  """$AIRFLOW_SCHEDULE; 'none' means triggered runs only."""
  value = os.environ.get(SCHEDULE_ENV, DEFAULT_SCHEDULE).strip()
  return None if value.lower() in ('', 'none') else value


@contextlib.contextmanager
def _info_logs_muted():
  """Drops INFO records while TFX builds the DAG; warnings still show.

  Importing TFX and declaring its components logs a page of INFO lines (Beam
  type hints, optional TFX extras) on every parse, and the scheduler parses
  this file every 30 s: the DAG processor log would bury real errors. Task
  execution is not affected: its logs come after the parse.
  """
  root = logging.getLogger()
  level = root.level
  root.setLevel(logging.WARNING)
  try:
    yield
  finally:
    root.setLevel(level)


def pipeline_for(cfg: configs.PipelineConfig, connection: Any) -> Any:
  """The TFX pipeline this DAG runs: a local run's choices.

  Airflow's tasks run where the scheduler's files and ML Metadata are, so
  the schema is a snapshot under the pipeline root, the knobs are constants
  (from $PIPELINE_FLAGS), and the span window Resolver and the
  served-model baseline work as in a local run (pipeline/pipeline.py lists
  the choices). Unlike run_pipeline, the span is not pinned: each run
  ingests the latest on disk unless `--span` says otherwise.
  """
  from pipeline import run_pipeline  # pylint: disable=g-import-not-at-top
  return run_pipeline.local_pipeline(cfg, connection)


def build_dag():
  """The Airflow DAG of `create_pipeline(pipeline_config())`."""
  console.quiet_imports()  # TF's C++ logs and deprecation warnings at parse
  from lineage import metadata_store  # pylint: disable=g-import-not-at-top
  from ops import reproducible  # pylint: disable=g-import-not-at-top
  reproducible.fix_batching()  # tasks run in the process that parsed this
  cfg = pipeline_config()
  connection = metadata_store.store_config(cfg)
  dag_config = {
      'schedule': schedule(),
      'start_date': START_DATE,
      'catchup': False,
      'max_active_runs': 1,
      'description': 'TFX pipeline: ingest the latest span, validate, '
                     'train on the span window, evaluate, push if blessed',
      'tags': ['tfx', cfg.pipeline_name],
  }
  if connection.HasField('sqlite'):
    dag_config['max_active_tasks'] = 1
  with _info_logs_muted():
    # pylint: disable=g-import-not-at-top
    from tfx.orchestration.airflow.airflow_dag_runner import AirflowDagRunner
    from tfx.orchestration.airflow.airflow_dag_runner import AirflowPipelineConfig
    # pylint: enable=g-import-not-at-top
    return AirflowDagRunner(AirflowPipelineConfig(
        airflow_dag_config=dag_config)).run(
            pipeline_for(cfg, connection))


# Airflow collects module-level DAG objects; the id is the pipeline name.
DAG = build_dag()
