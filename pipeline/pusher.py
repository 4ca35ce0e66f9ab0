"""Pusher executor that never pushes a model twice and never half-pushes.

Stock TFX Pusher behaviour, and why it is not enough here:
  * A rerun whose Trainer is cached still re-runs the Evaluator (the model
    pushed last time is now the baseline), which blesses the model against
    itself, and the Pusher then writes the same model again as a new
    version. Here a model whose SavedModel fingerprint equals a version
    already under the base path is not pushed again; the PushedModel artifact
    records `pushed=0` and `already_pushed_version`.
  * It copies files straight into `<base>/<version>/`, so a run killed
    mid-copy leaves a partial version directory behind. Here the copy goes to
    a hidden `<base>/.incoming-<version>/` and is renamed into place, which is
    atomic on a local filesystem: a model server polling the base path sees
    either no new version or a complete one. Not on GCS (Vertex AI
    Pipelines): there a directory rename copies and deletes object by
    object, so the version directory appears file by file.
"""

import os
import time
from typing import Any, Dict, List, Optional

from absl import logging
from tfx import types
from tfx.components.pusher import executor as pusher_executor
from tfx.dsl.io import fileio
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils
from tfx.types import standard_component_specs
from tfx.utils import io_utils
from tfx.utils import proto_utils

from pipeline import configs

ALREADY_PUSHED_KEY = 'already_pushed_version'
_FINGERPRINT_FILES = ('fingerprint.pb', 'saved_model.pb')


def _fingerprint(model_dir: str) -> Optional[bytes]:
  for name in _FINGERPRINT_FILES:
    path = os.path.join(model_dir, name)
    if fileio.exists(path):
      with fileio.open(path, 'rb') as f:
        return name.encode() + f.read()
  return None


def versions(base_directory: str) -> List[int]:
  """Numeric version directories under a TF Serving model base path."""
  if not fileio.exists(base_directory):
    return []
  return sorted(int(name.rstrip('/')) for name in fileio.listdir(base_directory)
                if name.rstrip('/').isdigit())


def version_with_same_model(base_directory: str, model_dir: str
                           ) -> Optional[int]:
  """The pushed (or rolled-back) version holding exactly this SavedModel."""
  wanted = _fingerprint(model_dir)
  if wanted is None:
    return None
  rolled_back = os.path.join(base_directory, configs.ROLLED_BACK_DIR)
  for directory in (base_directory, rolled_back):
    for version in reversed(versions(directory)):
      if _fingerprint(os.path.join(directory, str(version))) == wanted:
        return version
  return None


class Executor(pusher_executor.Executor):
  """Filesystem push: idempotent per model, atomic per version."""

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]],
         exec_properties: Dict[str, Any]) -> None:
    self._log_startup(input_dict, output_dict, exec_properties)
    model_push = artifact_utils.get_single_instance(
        output_dict[standard_component_specs.PUSHED_MODEL_KEY])
    if not self.CheckBlessing(input_dict):
      self._MarkNotPushed(model_push)
      return
    model_path = self.GetModelPath(input_dict)
    destination = pusher_pb2.PushDestination()
    proto_utils.json_to_proto(
        exec_properties[standard_component_specs.PUSH_DESTINATION_KEY],
        destination)
    if destination.WhichOneof('destination') != 'filesystem':
      raise NotImplementedError('Only filesystem push destinations')
    base = destination.filesystem.base_directory

    existing = version_with_same_model(base, model_path)
    if existing is not None:
      logging.info('Model %s is already served as version %d; not pushed.',
                   model_path, existing)
      self._MarkNotPushed(model_push)
      model_push.set_string_custom_property(ALREADY_PUSHED_KEY, str(existing))
      return

    # Unix seconds as TFX does, but strictly after every existing version.
    version = max([int(time.time())] + [v + 1 for v in versions(base)])
    serving_path = os.path.join(base, str(version))
    incoming = os.path.join(base, f'.incoming-{version}')
    if fileio.exists(incoming):
      fileio.rmtree(incoming)  # left over from a killed push
    io_utils.copy_dir(model_path, incoming)
    fileio.rename(incoming, serving_path)
    logging.info('Model written to serving path %s.', serving_path)

    io_utils.copy_dir(model_path, model_push.uri)  # archive, as TFX does
    self._MarkPushed(model_push, pushed_destination=serving_path,
                     pushed_version=str(version))
