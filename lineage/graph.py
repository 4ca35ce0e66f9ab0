"""Lineage of served models from ML Metadata: what made a version, what used a span.

    python -m lineage.graph version 1795693904     # executions, spans, schema, hparams, metrics, code
    python -m lineage.graph span 4                  # the models trained on span 4, and their versions
    python -m lineage.graph diff 1795690717 1795693904 --json

Walks the event graph ML Metadata records (PushedModel <- Pusher <- Model <-
Trainer <- Examples, ...), so it answers for any run of this pipeline's
runners, on SQLite or MySQL, with the same store flags as `show_run`. Reads
`ml_metadata` directly and never imports TFX or TensorFlow (about a second):
the serving process and the CT controller's report import it too. The
Evaluator's metrics are read from its output files with TFMA's own proto,
loaded on its own (see `evaluation_metrics`).

Each pipeline run's context also carries the git commit of the checkout that
ran it (`record_git_revision`): on the run, never in a component's
properties, so a commit that changes no code the components run (docs, tests)
is not a cache miss and retrains nothing. Which code made a model is told by
the per-component fingerprints in Transform's and Trainer's custom_config.
"""

import argparse
import dataclasses
import datetime
import hashlib
import importlib
import importlib.util
import json
import os
import re
import struct
import subprocess
import sys
import types
from typing import Any, Dict, List, Optional, Tuple

import ml_metadata as mlmd
from ml_metadata.proto import metadata_store_pb2
from project import cli
from project import paths
from lineage import metadata_store
from serving import base_path

# Custom properties of a `pipeline_run` context (set by run_pipeline).
GIT_COMMIT_KEY = 'git_commit'
GIT_DIRTY_KEY = 'git_dirty'
UNKNOWN = 'unknown'

prop = metadata_store.custom_property


# --- Recording the code version of a run ------------------------------------


def git_revision(repo_dir: str = paths.REPO_ROOT
                ) -> Tuple[str, Optional[bool]]:
  """(commit, dirty) of the checkout at `repo_dir`.

  ('unknown', None) when it is no git checkout or git is missing: an
  installed package or a container image still runs, its lineage says so.
  Untracked files count as dirty: a new module may well be imported.
  """
  def git(*args: str) -> str:
    return subprocess.run(['git', '-C', repo_dir, *args], capture_output=True,
                          text=True, timeout=30, check=True).stdout
  try:
    commit = git('rev-parse', 'HEAD').strip()
    dirty = bool(git('status', '--porcelain').strip())
  except (OSError, subprocess.SubprocessError):
    return UNKNOWN, None
  return commit or UNKNOWN, dirty


def record_git_revision(store: mlmd.MetadataStore, pipeline_name: str,
                        revision: Tuple[str, Optional[bool]],
                        not_before: float = 0.0
                       ) -> Optional[metadata_store_pb2.Context]:
  """Sets the git commit on the newest run's `pipeline_run` context.

  Only on a run created at or after `not_before` (Unix seconds) that has no
  commit yet: if a run failed before recording any execution, the newest
  context is an earlier run's, whose commit may have been another.
  """
  run = metadata_store.latest_run(store, pipeline_name)
  if (run is None or GIT_COMMIT_KEY in run.custom_properties or
      run.create_time_since_epoch < int(not_before * 1000)):
    return None
  commit, dirty = revision
  run.custom_properties[GIT_COMMIT_KEY].string_value = commit
  if dirty is not None:
    run.custom_properties[GIT_DIRTY_KEY].int_value = int(dirty)
  store.put_contexts([run])
  return run


# --- Reading artifact files without TFX or TensorFlow ------------------------


def schema_digest(content: bytes) -> str:
  """The schema's content address (pipeline.schema_snapshot, the Dockerfile)."""
  return hashlib.sha256(content).hexdigest()[:16]


