"""A local Apache Flink session cluster for the pipeline's Beam jobs.

`up()` starts, each as its own process on 127.0.0.1:

* a Flink **JobManager** (StandaloneSessionClusterEntrypoint; web UI and
  REST API on --rest-port, 8081),
* N Flink **TaskManagers** (TaskManagerRunner), each with its own slots,
* Beam's **Flink job server** (FlinkJobServerDriver, --job-port 8099): it
  turns a Python pipeline into a Flink job and submits it to the
  JobManager,
* a Beam **Python worker pool** (--worker-pool-port 50000,
  cluster/worker_pool.py): the TaskManagers ask it for SDK harnesses, one
  Python process per TaskManager per job, which run the Python code (the
  EXTERNAL environment: how Flink on Kubernetes runs Python without
  Docker).

The processes are started the way Flink's own `bin/*.sh` scripts start
them (those scripts are not in the PyPI distribution): the JVM memory
flags come from Flink's BashJavaUtils, the Java 17 module flags are the
ones Flink 1.18+ ship (Flink 1.16 predates them). Their pids, ports and
logs live in the state directory (`outputs/flink` by default): `down()`
stops exactly those processes, `status()` reads them.

What binds where: Flink's and the worker pool's ports bind 127.0.0.1. Beam's
Java job server binds its job and artifact ports on every interface
whatever --job-host says (Beam's ServerFactory calls
NettyServerBuilder.forPort), as do the TaskManagers' Fn API ports for the
harnesses: on a shared network, firewall them.
"""

import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Dict, List, Optional

from cluster import daemons
from cluster import distribution
from ops import reproducible
from project import paths
from project import waiting

STATE_DIR = os.path.join(paths.OUTPUT_DIR, 'flink')
HOST = '127.0.0.1'
# Flink 1.18's config.sh adds these for Java 17 (FLINK-15736); 1.16 does
# not, and fails at start-up (IllegalAccessError on sun.net.util) without.
JAVA17_FLAGS = [
    '-XX:+IgnoreUnrecognizedVMOptions',
    '--add-exports=java.base/sun.net.util=ALL-UNNAMED',
    '--add-exports=java.rmi/sun.rmi.registry=ALL-UNNAMED',
    '--add-exports=java.security.jgss/sun.security.krb5=ALL-UNNAMED',
] + [f'--add-opens=java.base/{p}=ALL-UNNAMED' for p in (
    'java.lang', 'java.net', 'java.io', 'java.nio', 'sun.nio.ch',
    'java.lang.reflect', 'java.text', 'java.time', 'java.util',
    'java.util.concurrent', 'java.util.concurrent.atomic',
    'java.util.concurrent.locks')]
LOG4J = """\
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = MainAppender
appender.main.name = MainAppender
appender.main.type = File
appender.main.append = true
appender.main.fileName = ${sys:log.file}
appender.main.layout.type = PatternLayout
appender.main.layout.pattern = %d{yyyy-MM-dd HH:mm:ss,SSS} %-5p %-60c %x - %m%n
"""


# How the cluster's JVMs compile and collect (`up --jit`). 'quick': the
# client compiler only and the serial collector, for jobs of seconds on
# one machine's few cores, where the server compiler's and the parallel
# collectors' threads cost more CPU than they win back (the small pipeline
# on 2 TaskManagers, 2 cores: JVM CPU 106 -> 52 s, the run 129 -> 110 s;
# 100k rows: docs/scale.md). 'full': the JVM's defaults, for long jobs.
JIT_FLAGS = {'quick': ['-XX:TieredStopAtLevel=1', '-XX:+UseSerialGC'],
             'full': []}


class ClusterError(SystemExit):
  """Why the cluster cannot start (or stop), in words a user can act on."""


