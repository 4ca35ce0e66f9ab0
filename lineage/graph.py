"""The one walk of ML Metadata's event graph: what made what, in which run.

TFX records three context types per pipeline: `pipeline` (name),
`pipeline_run` (one per run) and `node` (`<pipeline>.<node id>`), and an
INPUT/OUTPUT event per artifact an execution read or wrote. The steps of
every question the project asks of that graph are here: the runs and their
nodes (`latest_run`, `run_nodes`, `run_executions`), who made and who read
an artifact (`producer`, `consumers`, `execution_artifacts`), the spans
ExampleGen ingested (`ingested_examples`), the versions a model was pushed
to (`pushed_versions`), and which model scored a span's rows (`scorings`:
CSV <- BulkInferrer <- Model, Examples). The lineage of a served version is
built of these steps in lineage/provenance.py. So it answers for any run of
this pipeline's runners, on SQLite or MySQL. It reads `ml_metadata`
directly and never imports TFX or TensorFlow (about a second): the serving
process, the CT controller and the lineage CLI (`python -m lineage`) import
it too; files are read by lineage/readers.py, text is made by
lineage/report.py.

Each pipeline run's context also carries the git commit of the checkout that
ran it (`record_git_revision`): on the run, never in a component's
properties, so a commit that changes no code the components run (docs, tests)
is not a cache miss and retrains nothing. Which code made a model is told by
the per-component fingerprints in Transform's and Trainer's custom_config.
"""

import dataclasses
import datetime
import json
import os
from typing import Any, Dict, List, Optional, Tuple

import ml_metadata as mlmd
from ml_metadata.proto import metadata_store_pb2
from lineage import metadata_store

# Custom properties of a `pipeline_run` context (set by run_pipeline).
GIT_COMMIT_KEY = 'git_commit'
GIT_DIRTY_KEY = 'git_dirty'

prop = metadata_store.custom_property
property_value = metadata_store.property_value


# --- Runs and their nodes ----------------------------------------------------


def node_id(contexts: List[metadata_store_pb2.Context],
            pipeline_name: Optional[str] = None) -> Optional[str]:
  """The node id an execution's `node` context `<pipeline>.<node id>` names
  (of `pipeline_name` only, when given); None when it has none, e.g. a CT
  decision or an execution of another orchestrator."""
  for context in contexts:
    if context.type != 'node':
      continue
    if pipeline_name is None:
      return context.name.split('.', 1)[-1]
    if context.name.startswith(pipeline_name + '.'):
      return context.name[len(pipeline_name) + 1:]
  return None


def _run_in(contexts: List[metadata_store_pb2.Context]
           ) -> Optional[metadata_store_pb2.Context]:
  return next((c for c in contexts if c.type == 'pipeline_run'), None)


def run_context(store: mlmd.MetadataStore, execution_id: int
               ) -> Optional[metadata_store_pb2.Context]:
  """The `pipeline_run` context of an execution, if it has one."""
  return _run_in(store.get_contexts_by_execution(execution_id))


def run_executions(store: mlmd.MetadataStore, run: str
                  ) -> List[metadata_store_pb2.Execution]:
  """The executions of pipeline run `run` (its context name); [] when TFX
  never made that context (a run killed before its first node)."""
  context = store.get_context_by_type_and_name('pipeline_run', run)
  return store.get_executions_by_context(context.id) if context else []


def latest_run(store: mlmd.MetadataStore, pipeline_name: str
              ) -> Optional[metadata_store_pb2.Context]:
  """The `pipeline_run` context of the newest execution of `pipeline_name`."""
  pipeline_ctx = store.get_context_by_type_and_name('pipeline', pipeline_name)
  if pipeline_ctx is None:
    return None
  executions = store.get_executions_by_context(pipeline_ctx.id)
  if not executions:
    return None
  return run_context(store, max(executions, key=lambda e: e.id).id)


_INPUT = (metadata_store_pb2.Event.INPUT, metadata_store_pb2.Event.DECLARED_INPUT)
_OUTPUT = (metadata_store_pb2.Event.OUTPUT,
           metadata_store_pb2.Event.DECLARED_OUTPUT)