def _tfrecords(path: str):
  """Records of an uncompressed TFRecord file (checksums not verified)."""
  with open(path, 'rb') as f:
    while True:
      header = f.read(12)  # uint64 length, uint32 masked CRC of the length
      if len(header) < 12:
        return
      (length,) = struct.unpack('<Q', header[:8])
      data = f.read(length)
      f.read(4)  # masked CRC of the data
      yield data


_TFMA_PROTO_IMPORT = re.compile(
    r'^from tensorflow_model_analysis\.proto import (\w+) as (\w+)$', re.M)


def _tfma_proto(module: str):
  """A generated TFMA proto module, without importing TFMA.

  `tensorflow_model_analysis/__init__.py` imports TensorFlow and Beam
  (~15 s); the generated proto modules need only protobuf, so one is loaded
  from its file under a private name, and so are the TFMA protos it
  imports (its `from tensorflow_model_analysis.proto import X as Y` lines
  are pointed at those). Registering the same .proto again when the real
  package is imported later is allowed (identical descriptor).
  """
  if 'tensorflow_model_analysis' in sys.modules:  # already paid for
    return importlib.import_module(f'tensorflow_model_analysis.proto.{module}')
  name = f'_lineage_tfma_{module}'
  if name not in sys.modules:
    package = importlib.util.find_spec('tensorflow_model_analysis')
    path = os.path.join(package.submodule_search_locations[0], 'proto',
                        f'{module}.py')
    with open(path) as f:
      source = f.read()
    for dependency, _ in _TFMA_PROTO_IMPORT.findall(source):
      _tfma_proto(dependency)
    source = _TFMA_PROTO_IMPORT.sub(
        lambda m: f"{m.group(2)} = sys.modules['_lineage_tfma_{m.group(1)}']",
        source)
    loaded = types.ModuleType(name)
    loaded.__file__ = path
    loaded.sys = sys
    exec(compile(source, path, 'exec'), loaded.__dict__)  # pylint: disable=exec-used
    sys.modules[name] = loaded
  return sys.modules[name]


def _metrics_for_slice_class():
  return _tfma_proto('metrics_for_slice_pb2').MetricsForSlice


def evaluation_metrics(uri: str) -> Dict[str, Dict[str, float]]:
  """Overall-slice metrics of a ModelEvaluation, per model.

  {'candidate': {'auc': ...}, 'baseline': {...}} ('baseline' only when the
  Evaluator had one); {} when the files are not readable from here.
  """
  metrics_for_slice = _metrics_for_slice_class()
  result: Dict[str, Dict[str, float]] = {}
  try:
    names = sorted(n for n in os.listdir(uri) if n.startswith('metrics'))
  except OSError:
    return result
  for name in names:
    for record in _tfrecords(os.path.join(uri, name)):
      metrics = metrics_for_slice.FromString(record)
      if metrics.slice_key.single_slice_keys:
        continue
      for kv in metrics.metric_keys_and_values:
        if kv.key.is_diff or not kv.value.HasField('double_value'):
          continue
        model = 'baseline' if kv.key.model_name == 'baseline' else 'candidate'
        result.setdefault(model, {})[kv.key.name] = kv.value.double_value.value
  return result


def _slice_name(slice_key) -> str:
  parts = []
  for key in slice_key.single_slice_keys:
    value = key.WhichOneof('kind')
    value = getattr(key, value) if value else ''
    if isinstance(value, bytes):
      value = value.decode('utf-8', 'replace')
    parts.append(f'{key.column}={value}')
  return ', '.join(parts) or 'overall'


def _bounds(threshold) -> str:
  low = threshold.lower_bound.value if threshold.HasField('lower_bound') else None
  high = threshold.upper_bound.value if threshold.HasField('upper_bound') else None
  if low is not None and high is not None:
    return f'not in [{low:g}, {high:g}]'
  return f'< {low:g}' if low is not None else f'> {high:g}'


