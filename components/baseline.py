"""The baseline a candidate is judged against: the model users are served.

TFX's LatestBlessedModelStrategy picks the newest *blessed* Model in ML
Metadata. That is the wrong model as soon as serving and metadata part ways:
  * a version rolled back (`delivery.versions rollback`) or rejected by the
    CD gate (`delivery.cd`) is still the newest blessed model, so the next
    candidate is compared with a model nobody serves;
  * on a rerun after a push the cached candidate *is* the newest blessed
    model, so the Evaluator re-runs and blesses the model against itself.

The rule here (`baseline_versions`, one owner): the baseline is the model of
the version users are served, read from the model base path the Pusher
writes, in this order of preference
  1. the version labelled `stable` in the TF Serving model config file, when
     one is given (`--model-config-file`): what CD promoted;
  2. else the newest version on disk (what a `latest` policy serves),
and never
  * a version moved to `<base>/.rolled-back/` (rollback, CD rejection),
  * a version whose last CD verdict in `<base>/.versions.log` is a
    rollback (CD keeps a rejected version on disk when another label still
    points at it),
  * a version whose model is the candidate itself: then the next version in
    that order is the baseline, which is the one the candidate was first
    judged against, so a rerun with unchanged inputs is cached end to end.
A version is mapped to its Model artifact through ML Metadata (PushedModel
-> Pusher -> model); a version no Pusher of this store recorded is skipped.

What is *served* (`served_version`, for batch scoring: pipeline/scoring.py)
is the first version of that same order: the model users get, never
skipped for another. `served_model` maps it to its Model and the
ModelBlessing the Evaluator gave that Model, or says why it cannot.

Vertex AI cannot compile a custom strategy (KubeflowV2 compiles only the
stock latest-artifact and latest-blessed-model resolvers), so the Vertex
pipeline keeps LatestBlessedModelStrategy (pipeline/pipeline.py says so).
"""

import dataclasses
import json
import os
from typing import Dict, List, Optional

import ml_metadata as mlmd
from tfx import types
from tfx.dsl.components.common import resolver

from ml_metadata.proto import metadata_store_pb2
from lineage import provenance
from lineage import metadata_store
from serving import model_config
from serving import base_path

STABLE_LABEL = 'stable'


def rejected_by_cd(model_base: str) -> List[int]:
  """Versions whose most recent CD verdict (`cd_done`) was a rollback,
  unless a person restored them since (`delivery.versions restore V`
  overrides CD: the version is served again, so it is the baseline again)."""
  verdicts: Dict[int, str] = {}
  try:
    with open(os.path.join(model_base, base_path.ACTION_LOG)) as f:
      lines = f.readlines()
  except OSError:
    return []
  for line in lines:
    try:
      record = json.loads(line)
      if record.get('action') == 'cd_done':
        verdicts[int(record['version'])] = record.get('decision', '')
      elif record.get('action') == 'restore':
        verdicts[int(record['restored'])] = 'restored'
    except (ValueError, KeyError, TypeError):
      continue  # a torn last line of a killed writer: not a verdict
  return sorted(v for v, decision in verdicts.items()
                if decision == 'rolled_back')


def stable_version(model_config_file: Optional[str],
                   model_name: str) -> Optional[int]:
  """The version labelled `stable` in a TF Serving model config, if any."""
  if not model_config_file:
    return None
  entry = model_config.find(model_config.load(model_config_file), model_name)
  return entry.labels.get(STABLE_LABEL) if entry else None


def model_name_of(model_base: str) -> str:
  """The model a base path serves: its last folder (<serving dir>/<model>),
  the name its TF Serving config entry has."""
  return os.path.basename(os.path.normpath(model_base))


def baseline_versions(model_base: str, model_config_file: Optional[str] = None,
                      model_name: Optional[str] = None) -> List[int]:
  """Served versions in the order they qualify as baseline (see docstring).
  `model_name`: the config entry's name (default: model_name_of)."""
  on_disk = model_config.versions_on_disk(model_base)
  rejected = set(rejected_by_cd(model_base))
  order = list(reversed(on_disk))
  stable = stable_version(model_config_file,
                          model_name or model_name_of(model_base))
  if stable in on_disk:
    order.remove(stable)
    order.insert(0, stable)
  return [v for v in order if v not in rejected]