@dataclasses.dataclass
class NodeRun:
  """What one node did in one pipeline run."""
  node_id: str
  state: str  # COMPLETE, CACHED, FAILED, RUNNING, ...
  inputs: Dict[str, List[metadata_store_pb2.Artifact]]
  outputs: Dict[str, List[metadata_store_pb2.Artifact]]


def run_nodes(store: mlmd.MetadataStore, run: metadata_store_pb2.Context,
              pipeline_name: str) -> Dict[str, NodeRun]:
  """Node id -> what it did in `run`, with its artifacts by event key."""
  nodes = {}
  for execution in sorted(store.get_executions_by_context(run.id),
                          key=lambda e: e.id):
    node = node_id(store.get_contexts_by_execution(execution.id),
                   pipeline_name) or execution.name or str(execution.id)
    inputs, outputs = execution_artifacts(store, execution.id)
    nodes[node] = NodeRun(
        node_id=node,
        state=metadata_store_pb2.Execution.State.Name(
            execution.last_known_state),
        inputs=inputs,
        outputs=outputs)
  return nodes


def execution_artifacts(
    store: mlmd.MetadataStore, execution_id: int
) -> Tuple[Dict[str, List[metadata_store_pb2.Artifact]],
           Dict[str, List[metadata_store_pb2.Artifact]]]:
  """(inputs, outputs) of one execution, each by event key ('model', ...).

  Resolver-internal events are left out: they link artifacts a resolver
  merely looked at, not what a component read or wrote.
  """
  events = store.get_events_by_execution_ids([execution_id])
  artifacts = {
      a.id: a for a in store.get_artifacts_by_id(
          [e.artifact_id for e in events])
  }
  by_direction = {_INPUT: {}, _OUTPUT: {}}
  for event in events:
    direction = next((d for d in by_direction if event.type in d), None)
    if direction is None:
      continue
    key = event.path.steps[0].key if event.path.steps else ''
    by_direction[direction].setdefault(key, []).append(
        artifacts[event.artifact_id])
  return by_direction[_INPUT], by_direction[_OUTPUT]


def record_git_revision(store: mlmd.MetadataStore, pipeline_name: str,
                        revision: Tuple[str, Optional[bool]],
                        not_before: float = 0.0
                       ) -> Optional[metadata_store_pb2.Context]:
  """Sets the git commit on the newest run's `pipeline_run` context.

  Only on a run created at or after `not_before` (Unix seconds) that has no
  commit yet: if a run failed before recording any execution, the newest
  context is an earlier run's, whose commit may have been another.
  """
  run = latest_run(store, pipeline_name)
  if (run is None or GIT_COMMIT_KEY in run.custom_properties or
      run.create_time_since_epoch < int(not_before * 1000)):
    return None
  commit, dirty = revision
  run.custom_properties[GIT_COMMIT_KEY].string_value = commit
  if dirty is not None:
    run.custom_properties[GIT_DIRTY_KEY].int_value = int(dirty)
  store.put_contexts([run])
  return run


# --- Artifacts: who made them, who read them ---------------------------------


def producer(store: mlmd.MetadataStore, artifact_id: int
            ) -> Optional[metadata_store_pb2.Execution]:
  """The execution that made an artifact.

  Cached executions record OUTPUT events on the artifacts they reuse; the
  maker is the first one that did not come from the cache.
  """
  ids = sorted({e.execution_id for e in store.get_events_by_artifact_ids(
      [artifact_id]) if e.type == metadata_store_pb2.Event.OUTPUT})
  executions = store.get_executions_by_id(ids)
  made = [e for e in executions
          if e.last_known_state != metadata_store_pb2.Execution.CACHED]
  return min(made or executions, key=lambda e: e.id, default=None)


def consumers(store: mlmd.MetadataStore, artifact_ids: List[int]
             ) -> List[int]:
  """Ids of the executions that read any of `artifact_ids`."""
  return sorted({e.execution_id for e in store.get_events_by_artifact_ids(
      artifact_ids) if e.type == metadata_store_pb2.Event.INPUT})


def normalized_root(path: str) -> str:
  """A data root as compared across runs: real path, or a URL as written."""
  return path.rstrip('/') if '://' in path else os.path.realpath(path)


