"""The one walk of ML Metadata's event graph: what made what, in which run.

TFX records `pipeline`, `pipeline_run` and `node` (`<pipeline>.<node id>`)
contexts, and an INPUT/OUTPUT event per artifact an execution read or
wrote. Every question the project asks of that graph is answered here: the
runs and their nodes (`latest_run`, `run_nodes`, `run_executions`), who
made and read an artifact (`producer`, `consumers`, `execution_artifacts`),
all that is upstream of one (`upstream`, the version page's graph, on ML
Metadata's own lineage query), the spans ExampleGen ingested, the versions
a model was pushed to. lineage/provenance.py builds a served version's
lineage of these steps; lineage/batch_scoring.py, which model scored a
span's rows.
It reads `ml_metadata` only, never TFX or TensorFlow (the serving process,
the CT controller and `python -m lineage` import it), on SQLite or MySQL.

Each pipeline run's context also carries the git commit of the checkout that
ran it (`record_git_revision`): on the run, never in a component's
properties, so a commit that changes no code the components run (docs, tests)
is not a cache miss and retrains nothing. Which code made a model is told by
the per-component fingerprints in Transform's and Trainer's custom_config.
"""

import collections
import dataclasses
import datetime
import json
import os
from typing import Any, Dict, List, Optional, Set, Tuple

import ml_metadata as mlmd
from ml_metadata.proto import metadata_store_pb2
from lineage import metadata_store

# Custom properties of a `pipeline_run` context (set by run_pipeline).
GIT_COMMIT_KEY = 'git_commit'
GIT_DIRTY_KEY = 'git_dirty'
RELEASE_KEY = 'pipeline_release'  # the release it ran (pipeline/release.py)

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


def record_release(store: mlmd.MetadataStore, pipeline_name: str,
                   version: str, not_before: float) -> List[str]:
  """Sets the pipeline release a run ran (pipeline/release_run.py) on every
  `pipeline_run` context of `pipeline_name` created at or after
  `not_before` (Unix seconds: the ingest runs and the main run); their
  names."""
  pipeline = store.get_context_by_type_and_name('pipeline', pipeline_name)
  if pipeline is None:
    return []
  ours = {e.id for e in store.get_executions_by_context(pipeline.id)}
  runs = [c for c in store.get_contexts_by_type('pipeline_run')
          if c.create_time_since_epoch >= int(not_before * 1000)
          and RELEASE_KEY not in c.custom_properties and any(
              e.id in ours for e in store.get_executions_by_context(c.id))]
  for run in runs:
    run.custom_properties[RELEASE_KEY].string_value = version
  if runs:
    store.put_contexts(runs)
  return [run.name for run in runs]


# --- Artifacts: who made them, who read them ---------------------------------


def producer(store: mlmd.MetadataStore, artifact_id: int
            ) -> Optional[metadata_store_pb2.Execution]:
  """The execution that made an artifact.

  Cached executions record OUTPUT events on the artifacts they reuse; the
  maker is the first one that did not come from the cache.
  """
  ids = sorted({e.execution_id for e in store.get_events_by_artifact_ids(
      [artifact_id]) if e.type == metadata_store_pb2.Event.OUTPUT})
  return _maker(store.get_executions_by_id(ids))


def _maker(executions: List[metadata_store_pb2.Execution]
          ) -> Optional[metadata_store_pb2.Execution]:
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


# --- Everything upstream of an artifact ----------------------------------------

UPSTREAM_HOPS = 20  # hops one query walks: 10 artifact <- execution steps


@dataclasses.dataclass
class Upstream:
  """An artifact's provenance: nodes by key ('a<id>' an Artifact, 'e<id>'
  an Execution) in the order walked, edges (upstream key, downstream key),
  each execution's contexts by id; truncated: stopped at max_nodes."""
  nodes: Dict[str, Any]
  edges: Set[Tuple[str, str]] = dataclasses.field(default_factory=set)
  contexts: Dict[int, Dict[int, Any]] = dataclasses.field(
      default_factory=lambda: collections.defaultdict(dict))
  truncated: bool = False


def upstream(store: mlmd.MetadataStore, artifact: metadata_store_pb2.Artifact,
             max_nodes: int, hops: int = UPSTREAM_HOPS) -> Upstream:
  """Breadth-first from `artifact` to `max_nodes`: its `producer`, what that
  read (inputs by key, as `execution_artifacts`), their producers... read
  from ML Metadata's get_lineage_subgraph `hops` at a time, not per node."""
  walk, frontier = Upstream({f'a{artifact.id}': artifact}), [artifact.id]
  known = {'a': {artifact.id: artifact}, 'e': {}, 'complete': set(),
           'made_by': collections.defaultdict(set),
           'reads': collections.defaultdict(set)}
  while frontier and len(walk.nodes) < max_nodes:
    if frontier[0] not in known['complete']:
      _fetch(store, [a for a in frontier if a not in known['complete']][:100],
             hops, known, walk.contexts)
    a_id = frontier.pop(0)
    made = _maker([known['e'][i] for i in known['made_by'][a_id]])
    if made is None:
      continue
    walk.edges.add((f'e{made.id}', f'a{a_id}'))
    if f'e{made.id}' in walk.nodes:
      continue
    walk.nodes[f'e{made.id}'] = made
    for _, _, read in sorted(known['reads'][made.id]):
      walk.edges.add((f'a{read}', f'e{made.id}'))
      if f'a{read}' not in walk.nodes:
        walk.nodes[f'a{read}'] = known['a'][read]
        frontier.append(read)
  walk.truncated = len(walk.nodes) >= max_nodes
  return walk


def _fetch(store, starts: List[int], hops: int, known, contexts) -> None:
  """Adds the upstream subgraph of `starts` to `known`. An artifact is
  `complete` (its makers and their inputs all in) when a path of OUTPUT and
  input events at most hops - 2 long reaches it from a start."""
  options = metadata_store_pb2.LineageSubgraphQueryOptions(
      max_num_hops=hops,
      direction=metadata_store_pb2.LineageSubgraphQueryOptions.UPSTREAM)
  options.starting_artifacts.filter_query = f'id IN ({str(starts)[1:-1]})'
  found = store.get_lineage_subgraph(options, [
      'artifacts', 'executions', 'events', 'contexts', 'associations'])
  known['a'].update((a.id, a) for a in found.artifacts)
  known['e'].update((e.id, e) for e in found.executions)
  by_id = {c.id: c for c in found.contexts}
  for a in found.associations:
    contexts[a.execution_id][a.context_id] = by_id[a.context_id]
  for e in found.events:
    steps = e.path.steps
    if e.type == metadata_store_pb2.Event.OUTPUT:
      known['made_by'][e.artifact_id].add(e.execution_id)
    elif e.type in _INPUT:
      known['reads'][e.execution_id].add((
          steps[0].key if steps else '',
          steps[1].index if len(steps) > 1 else 0, e.artifact_id))
  distance, queue = dict.fromkeys(starts, 0), collections.deque(starts)
  while queue:
    a_id = queue.popleft()
    for e_id in known['made_by'][a_id]:
      for _, _, read in known['reads'][e_id]:
        if read not in distance:
          distance[read] = distance[a_id] + 2
          queue.append(read)
  known['complete'].update(a for a, d in distance.items() if d <= hops - 2)


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
  release: Optional[str] = None  # the pipeline release its run ran


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
      git_dirty=None if dirty is None else bool(dirty),
      release=prop(run, RELEASE_KEY) if run else None)


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
