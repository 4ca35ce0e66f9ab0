"""What `delivery.versions` makes of odd input: version entries that are
no versions (past int64, symlinks), a model config file that cannot be
read, and labels TF Serving could never serve. Each is one clear line,
never a traceback, and nothing odd is written or counted."""

import os

import pytest

from delivery import config_file
from delivery import version_list
from delivery import versions
from serving import model_config
from tests import helpers

CONFIG = ('model_config_list { config { name: "taxi" base_path: "taxi" '
          'model_platform: "tensorflow" version_labels { key: "stable" '
          'value: 1 } } }\n')


@pytest.fixture
def base(tmp_path):
  """Versions 1 and 2 (empty directories), beside a model config file."""
  base = tmp_path / 'taxi'
  for v in (1, 2):
    (base / str(v)).mkdir(parents=True)
  (tmp_path / 'models.config').write_text(CONFIG)
  return base


def _flags(base):
  return ['--model-base-path', str(base), '--model-config-file',
          str(base.parent / 'models.config'), '--metadata-path',
          str(base.parent / 'absent.sqlite')]


def _error_line(capsys):
  err = capsys.readouterr().err.splitlines()
  assert len(err) == 1, err
  assert err[0].startswith('python -m delivery.versions: error: ')
  return err[0]


# --- version entries that are no versions ------------------------------------


def test_list_counts_neither_huge_numbers_nor_symlinks(base, tmp_path,
                                                       capsys):
  (base / '99999999999999999999').mkdir()
  (base / '.rolled-back' / '99999999999999999998').mkdir(parents=True)
  (tmp_path / 'outside').mkdir()
  os.symlink(tmp_path / 'outside', base / '7')
  os.symlink(base, base / '8')
  assert [i.version for i in version_list.list_versions(str(base))] == [2, 1]
  assert versions.main(['list', *_flags(base)]) == 0
  lines = capsys.readouterr().out.splitlines()
  assert [line.split()[0] for line in lines] == ['2', '1']
  assert lines[0].split()[1:3] == ['SERVED', '(latest)']


def test_rollback_never_reports_serving_a_symlink(base):
  os.symlink(base, base / '8')  # the base path, linked as a "version"
  assert versions.rollback(str(base), 2) == 1
  assert model_config.versions_on_disk(str(base)) == [1]


# --- a model config file that cannot be read ---------------------------------


@pytest.mark.parametrize('content, why', [
    (b'model_config_list { config { name: "t\xffxi" } }', 'not UTF-8'),
    (b'model_config_list { config { name: ', 'does not parse'),
    (None, 'No such file or directory'),
])
def test_unreadable_config_is_one_error_class(tmp_path, content, why):
  path = tmp_path / 'models.config'
  if content is not None:
    path.write_bytes(content)
  for read in (model_config.load, model_config.read_proto, config_file.read):
    with pytest.raises(model_config.ConfigError) as raised:
      read(str(path))
    message = str(raised.value)
    assert why in message and str(path) in message
    assert '\n' not in message
  assert config_file.Error is model_config.ConfigError  # what callers catch


def test_list_and_promote_say_one_line_of_a_non_utf8_config(base, capsys):
  config = base.parent / 'models.config'
  config.write_bytes(CONFIG.encode().replace(b'stable', b'st\xe9ble'))
  for command in (['list'], ['promote', '1']):
    assert versions.main([*command, *_flags(base)]) == 2
    line = _error_line(capsys)
    assert 'not UTF-8' in line and str(config) in line
  result = helpers.versions_cli('list', *_flags(base))  # the real CLI
  assert result.returncode == 2
  assert 'not UTF-8' in helpers.one_error_line(result)


# --- labels -------------------------------------------------------------------


@pytest.mark.parametrize('label, why', [
    ('', 'empty'),
    ('a/b', "'/'"),
    ('a:b', "':'"),
    ('a\nb', 'whitespace or control'),
    ('a b', 'whitespace or control'),
    ('tab\t', 'whitespace or control'),
    ('bell\x07', 'whitespace or control'),
])
def test_promote_refuses_a_label_tf_serving_cannot_serve(base, capsys, label,
                                                         why):
  config = base.parent / 'models.config'
  before = config.read_bytes()
  assert versions.main(['promote', '1', '--label', label,
                        *_flags(base)]) == 2
  line = _error_line(capsys)
  assert why in line and repr(label) in line
  assert config.read_bytes() == before  # nothing written
  with pytest.raises(ValueError, match=why):
    config_file.check_label(label)


def test_every_label_writer_checks_it(tmp_path):
  proto = config_file.new_config('taxi', str(tmp_path), 'specific', 1)
  entry = config_file.entry(proto, 'taxi', 'x')
  with pytest.raises(ValueError, match='empty'):
    config_file.set_label(entry, '', 1)
  assert dict(entry.version_labels) == {'stable': 1}


@pytest.mark.parametrize('label', ['stable', 'canary', 'v2-rc.1', 'café_1'])
def test_good_labels_pass(label):
  assert config_file.check_label(label) == label
