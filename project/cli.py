"""The one command-line style: every CLI of the project is built with it.

* `ArgumentParser`: a usage error is one line naming --help (not the whole
  usage), exit 2; a flag is accepted with dashes or underscores
  (`--model-config-file` = `--model_config_file`), whichever spelling its
  layer shows. serving/ and delivery/ show TF Serving's underscores
  (`--model_base_path`), the pipeline and the tools dashes (`--train-steps`).
* `field` / `add_flags` / `from_flags`: a dataclass whose fields are flags
  (field name == flag name), defaults shown in --help, a field may fall back
  to an environment variable. pipeline/configs.py and the ML Metadata
  connection (lineage/metadata_store.py) are declared this way.
"""

import argparse
import dataclasses
import os
import sys
from typing import Any, Optional, Sequence, Type, TypeVar

EXIT_USAGE = 2
T = TypeVar('T')


class ArgumentParser(argparse.ArgumentParser):
  """argparse with one-line usage errors and either flag spelling."""

  def __init__(self, *args, underscores: bool = False, **kwargs):
    # underscores: how `add_flags` spells generated flags in --help.
    self.underscores = underscores
    super().__init__(*args, **kwargs)

  def error(self, message):
    self.exit(EXIT_USAGE, f'{self.prog}: error: {message} (see --help)\n')

  def _respell(self, args: Sequence[str]) -> list:
    """`--a-b`/`--a_b` -> the spelling this parser declares (up to `=`);
    nothing after `--` is touched."""
    known = set(self._option_string_actions)
    out = []
    for i, arg in enumerate(args):
      if arg == '--':
        return out + list(args[i:])
      name, eq, value = arg.partition('=')
      if name.startswith('--') and len(name) > 2 and name not in known:
        for other in ('--' + name[2:].replace('-', '_'),
                      '--' + name[2:].replace('_', '-')):
          if other in known:
            arg = other + eq + value
            break
      out.append(arg)
    return out

  def parse_known_args(self, args=None, namespace=None):
    args = list(sys.argv[1:] if args is None else args)
    return super().parse_known_args(self._respell(args), namespace)


def flag_name(field_name: str, underscores: bool) -> str:
  return '--' + (field_name if underscores else field_name.replace('_', '-'))


def field(default: Any, help_text: str, env: Optional[str] = None,
          fallback: Any = None, derived: Optional[str] = None,
          **kwargs) -> Any:
  """A config field; `env` names a variable used when no flag is given.

  A field with `env` defaults to None so that `apply_env` can tell "not
  given" from "given", then takes the variable's value, else `fallback`.
  `derived`: the field defaults to None and the config's __post_init__
  fills it from another field; the words say from what (--help shows them
  and the value a default config gets).
  """
  metadata = {'help': help_text, 'env': env, 'fallback': fallback,
              'derived': derived}
  return dataclasses.field(default=default, metadata=metadata, **kwargs)


def kind(f: dataclasses.Field) -> str:
  """'int', 'Optional[int]', 'List[int]', ...: how to parse a flag's text."""
  return getattr(f.type, '__name__', None) if isinstance(
      f.type, type) else str(f.type).replace('typing.', '')


def parse_value(kind_name: str, text: str) -> Any:
  if kind_name == 'List[int]':
    return [int(x) for x in text.split(',') if x.strip()]
  if kind_name == 'bool':
    if text.lower() in ('1', 'true', 'yes'):
      return True
    if text.lower() in ('0', 'false', 'no'):
      return False
    raise argparse.ArgumentTypeError(f'expected true/false, got {text!r}')
  if kind_name in ('int', 'Optional[int]'):
    return int(text)
  if kind_name in ('float', 'Optional[float]'):
    return float(text)
  return text


def _parser_for(kind_name: str):
  """argparse's `type=`: named for the kind, so a bad value reads
  "invalid int value: 'x'"."""
  def parse(text: str) -> Any:
    return parse_value(kind_name, text)
  parse.__name__ = {'List[int]': 'comma-separated int list',
                    'Optional[int]': 'int', 'Optional[float]': 'float',
                    'Optional[str]': 'str'}.get(kind_name, kind_name)
  return parse


def apply_env(config: Any) -> None:
  """Fields with `env` still None take the variable's value, else fallback."""
  for f in dataclasses.fields(config):
    env = f.metadata.get('env')
    if env and getattr(config, f.name) is None:
      text = os.environ.get(env)
      try:
        value = parse_value(kind(f), text) if text else None
      except (ValueError, argparse.ArgumentTypeError) as e:
        raise SystemExit(f'${env}={text!r} is not a valid {kind(f)}: {e}'
                        ) from None
      setattr(config, f.name,
              f.metadata['fallback'] if value is None else value)


def add_flags(parser: argparse.ArgumentParser, config_class: Type,
              fields: Optional[Sequence[str]] = None,
              group: Optional[Any] = None,
              groups: Optional[dict] = None) -> None:
  """One flag per field of `config_class` (or per name in `fields`).

  `groups` maps a field name to the argparse group its flag goes in (else
  `group`, else the parser). Defaults are shown in --help.
  """
  defaults = config_class()
  underscores = getattr(parser, 'underscores', False)
  for f in dataclasses.fields(config_class):
    if fields is not None and f.name not in fields:
      continue
    default = getattr(defaults, f.name)
    if isinstance(default, list):
      default = ','.join(map(str, default))
    env = f.metadata.get('env')
    target = (groups or {}).get(f.name) or group or parser
    # A bool flag alone means true (`--tune`); `--tune false` also parses.
    boolean = ({'nargs': '?', 'const': True, 'metavar': 'true|false'}
               if kind(f) == 'bool' else {'metavar': f.name.upper()})
    derived = f.metadata.get('derived')
    shown = (f'{derived}; {default} for {defaults.problem}'
             if derived and hasattr(defaults, 'problem') else
             f'{derived}: {default}' if derived else default)
    target.add_argument(
        flag_name(f.name, underscores),
        dest=f.name,
        default=None,
        type=_parser_for(kind(f)),
        help=f'{f.metadata.get("help", "")}'
        + (f'; env ${env}' if env else '') + f' (default: {shown})',
        **boolean)


def from_flags(args: argparse.Namespace, config_class: Type[T], **extra) -> T:
  """`config_class` with every flag the user gave applied (and `extra`)."""
  given = {
      f.name: getattr(args, f.name)
      for f in dataclasses.fields(config_class)
      if getattr(args, f.name, None) is not None
  }
  return config_class(**{**given, **extra})
