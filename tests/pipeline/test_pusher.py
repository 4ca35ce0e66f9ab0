"""The Pusher executor's duplicate check: served and rolled-back versions."""

import os
import shutil

from pipeline import configs
from pipeline import pusher


def test_same_model_is_found_among_served_and_rolled_back(tmp_path,
                                                          trained_model):
  model_dir = trained_model.serving_model_dir
  base = tmp_path / 'taxi'
  assert pusher.version_with_same_model(str(base), model_dir) is None
  shutil.copytree(model_dir, base / configs.ROLLED_BACK_DIR / '5')
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
