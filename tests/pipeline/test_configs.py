"""Configuration: every knob is a flag; the metadata connection is configurable."""

import argparse

import pytest

from pipeline import configs
from pipeline import metadata_store


def _parse(argv):
  parser = argparse.ArgumentParser()
  configs.add_flags(parser)
  return configs.from_flags(parser.parse_args(argv))


def test_every_field_is_a_flag_and_defaults_hold():
  cfg = _parse([])
  assert cfg == configs.PipelineConfig()
  assert cfg.metadata_path.endswith('outputs/pipeline/metadata.sqlite')
  assert cfg.serving_model_dir.endswith('outputs/serving/taxi')


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
