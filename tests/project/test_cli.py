"""The one command-line style (project/cli.py)."""

import dataclasses
from typing import Dict, List, Optional, Union

import pytest

from project import cli


@dataclasses.dataclass
class Knobs:
  train_steps: int = cli.field(10, 'steps')
  hidden_units: List[int] = cli.field(None, 'sizes')
  host: Optional[str] = cli.field(None, 'host', env='TEST_CLI_HOST',
                                  fallback='localhost')

  def __post_init__(self):
    cli.apply_env(self)


def _parser(underscores=False):
  parser = cli.ArgumentParser(prog='tool', underscores=underscores)
  cli.add_flags(parser, Knobs)
  parser.add_argument('--model_base_path', default=None)
  parser.add_argument('rest', nargs='*')
  return parser


def test_either_spelling_reaches_the_same_flag():
  for spelling in ('--train-steps', '--train_steps'):
    args = _parser().parse_args([spelling, '5'])
    assert cli.from_flags(args, Knobs).train_steps == 5
  for spelling in ('--model-base-path=/m', '--model_base_path=/m'):
    assert _parser().parse_args([spelling]).model_base_path == '/m'


def test_the_layer_chooses_the_spelling_help_shows():
  assert '--train-steps' in _parser().format_help()
  shown = _parser(underscores=True).format_help()
  assert '--train_steps' in shown and '--train-steps' not in shown


def test_nothing_after_a_double_dash_is_respelled():
  args = _parser().parse_args(['--', '--train_steps'])
  assert args.rest == ['--train_steps'] and args.train_steps is None


def test_a_usage_error_is_one_line_naming_help(capsys):
  with pytest.raises(SystemExit) as e:
    _parser().parse_args(['--train-steps', 'x'])
  assert e.value.code == cli.EXIT_USAGE
  err = capsys.readouterr().err
  assert err == ("tool: error: argument --train-steps: invalid int value: "
                 "'x' (see --help)\n")


def test_list_flags_and_env_fallbacks(monkeypatch):
  args = _parser().parse_args(['--hidden-units', '8,4'])
  assert cli.from_flags(args, Knobs).hidden_units == [8, 4]
  assert Knobs().host == 'localhost'
  monkeypatch.setenv('TEST_CLI_HOST', 'db')
  assert Knobs().host == 'db'
  assert Knobs(host='given').host == 'given'  # a flag beats the variable


@dataclasses.dataclass
class Typed:
  retries: int | None = cli.field(None, 'tries')
  ratio: Optional[float] = cli.field(None, 'share')
  sizes: list[int] = cli.field(None, 'sizes')
  names: Optional[List[str]] = cli.field(None, 'names')
  fast: Optional[bool] = cli.field(None, 'fast')


def test_optional_and_builtin_generic_fields_parse_to_their_types():
  parser = cli.ArgumentParser(prog='tool')
  cli.add_flags(parser, Typed)
  config = cli.from_flags(parser.parse_args(
      ['--retries', '3', '--ratio', '0.5', '--sizes', '8,4',
       '--names', 'a, b', '--fast', 'no']), Typed)
  assert config == Typed(retries=3, ratio=0.5, sizes=[8, 4],
                         names=['a', 'b'], fast=False)
  with pytest.raises(SystemExit):  # not the string 'x'
    parser.parse_args(['--retries', 'x'])


def test_a_field_type_it_cannot_parse_is_refused_naming_the_field():
  @dataclasses.dataclass
  class Odd:
    limits: Dict[str, int] = cli.field(None, 'limits')

  with pytest.raises(TypeError, match="'limits'"):
    cli.add_flags(cli.ArgumentParser(prog='tool'), Odd)

  @dataclasses.dataclass
  class Either:
    size: Union[int, str] = cli.field(None, 'size', env='TEST_CLI_SIZE')

    def __post_init__(self):
      cli.apply_env(self)

  with pytest.raises(TypeError, match="'size'"):
    Either()


def test_lock_timeout_flags_refuse_nan_in_one_line(capsys):
  parser = cli.ArgumentParser(prog='tool')
  parser.add_argument('--lock_timeout', type=cli.timeout_seconds)
  assert parser.parse_args(['--lock_timeout', '2.5']).lock_timeout == 2.5
  for bad in ('nan', '-1', 'inf'):
    with pytest.raises(SystemExit) as e:
      parser.parse_args(['--lock_timeout', bad])
    assert e.value.code == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'finite number of seconds' in err, err
