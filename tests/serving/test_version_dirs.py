"""Which entries of a model base path are versions, as TF Serving decides it.

TF Serving takes a child of the base path as a version only if its name
parses as an int64; a larger number would be served here and then break
every API that carries the version as an int64 (gRPC Predict and
GetModelStatus answered INTERNAL "Value out of range"). A symlink is no
version either: one to the base path itself, or to a directory outside it,
was listed, served and reported as "SERVED (latest)" after a rollback.
"""

import os
import time

import pytest

from serving import model_config
from tests import helpers

INT64_MAX = 2**63 - 1


def test_only_int64_names_are_versions(tmp_path):
  for name in ('3', str(INT64_MAX), str(INT64_MAX + 1),
               '99999999999999999999'):
    (tmp_path / name).mkdir()
  assert model_config.versions_on_disk(str(tmp_path)) == [3, INT64_MAX]
  scan = model_config.scan_versions(str(tmp_path))
  assert scan.versions == [3, INT64_MAX]
  assert sorted(os.path.basename(s.path) for s in scan.skipped) == sorted(
      ['99999999999999999999', str(INT64_MAX + 1)])
  assert all('int64' in s.why for s in scan.skipped)


def test_symlinks_are_no_versions(tmp_path):
  base = tmp_path / 'taxi'
  outside = tmp_path / 'elsewhere'
  (base / '1').mkdir(parents=True)
  outside.mkdir()
  os.symlink(outside, base / '7')  # a directory outside the base path
  os.symlink(base, base / '8')  # the base path itself
  os.symlink(base / '1', base / '9')  # another version
  os.symlink(tmp_path / 'nowhere', base / '10')  # dangling
  assert model_config.versions_on_disk(str(base)) == [1]
  scan = model_config.scan_versions(str(base))
  assert sorted(os.path.basename(s.path) for s in scan.skipped) == [
      '10', '7', '8', '9']
  assert all('symlink' in s.why for s in scan.skipped)


def test_ordinary_entries_are_skipped_silently(tmp_path):
  """Hidden folders (.incoming-N, .rolled-back), files and other names are
  no versions, and nothing to warn about: the Pusher and rollback make
  them."""
  for name in ('.incoming-4', '.rolled-back', 'tmp', '-5', '1'):
    (tmp_path / name).mkdir()
  (tmp_path / '.versions.log').write_text('')
  scan = model_config.scan_versions(str(tmp_path))
  assert scan.versions == [1] and not scan.skipped


@pytest.fixture(scope='module')
def odd_base(tmp_path_factory, trained_model):
  """Version 1 (the trained model), a copy of it named past int64, a
  symlink to a copy outside the base path and one to the base path."""
  root = tmp_path_factory.mktemp('odd')
  base = str(root / 'taxi')
  os.makedirs(base)
  helpers.copy_version(trained_model.serving_model_dir, base, 1)
  helpers.copy_version(trained_model.serving_model_dir, base,
                       '99999999999999999999')
  helpers.copy_version(trained_model.serving_model_dir, str(root), 'outside')
  os.symlink(os.path.join(str(root), 'outside'), os.path.join(base, '7'))
  os.symlink(base, os.path.join(base, '8'))
  return base


@pytest.mark.integration
def test_server_serves_neither_and_warns_once(odd_base):
  server = helpers.Server(odd_base)
  try:
    ok = {'model_version_status': [{'version': '1', 'state': 'AVAILABLE',
                                    'status': {'error_code': 'OK',
                                               'error_message': ''}}]}
    assert server.request('/v1/models/taxi') == (200, ok)
    code, _ = server.request('/v1/models/taxi/versions/7')
    assert code == 404
    time.sleep(0.6)  # a few polls (every 0.2 s)
  finally:
    log = server.stop()
  for name in ('99999999999999999999', '7', '8'):
    warned = [line for line in log.splitlines() if 'WARNING' in line and
              os.path.join(odd_base, name) in line]
    assert len(warned) == 1, log  # once, not once per poll
