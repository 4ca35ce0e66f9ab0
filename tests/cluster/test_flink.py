"""cluster/flink.py: the local Flink cluster's life cycle, on real processes.

The fast tests check what `up` refuses before it starts anything. The
integration ones start a real JobManager, TaskManager, Beam job server and
worker pool (about 15-20 s), and attack them: what binds where, a second
`up`, a TaskManager killed with SIGKILL, `up` itself killed mid-start.
The pipeline on a cluster is tested in tests/runners/test_beam_runner.py.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest

from cluster import flink
from tests import flink_cluster

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def test_config_binds_loopback_and_uses_every_slot(tmp_path):
  settings = flink.Settings(state_dir=str(tmp_path), task_managers=3,
                            slots=2)
  conf = dict(line.split(': ', 1)
              for line in flink.flink_conf(settings).splitlines())
  for key in ('jobmanager.rpc.address', 'jobmanager.bind-host',
              'taskmanager.bind-host', 'taskmanager.host', 'rest.address',
              'rest.bind-address'):
    assert conf[key] == '127.0.0.1', key
  assert conf['parallelism.default'] == '6'
  assert conf['taskmanager.numberOfTaskSlots'] == '2'


def test_beam_flags_name_the_job_server_and_the_pool():
  settings = flink.Settings(job_port=1234, worker_pool_port=4321)
  assert flink.beam_flags(settings) == [
      '--runner=PortableRunner', '--job_endpoint=localhost:1234',
      '--environment_type=EXTERNAL', '--environment_config=localhost:4321',
      '--environment_cache_millis=10000',
      '--pipeline_resources_detector_factory_class='
      'tfxreference.flink.NoStagingDetectorFactory']


def test_the_job_server_option_is_declared_to_beam():
  # Without the declaration Beam's Python SDK drops the flag ("Discarding
  # unparseable args") and every job ships ~160 MB of jars.
  from apache_beam.options import pipeline_options  # pylint: disable=g-import-not-at-top
  from pipeline import job_server_options  # pylint: disable=g-import-not-at-top,unused-import
  flag = flink.beam_flags(flink.Settings())[-1]
  options = pipeline_options.PipelineOptions([flag]).get_all_options()
  assert options['pipeline_resources_detector_factory_class'] == (
      'tfxreference.flink.NoStagingDetectorFactory')


def test_a_busy_port_is_refused_before_anything_starts(tmp_path):
  settings = flink.on_free_ports(str(tmp_path), 1)
  with socket.socket() as busy:
    busy.bind(('127.0.0.1', settings.job_port))
    busy.listen()
    with pytest.raises(flink.ClusterError,
                       match=f'port.* in use: --job-port {settings.job_port}'):
      flink.up(settings)
  assert os.listdir(tmp_path) == []


def test_nothing_fetched_is_named_with_the_command(tmp_path):
  settings = flink.on_free_ports(str(tmp_path / 'state'), 1)
  settings.cache = str(tmp_path / 'empty-cache')
  with pytest.raises(flink.ClusterError,
                     match=r'not fetched yet: Flink 1\.16\.3 jars .*'
                     r"Beam 2\.59\.0's Flink job server .*make flink-fetch"):
    flink.up(settings)


def test_missing_java_is_named(monkeypatch, tmp_path):
  monkeypatch.setenv('JAVA_HOME', str(tmp_path / 'no-jdk'))
  with pytest.raises(flink.ClusterError, match='Java not found'):
    flink.java()


def test_the_cli_says_when_no_cluster_runs(tmp_path):
  result = subprocess.run(
      [sys.executable, '-m', 'cluster', '--state-dir', str(tmp_path),
       'status'], cwd=REPO, capture_output=True, text=True, check=False)
  assert result.returncode == 1
  assert 'no cluster started from' in result.stderr
  assert 'Warning' not in result.stderr


def _listen_hosts(pid: int):
  """The addresses a process (and its children) listen on."""
  procs = [psutil.Process(pid)] + psutil.Process(pid).children(recursive=True)
  return {c.laddr.ip for p in procs for c in p.net_connections('tcp')
          if c.status == psutil.CONN_LISTEN}


@pytest.fixture(scope='module')
def cluster(tmp_path_factory):
  yield from flink_cluster.started(
      str(tmp_path_factory.mktemp('flink')), task_managers=1)


@pytest.mark.integration
def test_every_part_answers_and_flink_binds_loopback(cluster):
  info = flink.status(cluster.state_dir)
  assert [p['name'] for p in info['processes']] == [
      'jobmanager', 'taskmanager-1', 'job-server', 'worker-pool']
  assert all(p['alive'] for p in info['processes'])
  assert info['overview']['taskmanagers'] == 1
  assert info['overview']['flink-version'] == '1.16.3'
  by_name = {p['name']: p['pid'] for p in info['processes']}
  for name in ('jobmanager', 'taskmanager-1', 'worker-pool'):
    hosts = _listen_hosts(by_name[name])
    assert hosts and hosts <= {'127.0.0.1', '::ffff:127.0.0.1'}, (name, hosts)
  # Documented in cluster/flink.py: Beam's job server ignores --job-host
  # for its job and artifact ports. If this fails, Beam fixed it: say so.
  assert _listen_hosts(by_name['job-server']) & {'0.0.0.0', '::'}
  # The default --jit reaches every JVM's command line.
  assert cluster.jit == 'quick'
  for name in ('jobmanager', 'taskmanager-1', 'job-server'):
    cmdline = psutil.Process(by_name[name]).cmdline()
    for flag in flink.JIT_FLAGS['quick']:
      assert flag in cmdline, (name, flag)


@pytest.mark.integration
def test_a_second_up_is_refused_while_one_runs(cluster):
  with pytest.raises(flink.ClusterError, match='is running'):
    flink.up(cluster)


@pytest.mark.integration
def test_a_killed_task_manager_shows_in_status_and_down_cleans_up(cluster):
  # The module's cluster, last: this test stops it.
  state_dir = cluster.state_dir
  pids = {p['name']: p['pid'] for p in flink.read_state(state_dir)['processes']}
  os.kill(pids['taskmanager-1'], signal.SIGKILL)
  time.sleep(1)
  result = subprocess.run(
      [sys.executable, '-m', 'cluster', '--state-dir', state_dir, 'status'],
      cwd=REPO, capture_output=True, text=True, check=False)
  assert result.returncode == 1, result.stdout
  assert re.search(r'taskmanager-1 .* NOT RUNNING', result.stdout), (
      result.stdout)
  stopped = flink.down(state_dir)
  assert set(stopped) == {'jobmanager', 'job-server', 'worker-pool'}
  assert not [pid for pid in pids.values() if psutil.pid_exists(pid) and
              psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
  assert not os.path.exists(os.path.join(state_dir, 'cluster.json'))
  assert flink.down(state_dir) == []


@pytest.mark.integration
def test_up_killed_mid_start_leaves_what_down_can_stop(tmp_path):
  flink_cluster.require_fetched()
  settings = flink.on_free_ports(str(tmp_path), 1)
  args = [f'--{k.replace("_", "-")}={v}' for k, v in {
      'rest_port': settings.rest_port, 'rpc_port': settings.rpc_port,
      'job_port': settings.job_port, 'artifact_port': settings.artifact_port,
      'expansion_port': settings.expansion_port,
      'worker_pool_port': settings.worker_pool_port}.items()]
  with open(tmp_path.parent / f'{tmp_path.name}-up.out', 'w') as out:
    up = subprocess.Popen(
        [sys.executable, '-m', 'cluster', '--state-dir', str(tmp_path), 'up',
         '--task-managers', '1'] + args, cwd=REPO, stdout=out,
        stderr=subprocess.STDOUT)
  state_file = tmp_path / 'cluster.json'
  deadline = time.time() + 60
  while time.time() < deadline and not state_file.exists():
    time.sleep(0.1)
  up.kill()  # SIGKILL: no cleanup runs in `up`
  up.wait()
  with open(state_file) as f:
    started = [p['pid'] for p in json.load(f)['processes']]
  assert started  # at least the JobManager was recorded
  assert flink.down(str(tmp_path))
  for pid in started:
    assert not psutil.pid_exists(pid) or (
        psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
