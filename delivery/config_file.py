"""Editing the TF Serving model config file: read, change an entry, replace.

The format is serving/model_config.py's (the server reads it, so it owns
parsing and serializing); this module owns changing the file under a
running server, for delivery.cd and `delivery.versions promote` alike:

* every write is write-then-rename (`replace`), so a server polling the
  file (--model_config_file_poll_wait_seconds) never reads half a config;
* every failure to read it is one `Error` naming the file: it cannot be
  read, it does not parse, or it does not name the model.

Callers hold the model base path's lock (serving.base_path) from reading
the file to writing it, so two editors never interleave.
"""

import os
from typing import Callable, Dict

from google.protobuf import text_format

from serving import model_config


class Error(Exception):
  """The model config file cannot be read, parsed, or lacks the model."""


def _first_line(e: BaseException) -> str:
  text = str(e).strip().splitlines()
  return text[0] if text else type(e).__name__


def read(path: str):
  """The file's ModelServerConfig proto, as it is now."""
  try:
    with open(path) as f:
      text = f.read()
  except OSError as e:
    raise Error(f'model config {path}: {e.strerror or e}') from None
  try:
    return model_config.parse_proto(text)
  except text_format.ParseError as e:
    raise Error(f'model config {path} does not parse: {_first_line(e)}'
               ) from None


def load(path: str, model_name: str) -> model_config.ModelConfig:
  """The model's checked ModelConfig (base_path resolved as the server
  resolves it: relative to the file)."""
  try:
    found = model_config.find(model_config.load(path), model_name)
  except OSError as e:
    raise Error(f'model config {path}: {e.strerror or e}') from None
  except (ValueError, text_format.ParseError) as e:
    raise Error(f'model config {path} does not parse: {_first_line(e)}'
               ) from None
  if found is None:
    raise Error(f'model {model_name!r} is not in {path}')
  return found


def entry(proto, model_name: str, path: str):
  """The model's `config { ... }` entry in `proto` (read from `path`)."""
  found = model_config.proto_entry(proto, model_name)
  if found is None:
    raise Error(f'model {model_name!r} is not in {path}')
  return found


def labels(path: str, model_name: str) -> Dict[str, int]:
  return dict(entry(read(path), model_name, path).version_labels)


def replace(path: str, data: bytes) -> None:
  """Write-then-rename: a reader sees the old file or the new, never half."""
  tmp = f'{path}.tmp{os.getpid()}'
  with open(tmp, 'wb') as f:
    f.write(data)
  os.replace(tmp, path)


def write(path: str, proto) -> None:
  replace(path, model_config.to_text(proto).encode())


def edit(path: str, model_name: str, change: Callable[[object], None]) -> None:
  """Applies `change` to the model's entry and replaces the file."""
  proto = read(path)
  change(entry(proto, model_name, path))
  write(path, proto)


def set_label(config_entry, label: str, version: int):
  """Points `label` at `version`; a `specific` policy then serves it too
  (TF Serving labels only versions it serves). Returns the label's
  previous version (None: it had none)."""
  previous = config_entry.version_labels.get(label)
  config_entry.version_labels[label] = version
  specific = config_entry.model_version_policy.specific
  if (model_config.policy_of(config_entry) == 'specific' and
      version not in specific.versions):
    specific.versions.append(version)
  return previous
