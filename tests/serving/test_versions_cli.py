"""Rollback while a server is serving, and what `list` reports."""

import json
import os
import subprocess
import sys

import pytest

from serving import versions
from tests import helpers
from tests.serving.test_model_server import Server
from tests.serving.test_model_server import _copy_version
from tests.serving.test_model_server import _wait_for

pytestmark = pytest.mark.integration


def test_rollback_while_serving(tmp_path, trained_model):
  base = str(tmp_path / 'taxi')
  os.makedirs(base)
  for version in (1, 2):
    _copy_version(trained_model.serving_model_dir, base, version)
  server = Server(base)
  try:
    served = lambda: server.request('/v1/models/taxi')[1][  # pylint: disable=g-long-lambda
        'model_version_status'][0]['version']
    assert served() == '2'
    result = subprocess.run(
        [sys.executable, '-m', 'serving.versions', 'rollback',
         '--model-base-path', base], cwd=helpers.REPO, capture_output=True,
        text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert 'rolled_back=2' in result.stdout and 'now_serving=1' in result.stdout
    assert _wait_for(lambda: served() == '1')
    code, body = server.request('/v1/models/taxi/versions/2')
    assert code == 404
  finally:
    server.stop()
  listed = {i.version: i.rolled_back for i in versions.list_versions(base)}
  assert listed == {2: True, 1: False}
  with open(os.path.join(base, versions.ACTION_LOG)) as f:
    record = json.loads(f.readlines()[-1])
  assert record['action'] == 'rollback' and record['rolled_back'] == 2


def test_rollback_refuses_to_remove_the_only_version(tmp_path, trained_model):
  base = str(tmp_path / 'taxi')
  os.makedirs(base)
  _copy_version(trained_model.serving_model_dir, base, 1)
  with pytest.raises(SystemExit, match='at least two versions'):
    versions.rollback(base)
  assert os.path.isdir(os.path.join(base, '1'))
