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
  * Nothing stops a rollback, a promotion or a CD run from changing the
    base path while it pushes. Here the duplicate check, the choice of the
    version number, the copy and the rename happen holding the base path's
    lock (serving.base_path, which those take too); `.incoming-*` copies
    left by killed pushes are removed first (the lock proves nobody is
    writing them). No lock on GCS, where flock does not exist.
  * A version pushed just before the run was killed (after the rename,
    before ML Metadata recorded the push) is served with no lineage. Here
    the copy gets a record of where it came from before the rename:
    serving.base_path.PUSH_RECORD, `assets.extra/tfx_reference_push.json`
    (pipeline, run, Pusher execution, Model and ModelBlessing artifacts,
    fingerprint, time). TF Serving ignores assets.extra/ (it reads only
    tf_serving_warmup_requests there) and the SavedModel's fingerprint.pb
    does not cover it, so the duplicate check below is unaffected.
    `python -m delivery.versions list` falls back to it.
  * Nothing describes a version for its users. Here the component takes a
    `model_card` input (components/model_card.py) and writes the card, with
    its version number, beside the push record before the rename, so every
    pushed version carries its card. The rest of the stock PusherSpec is
    unchanged: the same inputs (model, model_blessing, infra_blessing, which
    the stock CheckBlessing reads), properties and output.