def _beside(value: float, threshold) -> str:
  """`value` with enough digits to differ from the bounds it failed
  (0.69996 < 0.7 must not print as 0.7000 < 0.7)."""
  bounds = [b.value for b in (threshold.lower_bound, threshold.upper_bound)]
  for digits in (4, 6, 8):
    text = f'{value:.{digits}f}'
    if all(text != f'{b:.{digits}f}' for b in bounds):
      return text
  return repr(value)


def blessing_failures(uri: str) -> Optional[List[str]]:
  """Why the Evaluator did not bless: one line per failed threshold.

  [] when it blessed, None when its validation result is unreadable from
  here. Read from the `validations` file TFMA writes beside the metrics.
  """
  result_class = _tfma_proto('validation_result_pb2').ValidationResult
  try:
    names = sorted(n for n in os.listdir(uri) if n.startswith('validations'))
  except OSError:
    return None
  results = [result_class.FromString(r) for name in names
             for r in _tfrecords(os.path.join(uri, name))]
  if not results:
    return None
  lines = []
  for result in results:
    for per_slice in result.metric_validations_per_slice:
      where = _slice_name(per_slice.slice_key)
      for failure in per_slice.failures:
        name = failure.metric_key.name
        value = failure.metric_value.double_value.value
        threshold = failure.metric_threshold
        if failure.metric_key.is_diff:
          drop = -threshold.change_threshold.absolute.value
          lines.append(f'{name} {value:+.4f} vs the baseline ({where}): '
                       f'more than {drop:g} below it')
        elif failure.message == 'Metric not found.':
          lines.append(f'{name} missing ({where})')
        else:
          lines.append(f'{name} {_beside(value, threshold.value_threshold)} '
                       f'{_bounds(threshold.value_threshold)} ({where})')
    for spec in result.missing_slices:
      lines.append('no evaluation data for slice '
                   + (', '.join(f'{k}={v}' for k, v in
                                sorted(spec.feature_values.items()))
                      or 'overall'))
  if not lines and not all(r.validation_ok for r in results):
    lines.append('not blessed (no threshold failure recorded)')
  return lines


# --- Walking the event graph -------------------------------------------------


@dataclasses.dataclass
class ExecutionInfo:
  """One component execution, and the run (and code) it belonged to."""
  id: int
  node: str
  state: str
  run: Optional[str]
  started: str
  finished: str
  git_commit: Optional[str] = None
  git_dirty: Optional[bool] = None


@dataclasses.dataclass
class ArtifactInfo:
  id: int
  type: str
  uri: str


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
  model: Optional[ArtifactInfo] = None
  pusher: Optional[ExecutionInfo] = None
  evaluator: Optional[ExecutionInfo] = None
  trainer: Optional[ExecutionInfo] = None
  transform: Optional[ExecutionInfo] = None
  spans: List[SpanInfo] = dataclasses.field(default_factory=list)
  schema: Optional[ArtifactInfo] = None
  schema_digest: Optional[str] = None
  transform_graph: Optional[ArtifactInfo] = None
  hparams: Optional[Dict[str, Any]] = None
  train_steps: Optional[int] = None
  eval_steps: Optional[int] = None
  trainer_code_version: Optional[str] = None
  transform_code_version: Optional[str] = None
  blessed: Optional[bool] = None
  baseline_model: Optional[ArtifactInfo] = None
  baseline_versions: List[str] = dataclasses.field(default_factory=list)
  evaluation: Optional[ArtifactInfo] = None
  metrics: Dict[str, Dict[str, float]] = dataclasses.field(
      default_factory=dict)


@dataclasses.dataclass
class ModelUse:
  """A model trained on a span: its Trainer, whole window, blessing, pushes."""
  model: ArtifactInfo
  trainer: ExecutionInfo
  spans: List[int]
  blessed: Optional[bool]
  versions: List[str]


def _time(ms: int) -> str:
  return datetime.datetime.fromtimestamp(
      ms / 1000, datetime.timezone.utc).isoformat(timespec='seconds')


