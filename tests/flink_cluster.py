"""A real local Flink cluster for a test module, on free ports.

Needs the fetched jars (`make flink-fetch`; `make test` fetches them when a
JDK and Maven are installed) and Java. Without them a test is skipped
locally and fails under CI=true (.ci/run installs and fetches them first).
"""

import shutil

from cluster import distribution
from cluster import flink
from tests import helpers


def require_fetched() -> None:
  tools = [t for t in ('java', 'javac', 'mvn') if not shutil.which(t)]
  helpers.require(not tools, f'{", ".join(tools)} not found: Flink and '
                  "Beam's job server need a JDK; the fetch needs Maven",
                  system_package='a JDK and Maven')
  missing = distribution.missing()
  helpers.require(not missing, 'not fetched: ' + '; '.join(missing)
                  + ' (make flink-fetch)')


def started(state_dir: str, task_managers: int):
  """Yields the Settings of a running cluster; stops it afterwards."""
  require_fetched()
  cluster = flink.on_free_ports(state_dir, task_managers)
  flink.up(cluster)
  try:
    yield cluster
  finally:
    flink.down(cluster.state_dir)