def input_base(store: mlmd.MetadataStore, examples_id: int) -> Optional[str]:
  """The data root (normalized) ExampleGen read an Examples artifact from."""
  execution = producer(store, examples_id)
  root = property_value(execution, 'input_base') if execution else None
  return normalized_root(root) if root else None


def ingested_examples(store: mlmd.MetadataStore, pipeline_name: str,
                      data_root: Optional[str] = None,
                      span: Optional[int] = None,
                      example_gen_id: str = 'CsvExampleGen'
                     ) -> List[metadata_store_pb2.Artifact]:
  """The LIVE Examples ExampleGen made (successful runs only), newest first:
  of `span` only and from `data_root` only, when given (another data root's
  span N is not this one's)."""
  context = store.get_context_by_type_and_name(
      'node', f'{pipeline_name}.{example_gen_id}')
  if context is None:
    return []
  root = normalized_root(data_root) if data_root else None
  return sorted(
      (a for a in store.get_artifacts_by_context(context.id)
       if a.type == 'Examples' and
       a.state == metadata_store_pb2.Artifact.LIVE and
       (span is None or prop(a, 'span') == span) and
       (root is None or input_base(store, a.id) == root)),
      key=lambda a: a.id, reverse=True)


def ingested_spans(store: mlmd.MetadataStore, pipeline_name: str,
                   data_root: Optional[str] = None,
                   example_gen_id: str = 'CsvExampleGen') -> List[int]:
  """Spans ExampleGen has produced Examples for (`ingested_examples`)."""
  spans = {prop(a, 'span') for a in ingested_examples(
      store, pipeline_name, data_root, example_gen_id=example_gen_id)}
  return sorted(int(span) for span in spans if span is not None)


# --- Executions and artifacts as the lineage reports show them ---------------


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


def iso_time(ms: int) -> str:
  return datetime.datetime.fromtimestamp(
      ms / 1000, datetime.timezone.utc).isoformat(timespec='seconds')


def artifact_info(a: metadata_store_pb2.Artifact) -> ArtifactInfo:
  return ArtifactInfo(id=a.id, type=a.type, uri=a.uri)


def execution_info(store: mlmd.MetadataStore,
                   execution: metadata_store_pb2.Execution) -> ExecutionInfo:
  """Node id, state, times, and the run with its recorded git commit."""
  contexts = store.get_contexts_by_execution(execution.id)
  node = node_id(contexts) or execution.type.rsplit('.', 1)[-1]
  run = _run_in(contexts)
  dirty = prop(run, GIT_DIRTY_KEY) if run else None
  return ExecutionInfo(
      id=execution.id, node=node,
      state=metadata_store_pb2.Execution.State.Name(
          execution.last_known_state),
      run=run.name if run else None,
      started=iso_time(execution.create_time_since_epoch),
      finished=iso_time(execution.last_update_time_since_epoch),
      git_commit=prop(run, GIT_COMMIT_KEY) if run else None,
      git_dirty=None if dirty is None else bool(dirty))


def custom_config(execution: metadata_store_pb2.Execution) -> Dict[str, Any]:
  """A Transform's or Trainer's custom_config (code_version, hparams)."""
  for source in (execution.properties, execution.custom_properties):
    if 'custom_config' in source:
      return json.loads(source['custom_config'].string_value or 'null') or {}
  return {}


def pushed_versions(store: mlmd.MetadataStore, model_id: int) -> List[str]:
  """Versions a Pusher wrote this model to (not its no-op re-pushes)."""
  found = set()
  for execution_id in consumers(store, [model_id]):
    _, outputs = execution_artifacts(store, execution_id)
    for pushed in outputs.get('pushed_model', []):
      if prop(pushed, 'pushed') == 1 and prop(pushed, 'pushed_version'):
        found.add(str(prop(pushed, 'pushed_version')))
  return sorted(found)


# --- Batch scoring (pipeline/scoring.py) -------------------------------------

# Scoring runs as a pipeline of its own, `<pipeline>_scoring` (the module
# docstring of pipeline/scoring.py says why); its last node writes an
# artifact of this type holding this CSV file.
SCORING_SUFFIX = '_scoring'
SCORES_TYPE = 'PredictionsCsv'
SCORES_FILE = 'scores.csv'


