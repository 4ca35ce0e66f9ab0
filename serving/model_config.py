"""Which models and versions to serve, as TF Serving decides it.

Reads TF Serving's own `--model_config_file` format (a text-format
`ModelServerConfig` with a `model_config_list`), so the very same file works
with the official `tensorflow/serving` image, or builds the equivalent of
`--model_name` + `--model_base_path` (serve the latest version).

The one owner of that file format: `parse_proto` / `read_proto` / `to_text`
/ `proto_entry` / `policy_of` work on the proto itself, for the tools that
edit the file (delivery/config_file.py replaces it atomically); `parse` and
`load` turn it into the checked `ModelConfig`s the server serves. A file
that cannot be used (missing, not UTF-8, not a text proto, not a valid
config) is one `ConfigError` with a one-line message naming the file, for
every reader: the server, the delivery tools and the UI catch that class.

It also owns which entries of a model base path are versions
(`scan_versions`), for the server and the delivery tools alike.
"""

import dataclasses
import os
import stat
from typing import Dict, List, Optional, Tuple

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2


# log_collector_config.type values this server can write (see
# serving/request_logging.py for the file format).
LOG_COLLECTOR_TYPES = ('tfrecord',)
# TF Serving parses a version directory's name as an int64
# (file_system_storage_path_source.cc, strings::safe_strto64): a larger
# number is no version there, and could not be carried by its APIs.
MAX_VERSION = 2**63 - 1


class ConfigError(ValueError):
  """A model config file that cannot be used: missing, unreadable, not
  UTF-8, not a text-format ModelServerConfig, or not a valid config (or,
  from delivery/config_file.py, lacking the model asked for). The message
  is one line and names the file. A ValueError, so callers that caught a
  bad config as ValueError still do."""


def _first_line(e: BaseException) -> str:
  text = str(e).strip().splitlines()
  return text[0] if text else type(e).__name__


@dataclasses.dataclass(frozen=True)
class LoggingConfig:
  """A model's `logging_config`: sample predictions into PredictionLogs."""
  filename_prefix: str
  sampling_rate: float
  collector_type: str = 'tfrecord'


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """One served model: where its versions live and which of them to serve."""
  name: str
  base_path: str
  policy: str = 'latest'  # latest | all | specific
  num_versions: int = 1  # for `latest`
  specific: tuple = ()  # for `specific`
  labels: Dict[str, int] = dataclasses.field(default_factory=dict)
  logging: Optional[LoggingConfig] = None  # no logging_config: no logging


@dataclasses.dataclass(frozen=True)
class Skipped:
  """A base path entry that looks like a version and is not served."""
  path: str
  why: str


@dataclasses.dataclass(frozen=True)
class VersionScan:
  versions: List[int]  # ascending
  skipped: Tuple[Skipped, ...]  # worth a warning: named like a version


def scan_versions(base_path: str) -> VersionScan:
  """The versions under a model base path, and what was skipped and why.

  A version is a real directory (not a symlink: one to the base path or to
  a folder elsewhere would be served, rolled back and listed as if it were
  a push) whose name is decimal digits of an int64, as TF Serving reads it.
  Other names (.incoming-N, .rolled-back, files) are skipped silently;
  numeric names that fail are in `skipped`, for a warning.
  """
  try:
    names = os.listdir(base_path)
  except (FileNotFoundError, NotADirectoryError):
    return VersionScan([], ())
  versions, skipped = [], []
  for name in names:
    if not (name.isascii() and name.isdigit()):
      continue
    path = os.path.join(base_path, name)
    try:
      mode = os.lstat(path).st_mode
    except OSError:  # removed meanwhile
      continue
    if stat.S_ISLNK(mode):
      skipped.append(Skipped(path, 'a symlink, not a version directory '
                             f'(to {os.readlink(path)})'))
    elif not stat.S_ISDIR(mode):
      continue  # a file: never a version, as before
    elif int(name) > MAX_VERSION:
      skipped.append(Skipped(path, f'version number out of int64 range '
                             f'(max {MAX_VERSION}), as TF Serving refuses'))
    else:
      versions.append(int(name))
  return VersionScan(sorted(versions),
                     tuple(sorted(skipped, key=lambda s: s.path)))


def versions_on_disk(base_path: str) -> List[int]:
  """Version directories under a model base path, ascending
  (`scan_versions`)."""
  return scan_versions(base_path).versions


def wanted_versions(config: ModelConfig, on_disk: List[int]) -> List[int]:
  """The versions the policy asks for, among those on disk, ascending."""
  if config.policy == 'all':
    return list(on_disk)
  if config.policy == 'specific':
    return [v for v in on_disk if v in config.specific]
  return list(on_disk[-config.num_versions:]) if on_disk else []


