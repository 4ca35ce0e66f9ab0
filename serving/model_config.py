"""Which models and versions to serve, as TF Serving decides it.

Reads TF Serving's own `--model_config_file` format (a text-format
`ModelServerConfig` with a `model_config_list`), so the very same file works
with the official `tensorflow/serving` image, or builds the equivalent of
`--model_name` + `--model_base_path` (serve the latest version).

The one owner of that file format: `parse_proto` / `read_proto` / `to_text`
/ `proto_entry` / `policy_of` work on the proto itself, for the tools that
edit the file (delivery/config_file.py replaces it atomically); `parse` and
`load` turn it into the checked `ModelConfig`s the server serves.
"""

import dataclasses
import os
from typing import Dict, List, Optional

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2


# log_collector_config.type values this server can write (see
# serving/request_logging.py for the file format).
LOG_COLLECTOR_TYPES = ('tfrecord',)


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


def versions_on_disk(base_path: str) -> List[int]:
  """Numeric version directories under a model base path, ascending."""
  try:
    names = os.listdir(base_path)
  except FileNotFoundError:
    return []
  return sorted(int(n) for n in names
                if n.isascii() and n.isdigit() and os.path.isdir(os.path.join(base_path, n)))


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


def read_proto(path: str) -> model_server_config_pb2.ModelServerConfig:
  with open(path) as f:
    return parse_proto(f.read())


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
  with open(path) as f:
    return parse(f.read(), relative_to=os.path.dirname(os.path.abspath(path)))


def find(configs: List[ModelConfig], name: str) -> Optional[ModelConfig]:
  return next((c for c in configs if c.name == name), None)
