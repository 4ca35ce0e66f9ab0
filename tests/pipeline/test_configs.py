"""Configuration: every knob is a flag; the metadata connection is configurable."""

import argparse
import dataclasses
import logging
import socket

from ml_metadata.proto import metadata_store_pb2
import pytest

from models import problem as problems
from pipeline import configs
from lineage import secrets
from lineage import metadata_store


def _parse(argv):
  parser = argparse.ArgumentParser()
  configs.add_flags(parser)
  return configs.from_flags(parser.parse_args(argv))


def test_every_field_is_a_flag_and_defaults_hold():
  parser = argparse.ArgumentParser()
  configs.add_flags(parser)
  flags = {a.dest for a in parser._actions if a.option_strings}  # pylint: disable=protected-access
  fields = {f.name for f in dataclasses.fields(configs.PipelineConfig)}
  assert fields <= flags, sorted(fields - flags)  # a field with no flag
  for name in sorted(fields):
    assert '--' + name.replace('_', '-') in parser._option_string_actions, name  # pylint: disable=protected-access
  cfg = _parse([])
  assert cfg == configs.PipelineConfig()
  assert cfg.metadata_path.endswith('outputs/taxi/pipeline/metadata.sqlite')
  assert cfg.serving_model_dir.endswith('outputs/serving/taxi')


def test_the_problem_picks_every_default_and_flags_still_win():
  """--problem penguin: its data, schema, paths, names, budget,
  hyperparameters and its task's rule; taxi's never leak into it; a flag
  still overrides one; a threshold of the other task is refused."""
  cfg = _parse(['--problem', 'penguin'])
  assert cfg.data_root.endswith('data/penguin')
  assert cfg.schema_path.endswith('schema/penguin/schema.pbtxt')
  assert cfg.pipeline_root.endswith('outputs/penguin/pipeline')
  assert cfg.metadata_path.endswith('outputs/penguin/pipeline/metadata.sqlite')
  assert cfg.serving_model_dir.endswith('outputs/serving/penguin')
  assert cfg.pipeline_name == cfg.model_name == 'penguin'
  penguin = problems.load('penguin')
  assert (cfg.train_steps, cfg.window_spans) == (penguin.train_steps,
                                                 penguin.window_spans)
  assert cfg.hidden_units == penguin.hparams['hidden_units']
  assert cfg.rule == penguin.rule() == {
      'min_accuracy': 0.6, 'min_balanced_accuracy': 0.6,
      'max_accuracy_drop': 0.01}
  assert cfg.min_auc is None  # a binary knob: not this task's
  assert _parse(['--problem', 'penguin', '--min-accuracy', '0.8']).rule[
      'min_accuracy'] == 0.8
  with pytest.raises(SystemExit, match='no threshold of a multiclass task'):
    _parse(['--problem', 'penguin', '--min-auc', '0.7'])
  with pytest.raises(SystemExit, match='no threshold of a binary task'):
    _parse(['--min-accuracy', '0.7'])
  with pytest.raises(SystemExit):
    _parse(['--problem', 'walrus'])


def test_flags_override_and_follow_the_pipeline_root(tmp_path):
  cfg = _parse(['--train-steps', '7', '--hidden-units', '8,4',
                '--enable-cache', 'false', '--pipeline-root', str(tmp_path)])
  assert (cfg.train_steps, cfg.hidden_units, cfg.enable_cache) == (7, [8, 4],
                                                                   False)
  assert cfg.metadata_path == str(tmp_path / 'metadata.sqlite')
  assert cfg.hparams['hidden_units'] == [8, 4]


def test_bad_flag_value_is_a_clear_usage_error(capsys):
  with pytest.raises(SystemExit):
    _parse(['--enable-cache', 'maybe'])
  assert 'enable-cache' in capsys.readouterr().err


def test_connection_config_file_is_used_and_described(tmp_path):
  db = tmp_path / 'from-config.sqlite'
  config_file = tmp_path / 'mlmd.pbtxt'
  config_file.write_text(
      f'sqlite {{ filename_uri: "{db}" connection_mode: READWRITE_OPENCREATE }}')
  config = metadata_store.connection_config('/unused.sqlite', str(config_file))
  store = metadata_store.open_store(config)
  assert store.get_artifact_types() == []
  assert db.exists()
  assert metadata_store.describe(config) == f'{db} (SQLite)'