def _artifact(a: metadata_store_pb2.Artifact) -> ArtifactInfo:
  return ArtifactInfo(id=a.id, type=a.type, uri=a.uri)


property_value = metadata_store.property_value


def execution_info(store: mlmd.MetadataStore,
                   execution: metadata_store_pb2.Execution) -> ExecutionInfo:
  """Node id, state, times, and the run with its recorded git commit."""
  contexts = store.get_contexts_by_execution(execution.id)
  node = next((c.name.split('.', 1)[-1] for c in contexts
               if c.type == 'node'), execution.type.rsplit('.', 1)[-1])
  run = next((c for c in contexts if c.type == 'pipeline_run'), None)
  dirty = prop(run, GIT_DIRTY_KEY) if run else None
  return ExecutionInfo(
      id=execution.id, node=node,
      state=metadata_store_pb2.Execution.State.Name(
          execution.last_known_state),
      run=run.name if run else None,
      started=_time(execution.create_time_since_epoch),
      finished=_time(execution.last_update_time_since_epoch),
      git_commit=prop(run, GIT_COMMIT_KEY) if run else None,
      git_dirty=None if dirty is None else bool(dirty))


producer = metadata_store.producer


def consumers(store: mlmd.MetadataStore, artifact_ids: List[int]
             ) -> List[int]:
  """Ids of the executions that read any of `artifact_ids`."""
  return sorted({e.execution_id for e in store.get_events_by_artifact_ids(
      artifact_ids) if e.type == metadata_store_pb2.Event.INPUT})


def custom_config(execution: metadata_store_pb2.Execution) -> Dict[str, Any]:
  """A Transform's or Trainer's custom_config (code_version, hparams)."""
  for source in (execution.properties, execution.custom_properties):
    if 'custom_config' in source:
      return json.loads(source['custom_config'].string_value or 'null') or {}
  return {}


def _steps(execution: metadata_store_pb2.Execution, key: str) -> Optional[int]:
  text = prop(execution, key)
  try:
    return json.loads(text).get('num_steps') if text else None
  except (ValueError, AttributeError):
    return None


def pushed_versions(store: mlmd.MetadataStore, model_id: int) -> List[str]:
  """Versions a Pusher wrote this model to (not its no-op re-pushes)."""
  found = set()
  for execution_id in consumers(store, [model_id]):
    _, outputs = metadata_store.execution_artifacts(store, execution_id)
    for pushed in outputs.get('pushed_model', []):
      if prop(pushed, 'pushed') == 1 and prop(pushed, 'pushed_version'):
        found.add(str(prop(pushed, 'pushed_version')))
  return sorted(found)