def served_version(model_base: str, model_config_file: Optional[str] = None,
                   model_name: Optional[str] = None) -> Optional[int]:
  """The version users are served: the first in `baseline_versions`' order
  (None: nothing is served)."""
  order = baseline_versions(model_base, model_config_file, model_name)
  return order[0] if order else None


class NotServedError(ValueError):
  """No served version, or none this ML Metadata store can trace."""


@dataclasses.dataclass
class ServedModel:
  """The served version, its Model and the blessing its Evaluator gave it."""
  version: int
  model: metadata_store_pb2.Artifact
  blessing: metadata_store_pb2.Artifact
  why: str  # which rule picked the version, for people


def served_model(store: mlmd.MetadataStore, model_base: str,
                 model_config_file: Optional[str] = None,
                 model_name: Optional[str] = None) -> ServedModel:
  """The served version's Model and ModelBlessing, from ML Metadata.

  The blessing is the Evaluator's verdict on that very Model (its
  `current_model_id`); of several, the one the version's Pusher read, else
  the newest. Raises NotServedError when nothing is served, when no Pusher
  of this store recorded the served version (it was pushed from another
  store: there is no Model to trace, and another version is never taken
  instead), or when its Model has no blessed ModelBlessing.
  """
  version = served_version(model_base, model_config_file, model_name)
  if version is None:
    raise NotServedError(
        f'Nothing is served from {model_base}: no version directory there '
        '(or every one was rolled back or rejected by CD). Push a model '
        'first (make run).')
  stable = stable_version(model_config_file, model_name)
  why = (f'the {STABLE_LABEL!r} label of {model_config_file}'
         if version == stable else 'the newest version on disk')
  model, pushed_blessing = provenance.version_model(store, str(version))
  if model is None:
    raise NotServedError(
        f'Version {version} is served from {model_base} ({why}), but no '
        'Pusher in this ML Metadata store recorded it (pushed from another '
        'store or pipeline?), so it has no Model here to score with and '
        'trace back. Point --metadata-path (or the MySQL flags) at the '
        'store of the run that pushed it.')
  blessings = provenance.model_blessings(store, model.id)
  blessed = lambda b: metadata_store.custom_property(b, 'blessed') == 1
  blessing = (next((b for b in blessings if pushed_blessing is not None and
                    b.id == pushed_blessing.id), None) or
              next((b for b in blessings if blessed(b)), None) or
              next(iter(blessings), None))
  if blessing is None or not blessed(blessing):
    raise NotServedError(
        f'Version {version} (Model #{model.id}) is served from {model_base}, '
        'but ' + ('no Evaluator blessed it' if blessing is None else
                  f'its Evaluator did not bless it (ModelBlessing '
                  f'#{blessing.id})') + ': BulkInferrer scores only a '
        'blessed model (it writes nothing for an unblessed one).')
  return ServedModel(version=version, model=model, blessing=blessing,
                     why=why)


class ServedModelStrategy(resolver.ResolverStrategy):
  """Resolves `model` to the served baseline (module docstring), or nothing.

  Inputs: `model` (every Model of the pipeline) and `candidate` (this run's
  Trainer output; under a pre-IR orchestrator such as Airflow every Model,
  of which the newest is this run's). Config: `base_path` (the Pusher's
  base directory), `model_config_file` (optional), `model_name`.
  """

  def __init__(self, base_path: str, model_config_file: Optional[str] = None,
               model_name: Optional[str] = None):
    self._base_path = base_path
    self._model_config_file = model_config_file or None
    self._model_name = model_name

  def resolve_artifacts(
      self, store: mlmd.MetadataStore,
      input_dict: Dict[str, List[types.Artifact]]
  ) -> Optional[Dict[str, List[types.Artifact]]]:
    models = {m.id: m for m in input_dict.get('model', [])}
    candidates = input_dict.get('candidate', [])
    candidate = max((m.id for m in candidates), default=None)
    chosen = []
    for version in baseline_versions(self._base_path, self._model_config_file,
                                     self._model_name):
      found = provenance.version_lineage(store, str(version), read_files=False)
      if found is None or found.model is None:
        continue  # pushed by another store or pipeline: no Model to compare
      if found.model.id == candidate or found.model.id not in models:
        continue
      chosen = [models[found.model.id]]
      break
    # `candidate` is an input only: the pre-IR launcher records an OUTPUT
    # event per returned artifact, and ML Metadata allows one per (artifact,
    # execution), so a baseline also listed as a candidate would fail.
    return {'model': chosen, 'candidate': []}