def test_mysql_description_never_shows_the_password():
  config = metadata_store.connection_config('/x', None)
  config.Clear()
  config.mysql.host, config.mysql.port = '127.0.0.1', 3306
  config.mysql.database, config.mysql.user = 'mlmd', 'tfx'
  config.mysql.password = 's3cret'
  text = metadata_store.describe(config)
  assert 's3cret' not in text and '127.0.0.1:3306/mlmd' in text


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_mysql_flags_override_env_which_overrides_defaults(monkeypatch,
                                                           tmp_path):
  for name in ('HOST', 'PORT', 'DATABASE', 'USER', 'PASSWORD_FILE'):
    monkeypatch.delenv(f'MLMD_MYSQL_{name}', raising=False)
  sqlite = _parse([])
  assert (sqlite.mysql_host, sqlite.mysql_port, sqlite.mysql_database) == (
      None, 3306, 'mlmd')
  assert metadata_store.store_config(sqlite).HasField('sqlite')
  monkeypatch.setenv('MLMD_MYSQL_HOST', 'db.internal')
  monkeypatch.setenv('MLMD_MYSQL_PORT', '3307')
  monkeypatch.setenv('MLMD_MYSQL_USER', 'env-user')
  config = metadata_store.store_config(
      _parse(['--mysql-user', 'flag-user', '--mysql-database', 'lineage']))
  assert (config.mysql.host, config.mysql.port, config.mysql.database,
          config.mysql.user) == ('db.internal', 3307, 'lineage', 'flag-user')
  # A --metadata-config file wins over every MySQL setting.
  config_file = tmp_path / 'mlmd.pbtxt'
  config_file.write_text(f'sqlite {{ filename_uri: "{tmp_path / "m.db"}" }}')
  config = metadata_store.store_config(
      _parse(['--mysql-user', 'u', '--metadata-config', str(config_file)]))
  assert config.sqlite.filename_uri == str(tmp_path / 'm.db')
  monkeypatch.setenv('MLMD_MYSQL_PORT', 'not-a-port')
  with pytest.raises(SystemExit, match=r'\$MLMD_MYSQL_PORT'):
    _parse([])


def test_password_is_no_flag_and_comes_from_file_else_env(tmp_path,
                                                          monkeypatch, capsys):
  for flag in (['--mysql-password', 'Flag-Pw-31'], ['--mysql-password=Flag-Pw-31']):
    with pytest.raises(SystemExit):
      _parse(flag)
    err = capsys.readouterr().err
    assert 'MLMD_MYSQL_PASSWORD' in err and 'Flag-Pw-31' not in err
  monkeypatch.setenv(metadata_store.MYSQL_PASSWORD_ENV, 'from-env')
  base = ['--mysql-host', 'h', '--mysql-user', 'u']
  assert metadata_store.store_config(_parse(base)).mysql.password == 'from-env'
  secret = tmp_path / 'password'
  secret.write_text('from-file\n')
  config = metadata_store.store_config(
      _parse(base + ['--mysql-password-file', str(secret)]))
  assert config.mysql.password == 'from-file'
  with pytest.raises(SystemExit, match='password file .*missing'):
    metadata_store.store_config(
        _parse(base + ['--mysql-password-file', str(tmp_path / 'missing')]))
  # A MySQL ConnectionConfig file without a password gets it the same way.
  config_file = tmp_path / 'mlmd.pbtxt'
  config_file.write_text('mysql { host: "h" port: 1 database: "d" user: "u" }')
  config = metadata_store.store_config(
      _parse(base + ['--metadata-config', str(config_file)]))
  assert (config.mysql.port, config.mysql.password) == (1, 'from-env')


def test_mysql_without_user_or_server_is_one_clear_line(monkeypatch, capfd):
  monkeypatch.setenv(metadata_store.MYSQL_PASSWORD_ENV, 'Unreachable-Pw-42')
  with pytest.raises(SystemExit, match='needs a user'):
    metadata_store.store_config(_parse(['--mysql-host', '127.0.0.1']))
  port = _free_port()  # nothing listens there
  config = metadata_store.store_config(_parse(
      ['--mysql-host', '127.0.0.1', '--mysql-port', str(port),
       '--mysql-user', 'tfx']))
  with pytest.raises(SystemExit) as stopped:
    metadata_store.open_store(config)
  message = str(stopped.value.code)
  assert message.startswith(f'Cannot reach MySQL at 127.0.0.1:{port}/mlmd ')
  assert 'Unreachable-Pw-42' not in message
  # ml_metadata's own C++ log line (blaming MySQL 8 auth) is held back.
  assert 'MySQL 8.0' not in capfd.readouterr().err


def test_logged_connection_config_hides_the_password(caplog):
  password = 'Logged-Pw-7"\\\u00e9'
  config = metadata_store_pb2.ConnectionConfig()
  config.mysql.host, config.mysql.password = 'h', password
  secrets.hide_secret(password)
  with caplog.at_level(logging.INFO):
    # As TFX's runners log it (through absl). A logger of this test's own:
    # other tests may have silenced 'absl' itself (console.quiet_logging).
    logging.getLogger('test_configs.tfx').info('Using connection config:\n %s',
                                               config)
    try:
      raise RuntimeError(f'connect failed with {password}')
    except RuntimeError:
      logging.getLogger('x').exception('boom')
  text = caplog.text
  assert 'password: "***"' in text and 'connect failed with ***' in text
  assert 'Logged-Pw-7' not in text
  assert secrets.redact(f'[{password}]') == '[***]'
