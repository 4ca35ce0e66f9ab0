"""The one command-line style: every CLI of the project is built with it.

* `ArgumentParser`: a usage error is one line naming --help (not the whole
  usage), exit 2; a flag is accepted with dashes or underscores
  (`--model-config-file` = `--model_config_file`), whichever spelling its
  layer shows. serving/ and delivery/ show TF Serving's underscores
  (`--model_base_path`), the pipeline and the tools dashes (`--train-steps`).
* `field` / `add_flags` / `from_flags`: a dataclass whose fields are flags
  (field name == flag name), defaults shown in --help, a field may fall back
  to an environment variable. pipeline/configs.py and the ML Metadata
  connection (lineage/metadata_store.py) are declared this way. A field's
  type is read with typing.get_origin/get_args (Optional[X] and X | None
  included); a type it cannot parse is a TypeError naming the field as soon
  as the class is used (its flags, or its first instance's variables), never
  a flag silently parsed as a string.
"""

import argparse
import collections.abc
import dataclasses
import os
import sys
import types
import typing
from typing import Any, Optional, Sequence, Type, TypeVar

from project import file_lock

EXIT_USAGE = 2
T = TypeVar('T')
_UNIONS = (typing.Union, types.UnionType)  # Optional[X], X | None


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


_SCALARS = {int: 'int', float: 'float', str: 'str', bool: 'bool'}
_LIST_ITEMS = {int: 'int', float: 'float', str: 'str'}


def kind_of(annotation: Any, name: str = '?') -> str:
  """How to parse a flag of type `annotation`: 'int', 'float', 'str',
  'bool' or 'List[int]' / 'List[float]' / 'List[str]' (comma-separated).

  Read with typing.get_origin/get_args: Optional[X] and X | None are X's
  kind (no flag, no variable: the field keeps its None default). Anything
  else is a TypeError naming the field `name`: a flag is never parsed as a
  string because its type was not understood.
  """
  origin, args = typing.get_origin(annotation), typing.get_args(annotation)
  if origin in _UNIONS and type(None) in args:
    rest = [a for a in args if a is not type(None)]
    if len(rest) == 1:
      annotation = rest[0]
      origin, args = typing.get_origin(annotation), typing.get_args(annotation)
  if annotation in _SCALARS:
    return _SCALARS[annotation]
  if origin in (list, collections.abc.Sequence) and len(args) == 1 and (
      args[0] in _LIST_ITEMS):
    return f'List[{_LIST_ITEMS[args[0]]}]'
  raise TypeError(
      f'field {name!r}: project/cli.py cannot make a flag of type '
      f'{annotation!r} (it parses int, float, str, bool, a list of int, '
      'float or str, and Optional of those)')


def kind(f: dataclasses.Field, owner: Optional[Type] = None) -> str:
  """`kind_of` a dataclass field's annotation (a string one, as under
  `from __future__ import annotations`, resolved against `owner`)."""
  annotation = f.type
  if isinstance(annotation, str) and owner is not None:
    annotation = typing.get_type_hints(owner).get(f.name, annotation)
  return kind_of(annotation, f.name)


def parse_value(kind_name: str, text: str) -> Any:
  if kind_name.startswith('List['):
    item = {'List[int]': int, 'List[float]': float}.get(kind_name, str)
    return [item(x.strip()) for x in text.split(',') if x.strip()]
  if kind_name == 'bool':
    if text.lower() in ('1', 'true', 'yes'):
      return True
    if text.lower() in ('0', 'false', 'no'):
      return False
    raise argparse.ArgumentTypeError(f'expected true/false, got {text!r}')
  if kind_name == 'int':
    return int(text)
  if kind_name == 'float':
    return float(text)
  return text


def _parser_for(kind_name: str):
  """argparse's `type=`: named for the kind, so a bad value reads
  "invalid int value: 'x'"."""
  def parse(text: str) -> Any:
    return parse_value(kind_name, text)
  parse.__name__ = (f'comma-separated {kind_name[5:-1]} list'
                    if kind_name.startswith('List[') else kind_name)
  return parse


def timeout_seconds(text: str) -> float:
  """argparse's `type=` for a lock timeout: project/file_lock.py's rule
  (finite seconds >= 0), so `--lock_timeout nan` is a one-line usage error,
  not a wait without end."""
  try:
    return file_lock.check_timeout(float(text))
  except ValueError:
    raise argparse.ArgumentTypeError(
        f'expected a finite number of seconds >= 0, got {text!r}') from None


def apply_env(config: Any) -> None:
  """Fields with `env` still None take the variable's value, else fallback."""
  for f in dataclasses.fields(config):
    env = f.metadata.get('env')
    if env and getattr(config, f.name) is None:
      text = os.environ.get(env)
      name = kind(f, type(config))
      try:
        value = parse_value(name, text) if text else None
      except (ValueError, argparse.ArgumentTypeError) as e:
        raise SystemExit(f'${env}={text!r} is not a valid {name}: {e}'
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
    name = kind(f, config_class)
    boolean = ({'nargs': '?', 'const': True, 'metavar': 'true|false'}
               if name == 'bool' else {'metavar': f.name.upper()})
    derived = f.metadata.get('derived')
    shown = (f'{derived}; {default} for {defaults.problem}'
             if derived and hasattr(defaults, 'problem') else
             f'{derived}: {default}' if derived else default)
    target.add_argument(
        flag_name(f.name, underscores),
        dest=f.name,
        default=None,
        type=_parser_for(name),
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
