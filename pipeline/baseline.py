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

Vertex AI cannot compile a custom strategy (KubeflowV2 compiles only the
stock latest-artifact and latest-blessed-model resolvers), so the Vertex
pipeline keeps LatestBlessedModelStrategy (pipeline/pipeline.py says so).
"""

import json
import os
from typing import Dict, List, Optional

import ml_metadata as mlmd
from tfx import types
from tfx.dsl.components.common import resolver

from pipeline import configs
from lineage import graph
from serving import model_config
from serving import base_path

STABLE_LABEL = 'stable'


def rejected_by_cd(model_base: str) -> List[int]:
  """Versions whose most recent CD verdict (`cd_done`) was a rollback."""
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


def baseline_versions(model_base: str, model_config_file: Optional[str] = None,
                      model_name: str = configs.MODEL_NAME) -> List[int]:
  """Served versions in the order they qualify as baseline (see docstring)."""
  on_disk = model_config.versions_on_disk(model_base)
  rejected = set(rejected_by_cd(model_base))
  order = list(reversed(on_disk))
  stable = stable_version(model_config_file, model_name)
  if stable in on_disk:
    order.remove(stable)
    order.insert(0, stable)
  return [v for v in order if v not in rejected]


class ServedModelStrategy(resolver.ResolverStrategy):
  """Resolves `model` to the served baseline (module docstring), or nothing.

  Inputs: `model` (every Model of the pipeline) and `candidate` (this run's
  Trainer output; under a pre-IR orchestrator such as Airflow every Model,
  of which the newest is this run's). Config: `base_path` (the Pusher's
  base directory), `model_config_file` (optional), `model_name`.
  """

  def __init__(self, base_path: str, model_config_file: Optional[str] = None,
               model_name: str = configs.MODEL_NAME):
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
      found = graph.version_lineage(store, str(version), read_files=False)
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