def from_flags(model_name: str, model_base_path: str) -> List[ModelConfig]:
  """`--model_name X --model_base_path P`: serve the latest version of X."""
  return [ModelConfig(name=model_name, base_path=os.path.abspath(model_base_path))]


def parse_proto(text: str) -> model_server_config_pb2.ModelServerConfig:
  """The file's text as TF Serving reads it (text_format.ParseError if not)."""
  return text_format.Parse(text, model_server_config_pb2.ModelServerConfig())


def read_text(path: str) -> str:
  """The file's text; ConfigError if it is missing, unreadable or not
  UTF-8 (text_format reads UTF-8, as TF Serving does)."""
  try:
    with open(path, 'rb') as f:
      data = f.read()
  except OSError as e:
    raise ConfigError(f'model config {path}: {e.strerror or e}') from None
  try:
    return data.decode('utf-8')
  except UnicodeDecodeError as e:
    line = data.count(b'\n', 0, e.start) + 1
    raise ConfigError(f'model config {path} is not UTF-8: byte '
                      f'0x{data[e.start]:02x} on line {line}') from None


def read_proto(path: str) -> model_server_config_pb2.ModelServerConfig:
  """The file as a proto; ConfigError if it cannot be read or parsed."""
  text = read_text(path)
  try:
    return parse_proto(text)
  except text_format.ParseError as e:
    raise ConfigError(f'model config {path} does not parse: '
                      f'{_first_line(e)}') from None


def to_text(proto: model_server_config_pb2.ModelServerConfig) -> str:
  """The file's text for `proto`, as TF Serving parses it back."""
  return text_format.MessageToString(proto)


def proto_entry(proto: model_server_config_pb2.ModelServerConfig,
                name: str):
  """The `config { name: <name> ... }` entry of `proto`; None if absent."""
  return next((c for c in proto.model_config_list.config if c.name == name),
              None)


def policy_of(entry) -> str:
  """An entry's model_version_policy: latest (also when unset) | all |
  specific."""
  return entry.model_version_policy.WhichOneof('policy_choice') or 'latest'


def parse(text: str, relative_to: str = '.') -> List[ModelConfig]:
  """Parses a `model_config_list { config { ... } }` text proto."""
  proto = parse_proto(text)
  if not proto.HasField('model_config_list'):
    raise ValueError('model config has no model_config_list')
  configs = []
  for c in proto.model_config_list.config:
    if not c.name or not c.base_path:
      raise ValueError(f'every config needs name and base_path: {c}')
    policy = policy_of(c)
    configs.append(ModelConfig(
        name=c.name,
        base_path=os.path.join(relative_to, c.base_path),
        policy=policy,
        num_versions=(c.model_version_policy.latest.num_versions or 1),
        specific=tuple(c.model_version_policy.specific.versions),
        labels=dict(c.version_labels),
        logging=(_logging_config(c, relative_to)
                 if c.HasField('logging_config') else None)))
  names = [c.name for c in configs]
  if len(set(names)) != len(names):
    raise ValueError(f'duplicate model names in config: {names}')
  prefixes = [c.logging.filename_prefix for c in configs if c.logging]
  if len(set(prefixes)) != len(prefixes):  # TF Serving refuses it too
    raise ValueError(f'models share a logging filename_prefix: {prefixes}')
  return configs


def _logging_config(c, relative_to: str) -> LoggingConfig:
  """A config's logging_config, checked; a relative prefix is taken
  relative to the config file, like base_path."""
  collector = c.logging_config.log_collector_config
  rate = c.logging_config.sampling_config.sampling_rate
  where = f'model {c.name!r} logging_config'
  if collector.type not in LOG_COLLECTOR_TYPES:
    raise ValueError(f'{where}: log_collector_config.type '
                     f'{collector.type!r} is not supported (supported: '
                     f'{", ".join(LOG_COLLECTOR_TYPES)})')
  if not collector.filename_prefix:
    raise ValueError(f'{where}: log_collector_config.filename_prefix is '
                     'empty')
  if not 0.0 <= rate <= 1.0:
    raise ValueError(f'{where}: sampling_config.sampling_rate must be in '
                     f'[0, 1], got {rate}')
  return LoggingConfig(
      filename_prefix=os.path.join(relative_to, collector.filename_prefix),
      sampling_rate=rate, collector_type=collector.type)


def load(path: str) -> List[ModelConfig]:
  """The file's checked configs; ConfigError (one line, naming the file)
  for any file that cannot be used."""
  text = read_text(path)
  try:
    return parse(text, relative_to=os.path.dirname(os.path.abspath(path)))
  except (ValueError, text_format.ParseError) as e:
    raise ConfigError(f'model config {path} does not parse: '
                      f'{_first_line(e)}') from None


def find(configs: List[ModelConfig], name: str) -> Optional[ModelConfig]:
  return next((c for c in configs if c.name == name), None)
