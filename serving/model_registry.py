"""Loaded model versions, kept in step with the base path on disk.

A background thread polls each model's base path (as TF Serving does, every
`poll_seconds`), loads versions the policy wants, and swaps in a new
immutable {version: LoadedVersion} map in one assignment: a request sees
either the old set or the new one, never a half-loaded model. A version
directory that is incomplete (no saved_model.pb yet) is skipped until it is
complete; one that fails to load is refused with a log line and retried
only once any of its files changed (name, size or mtime): a copy still
under way when it was first tried is served once complete, and a broken
version costs no load attempt per poll. The versions already served keep
serving. An entry named like a version that is none (a symlink, a number
past int64: model_config.scan_versions) is never loaded, with one warning
naming it.
"""

import dataclasses
import logging
import os
import threading
import time
from typing import Dict, List, Mapping, Optional, Tuple

# A version directory's files as (relative path, size, mtime_ns), sorted.
DirSignature = Tuple[Tuple[str, int, int], ...]

from serving import model_config
from serving.errors import NotFound

log = logging.getLogger('serving')
SAVED_MODEL = 'saved_model.pb'


@dataclasses.dataclass(frozen=True)
class LoadedVersion:
  """One loaded SavedModel version."""
  version: int
  path: str
  model: object  # the tf.saved_model.load() result
  signature_defs: Mapping[str, object]  # name -> SignatureDef proto
  # name -> input names in the order of the signature's flat call (None:
  # call it by keyword); see inference.execute.
  flat_inputs: Mapping[str, Optional[Tuple[str, ...]]] = dataclasses.field(
      default_factory=dict)
  # name -> {input of known rank: its dims, None where a size is unknown},
  # for a shape check cheaper than TensorShape's; see inference.prepare.
  input_dims: Mapping[str, Mapping[str, Tuple[Optional[int], ...]]] = (
      dataclasses.field(default_factory=dict))


def _flat_inputs(fn) -> Optional[Tuple[str, ...]]:
  """A signature's input names in its flat calling order, if they account
  for every non-captured input (else the keyword call is the safe one)."""
  try:
    order = tuple(fn.function_type.parameters)
  except AttributeError:
    return None
  if len(order) + len(fn.captured_inputs) != len(fn.inputs):
    return None
  return order


def _read_signature_defs(path: str) -> Dict[str, object]:
  """SignatureDefs exactly as stored in saved_model.pb (what TF Serving reports)."""
  from tensorflow.core.protobuf import saved_model_pb2  # pylint: disable=g-import-not-at-top
  with open(os.path.join(path, SAVED_MODEL), 'rb') as f:
    saved = saved_model_pb2.SavedModel.FromString(f.read())
  return dict(saved.meta_graphs[0].signature_def)


def dir_signature(path: str) -> DirSignature:
  """Every file under `path` as (relative path, size, mtime_ns).

  A SavedModel has a handful of files, so this is a few stats a poll, and
  only for refused versions. Any file added, removed, rewritten or touched
  changes it.
  """
  files = []
  for root, _, names in os.walk(path):
    for name in names:
      full = os.path.join(root, name)
      try:
        stat = os.stat(full)
      except OSError:  # removed while walking: the next poll sees it
        continue
      files.append((os.path.relpath(full, path), stat.st_size,
                    stat.st_mtime_ns))
  return tuple(sorted(files))


def load_version(path: str, version: int) -> LoadedVersion:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  model = tf.saved_model.load(path)
  signature_defs = _read_signature_defs(path)
  if 'serving_default' not in model.signatures:
    raise ValueError(f'no serving_default signature (has {sorted(model.signatures)})')
  flat = {name: _flat_inputs(fn) for name, fn in model.signatures.items()}
  dims = {name: {key: tuple(spec.shape.as_list())
                 for key, spec in fn.structured_input_signature[1].items()
                 if spec.shape.rank is not None}
          for name, fn in model.signatures.items()}
  return LoadedVersion(version, path, model, signature_defs, flat, dims)


