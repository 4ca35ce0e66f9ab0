"""cluster/distribution.py: what the Flink cluster runs from, and its pins."""

import os
import re
import subprocess
import xml.etree.ElementTree as ET
import zipfile

import pytest

from cluster import distribution
from tests import flink_cluster

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
POM_NS = {'m': 'http://maven.apache.org/POM/4.0.0'}


def _pom_property(name: str) -> str:
  root = ET.parse(distribution.POM).getroot()
  return root.find(f'm:properties/m:{name}', POM_NS).text


def test_the_runner_is_the_release_of_the_locked_beam_sdk():
  with open(os.path.join(REPO, 'requirements.lock')) as f:
    locked = re.search(r'^apache-beam==(\S+)$', f.read(), re.M).group(1)
  assert locked == distribution.BEAM_VERSION == _pom_property('beam.version')
  distribution.check_beam_version()  # the installed SDK agrees too


def test_a_different_installed_beam_is_refused(monkeypatch):
  monkeypatch.setattr(distribution, 'BEAM_VERSION', '2.61.0')
  with pytest.raises(distribution.FetchError, match='same release'):
    distribution.check_beam_version()


def test_an_empty_cache_names_both_pieces(tmp_path):
  assert [line.split(' (')[0] for line in distribution.missing(
      str(tmp_path))] == ['Flink 1.16.3 jars',
                          "Beam 2.59.0's Flink job server"]


def test_an_interrupted_fetch_is_not_taken_for_a_finished_one(tmp_path):
  # What a fetch killed mid-way leaves: its temporary folders, never the
  # final names (they appear by rename, complete).
  (tmp_path / '.flink-abc' / 'home' / 'lib').mkdir(parents=True)
  (tmp_path / '.job-server-abc' / 'home' / 'lib').mkdir(parents=True)
  assert len(distribution.missing(str(tmp_path))) == 2


def test_no_maven_is_a_one_line_error(tmp_path, monkeypatch):
  monkeypatch.setenv('PATH', str(tmp_path))
  with pytest.raises(distribution.FetchError, match=r'Maven \(mvn\) not found'):
    distribution.fetch_job_server(str(tmp_path))
  assert os.listdir(tmp_path) == []


def test_launcher_manifest_lines_fold_at_72_bytes(tmp_path):
  jars = [f'lib/some-rather-long-artifact-name-{i}-1.2.3.jar' for i in range(40)]
  path = str(tmp_path / 'launcher.jar')
  distribution.write_launcher_jar(path, 'org.example.Main', jars)
  with zipfile.ZipFile(path) as jar:
    manifest = jar.read('META-INF/MANIFEST.MF').decode()
  lines = manifest.split('\r\n')
  assert all(len(line.encode()) <= 72 for line in lines)
  unfolded = manifest.replace('\r\n ', '')
  assert 'Main-Class: org.example.Main\r\n' in unfolded
  assert ('Class-Path: ' + ' '.join(jars) + '\r\n') in unfolded


@pytest.mark.integration
def test_java_runs_the_fetched_job_server_from_its_launcher_jar():
  # What Beam's --flink_job_server_jar does with it: `java -jar`. The job
  # server's own usage message proves the manifest's Class-Path resolved.
  flink_cluster.require_fetched()
  result = subprocess.run(['java', '-jar', distribution.job_server_jar(),
                           '--help'], capture_output=True, text=True,
                          timeout=120, check=False)
  assert '--flink-master' in result.stdout + result.stderr, (
      result.stdout[-2000:] + result.stderr[-2000:])
