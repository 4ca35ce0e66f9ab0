"""The baseline rule (components/baseline.py) on a real base path layout.

The resolver that applies it runs in tests/pipeline/test_pipeline_local.py
(push, rollback, CD rejection); here each case that must change the answer.
"""

import os

from components import baseline
from delivery import versions
from serving import base_path


def _base(tmp_path, numbers):
  base = tmp_path / 'taxi'
  for v in numbers:
    (base / str(v)).mkdir(parents=True)
  return str(base)


def _config(tmp_path, base, stable=None):
  labels = (f'version_labels {{ key: "stable" value: {stable} }}'
            if stable is not None else '')
  path = tmp_path / 'models.config'
  path.write_text(f'model_config_list {{ config {{ name: "taxi" base_path: '
                  f'"{base}" model_platform: "tensorflow" {labels} }} }}')
  return str(path)


def test_newest_served_version_first(tmp_path):
  base = _base(tmp_path, [1, 2, 3])
  assert baseline.baseline_versions(base) == [3, 2, 1]
  assert baseline.baseline_versions(str(tmp_path / 'none')) == []


def test_rolled_back_versions_are_never_a_baseline(tmp_path):
  base = _base(tmp_path, [1, 2, 3])
  versions.rollback(base, 3)
  assert os.path.isdir(os.path.join(base, base_path.ROLLED_BACK_DIR, '3'))
  assert baseline.baseline_versions(base) == [2, 1]


def test_a_cd_rejected_version_is_never_a_baseline(tmp_path):
  """CD keeps a rejected version on disk when a label still points at it;
  its verdict in the action log keeps it out. A later promotion of it
  (a newer verdict) lets it back in; a torn line is ignored."""
  base = _base(tmp_path, [1, 2, 3])
  versions._log_action(base, 'cd_done', version=3, decision='rolled_back')  # pylint: disable=protected-access
  with open(os.path.join(base, base_path.ACTION_LOG), 'a') as f:
    f.write('{"action": "cd_done", "vers')  # a writer killed mid-line
  assert baseline.rejected_by_cd(base) == [3]
  assert baseline.baseline_versions(base) == [2, 1]
  with open(os.path.join(base, base_path.ACTION_LOG), 'a') as f:
    f.write('\n')
  versions._log_action(base, 'cd_done', version=3, decision='promoted')  # pylint: disable=protected-access
  assert baseline.baseline_versions(base) == [3, 2, 1]


def test_a_cd_rejected_version_a_person_restores_is_a_baseline_again(tmp_path):
  """CD rolled 3 back (cd_done rolled_back, then the rollback itself);
  `delivery.versions restore 3` serves it again, and the baseline rule
  follows what is served: 3 first again. Until the restore it is out."""
  base = _base(tmp_path, [1, 2, 3])
  versions.rollback(base, 3)
  versions._log_action(base, 'cd_done', version=3, decision='rolled_back')  # pylint: disable=protected-access
  assert baseline.baseline_versions(base) == [2, 1]
  versions.restore(base, 3)
  assert baseline.rejected_by_cd(base) == []
  assert baseline.baseline_versions(base) == [3, 2, 1]
  # A newer CD verdict after the restore counts again.
  versions._log_action(base, 'cd_done', version=3, decision='rolled_back')  # pylint: disable=protected-access
  assert baseline.baseline_versions(base) == [2, 1]


def test_the_stable_label_wins_over_newer_versions(tmp_path):
  base = _base(tmp_path, [1, 2, 3])
  assert baseline.baseline_versions(
      base, _config(tmp_path, base, stable=1)) == [1, 3, 2]
  # A label pointing at a version that is gone counts for nothing.
  assert baseline.baseline_versions(
      base, _config(tmp_path, base, stable=9)) == [3, 2, 1]
  assert baseline.baseline_versions(base, _config(tmp_path, base)) == [
      3, 2, 1]