class ModelRegistry:
  """Thread-safe view of the served models and their versions."""

  def __init__(self, configs: List[model_config.ModelConfig],
               poll_seconds: float = 1.0,
               config_file: Optional[str] = None,
               config_poll_seconds: float = 0.0):
    """`config_file`: checked every `config_poll_seconds` (at the next
    version poll) and applied when its mtime changed (labels, policies), as
    TF Serving's --model_config_file_poll_wait_seconds does."""
    self.configs = configs
    self._poll_seconds = poll_seconds
    self._config_file = config_file
    self._config_poll_seconds = config_poll_seconds
    self._config_checked = time.monotonic()
    self._config_mtime = (os.path.getmtime(config_file) if config_file
                          else None)
    self._served: Dict[str, Mapping[int, LoadedVersion]] = {
        c.name: {} for c in configs}
    # version dir -> its files when it was refused
    self._refused: Dict[str, DirSignature] = {}
    # base path -> the entries skipped as no versions, warned about once
    self._skipped: Dict[str, frozenset] = {}
    self._stop = threading.Event()
    self._thread: Optional[threading.Thread] = None

  # --- loading -------------------------------------------------------------
  def poll_once(self) -> None:
    """Loads wanted versions, unloads unwanted ones, swaps atomically.

    The version policy is applied to the versions that can be served:
    complete on disk and not refused. So a corrupt newest version leaves
    the current one serving instead of leaving nothing.
    """
    self._reload_config()
    self._refused = {path: files for path, files in self._refused.items()
                     if os.path.isdir(path)}  # forget deleted versions
    for config in self.configs:
      current = self._served.get(config.name, {})
      loaded = dict(current)
      failed = set()  # tried once this poll: a copy under way waits a poll
      while True:
        servable = [v for v in self._versions_on_disk(config)
                    if v in loaded or
                    (v not in failed and self._may_load(config, v))]
        wanted = model_config.wanted_versions(config, servable)
        to_load = [v for v in wanted if v not in loaded]
        if not to_load:
          break
        for version in to_load:  # a failure marks it refused: loop again
          version_model = self._try_load(config, version)
          if version_model:
            loaded[version] = version_model
          else:
            failed.add(version)
      updated = {v: loaded[v] for v in wanted}
      if set(updated) != set(current):
        self._served[config.name] = updated  # one atomic assignment
        log.info('model %s: serving versions %s', config.name,
                 sorted(updated) or 'none')

  def _versions_on_disk(self, config) -> List[int]:
    """The base path's versions; a warning for each entry skipped as no
    version, when first seen (not once a poll)."""
    scan = model_config.scan_versions(config.base_path)
    seen = self._skipped.get(config.base_path, frozenset())
    for skipped in scan.skipped:
      if skipped not in seen:
        log.warning('model %s: not a version, never served: %s: %s',
                    config.name, skipped.path, skipped.why)
    self._skipped[config.base_path] = frozenset(scan.skipped)
    return scan.versions

  def _reload_config(self) -> None:
    """Swaps in the config file's new content; a bad file keeps the old one."""
    if not self._config_file:
      return
    now = time.monotonic()
    if now - self._config_checked < self._config_poll_seconds:
      return
    self._config_checked = now
    try:
      mtime = os.path.getmtime(self._config_file)
      if mtime == self._config_mtime:
        return
      configs = model_config.load(self._config_file)
    except (OSError, ValueError) as e:
      log.error('model config %s not reloaded, keeping the current one: %s',
                self._config_file, str(e).splitlines()[0][:300])
      return
    self._config_mtime = mtime
    self.configs = configs  # one atomic assignment
    log.info('model config reloaded from %s: %s', self._config_file,
             {c.name: c.labels for c in configs})

  def _pb(self, config, version: int) -> str:
    return os.path.join(config.base_path, str(version), SAVED_MODEL)

  def _may_load(self, config, version: int) -> bool:
    """Complete (saved_model.pb is copied last) and not refused as it is."""
    pb = self._pb(config, version)
    if not os.path.exists(pb):
      return False
    path = os.path.dirname(pb)
    return (path not in self._refused or
            self._refused[path] != dir_signature(path))

  def _try_load(self, config, version: int) -> Optional[LoadedVersion]:
    path = os.path.dirname(self._pb(config, version))
    # Taken before loading: a file that changes during the attempt makes
    # the next poll try again.
    files = dir_signature(path)
    try:
      loaded = load_version(path, version)
    except Exception as e:  # pylint: disable=broad-except
      self._refused[path] = files
      log.error('model %s: refusing version %d at %s until its files change: '
                '%s: %s', config.name, version, path, type(e).__name__,
                (str(e).splitlines() or [''])[0][:300])
      return None
    self._refused.pop(path, None)
    log.info('model %s: loaded version %d from %s', config.name, version, path)
    return loaded

  def start(self) -> None:
    self.poll_once()
    self._thread = threading.Thread(target=self._loop, name='version-poller',
                                    daemon=True)
    self._thread.start()

  def _loop(self) -> None:
    while not self._stop.wait(self._poll_seconds):
      try:
        self.poll_once()
      except Exception:  # pylint: disable=broad-except
        log.exception('polling the model base paths failed; will retry')

  def stop(self) -> None:
    self._stop.set()

  # --- lookups -------------------------------------------------------------
  def _config(self, name: str) -> model_config.ModelConfig:
    config = model_config.find(self.configs, name)
    if config is None:
      raise NotFound(f'Servable not found for request: Latest({name})')
    return config

  def versions(self, name: str) -> Mapping[int, LoadedVersion]:
    self._config(name)
    return self._served.get(name, {})

  def resolve(self, name: str, version: Optional[int] = None,
              label: Optional[str] = None) -> LoadedVersion:
    """The version a request names: explicit, by label, or the latest."""
    config = self._config(name)
    served = self._served.get(name, {})
    if label is not None:
      if label not in config.labels:
        raise NotFound(f'Unrecognized servable version label: {label}')
      version = config.labels[label]
    if version is None:
      if not served:
        raise NotFound(f'Servable not found for request: Latest({name})')
      return served[max(served)]
    if version not in served:
      raise NotFound(f'Servable not found for request: Specific({name}, {version})')
    return served[version]

  def status(self, name: str, version: Optional[int] = None,
             label: Optional[str] = None) -> List[Tuple[int, str]]:
    """[(version, state)] as GetModelStatus reports it."""
    if version is not None or label is not None:
      return [(self.resolve(name, version, label).version, 'AVAILABLE')]
    served = self.versions(name)
    if not served:
      raise NotFound(f'Could not find any versions of model {name}')
    return [(v, 'AVAILABLE') for v in sorted(served, reverse=True)]