def pushed_model(store: mlmd.MetadataStore, version: str
                ) -> Optional[metadata_store_pb2.Artifact]:
  """The PushedModel artifact of a served version number, if recorded."""
  query = ("type = 'PushedModel' AND "
           f"custom_properties.pushed_version.string_value = '{int(version)}'")
  found = store.get_artifacts(list_options=mlmd.ListOptions(
      filter_query=query))
  return max(found, key=lambda a: a.id, default=None)


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
  pusher = producer(store, pushed.id)
  if pusher is None:
    return found
  found.pusher = execution_info(store, pusher)
  inputs, _ = metadata_store.execution_artifacts(store, pusher.id)
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
    evaluator = producer(store, blessing.id)
    if evaluator is not None:
      found.evaluator = execution_info(store, evaluator)
      ins, outs = metadata_store.execution_artifacts(store, evaluator.id)
      baseline = (ins.get('baseline_model') or [None])[0]
      if baseline is not None:
        found.baseline_model = _artifact(baseline)
        found.baseline_versions = pushed_versions(store, baseline.id)
      evaluation = (outs.get('evaluation') or [None])[0]
      if evaluation is not None:
        found.evaluation = _artifact(evaluation)
        if read_files:
          found.metrics = evaluation_metrics(evaluation.uri)
  if model is None:
    return
  found.model = _artifact(model)
  trainer = producer(store, model.id)
  if trainer is None:
    return
  found.trainer = execution_info(store, trainer)
  config = custom_config(trainer)
  found.hparams = config.get('hparams')
  found.trainer_code_version = config.get('code_version')
  found.train_steps = _steps(trainer, 'train_args')
  found.eval_steps = _steps(trainer, 'eval_args')
  inputs, _ = metadata_store.execution_artifacts(store, trainer.id)
  found.spans = sorted(
      (SpanInfo(span=property_value(a, 'span'),
                version=property_value(a, 'version'), id=a.id, uri=a.uri)
       for a in inputs.get('examples', [])),
      key=lambda s: (s.span is None, s.span, s.id))
  schema = (inputs.get('schema') or [None])[0]
  if schema is not None:
    found.schema = _artifact(schema)
    if read_files:
      try:
        with open(os.path.join(schema.uri, 'schema.pbtxt'), 'rb') as f:
          found.schema_digest = schema_digest(f.read())
      except OSError:
        pass
  graph = (inputs.get('transform_graph') or [None])[0]
  if graph is not None:
    found.transform_graph = _artifact(graph)
    transform = producer(store, graph.id)
    if transform is not None:
      found.transform = execution_info(store, transform)
      found.transform_code_version = custom_config(transform).get(
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
  if record.get('execution_id'):
    executions = store.get_executions_by_id([int(record['execution_id'])])
    if executions:
      found.pusher = execution_info(store, executions[0])
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
  for execution_id in consumers(store, examples):
    _, outputs = metadata_store.execution_artifacts(store, execution_id)
    for artifact in outputs.get('model', []):
      if artifact.type == 'Model':
        models[artifact.id] = artifact
  uses = []
  for model_id, model in sorted(models.items()):
    trainer = producer(store, model_id)
    if trainer is None:
      continue
    inputs, _ = metadata_store.execution_artifacts(store, trainer.id)
    blessings = []
    for execution_id in consumers(store, [model_id]):
      _, outputs = metadata_store.execution_artifacts(store, execution_id)
      blessings += [bool(prop(b, 'blessed'))
                    for b in outputs.get('blessing', [])
                    if prop(b, 'current_model_id') == model_id]
    uses.append(ModelUse(
        model=_artifact(model),
        trainer=execution_info(store, trainer),
        spans=sorted(property_value(a, 'span')
                     for a in inputs.get('examples', [])),
        blessed=any(blessings) if blessings else None,
        versions=pushed_versions(store, model_id)))
  return uses


def _id(artifact: Optional[ArtifactInfo]) -> Optional[int]:
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
  }
  out['code'] = {k: v for k, v in code.items() if v[0] != v[1]}
  candidate_a = a.metrics.get('candidate', {})
  candidate_b = b.metrics.get('candidate', {})
  out['metrics'] = {k: {'from': candidate_a[k], 'to': candidate_b[k],
                        'delta': candidate_b[k] - candidate_a[k]}
                    for k in sorted(set(candidate_a) & set(candidate_b))}
  out['blessed'] = [a.blessed, b.blessed]
  return out


# --- Text output -------------------------------------------------------------


def span_ranges(spans: List[int]) -> str:
  """[1, 2, 3, 5] -> '1-3, 5' ('-' for none)."""
  ranges: List[List[int]] = []
  for span in spans:
    if ranges and span == ranges[-1][1] + 1:
      ranges[-1][1] = span
    else:
      ranges.append([span, span])
  return ', '.join(f'{x}-{y}' if x != y else str(x) for x, y in ranges) or '-'


def _git(e: Optional[ExecutionInfo]) -> str:
  if e is None or e.git_commit is None:
    return 'git commit not recorded'
  if e.git_commit == UNKNOWN:
    return 'git commit unknown (not a git checkout)'
  return f'git {e.git_commit[:12]}' + (' (dirty tree)' if e.git_dirty else '')


