"""TF Serving model config files and version policies."""

import pytest

from serving import model_config

CONFIG = '''
model_config_list {
  config {
    name: "taxi"
    base_path: "models/taxi"
    model_platform: "tensorflow"
    model_version_policy { specific { versions: 3 versions: 5 } }
    version_labels { key: "stable" value: 3 }
    version_labels { key: "canary" value: 5 }
  }
  config {
    name: "other"
    base_path: "/abs/other"
    model_version_policy { latest { num_versions: 2 } }
  }
}
'''


def test_parses_tf_serving_config_format(tmp_path):
  path = tmp_path / 'models.config'
  path.write_text(CONFIG)
  taxi, other = model_config.load(str(path))
  assert taxi.base_path == str(tmp_path / 'models' / 'taxi')
  assert taxi.policy == 'specific' and taxi.specific == (3, 5)
  assert taxi.labels == {'stable': 3, 'canary': 5}
  assert other.base_path == '/abs/other'
  assert (other.policy, other.num_versions) == ('latest', 2)


@pytest.mark.parametrize('config, expected', [
    (model_config.ModelConfig('m', '/x'), [7]),
    (model_config.ModelConfig('m', '/x', num_versions=2), [5, 7]),
    (model_config.ModelConfig('m', '/x', policy='all'), [1, 5, 7]),
    (model_config.ModelConfig('m', '/x', policy='specific', specific=(1, 9)),
     [1]),
])
def test_version_policies(config, expected):
  assert model_config.wanted_versions(config, [1, 5, 7]) == expected


def test_only_numeric_directories_are_versions(tmp_path):
  for name in ('1', '20', '.incoming-30', 'tmp'):
    (tmp_path / name).mkdir()
  (tmp_path / '40').write_text('a file, not a version')
  assert model_config.versions_on_disk(str(tmp_path)) == [1, 20]


def test_bad_config_is_rejected_clearly():
  with pytest.raises(ValueError, match='model_config_list'):
    model_config.parse('')
  with pytest.raises(ValueError, match='name and base_path'):
    model_config.parse('model_config_list { config { name: "x" } }')


def test_the_server_on_an_unreadable_config_is_one_line_and_exit_2(tmp_path):
  """As tensorflow_model_server: a config it cannot read stops it at start
  with one line naming the file (not a traceback)."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  from tests import helpers  # pylint: disable=g-import-not-at-top
  path = tmp_path / 'models.config'
  path.write_bytes(b'model_config_list { config { name: "t\xff" } }')
  done = subprocess.run(
      [sys.executable, '-m', 'serving', '--model_config_file', str(path)],
      cwd=helpers.REPO, capture_output=True, text=True, timeout=120,
      check=False)
  assert done.returncode == 2, done.stderr
  assert 'Traceback' not in done.stderr
  (line,) = [l for l in done.stderr.splitlines() if 'ERROR' in l]
  assert str(path) in line and 'not UTF-8' in line
