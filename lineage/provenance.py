"""What made a served version: its lineage in ML Metadata, and what changed.

PushedModel <- Pusher <- Model <- Trainer <- Examples (the window's spans),
the schema, the transform graph, the hyperparameters (and the Tuner that set
them), the Evaluator's blessing and metrics, the baseline it was compared
with (`version_lineage`, or `version_lineage_from_record` from the Pusher's
push record when the store has no PushedModel); the models trained on a span
(`span_models`); what differs between two versions (`diff`). Built of the
run and artifact walks in lineage/graph.py; reads `ml_metadata` directly and
never imports TFX or TensorFlow, so the serving process, CT, delivery and
the lineage CLI import it too.
"""

import dataclasses
import json
import os
from typing import Any, Dict, List, Optional, Tuple

import ml_metadata as mlmd
from ml_metadata.proto import metadata_store_pb2
from lineage import graph
from lineage import metadata_store
from lineage import readers
from serving import base_path

prop = metadata_store.custom_property
property_value = metadata_store.property_value


@dataclasses.dataclass
class SpanInfo:
  span: Optional[int]
  version: Optional[int]
  id: int
  uri: str


@dataclasses.dataclass
class VersionLineage:
  """Everything ML Metadata knows about how a served version came to be."""
  version: str
  destination: Optional[str]
  model: Optional[graph.ArtifactInfo] = None
  pusher: Optional[graph.ExecutionInfo] = None
  evaluator: Optional[graph.ExecutionInfo] = None
  trainer: Optional[graph.ExecutionInfo] = None
  transform: Optional[graph.ExecutionInfo] = None
  spans: List[SpanInfo] = dataclasses.field(default_factory=list)
  schema: Optional[graph.ArtifactInfo] = None
  schema_digest: Optional[str] = None
  transform_graph: Optional[graph.ArtifactInfo] = None
  hparams: Optional[Dict[str, Any]] = None
  train_steps: Optional[int] = None
  eval_steps: Optional[int] = None
  trainer_code_version: Optional[str] = None
  transform_code_version: Optional[str] = None
  blessed: Optional[bool] = None
  baseline_model: Optional[graph.ArtifactInfo] = None
  baseline_versions: List[str] = dataclasses.field(default_factory=list)
  evaluation: Optional[graph.ArtifactInfo] = None
  metrics: Dict[str, Dict[str, float]] = dataclasses.field(
      default_factory=dict)
  # Which tuning set the hyperparameters: the Trainer's HyperParameters
  # input and the Tuner execution that wrote it (None: not tuned).
  hyperparameters: Optional[graph.ArtifactInfo] = None
  tuner: Optional[graph.ExecutionInfo] = None
  # The hparams keys whose value came from tuning (the Trainer's history).
  tuned: List[str] = dataclasses.field(default_factory=list)
  # The version's model card (serving.base_path.model_card_path), if any.
  model_card: Optional[str] = None


@dataclasses.dataclass
class ModelUse:
  """A model trained on a span: its Trainer, whole window, blessing, pushes."""
  model: graph.ArtifactInfo
  trainer: graph.ExecutionInfo
  spans: List[int]
  blessed: Optional[bool]
  versions: List[str]


def _steps(execution: metadata_store_pb2.Execution, key: str) -> Optional[int]:
  text = prop(execution, key)
  try:
    return json.loads(text).get('num_steps') if text else None
  except (ValueError, AttributeError):
    return None


def pushed_model(store: mlmd.MetadataStore, version: str
                ) -> Optional[metadata_store_pb2.Artifact]:
  """The PushedModel artifact of a served version number, if recorded."""
  query = ("type = 'PushedModel' AND "
           f"custom_properties.pushed_version.string_value = '{int(version)}'")
  found = store.get_artifacts(list_options=mlmd.ListOptions(
      filter_query=query))
  return max(found, key=lambda a: a.id, default=None)


def version_model(store: mlmd.MetadataStore, version: str
                 ) -> Tuple[Optional[metadata_store_pb2.Artifact],
                            Optional[metadata_store_pb2.Artifact]]:
  """(Model, ModelBlessing) the Pusher of version `version` read; (None,
  None) when no Pusher of this store recorded that version."""
  pushed = pushed_model(store, version)
  pusher = graph.producer(store, pushed.id) if pushed is not None else None
  if pusher is None:
    return None, None
  inputs, _ = graph.execution_artifacts(store, pusher.id)
  return ((inputs.get('model') or [None])[0],
          (inputs.get('model_blessing') or [None])[0])


def model_blessings(store: mlmd.MetadataStore, model_id: int
                   ) -> List[metadata_store_pb2.Artifact]:
  """The LIVE ModelBlessings an Evaluator gave Model `model_id` (its
  `current_model_id`; not those naming it as the baseline), newest first."""
  query = ("type = 'ModelBlessing' AND "
           f'custom_properties.current_model_id.int_value = {int(model_id)}')
  found = store.get_artifacts(list_options=mlmd.ListOptions(
      filter_query=query))
  return sorted((a for a in found
                 if a.state == metadata_store_pb2.Artifact.LIVE),
                key=lambda a: a.id, reverse=True)