def scoring_pipeline_name(pipeline_name: str) -> str:
  return pipeline_name + SCORING_SUFFIX


@dataclasses.dataclass
class Scoring:
  """One batch scoring of a span: which model scored which rows, where."""
  span: Optional[int]
  csv: ArtifactInfo
  csv_path: str
  rows: Optional[int]
  mean_prediction: Optional[float]
  served_version: Optional[str]  # the version served when it was scored
  versions: List[str]  # every version the Model was pushed as
  scorer: ExecutionInfo  # the execution that wrote the CSV
  last_run: Optional[str]  # the newest run that made or reused the CSV
  examples: Optional[ArtifactInfo] = None
  predictions: Optional[ArtifactInfo] = None  # BulkInferrer's PredictionLogs
  model: Optional[ArtifactInfo] = None
  blessing: Optional[ArtifactInfo] = None
  bulk_inferrer: Optional[ExecutionInfo] = None
  trainer: Optional[ExecutionInfo] = None


def _first(artifacts: Optional[List[metadata_store_pb2.Artifact]]):
  return artifacts[0] if artifacts else None


def _last_output(store: mlmd.MetadataStore, artifact_id: int
                ) -> Optional[metadata_store_pb2.Execution]:
  """The newest COMPLETE or CACHED execution that output an artifact: a
  cached rerun reuses an earlier scoring's CSV, and is its newest use."""
  ids = [e.execution_id for e in store.get_events_by_artifact_ids(
      [artifact_id]) if e.type == metadata_store_pb2.Event.OUTPUT]
  done = [e for e in store.get_executions_by_id(ids) if e.last_known_state in (
      metadata_store_pb2.Execution.COMPLETE,
      metadata_store_pb2.Execution.CACHED)]
  return max(done, key=lambda e: e.id, default=None)


def scorings(store: mlmd.MetadataStore, pipeline_name: str,
             span: Optional[int] = None) -> List[Scoring]:
  """The scorings of `pipeline_name`'s models (of `span` only, when given),
  newest use first: the CSV artifact <- its writer <- BulkInferrer's
  PredictionLogs, the span's Examples and the Model (<- its Trainer), and
  the ModelBlessing BulkInferrer checked."""
  context = store.get_context_by_type_and_name(
      'pipeline', scoring_pipeline_name(pipeline_name))
  if context is None:
    return []
  found = []
  for csv in store.get_artifacts_by_context(context.id):
    if (csv.type != SCORES_TYPE or
        csv.state != metadata_store_pb2.Artifact.LIVE):
      continue
    writer, last = producer(store, csv.id), _last_output(store, csv.id)
    if writer is None or last is None:
      continue
    inputs, _ = execution_artifacts(store, writer.id)
    examples = _first(inputs.get('examples'))
    scored_span = property_value(examples, 'span') if examples else None
    if span is not None and scored_span != span:
      continue
    predictions = _first(inputs.get('inference_result'))
    model = _first(inputs.get('model'))
    bulk = producer(store, predictions.id) if predictions else None
    blessing = _first(execution_artifacts(store, bulk.id)[0].get(
        'model_blessing')) if bulk else None
    trainer = producer(store, model.id) if model else None
    run = run_context(store, last.id)
    version = prop(csv, 'served_version')
    found.append((last.id, Scoring(
        span=scored_span, csv=artifact_info(csv),
        csv_path=os.path.join(csv.uri, SCORES_FILE),
        rows=prop(csv, 'rows'), mean_prediction=prop(csv, 'mean_prediction'),
        served_version=None if version is None else str(version),
        versions=pushed_versions(store, model.id) if model else [],
        scorer=execution_info(store, writer),
        last_run=run.name if run else None,
        examples=artifact_info(examples) if examples else None,
        predictions=artifact_info(predictions) if predictions else None,
        model=artifact_info(model) if model else None,
        blessing=artifact_info(blessing) if blessing else None,
        bulk_inferrer=execution_info(store, bulk) if bulk else None,
        trainer=execution_info(store, trainer) if trainer else None)))
  return [s for _, s in sorted(found, key=lambda x: x[0], reverse=True)]
