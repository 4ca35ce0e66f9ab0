"""A real local Flink cluster for a test module, on free ports.

Needs the fetched jars (make flink-fetch) and Java. Without them a test is
skipped locally and fails under CI=true (.ci/run fetches them first).
"""

import os

import pytest

from cluster import distribution
from cluster import flink


def require_fetched() -> None:
  missing = distribution.missing()
  if not missing:
    return
  reason = 'not fetched: ' + '; '.join(missing) + ' (make flink-fetch)'
  if os.environ.get('CI', '').lower() == 'true':
    pytest.fail(reason + ' (.ci/run fetches it)')
  pytest.skip(reason)


def started(state_dir: str, task_managers: int):
  """Yields the Settings of a running cluster; stops it afterwards."""
  require_fetched()
  cluster = flink.on_free_ports(state_dir, task_managers)
  flink.up(cluster)
  try:
    yield cluster
  finally:
    flink.down(cluster.state_dir)