def _model_card(version_dir: Optional[str]) -> Optional[str]:
  path = version_dir and base_path.model_card_path(version_dir)
  return path if path and os.path.exists(path) else None


def version_lineage(store: mlmd.MetadataStore, version: str,
                    read_files: bool = True) -> Optional[VersionLineage]:
  """How version `version` was made; None if no Pusher recorded it.

  `read_files` also reads the schema (for its digest) and the Evaluator's
  metrics from the artifacts' URIs; without it only ML Metadata is read.
  """
  pushed = pushed_model(store, version)
  if pushed is None:
    return None
  found = VersionLineage(version=str(int(version)),
                         destination=prop(pushed, 'pushed_destination'))
  found.model_card = _model_card(found.destination)
  pusher = graph.producer(store, pushed.id)
  if pusher is None:
    return found
  found.pusher = graph.execution_info(store, pusher)
  inputs, _ = graph.execution_artifacts(store, pusher.id)
  model = (inputs.get('model') or [None])[0]
  blessing = (inputs.get('model_blessing') or [None])[0]
  _fill_from_pusher_inputs(store, found, model, blessing, read_files)
  return found


def _fill_from_pusher_inputs(store: mlmd.MetadataStore, found: VersionLineage,
                             model, blessing, read_files: bool) -> None:
  """Blessing, Evaluator, Trainer, spans, schema, Transform: from the Model
  and ModelBlessing a Pusher read."""
  if blessing is not None:
    found.blessed = bool(prop(blessing, 'blessed'))
    evaluator = graph.producer(store, blessing.id)
    if evaluator is not None:
      found.evaluator = graph.execution_info(store, evaluator)
      ins, outs = graph.execution_artifacts(store, evaluator.id)
      baseline = (ins.get('baseline_model') or [None])[0]
      if baseline is not None:
        found.baseline_model = graph.artifact_info(baseline)
        found.baseline_versions = graph.pushed_versions(store, baseline.id)
      evaluation = (outs.get('evaluation') or [None])[0]
      if evaluation is not None:
        found.evaluation = graph.artifact_info(evaluation)
        if read_files:
          found.metrics = readers.evaluation_metrics(evaluation.uri)
  if model is None:
    return
  found.model = graph.artifact_info(model)
  trainer = graph.producer(store, model.id)
  if trainer is None:
    return
  found.trainer = graph.execution_info(store, trainer)
  config = graph.custom_config(trainer)
  found.hparams = config.get('hparams')
  found.trainer_code_version = config.get('code_version')
  found.train_steps = _steps(trainer, 'train_args')
  found.eval_steps = _steps(trainer, 'eval_args')
  inputs, outputs = graph.execution_artifacts(store, trainer.id)
  hyperparameters = (inputs.get('hyperparameters') or [None])[0]
  if hyperparameters is not None:
    found.hyperparameters = graph.artifact_info(hyperparameters)
    tuner = graph.producer(store, hyperparameters.id)
    if tuner is not None:
      found.tuner = graph.execution_info(store, tuner)
  model_run = (outputs.get('model_run') or [None])[0]
  history = (readers.training_history(model_run.uri)
             if read_files and model_run is not None else None)
  if history:  # what run_fn used: the configured values, tuned ones applied
    found.hparams = history.get('hparams', found.hparams)
    found.tuned = list(history.get('tuned', []))
  found.spans = sorted(
      (SpanInfo(span=property_value(a, 'span'),
                version=property_value(a, 'version'), id=a.id, uri=a.uri)
       for a in inputs.get('examples', [])),
      key=lambda s: (s.span is None, s.span, s.id))
  schema = (inputs.get('schema') or [None])[0]
  if schema is not None:
    found.schema = graph.artifact_info(schema)
    if read_files:
      try:
        with open(os.path.join(schema.uri, 'schema.pbtxt'), 'rb') as f:
          found.schema_digest = readers.schema_digest(f.read())
      except OSError:
        pass
  transform_graph = (inputs.get('transform_graph') or [None])[0]
  if transform_graph is not None:
    found.transform_graph = graph.artifact_info(transform_graph)
    transform = graph.producer(store, transform_graph.id)
    if transform is not None:
      found.transform = graph.execution_info(store, transform)
      found.transform_code_version = graph.custom_config(transform).get(
          'code_version')


