"""Prints what Airflow itself sees in dags/ as JSON (run in .venv-airflow).

Runs in the Airflow venv, not the test process: Airflow reads AIRFLOW_HOME
and configures logging when first imported, and its pins differ from the
main venv's. The test compares this report with the TFX pipeline it builds.
"""

import json
import sys

from airflow.models import DagBag


def main(dags_folder: str) -> None:
  bag = DagBag(dags_folder, include_examples=False)
  report = {
      'import_errors': {k: str(v) for k, v in bag.import_errors.items()},
      'dags': {},
  }
  for dag_id, dag in bag.dags.items():
    report['dags'][dag_id] = {
        'upstream': {t.task_id: sorted(t.upstream_task_ids)
                     for t in dag.tasks},
        'downstream': {t.task_id: sorted(t.downstream_task_ids)
                       for t in dag.tasks},
        'catchup': dag.catchup,
        'max_active_runs': dag.max_active_runs,
        'max_active_tasks': dag.max_active_tasks,
        'schedule': str(dag.schedule_interval),
    }
  print('AIRFLOW_PROBE ' + json.dumps(report))


if __name__ == '__main__':
  main(sys.argv[1])