@dataclasses.dataclass
class Settings:
  """One cluster's shape and addresses (the `up` flags)."""
  state_dir: str = STATE_DIR
  task_managers: int = 2
  slots: int = 1                      # per TaskManager
  taskmanager_memory: str = '4096m'   # process size, per TaskManager
  managed_fraction: float = 0.2       # of Flink memory, for sorting
  network_memory: str = '512m'        # per TaskManager, see flink_conf
  task_off_heap_memory: str = '512m'  # per TaskManager, see flink_conf
  jobmanager_memory: str = '1024m'
  rest_port: int = 8081
  rpc_port: int = 6123
  job_port: int = 8099
  artifact_port: int = 8098
  expansion_port: int = 8097
  worker_pool_port: int = 50000
  jit: str = 'quick'                  # JIT_FLAGS' key, see there
  cache: str = ''                     # distribution.cache_root() if empty

  def ports(self) -> Dict[str, int]:
    return {'--rest-port': self.rest_port, '--rpc-port': self.rpc_port,
            '--job-port': self.job_port,
            '--artifact-port': self.artifact_port,
            '--expansion-port': self.expansion_port,
            '--worker-pool-port': self.worker_pool_port}


# How long a TaskManager keeps a job's SDK harness after a stage used it.
# Without it each stage of a batch job starts a harness of its own, and each
# re-imports TensorFlow: 7-8 harnesses for one CsvExampleGen job here.
ENVIRONMENT_CACHE_MS = 10000


def beam_flags(settings: Settings) -> List[str]:
  """What a pipeline passes to run its Beam jobs on this cluster."""
  return ['--runner=PortableRunner',
          f'--job_endpoint=localhost:{settings.job_port}',
          '--environment_type=EXTERNAL',
          f'--environment_config=localhost:{settings.worker_pool_port}',
          f'--environment_cache_millis={ENVIRONMENT_CACHE_MS}',
          # Ship no jars with a job: the TaskManagers have them (see
          # cluster/java/NoStagingDetectorFactory.java).
          '--pipeline_resources_detector_factory_class='
          + distribution.NO_STAGING_CLASS]


def on_free_ports(state_dir: str, task_managers: int) -> Settings:
  """Settings whose ports are free now (tests and benches run a cluster
  of their own beside a user's)."""
  sockets = [socket.socket() for _ in range(6)]
  try:
    for s in sockets:
      s.bind((HOST, 0))
    rest, rpc, job, artifact, expansion, pool = (
        s.getsockname()[1] for s in sockets)
  finally:
    for s in sockets:
      s.close()
  return Settings(state_dir=state_dir, task_managers=task_managers,
                  rest_port=rest, rpc_port=rpc, job_port=job,
                  artifact_port=artifact, expansion_port=expansion,
                  worker_pool_port=pool)


def flink_conf(settings: Settings) -> str:
  """flink-conf.yaml: everything on loopback; parallelism = all slots.

  Network memory is set, not derived (10% of the process): the
  StatisticsGen job's graph is wide enough that 2560m's derived 166 MiB
  (5,079 buffers) failed it with "Insufficient number of network buffers:
  required 512, but only 464 available". Task off-heap memory is set too
  (Flink's default is none): Beam's gRPC channels to the Python harness
  allocate direct buffers, and CsvExampleGen on 1M rows failed with
  "OutOfMemoryError: Direct buffer memory" without it. The task heap holds
  what harnesses send back before Flink takes it (Beam's data channel
  buffers per running task): with a 3 GiB process and Flink's 40% managed
  memory it was ~0.4 GiB, and 1M rows on 2 TaskManagers ran out of Java
  heap in a gRPC thread (the job then hung); 4 GiB with 20% managed.
  """
  slots = settings.task_managers * settings.slots
  conf = {
      'jobmanager.rpc.address': HOST,
      'jobmanager.rpc.port': settings.rpc_port,
      'jobmanager.bind-host': HOST,
      'jobmanager.memory.process.size': settings.jobmanager_memory,
      'taskmanager.bind-host': HOST,
      'taskmanager.host': HOST,
      'taskmanager.numberOfTaskSlots': settings.slots,
      'taskmanager.memory.process.size': settings.taskmanager_memory,
      'taskmanager.memory.network.min': settings.network_memory,
      'taskmanager.memory.network.max': settings.network_memory,
      'taskmanager.memory.task.off-heap.size': settings.task_off_heap_memory,
      'taskmanager.memory.managed.fraction': settings.managed_fraction,
      # An error in a thread of Flink's (that OutOfMemoryError) kills the
      # TaskManager, so the job fails, instead of being logged while the
      # job waits forever.
      'cluster.uncaught-exception-handling': 'FAIL',
      'parallelism.default': slots,
      'rest.address': HOST,
      'rest.bind-address': HOST,
      'rest.port': settings.rest_port,
      'blob.server.port': 0,
      # Beam's runner and its dependencies come from the TaskManagers' own
      # classpath (beam_classpath), not from each job's jars: only then does
      # Beam keep a job's SDK harnesses between its stages
      # (--environment_cache_millis; Beam releases at once what a job's
      # classloader loaded). All of it: parent-first for Beam's classes only
      # split joda-time across two loaders (ClassCastException, joda
      # Duration to joda Duration).
      'classloader.resolve-order': 'parent-first',
      'io.tmp.dirs': os.path.join(settings.state_dir, 'tmp'),
      'web.tmpdir': os.path.join(settings.state_dir, 'tmp'),
  }
  return ''.join(f'{key}: {value}\n' for key, value in conf.items())