"""

import contextlib
import datetime
import hashlib
import json
import os
import time
from typing import Any, Dict, List, Optional

from absl import logging
from tfx import types
from tfx.components.pusher import component as pusher_component
from tfx.components.pusher import executor as pusher_executor
from tfx.dsl.components.base import base_component
from tfx.dsl.components.base import executor_spec
from tfx.dsl.io import fileio
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils
from tfx.types import channel
from tfx.types import standard_artifacts
from tfx.types import standard_component_specs
from tfx.types.component_spec import ChannelParameter
from tfx.utils import io_utils
from tfx.utils import json_utils
from tfx.utils import proto_utils

from components import model_card as card_lib
from ops import tfx_private
from serving import base_path

ALREADY_PUSHED_KEY = 'already_pushed_version'
_FINGERPRINT_FILES = ('fingerprint.pb', 'saved_model.pb')
# A CD run holds the base path's lock for its whole run (minutes at worst,
# delivery.cd --wait_seconds per step); a push waits for it to end.
LOCK_TIMEOUT_S = 900.0


def _fingerprint(model_dir: str) -> Optional[bytes]:
  for name in _FINGERPRINT_FILES:
    path = os.path.join(model_dir, name)
    if fileio.exists(path):
      with fileio.open(path, 'rb') as f:
        return name.encode() + f.read()
  return None


def _fingerprint_digest(model_dir: str) -> Optional[Dict[str, str]]:
  for name in _FINGERPRINT_FILES:
    path = os.path.join(model_dir, name)
    if fileio.exists(path):
      with fileio.open(path, 'rb') as f:
        return {'file': name, 'sha256': hashlib.sha256(f.read()).hexdigest()}
  return None


def _local(path: str) -> bool:
  return '://' not in path


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
  rolled_back = os.path.join(base_directory, base_path.ROLLED_BACK_DIR)
  for directory in (base_directory, rolled_back):
    for version in reversed(versions(directory)):
      if _fingerprint(os.path.join(directory, str(version))) == wanted:
        return version
  return None


def push_record(executor: pusher_executor.Executor,
                input_dict: Dict[str, List[types.Artifact]], model_dir: str,
                version: int, serving_path: str) -> Dict[str, Any]:
  """What base_path.PUSH_RECORD holds: enough to find the run in ML Metadata
  and, without it, to say which run pushed the version and from what."""
  running = tfx_private.execution_info(executor)
  model = (input_dict.get(standard_component_specs.MODEL_KEY) or [None])[0]
  blessing = (input_dict.get(standard_component_specs.MODEL_BLESSING_KEY)
              or [None])[0]
  return {
      'version': version,
      'destination': serving_path,
      'pipeline_name': running['pipeline_name'],
      'pipeline_run_id': running['pipeline_run_id'],
      'node_id': running['node_id'],
      'execution_id': running['execution_id'],
      'model_id': model.id if model is not None and model.id else None,
      'model_uri': model.uri if model is not None else None,
      'blessing_id': (blessing.id if blessing is not None and blessing.id
                      else None),
      'blessing_uri': blessing.uri if blessing is not None else None,
      # Pushed only if blessed (CheckBlessing); no blessing input: None.
      'blessed': True if blessing is not None else None,
      'fingerprint': _fingerprint_digest(model_dir),
      'pushed_at': datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec='seconds'),
  }


def _write_push_record(version_dir: str, record: Dict[str, Any]) -> None:
  path = os.path.join(version_dir, base_path.PUSH_RECORD)
  fileio.makedirs(os.path.dirname(path))
  with fileio.open(path, 'w') as f:
    f.write(json.dumps(record, indent=2, sort_keys=True) + '\n')


class Executor(pusher_executor.Executor):
  """Filesystem push: idempotent per model, atomic per version, one at a
  time per base path, with a record of its lineage in the version."""

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]],
         exec_properties: Dict[str, Any]) -> None:
    tfx_private.log_startup(self, input_dict, output_dict, exec_properties)
    model_push = artifact_utils.get_single_instance(
        output_dict[standard_component_specs.PUSHED_MODEL_KEY])
    if not self.CheckBlessing(input_dict):
      tfx_private.mark_not_pushed(self, model_push)
      return
    model_path = self.GetModelPath(input_dict)
    destination = pusher_pb2.PushDestination()
    proto_utils.json_to_proto(
        exec_properties[standard_component_specs.PUSH_DESTINATION_KEY],
        destination)
    if destination.WhichOneof('destination') != 'filesystem':
      raise NotImplementedError('Only filesystem push destinations')
    base = destination.filesystem.base_directory
    fileio.makedirs(base)
    if _local(base):
      lock = base_path.locked(base, LOCK_TIMEOUT_S, what='Pusher')
    else:
      logging.warning('No lock on %s (not a local filesystem): a rollback or '
                      'CD run at the same time is not kept out.', base)
      lock = contextlib.nullcontext()
    with lock:
      if _local(base):
        for path in base_path.remove_stale_incoming(base):
          logging.info('Removed %s, left by a killed push.', path)
      existing = version_with_same_model(base, model_path)
      if existing is not None:
        logging.info('Model %s is already served as version %d; not pushed.',
                     model_path, existing)
        tfx_private.mark_not_pushed(self, model_push)
        model_push.set_string_custom_property(ALREADY_PUSHED_KEY,
                                              str(existing))
        return
      # Unix seconds as TFX does, but strictly after every existing version,
      # rolled-back ones included (a rollback must never find its number
      # taken under .rolled-back/).
      taken = versions(base) + versions(
          os.path.join(base, base_path.ROLLED_BACK_DIR))
      version = max([int(time.time())] + [v + 1 for v in taken])
      serving_path = os.path.join(base, str(version))
      incoming = os.path.join(base, f'{base_path.INCOMING_PREFIX}{version}')
      if fileio.exists(incoming):
        fileio.rmtree(incoming)  # left over from a killed push (GCS)
      io_utils.copy_dir(model_path, incoming)
      record = push_record(self, input_dict, model_path, version,
                           serving_path)
      card = (input_dict.get(card_lib.MODEL_CARD_KEY) or [None])[0]
      if card is not None:
        card_lib.write(card_lib.with_version(card_lib.read(card.uri), version,
                                             serving_path),
                       os.path.join(incoming, base_path.MODEL_CARD_DIR))
        record['model_card'] = base_path.model_card_path('')
      _write_push_record(incoming, record)
      fileio.rename(incoming, serving_path)
      logging.info('Model written to serving path %s.', serving_path)
      if _local(base):
        try:
          base_path.log_action(base, 'push', version=version,
                               run=record['pipeline_run_id'],
                               model_id=record['model_id'])
        except OSError as e:  # the version is pushed: say so, do not fail
          logging.warning('Could not log the push to %s: %s',
                          base_path.ACTION_LOG, e)

    io_utils.copy_dir(model_path, model_push.uri)  # archive, as TFX does
    tfx_private.mark_pushed(self, model_push, pushed_destination=serving_path,
                            pushed_version=str(version))


class PusherSpec(standard_component_specs.PusherSpec):
  """The stock PusherSpec and an optional `model_card` input."""
  INPUTS = {
      **standard_component_specs.PusherSpec.INPUTS,
      card_lib.MODEL_CARD_KEY: ChannelParameter(type=card_lib.ModelCard,
                                                optional=True),
  }


class Pusher(pusher_component.Pusher):
  """TFX's Pusher with this module's Executor and the model card input.

  Same node id ('Pusher'), inputs, properties and output as the stock one.
  """
  SPEC_CLASS = PusherSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

  def __init__(self, *, model, model_blessing,
               push_destination: pusher_pb2.PushDestination,
               infra_blessing=None, model_card=None):
    # pylint: disable=non-parent-init-called,super-init-not-called
    # The stock __init__ builds the stock spec; this one builds ours.
    base_component.BaseComponent.__init__(self, spec=PusherSpec(
        model=model, model_blessing=model_blessing,
        infra_blessing=infra_blessing, model_card=model_card,
        push_destination=push_destination,
        custom_config=json_utils.dumps(None),  # as the stock __init__
        pushed_model=channel.Channel(type=standard_artifacts.PushedModel)))
