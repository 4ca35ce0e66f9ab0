"""The Pusher executor: its duplicate check (served and rolled-back
versions), its lock, the litter of a killed push, and the push record."""

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

from components import pusher
from delivery import version_list
from serving import base_path
from tests import helpers


def test_same_model_is_found_among_served_and_rolled_back(tmp_path,
                                                          trained_model):
  model_dir = trained_model.serving_model_dir
  base = tmp_path / 'taxi'
  assert pusher.version_with_same_model(str(base), model_dir) is None
  shutil.copytree(model_dir, base / base_path.ROLLED_BACK_DIR / '5')
  assert pusher.version_with_same_model(str(base), model_dir) == 5
  shutil.copytree(model_dir, base / '7')
  assert pusher.version_with_same_model(str(base), model_dir) == 7
  assert pusher.versions(str(base)) == [7]


def test_a_different_model_is_not_a_duplicate(tmp_path, trained_model):
  other = tmp_path / 'other'
  shutil.copytree(trained_model.serving_model_dir, other)
  with open(other / 'fingerprint.pb', 'ab') as f:
    f.write(b'changed')
  base = tmp_path / 'taxi'
  shutil.copytree(trained_model.serving_model_dir, base / '1')
  assert pusher.version_with_same_model(str(base), str(other)) is None
  assert os.path.exists(base / '1' / 'saved_model.pb')


# --- the push itself: lock, litter of killed pushes, the push record ------
BOUND_S = 300  # bounds a wait that should end, never a measured time
def _different_model(tmp_path, model_dir, name):
  """The same SavedModel with another fingerprint: not a duplicate."""
  other = tmp_path / name
  shutil.copytree(model_dir, other)
  with open(other / 'fingerprint.pb', 'ab') as f:
    f.write(name.encode())
  return str(other)


def test_a_push_records_its_lineage_in_the_version(tmp_path, trained_model):
  """Killed after the rename, before ML Metadata recorded the push: the
  version is served, and `versions list` still says which run pushed it
  (before: run=? blessed=None)."""
  from lineage import metadata_store  # pylint: disable=g-import-not-at-top
  from serving import model_registry  # pylint: disable=g-import-not-at-top
  from delivery import versions  # pylint: disable=g-import-not-at-top
  model_dir = trained_model.serving_model_dir
  base = tmp_path / 'taxi'
  pushed = helpers.push(tmp_path / 'pipeline', model_dir, base, run_id='run-7')
  version = int(pushed.get_string_custom_property('pushed_version'))
  version_dir = str(base / str(version))
  record = base_path.read_push_record(version_dir)
  assert record['pipeline_name'] == 'taxi_pipeline'
  assert record['pipeline_run_id'] == 'run-7'
  assert record['node_id'] == 'Pusher'
  assert record['execution_id'] == helpers.EXECUTION_ID
  assert (record['model_id'], record['blessing_id']) == (helpers.MODEL_ID,
                                                         helpers.BLESSING_ID)
  assert record['model_uri'].endswith(os.path.join('Trainer', 'model', '3'))
  assert record['blessed'] is True and record['version'] == version
  assert record['fingerprint']['file'] == 'fingerprint.pb'
  assert record['pushed_at']
  # The record changes neither the duplicate check nor what is served.
  assert pusher.version_with_same_model(str(base), model_dir) == version
  assert not os.path.exists(os.path.join(pushed.uri, base_path.PUSH_RECORD))
  loaded = model_registry.load_version(version_dir, version)
  assert 'serving_raw' in loaded.signature_defs
  # An ML Metadata store that never heard of the version (the killed run).
  store = metadata_store.open_store(metadata_store.sqlite_config(
      str(tmp_path / 'metadata.sqlite')))
  for store_or_none in (None, store):
    (info,) = version_list.list_versions(str(base), store_or_none)
    assert (info.run, info.blessed, info.lineage_source) == (
        'run-7', True, 'push record')
  versions.rollback(str(base), version)  # still known where it went
  (info,) = version_list.list_versions(str(base), store)
  assert info.rolled_back and info.run == 'run-7'
  with open(base / versions.ACTION_LOG) as f:
    logged = [json.loads(line) for line in f]
  assert [(r['action'], r['version'] if 'version' in r else r['rolled_back'])
          for r in logged] == [('push', version), ('rollback', version)]