def java() -> str:
  """$JAVA_HOME/bin/java, else java on PATH; Java 11 or newer."""
  home = os.environ.get('JAVA_HOME')
  path = os.path.join(home, 'bin', 'java') if home else shutil.which('java')
  if not path or not os.access(path, os.X_OK):
    raise ClusterError(
        'Java not found (JAVA_HOME unset and no java on PATH): Flink needs '
        'a JDK 11 or 17 (apt-get install openjdk-17-jre-headless)')
  out = subprocess.run([path, '-version'], capture_output=True, text=True,
                       check=False).stderr
  try:
    quoted = out.split('"')[1]
    major = int(quoted.split('.')[0] if not quoted.startswith('1.')
                else quoted.split('.')[1])
  except (IndexError, ValueError):
    raise ClusterError(f'{path} -version printed no version: {out[:200]}')
  if major < 11:
    raise ClusterError(f'{path} is Java {major}; Flink 1.16 with Beam 2.59 '
                       'needs Java 11 or 17')
  return path


def _resource_flags(java_bin: str, conf_dir: str, kind: str,
                    cache: str) -> List[List[str]]:
  """[JVM flags, dynamic -D flags] from Flink's BashJavaUtils, as
  bin/jobmanager.sh and bin/taskmanager.sh compute them."""
  home = distribution.flink_home(cache)
  classpath = (os.path.join(home, 'bin', 'bash-java-utils.jar') +
               os.pathsep + distribution.flink_classpath(cache))
  result = subprocess.run(
      [java_bin, '-cp', classpath,
       'org.apache.flink.runtime.util.bash.BashJavaUtils',
       f'GET_{kind}_RESOURCE_PARAMS', '--configDir', conf_dir],
      capture_output=True, text=True, check=False)
  lines = [l.split(':', 1)[1] for l in result.stdout.splitlines()
           if l.startswith('BASH_JAVA_UTILS_EXEC_RESULT:')]
  if result.returncode != 0 or len(lines) < 2:
    raise ClusterError(f'Flink cannot size the {kind} memory from '
                       f'{conf_dir}/flink-conf.yaml:\n'
                       + (result.stdout + result.stderr)[-1500:])
  return [lines[-2].split(), lines[-1].split()]


def _state_path(state_dir: str) -> str:
  return os.path.join(state_dir, 'cluster.json')


def read_state(state_dir: str = STATE_DIR) -> Optional[Dict]:
  try:
    with open(_state_path(state_dir)) as f:
      return json.load(f)
  except FileNotFoundError:
    return None
  except (ValueError, OSError) as e:
    raise ClusterError(f'{_state_path(state_dir)} is unreadable ({e}); '
                       'stop its processes by hand and remove it')