def _execution_line(label: str, e: Optional[ExecutionInfo]) -> str:
  if e is None:
    return f'  {label:<16} not recorded'
  return (f'  {label:<16} execution {e.id}, run {e.run or "?"}, {e.state}, '
          f'{e.started} .. {e.finished}')


def format_version(v: VersionLineage) -> str:
  """Readable lineage of one version."""
  lines = [f'Model version {v.version}'
           + (f' -> {v.destination}' if v.destination else '')]
  add = lambda k, text: lines.append(f'  {k:<16} {text}')
  if v.model:
    add('model', f'#{v.model.id} {v.model.uri}')
  for label, e in (('Pusher', v.pusher), ('Evaluator', v.evaluator),
                   ('Trainer', v.trainer), ('Transform', v.transform)):
    lines.append(_execution_line(label, e))
  spans = [s.span for s in v.spans if s.span is not None]
  add('trained on', f'spans {span_ranges(spans)} '
      f'({len(v.spans)} Examples artifacts)')
  for s in v.spans:
    version = '' if s.version is None else f' version {s.version}'
    lines.append(f'    span {s.span}{version}  #{s.id} {s.uri}')
  if v.schema:
    add('schema', f'#{v.schema.id} {v.schema.uri}'
        + (f'  sha256 {v.schema_digest}' if v.schema_digest else ''))
  if v.transform_graph:
    add('transform graph', f'#{v.transform_graph.id} {v.transform_graph.uri}')
  add('hparams', json.dumps(v.hparams, sort_keys=True)
      + f'; steps train {v.train_steps}, eval {v.eval_steps}')
  baseline = ('none (first blessed model)' if v.baseline_model is None else
              f'model #{v.baseline_model.id}, version '
              + (', '.join(v.baseline_versions) or 'never pushed'))
  add('blessed', {True: 'yes', False: 'no', None: '?'}[v.blessed]
      + f'; baseline {baseline}')
  candidate, base = v.metrics.get('candidate', {}), v.metrics.get(
      'baseline', {})
  if candidate:
    add('metrics', f'{"candidate":>12} {"baseline":>12} {"delta":>10}')
    for name in sorted(candidate):
      if name in base:
        lines.append(f'    {name:<14} {candidate[name]:>12.4f} '
                     f'{base[name]:>12.4f} {candidate[name] - base[name]:>+10.4f}')
      else:
        lines.append(f'    {name:<14} {candidate[name]:>12.4f}')
  add('code', f'trainer {v.trainer_code_version}, transform '
      f'{v.transform_code_version}; trained with {_git(v.trainer)}')
  return '\n'.join(lines)


def format_span(span: int, uses: List[ModelUse]) -> str:
  if not uses:
    return f'No model was trained on span {span} (in this store).'
  lines = [f'Models trained on span {span}:']
  for u in uses:
    lines.append(
        f'  model #{u.model.id}  spans {span_ranges(u.spans)}  '
        f'blessed {({True: "yes", False: "no", None: "?"})[u.blessed]}  '
        f'pushed as {", ".join(u.versions) or "-"}')
    lines.append(f'      Trainer execution {u.trainer.id}, run '
                 f'{u.trainer.run or "?"}, {u.trainer.finished}; '
                 f'{_git(u.trainer)}')
    lines.append(f'      {u.model.uri}')
  return '\n'.join(lines)


