"""Editing the TF Serving model config file: read, change an entry, replace.

The format is serving/model_config.py's (the server reads it, so it owns
parsing and serializing); this module owns changing the file under a
running server, for delivery.cd and `delivery.versions promote` alike:

* every write is write-then-rename (`replace`), so a server polling the
  file (--model_config_file_poll_wait_seconds) never reads half a config;
* every failure to read it is one `Error` naming the file, in one line
  (serving.model_config.ConfigError itself): it cannot be read, is not
  UTF-8, does not parse, or does not name the model;
* every label written is one TF Serving can serve (`check_label`);
* a new file (`new_config`, `create`) has the entries serving/deploy/
  models.config has, and appears whole or not at all, never over another.

Callers hold the model base path's lock (serving.base_path) from reading
the file to writing it, so two editors never interleave.
"""

import os
from typing import Callable, Dict, List, Optional

from tensorflow_serving.config import model_server_config_pb2

from serving import model_config

POLICIES = ('latest', 'specific')  # what `new_config` writes
STABLE_LABEL = 'stable'  # the label `new_config` points at a version


# Every failure to use the file, the model config reader's own class
# (serving.model_config.ConfigError): callers catch one class, whichever
# module read the file.
Error = model_config.ConfigError

# What TF Serving's REST API can name: /labels/([^/:]+) in its URL.
_LABEL_FORBIDDEN = '/:'


def read(path: str):
  """The file's ModelServerConfig proto, as it is now."""
  return model_config.read_proto(path)


def load(path: str, model_name: str) -> model_config.ModelConfig:
  """The model's checked ModelConfig (base_path resolved as the server
  resolves it: relative to the file)."""
  found = model_config.find(model_config.load(path), model_name)
  if found is None:
    raise Error(f'model {model_name!r} is not in {path}')
  return found


def check_label(label: str) -> str:
  """`label` if a client can ask TF Serving for it, else ValueError (one
  line). Its REST API matches labels with /labels/([^/:]+): never empty,
  never '/' or ':'; whitespace and control characters are refused too,
  since they split `delivery.versions list` and cannot be typed in a URL.
  Every writer of a label calls this (`set_label`)."""
  if not label:
    raise ValueError(f'label {label!r} is empty: TF Serving\'s REST API '
                     'cannot name it (/labels/<label>)')
  for c in _LABEL_FORBIDDEN:
    if c in label:
      raise ValueError(f'label {label!r} contains {c!r}: TF Serving\'s '
                       'REST API cannot name it (/labels/<label>)')
  if any(c.isspace() or not c.isprintable() for c in label):
    raise ValueError(f'label {label!r} contains whitespace or control '
                     'characters')
  return label


def entry(proto, model_name: str, path: str):
  """The model's `config { ... }` entry in `proto` (read from `path`)."""
  found = model_config.proto_entry(proto, model_name)
  if found is None:
    raise Error(f'model {model_name!r} is not in {path}')
  return found


def labels(path: str, model_name: str) -> Dict[str, int]:
  return dict(entry(read(path), model_name, path).version_labels)


def version_labels(path: str, model_name: str) -> Dict[int, List[str]]:
  """version -> the labels pointing at it, sorted."""
  out: Dict[int, List[str]] = {}
  for label, version in sorted(labels(path, model_name).items()):
    out.setdefault(version, []).append(label)
  return out


def new_config(model_name: str, base_path: str, policy: str = 'latest',
               stable: Optional[int] = None
              ) -> model_server_config_pb2.ModelServerConfig:
  """One model's config, as serving/deploy/models.config writes it.

  `latest` serves the newest version (num_versions 1, as a server started
  with --model_base_path does); `specific` serves `stable` only, and
  delivery.cd adds its canary to it. `stable`: the version the `stable`
  label names (None: no label).
  """
  if policy not in POLICIES:
    raise ValueError(f'policy {policy!r} is not one of {POLICIES}')
  proto = model_server_config_pb2.ModelServerConfig()
  config_entry = proto.model_config_list.config.add(
      name=model_name, base_path=base_path, model_platform='tensorflow')
  if policy == 'latest':
    config_entry.model_version_policy.latest.num_versions = 1
  else:
    config_entry.model_version_policy.specific.SetInParent()
  if stable is not None:
    set_label(config_entry, STABLE_LABEL, stable)
  return proto


def replace(path: str, data: bytes) -> None:
  """Write-then-rename: a reader sees the old file or the new, never half."""
  tmp = f'{path}.tmp{os.getpid()}'
  with open(tmp, 'wb') as f:
    f.write(data)
  os.replace(tmp, path)


def write(path: str, proto) -> None:
  replace(path, model_config.to_text(proto).encode())


def create(path: str, proto, replace_existing: bool = False) -> None:
  """Writes a file, and its directory if need be. The file appears whole:
  written aside, then renamed over the old one (`replace_existing`) or
  hard-linked into place, which never replaces a file (FileExistsError),
  even one another process creates meanwhile."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  if replace_existing:
    write(path, proto)
    return
  tmp = f'{path}.tmp{os.getpid()}'
  with open(tmp, 'wb') as f:
    f.write(model_config.to_text(proto).encode())
  try:
    os.link(tmp, path)
  finally:
    os.unlink(tmp)


def edit(path: str, model_name: str, change: Callable[[object], None]) -> None:
  """Applies `change` to the model's entry and replaces the file."""
  proto = read(path)
  change(entry(proto, model_name, path))
  write(path, proto)


def set_label(config_entry, label: str, version: int):
  """Points `label` at `version`; a `specific` policy then serves it too
  (TF Serving labels only versions it serves). Returns the label's
  previous version (None: it had none). ValueError for a label TF
  Serving cannot serve (`check_label`)."""
  check_label(label)
  previous = config_entry.version_labels.get(label)
  config_entry.version_labels[label] = version
  specific = config_entry.model_version_policy.specific
  if (model_config.policy_of(config_entry) == 'specific' and
      version not in specific.versions):
    specific.versions.append(version)
  return previous