def beam_classpath(cache: str = '') -> List[str]:
  """The job server's jars minus Flink's own and the logging binding:
  Beam's runner on the JobManager's and TaskManagers' classpath, beside
  Flink's lib/, so that no job needs to ship it."""
  lib = os.path.join(distribution.job_server_home(cache), 'lib')
  return [os.path.join(lib, jar) for jar in sorted(os.listdir(lib))
          if not jar.startswith(('flink-', 'slf4j-'))]


def _flink_process(name: str, main_class: str, kind: str, java_bin: str,
                   conf_dir: str, settings: Settings) -> List[str]:
  jvm, dynamic = _resource_flags(java_bin, conf_dir, kind, settings.cache)
  log_file = os.path.join(settings.state_dir, 'log', f'{name}.log')
  # The JobManager too: it deserializes a job's configuration, which names
  # Beam classes (FlinkExecutionEnvironments$GlobalJobParametersImpl).
  classpath = [distribution.flink_classpath(settings.cache)]
  classpath += beam_classpath(settings.cache)
  return ([java_bin] + JAVA17_FLAGS + JIT_FLAGS[settings.jit] + jvm +
          [f'-Dlog.file={log_file}',
           f'-Dlog4j.configurationFile=file:{conf_dir}/log4j.properties',
           '-cp', os.pathsep.join(classpath), main_class,
           '--configDir', conf_dir] + dynamic)


def _overview(settings: Settings) -> Optional[Dict]:
  url = f'http://{HOST}:{settings.rest_port}/overview'
  try:
    with urllib.request.urlopen(url, timeout=2) as response:
      return json.load(response)
  except (urllib.error.URLError, OSError, ValueError):
    return None


def _wait_ready(processes: List[Dict], settings: Settings,
                timeout: float) -> None:
  """Until every part answers (project/waiting.wait_until); ClusterError
  naming the part still awaited, or the process that exited, if not."""
  awaited = ['the JobManager']

  def ready() -> bool:
    for process in processes:
      if not daemons.alive(process):
        raise ClusterError(f'{process["name"]} exited during start-up; the '
                           f'end of {process["log"]}:\n'
                           + daemons.tail(process['log']))
    overview = _overview(settings)
    if overview is None:
      awaited[0] = f'the JobManager (http://{HOST}:{settings.rest_port})'
    elif overview.get('taskmanagers', 0) < settings.task_managers:
      awaited[0] = (f'{settings.task_managers} TaskManagers (registered: '
                    f'{overview.get("taskmanagers", 0)})')
    elif not daemons.listening(HOST, settings.job_port):
      awaited[0] = f'the Beam job server (port {settings.job_port})'
    elif not daemons.listening(HOST, settings.worker_pool_port):
      awaited[0] = f'the worker pool (port {settings.worker_pool_port})'
    else:
      return True
    return False

  try:
    waiting.wait_until(ready, timeout, interval=0.5, what='the cluster')
  except waiting.WaitTimeout:
    raise ClusterError(f'timed out after {timeout:.0f} s waiting for '
                       f'{awaited[0]}; logs in {settings.state_dir}/log'
                      ) from None