def test_a_push_waits_for_the_lock(tmp_path, trained_model, monkeypatch):
  """A rollback, promote or CD run holding the base path's lock keeps a
  push out until it ends (here: fails at once rather than wait)."""
  base = tmp_path / 'taxi'
  base.mkdir()
  monkeypatch.setattr(pusher, 'LOCK_TIMEOUT_S', 0)
  holder = subprocess.Popen(
      [sys.executable, '-c', 'import sys, time\n'
       'from serving import base_path\n'
       'with base_path.locked(sys.argv[1]):\n'
       '  print("held", flush=True)\n  time.sleep(3600)\n', str(base)],
      cwd=helpers.REPO, stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == 'held'
    with pytest.raises(base_path.Busy, match=f'pid {holder.pid}'):
      helpers.push(tmp_path / 'pipeline', trained_model.serving_model_dir, base)
    assert pusher.versions(str(base)) == []
  finally:
    holder.kill()
    holder.wait(timeout=BOUND_S)
  pushed = helpers.push(tmp_path / 'pipeline', trained_model.serving_model_dir, base)
  assert pusher.versions(str(base)) == [
      int(pushed.get_string_custom_property('pushed_version'))]


_KILLED_PUSH = '''
import sys, time
from components import pusher
from delivery import version_list
from tests import helpers
copy = pusher.io_utils.copy_dir

def copy_then_hang(src, dst, *args, **kwargs):
  copy(src, dst, *args, **kwargs)
  if '.incoming-' in dst:
    print('copied', dst, flush=True)
    time.sleep(3600)  # killed -9 here: copied, not renamed
pusher.io_utils.copy_dir = copy_then_hang
helpers.push(sys.argv[1], sys.argv[2], sys.argv[3])
'''


def test_push_killed_mid_copy_leaves_litter_the_next_push_removes(
    tmp_path, trained_model):
  """kill -9 while the Pusher holds the lock with a full `.incoming-<v>`:
  the kernel frees the lock, nothing is served, and the next push (of
  another model, so another version number) removes the litter."""
  from serving import model_config  # pylint: disable=g-import-not-at-top
  base = tmp_path / 'taxi'
  proc = subprocess.Popen(
      [sys.executable, '-c', _KILLED_PUSH, str(tmp_path / 'killed'),
       trained_model.serving_model_dir, str(base)],
      cwd=helpers.REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
      text=True)
  try:
    line = proc.stdout.readline().split()
    assert line[:1] == ['copied'], line
    assert base_path.holder(str(base))['pid'] == proc.pid
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=BOUND_S)
  (litter,) = base_path.incoming_dirs(str(base))
  assert litter == line[1].rstrip('/')
  assert model_config.versions_on_disk(str(base)) == []  # never half-served
  assert base_path.holder(str(base)) is None  # released by the kernel
  # Another version got pushed meanwhile, so the next push takes a number
  # after it, not the litter's (unlocked, only reusing it removed litter).
  killed = int(os.path.basename(litter)[len(base_path.INCOMING_PREFIX):])
  shutil.copytree(trained_model.serving_model_dir, base / str(killed + 1))
  pushed = helpers.push(tmp_path / 'next', _different_model(
      tmp_path, trained_model.serving_model_dir, 'next'), base)
  assert base_path.incoming_dirs(str(base)) == []
  version = int(pushed.get_string_custom_property('pushed_version'))
  assert version > killed + 1
  assert model_config.versions_on_disk(str(base)) == [killed + 1, version]