def version_lineage_from_record(store: mlmd.MetadataStore, version_dir: str,
                                read_files: bool = True
                               ) -> Optional[VersionLineage]:
  """Lineage of a version no PushedModel records, from the Pusher's record
  in the version directory (serving.base_path.PUSH_RECORD): a run killed
  after the Pusher's rename and before ML Metadata recorded the push. The
  Model and ModelBlessing it names were published before the Pusher ran;
  its Pusher execution is RUNNING (or CANCELED once a later run marked it).
  None if the directory has no record or the store knows neither artifact."""
  record = base_path.read_push_record(version_dir)
  if record is None:
    return None
  found = VersionLineage(version=str(int(record['version'])),
                         destination=record.get('destination'))
  found.model_card = _model_card(version_dir)
  if record.get('execution_id'):
    executions = store.get_executions_by_id([int(record['execution_id'])])
    if executions:
      found.pusher = graph.execution_info(store, executions[0])
  ids = [int(record[k]) for k in ('model_id', 'blessing_id') if record.get(k)]
  by_id = {a.id: a for a in store.get_artifacts_by_id(ids)} if ids else {}
  model = by_id.get(record.get('model_id'))
  blessing = by_id.get(record.get('blessing_id'))
  if model is None and blessing is None:
    return None
  _fill_from_pusher_inputs(store, found, model, blessing, read_files)
  return found


def span_models(store: mlmd.MetadataStore, span: int) -> List[ModelUse]:
  """The models trained on any Examples artifact of `span`, oldest first."""
  examples = [a.id for a in store.get_artifacts_by_type('Examples')
              if property_value(a, 'span') == span]
  models: Dict[int, metadata_store_pb2.Artifact] = {}
  for execution_id in graph.consumers(store, examples):
    _, outputs = graph.execution_artifacts(store, execution_id)
    for artifact in outputs.get('model', []):
      if artifact.type == 'Model':
        models[artifact.id] = artifact
  uses = []
  for model_id, model in sorted(models.items()):
    trainer = graph.producer(store, model_id)
    if trainer is None:
      continue
    inputs, _ = graph.execution_artifacts(store, trainer.id)
    blessings = []
    for execution_id in graph.consumers(store, [model_id]):
      _, outputs = graph.execution_artifacts(store, execution_id)
      blessings += [bool(prop(b, 'blessed'))
                    for b in outputs.get('blessing', [])
                    if prop(b, 'current_model_id') == model_id]
    uses.append(ModelUse(
        model=graph.artifact_info(model),
        trainer=graph.execution_info(store, trainer),
        spans=sorted(property_value(a, 'span')
                     for a in inputs.get('examples', [])),
        blessed=any(blessings) if blessings else None,
        versions=graph.pushed_versions(store, model_id)))
  return uses


def _id(artifact: Optional[graph.ArtifactInfo]) -> Optional[int]:
  return artifact.id if artifact else None


def _schema_key(v: VersionLineage):
  """The schema's content digest, else (files unreadable) its artifact id."""
  return v.schema_digest or _id(v.schema)


def diff(a: VersionLineage, b: VersionLineage) -> Dict[str, Any]:
  """What changed from version `a` to version `b`: data, schema, config, code,
  metrics. Unchanged things are left out, except the headline booleans."""
  spans_a = {s.span: s.id for s in a.spans}
  spans_b = {s.span: s.id for s in b.spans}
  out: Dict[str, Any] = {
      'from': a.version, 'to': b.version,
      'spans_added': sorted(set(spans_b) - set(spans_a)),
      'spans_removed': sorted(set(spans_a) - set(spans_b)),
      # The same span, ingested again (another Examples artifact).
      'spans_reingested': sorted(s for s in set(spans_a) & set(spans_b)
                                 if spans_a[s] != spans_b[s]),
      'schema_changed': _schema_key(a) != _schema_key(b),
      'transform_graph_changed': _id(a.transform_graph) != _id(
          b.transform_graph),
  }
  if out['schema_changed']:
    out['schema'] = [a.schema_digest, b.schema_digest]
  hparams_a, hparams_b = a.hparams or {}, b.hparams or {}
  out['hparams'] = {k: [hparams_a.get(k), hparams_b.get(k)]
                    for k in sorted(set(hparams_a) | set(hparams_b))
                    if hparams_a.get(k) != hparams_b.get(k)}
  for key in ('train_steps', 'eval_steps'):
    if getattr(a, key) != getattr(b, key):
      out['hparams'][key] = [getattr(a, key), getattr(b, key)]
  code = {
      'trainer_code_version': [a.trainer_code_version, b.trainer_code_version],
      'transform_code_version': [a.transform_code_version,
                                 b.transform_code_version],
      'git_commit': [a.trainer and a.trainer.git_commit,
                     b.trainer and b.trainer.git_commit],
      # `python -m pipeline.release diff` shows the change between these.
      'pipeline_release': [a.trainer and a.trainer.release,
                           b.trainer and b.trainer.release],
  }
  out['code'] = {k: v for k, v in code.items() if v[0] != v[1]}
  candidate_a = a.metrics.get('candidate', {})
  candidate_b = b.metrics.get('candidate', {})
  out['metrics'] = {k: {'from': candidate_a[k], 'to': candidate_b[k],
                        'delta': candidate_b[k] - candidate_a[k]}
                    for k in sorted(set(candidate_a) & set(candidate_b))}
  out['blessed'] = [a.blessed, b.blessed]
  return out