def up(settings: Settings, timeout: float = 120, log=print) -> Dict:
  """Starts the cluster and waits until every part answers; returns the
  state written to <state_dir>/cluster.json. Nothing is left running when
  it fails."""
  if settings.task_managers < 1 or settings.slots < 1:
    raise ClusterError('--task-managers and --slots must be at least 1')
  state = read_state(settings.state_dir)
  if state and any(daemons.alive(p) for p in state['processes']):
    raise ClusterError(f'a cluster from {settings.state_dir} is running '
                       '(python -m cluster status; python -m cluster down)')
  busy = [f'{flag} {port}' for flag, port in settings.ports().items()
          if not daemons.port_free(port)]
  if busy:
    raise ClusterError('port(s) in use: ' + ', '.join(busy) +
                       ' (another cluster? pick others with these flags)')
  not_fetched = distribution.missing(settings.cache)
  if not_fetched:
    raise ClusterError('not fetched yet: ' + '; '.join(not_fetched) +
                       ' (make flink-fetch, or python -m cluster fetch)')
  java_bin = java()

  conf_dir = os.path.join(settings.state_dir, 'conf')
  for sub in ('conf', 'log', 'tmp', 'artifacts'):
    os.makedirs(os.path.join(settings.state_dir, sub), exist_ok=True)
  with open(os.path.join(conf_dir, 'flink-conf.yaml'), 'w') as f:
    f.write(flink_conf(settings))
  with open(os.path.join(conf_dir, 'log4j.properties'), 'w') as f:
    f.write(LOG4J)

  processes: List[Dict] = []
  state = {'settings': dataclasses.asdict(settings), 'processes': processes,
           'beam_flags': beam_flags(settings)}
  try:
    processes.append(daemons.start('jobmanager', _flink_process(
        'jobmanager',
        'org.apache.flink.runtime.entrypoint.StandaloneSessionClusterEntrypoint',
        'JM', java_bin, conf_dir, settings), settings.state_dir))
    _write_state(settings.state_dir, state)  # `down` can stop a partial one
    for i in range(1, settings.task_managers + 1):
      name = f'taskmanager-{i}'
      cmd = _flink_process(
          name, 'org.apache.flink.runtime.taskexecutor.TaskManagerRunner',
          'TM', java_bin, conf_dir, settings)
      processes.append(daemons.start(name, cmd + ['-D',
                                           f'taskmanager.resource-id={name}'],
                              settings.state_dir))
      _write_state(settings.state_dir, state)
    processes.append(daemons.start('job-server', [
        java_bin] + JAVA17_FLAGS + JIT_FLAGS[settings.jit] + [
            '-cp', distribution.job_server_classpath(settings.cache),
            distribution.JOB_SERVER_MAIN,
            f'--flink-master={HOST}:{settings.rest_port}',
            f'--flink-conf-dir={conf_dir}',
            f'--job-host={HOST}', f'--job-port={settings.job_port}',
            f'--artifact-port={settings.artifact_port}',
            f'--expansion-port={settings.expansion_port}',
            f'--artifacts-dir={os.path.join(settings.state_dir, "artifacts")}',
        ], settings.state_dir))
    _write_state(settings.state_dir, state)
    # The harnesses inherit the hash seed the pipeline's own process runs
    # with (ops/reproducible.py): the same grouping on every run.
    env = dict(os.environ, PYTHONHASHSEED=reproducible.HASH_SEED,
               PYTHONPATH=paths.REPO_ROOT + (
                   os.pathsep + os.environ['PYTHONPATH']
                   if os.environ.get('PYTHONPATH') else ''))
    processes.append(daemons.start('worker-pool', [
        sys.executable, '-m', 'cluster.worker_pool',
        '--address', f'{HOST}:{settings.worker_pool_port}'], settings.state_dir,
        env))
    _write_state(settings.state_dir, state)
    _wait_ready(processes, settings, timeout)
  except BaseException:
    daemons.stop(processes)
    _remove_state(settings.state_dir)
    raise
  state['ready_at'] = time.time()
  _write_state(settings.state_dir, state)
  return state


def _write_state(state_dir: str, state: Dict) -> None:
  tmp = _state_path(state_dir) + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(state, f, indent=1)
  os.replace(tmp, _state_path(state_dir))


def _remove_state(state_dir: str) -> None:
  try:
    os.remove(_state_path(state_dir))
  except FileNotFoundError:
    pass


def down(state_dir: str = STATE_DIR) -> List[str]:
  """Stops the cluster recorded in state_dir; the names of what it
  stopped (empty: nothing was running)."""
  state = read_state(state_dir)
  if not state:
    return []
  stopped = daemons.stop(state['processes'])
  _remove_state(state_dir)
  return stopped


def status(state_dir: str = STATE_DIR) -> Optional[Dict]:
  """The recorded processes (alive or not) and Flink's /overview."""
  state = read_state(state_dir)
  if not state:
    return None
  settings = Settings(**state['settings'])
  return {'processes': [dict(p, alive=daemons.alive(p))
                        for p in state['processes']],
          'overview': _overview(settings),
          'web_ui': f'http://{HOST}:{settings.rest_port}',
          'beam_flags': state['beam_flags']}
