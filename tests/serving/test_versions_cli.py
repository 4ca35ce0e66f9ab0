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


def test_promote_label_is_picked_up_by_a_running_server(tmp_path,
                                                        trained_model):
  base = tmp_path / 'taxi'
  base.mkdir()
  for version in (1, 2):
    _copy_version(trained_model.serving_model_dir, str(base), version)
  config = tmp_path / 'models.config'
  config.write_text('''model_config_list { config {
      name: "taxi" base_path: "taxi" model_platform: "tensorflow"
      model_version_policy { specific { versions: 1 } }
      version_labels { key: "stable" value: 1 } } }''')
  server = Server(None, extra=['--model_config_file', str(config),
                               '--model_config_file_poll_wait_seconds', '1'])
  try:
    label = lambda name: server.request(f'/v1/models/taxi/labels/{name}')  # pylint: disable=g-long-lambda
    assert label('stable')[1]['model_version_status'][0]['version'] == '1'
    assert label('canary')[0] == 404
    for name, version in (('canary', 2), ('stable', 2)):
      result = subprocess.run(
          [sys.executable, '-m', 'serving.versions', 'promote', str(version),
           '--label', name, '--model-config-file', str(config)],
          cwd=helpers.REPO, capture_output=True, text=True, timeout=60)
      assert result.returncode == 0, result.stderr
    assert _wait_for(lambda: label('stable')[0] == 200 and label('stable')[1][
        'model_version_status'][0]['version'] == '2')
    assert label('canary')[1]['model_version_status'][0]['version'] == '2'
    code, body = server.request('/v1/models/taxi')
    assert code == 200
    assert [s['version'] for s in body['model_version_status']] == ['2', '1']
  finally:
    server.stop()
  result = subprocess.run(
      [sys.executable, '-m', 'serving.versions', 'promote', '9', '--label',
       'stable', '--model-config-file', str(config)], cwd=helpers.REPO,
      capture_output=True, text=True, timeout=60)
  assert result.returncode != 0 and 'version 9 is not under' in result.stderr