def format_diff(d: Dict[str, Any]) -> str:
  lines = [f'Lineage diff {d["from"]} -> {d["to"]}']
  add = lambda k, text: lines.append(f'  {k:<16} {text}')
  add('spans added', span_ranges(d['spans_added']))
  add('spans removed', span_ranges(d['spans_removed']))
  if d['spans_reingested']:
    add('spans re-ingested', span_ranges(d['spans_reingested']))
  add('schema', 'changed {} -> {}'.format(*d['schema']) if d['schema_changed']
      else 'unchanged')
  add('transform graph',
      'changed' if d['transform_graph_changed'] else 'unchanged')
  add('hparams', ', '.join(f'{k} {x} -> {y}' for k, (x, y) in
                           d['hparams'].items()) or 'unchanged')
  add('code', ', '.join(f'{k} {x} -> {y}' for k, (x, y) in
                        d['code'].items()) or 'unchanged')
  add('blessed', '{} -> {}'.format(*d['blessed']))
  if d['metrics']:
    add('metrics', f'{d["from"]:>12} {d["to"]:>12} {"delta":>10}')
  for name, m in d['metrics'].items():
    lines.append(f'    {name:<14} {m["from"]:>12.4f} {m["to"]:>12.4f} '
                 f'{m["delta"]:>+10.4f}')
  return '\n'.join(lines)


# --- Command line ------------------------------------------------------------


def _version_or_exit(store, version: str,
                     model_base_path: str) -> VersionLineage:
  """From ML Metadata; else from the push record in the version directory
  (served or rolled back), for a run killed before it recorded the push."""
  found = version_lineage(store, version)
  for where in ('', base_path.ROLLED_BACK_DIR):
    if found is None:
      found = version_lineage_from_record(
          store, os.path.join(model_base_path, where, str(version)))
  if found is None:
    raise SystemExit(f'No Pusher recorded version {version} in this ML '
                     f'Metadata store, and {model_base_path}/{version} holds '
                     'no push record (see `python -m delivery.versions list`).')
  return found


def main(argv=None) -> int:
  parser = cli.ArgumentParser(prog='python -m lineage.graph',
                                   description=__doc__.split('\n\n')[0])
  common = argparse.ArgumentParser(add_help=False)
  common.add_argument('--json', action='store_true',
                      help='print JSON instead of text')
  # The store the runners wrote: the same flags and variables as show_run.
  metadata_store.add_flags(common)
  common.add_argument('--serving-dir', default=paths.SERVING_DIR,
                      help='TF Serving model base path root (default: '
                      '%(default)s)')
  common.add_argument('--model-name', default=paths.MODEL_NAME,
                      help='model name under it (default: %(default)s)')
  commands = parser.add_subparsers(dest='command', required=True)
  version = commands.add_parser(
      'version', parents=[common],
      help='executions, spans, schema, transform graph, hparams, metrics and '
      'code version of a pushed model version')
  version.add_argument('version', type=int,
                       help='a version number under the model base path')
  span = commands.add_parser('span', parents=[common],
                             help='the models trained on a span')
  span.add_argument('span', type=int, help='a span number (span-N/)')
  compare = commands.add_parser(
      'diff', parents=[common],
      help="what changed between two versions' lineage")
  compare.add_argument('version_a', type=int, metavar='V1',
                       help='the older version')
  compare.add_argument('version_b', type=int, metavar='V2',
                       help='the newer version')
  args = parser.parse_args(argv)

  connection = metadata_store.store_config(metadata_store.from_flags(args))
  if (connection.HasField('sqlite') and
      not os.path.exists(connection.sqlite.filename_uri)):
    raise SystemExit(f'No ML Metadata store at {connection.sqlite.filename_uri}'
                     ' (run the pipeline first, or pass --metadata-path)')
  store = metadata_store.open_store(connection)
  if args.command == 'version':
    found = _version_or_exit(store, args.version, os.path.join(args.serving_dir, args.model_name))
    data, text = dataclasses.asdict(found), format_version(found)
  elif args.command == 'span':
    uses = span_models(store, args.span)
    data = {'span': args.span, 'models': [dataclasses.asdict(u) for u in uses]}
    text = format_span(args.span, uses)
  else:
    data = diff(_version_or_exit(store, args.version_a, os.path.join(args.serving_dir, args.model_name)),
                _version_or_exit(store, args.version_b, os.path.join(args.serving_dir, args.model_name)))
    text = format_diff(data)
  print(json.dumps(data, indent=2, sort_keys=True) if args.json else text)
  return 0


if __name__ == '__main__':
  sys.exit(main())
