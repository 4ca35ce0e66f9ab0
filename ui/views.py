"""What the runs, data and models pages show, read from ML Metadata and the
files it points to: plain dicts and lists, no HTML (ui/pages.py renders).
The serving page's data is ui/serving_view.py's, the lineage pages'
ui/lineage_view.py's.

Every figure comes from where the pipeline recorded it: run and component
states and times from ML Metadata executions, row counts and feature
distributions from StatisticsGen's FeatureStats.pb, anomalies from
ExampleValidator's SchemaDiff.pb, the gate's verdict from its execution's
state, drift from the CT controller's CTDecision executions, metrics and
blessings from the Evaluator's files (lineage/readers.py). Nothing here
writes anywhere.
"""

import collections
import dataclasses
import json
import math
import os
from typing import Any, Dict, List, Optional

import ml_metadata as mlmd
from ml_metadata.proto import metadata_store_pb2

from continuous_training import decisions as ct_decisions
from continuous_training import drift as ct_drift
from lineage import graph
from lineage import readers
from project import paths

prop = graph.prop
State = metadata_store_pb2.Execution.State

# How a component execution's state reads on the pages.
STATE_WORDS = {State.COMPLETE: 'ran', State.CACHED: 'cached',
               State.FAILED: 'failed', State.RUNNING: 'running',
               State.NEW: 'new', State.CANCELED: 'canceled',
               State.UNKNOWN: 'unknown'}
GATE_NODE = 'DataValidationGate'
# The split whose feature distributions the span page draws.
STATISTICS_SPLIT = 'train'


@dataclasses.dataclass
class Sources:
  """Where the UI reads from (the flags of python -m ui)."""
  connection: metadata_store_pb2.ConnectionConfig
  pipeline_name: str
  model_base_path: str
  monitoring_report: str
  model_config_file: Optional[str] = None
  problem: str = paths.DEFAULT_PROBLEM  # models/<problem>/: its metrics

  def open_store(self) -> Optional[mlmd.MetadataStore]:
    """A new store per request (MetadataStore is not thread-safe); None
    when the SQLite file does not exist yet (nothing ran)."""
    from lineage import metadata_store  # pylint: disable=g-import-not-at-top
    if (self.connection.HasField('sqlite') and
        not os.path.exists(self.connection.sqlite.filename_uri)):
      return None
    return metadata_store.open_store(self.connection)


def iso_time_ms(ms: int) -> str:
  return graph.iso_time(ms) if ms else ''  # pylint: disable=protected-access


def seconds_taken(e: metadata_store_pb2.Execution) -> Optional[float]:
  if not e.create_time_since_epoch or not e.last_update_time_since_epoch:
    return None
  return (e.last_update_time_since_epoch - e.create_time_since_epoch) / 1000


def artifact_ref(a: metadata_store_pb2.Artifact) -> Dict[str, Any]:
  return {'id': a.id, 'type': a.type,
          'span': prop(a, 'span'), 'uri': a.uri}


# --- Runs ---------------------------------------------------------------------


def _run_contexts(store, pipeline_name: str
                 ) -> List[metadata_store_pb2.Context]:
  """This pipeline's `pipeline_run` contexts, oldest first."""
  found = {}
  pipeline = store.get_context_by_type_and_name('pipeline', pipeline_name)
  if pipeline is None:
    return []
  for e in store.get_executions_by_context(pipeline.id):
    run = graph.run_context(store, e.id)
    if run is not None:
      found[run.id] = run
  return sorted(found.values(), key=lambda c: (c.create_time_since_epoch,
                                                 c.id))


def _decision(e: metadata_store_pb2.Execution) -> Dict[str, Any]:
  p = lambda k: graph.property_value(e, k)  # pylint: disable=unnecessary-lambda-assignment
  return {'id': e.id, 'time': iso_time_ms(e.create_time_since_epoch),
          'time_ms': e.create_time_since_epoch,
          'trigger': p('trigger') or 'none', 'reason': p('reason') or '',
          'span': p('span'), 'logical_date': p('logical_date'),
          'ran': ct_decisions.ran(e), 'outcome': p('outcome') or '',
          'pipeline_run': p('pipeline_run') or '',
          'pushed_version': p('pushed_version') or ''}


def decisions(store, pipeline_name: str) -> List[Dict[str, Any]]:
  """The CT controller's decisions, oldest first (run or not)."""
  return [_decision(e)
          for e in ct_decisions.past_decisions(store, pipeline_name)]


def runs(store, pipeline_name: str) -> List[Dict[str, Any]]:
  """One entry per pipeline run: times, component states, code, decision."""
  by_run = {d['pipeline_run']: d for d in decisions(store, pipeline_name)
            if d['pipeline_run']}
  out = []
  for context in _run_contexts(store, pipeline_name):
    executions = [e for e in store.get_executions_by_context(context.id)
                  if e.type != ct_decisions.EXECUTION_TYPE]
    states = collections.Counter(STATE_WORDS.get(e.last_known_state, '?')
                                 for e in executions)
    start = min((e.create_time_since_epoch for e in executions), default=0)
    end = max((e.last_update_time_since_epoch for e in executions),
              default=0)
    pushed = [str(prop(a, 'pushed_version'))
              for e in executions if e.type.endswith('Pusher')
              for a in graph.execution_artifacts(store, e.id)[1].get(
                  'pushed_model', []) if prop(a, 'pushed') == 1]
    out.append({
        'name': context.name, 'started': iso_time_ms(start), 'started_ms': start,
        'seconds': (end - start) / 1000 if start and end else None,
        'states': dict(sorted(states.items())),
        'failed': states.get('failed', 0) > 0,
        'git_commit': prop(context, graph.GIT_COMMIT_KEY),
        'git_dirty': prop(context, graph.GIT_DIRTY_KEY),
        'release': prop(context, graph.RELEASE_KEY),
        'decision': by_run.get(context.name),
        'pushed': pushed,
    })
  return out


def run_detail(store, run_name: str, pipeline_name: str
              ) -> Optional[Dict[str, Any]]:
  """Each component of one run: state, duration, input/output artifacts."""
  context = store.get_context_by_type_and_name('pipeline_run', run_name)
  if context is None:
    return None
  components = []
  for e in sorted(store.get_executions_by_context(context.id),
                  key=lambda e: e.id):
    inputs, outputs = graph.execution_artifacts(store, e.id)
    components.append({
        'execution_id': e.id,
        'node': graph.node_id(store.get_contexts_by_execution(e.id),
                              pipeline_name) or e.type,
        'type': e.type, 'state': STATE_WORDS.get(e.last_known_state, '?'),
        'started': iso_time_ms(e.create_time_since_epoch), 'seconds': seconds_taken(e),
        'inputs': {k: [artifact_ref(a) for a in v]
                   for k, v in sorted(inputs.items())},
        'outputs': {k: [artifact_ref(a) for a in v]
                    for k, v in sorted(outputs.items())},
    })
  return {'name': run_name, 'components': components}


# --- Data ---------------------------------------------------------------------


def read_statistics(artifact) -> Dict[str, Any]:
  """split -> DatasetFeatureStatistics (the first dataset) of an
  ExampleStatistics artifact; splits whose file is missing are left out."""
  from tensorflow_metadata.proto.v0 import statistics_pb2  # pylint: disable=g-import-not-at-top
  return {split: stats.datasets[0] for split, stats in readers.split_protos(
      artifact, 'FeatureStats.pb',
      statistics_pb2.DatasetFeatureStatisticsList).items() if stats.datasets}


def read_anomalies(artifact) -> List[str]:
  """'<split>: <feature>: <description>' per anomaly of ExampleAnomalies."""
  from tensorflow_metadata.proto.v0 import anomalies_pb2  # pylint: disable=g-import-not-at-top
  lines = []
  for split, proto in readers.split_protos(artifact, 'SchemaDiff.pb',
                                           anomalies_pb2.Anomalies).items():
    if proto.HasField('dataset_anomaly_info'):
      lines.append(f'{split}: <dataset>: '
                   f'{proto.dataset_anomaly_info.short_description}')
    for feature, info in sorted(proto.anomaly_info.items()):
      lines.append(f'{split}: {feature}: {info.short_description}')
  return lines


def _node_in_run(store, run_id: int, node: str, pipeline_name: str):
  for e in store.get_executions_by_context(run_id):
    if graph.node_id(store.get_contexts_by_execution(e.id),
                     pipeline_name) == node:
      return e
  return None


def _ingesting_run(store, examples_id: int):
  """The pipeline_run context of the ExampleGen execution that wrote it."""
  made = graph.producer(store, examples_id)
  return graph.run_context(store, made.id) if made is not None else None


def spans(store, pipeline_name: str) -> List[Dict[str, Any]]:
  """Per ingested span: rows per split, anomalies, the gate's verdict."""
  out = []
  for examples in graph.ingested_examples(store, pipeline_name):
    entry = {'span': prop(examples, 'span'), 'examples_id': examples.id,
             'rows': {}, 'anomalies': [], 'gate': 'not run',
             'statistics_id': None, 'run': None}
    run = _ingesting_run(store, examples.id)
    if run is not None:
      entry['run'] = run.name
      nodes = graph.run_nodes(store, run, pipeline_name)
      stats = nodes.get('StatisticsGen')
      if stats and stats.outputs.get('statistics'):
        artifact = stats.outputs['statistics'][0]
        entry['statistics_id'] = artifact.id
        entry['rows'] = {s: int(d.num_examples)
                         for s, d in read_statistics(artifact).items()}
      validator = nodes.get('ExampleValidator')
      if validator and validator.outputs.get('anomalies'):
        entry['anomalies'] = read_anomalies(validator.outputs['anomalies'][0])
      gate = nodes.get(GATE_NODE)
      if gate is not None:
        entry['gate'] = {'COMPLETE': 'passed', 'CACHED': 'passed',
                         'FAILED': 'REJECTED'}.get(gate.state,
                                                   gate.state.lower())
    out.append(entry)
  return sorted(out, key=lambda e: (e['span'] or 0, e['examples_id']))


def feature_distributions(store, statistics_id: int,
                          split: str = STATISTICS_SPLIT
                          ) -> List[Dict[str, Any]]:
  """Per feature of one StatisticsGen output: a histogram (numeric: TFDV's
  standard equal-width buckets) or the top values (categorical)."""
  [artifact] = store.get_artifacts_by_id([statistics_id]) or [None]
  if artifact is None:
    return []
  dataset = read_statistics(artifact).get(split)
  if dataset is None:
    return []
  out = []
  for feature in dataset.features:
    name = '.'.join(feature.path.step) or feature.name
    if feature.HasField('num_stats'):
      num = feature.num_stats
      standard = [h for h in num.histograms if h.type == h.STANDARD]
      bars = ([(f'{b.low_value:.4g}', b.sample_count)
               for b in standard[0].buckets] if standard else [])
      out.append({'name': name, 'kind': 'numeric', 'bars': bars,
                  'mean': num.mean, 'std_dev': num.std_dev,
                  'missing': num.common_stats.num_missing,
                  'count': num.common_stats.num_non_missing})
    elif feature.HasField('string_stats'):
      s = feature.string_stats
      out.append({'name': name, 'kind': 'categorical',
                  'bars': [(v.value, v.frequency) for v in s.top_values],
                  'unique': s.unique, 'missing': s.common_stats.num_missing,
                  'count': s.common_stats.num_non_missing})
  return sorted(out, key=lambda f: f['name'])


def _number(value) -> bool:
  return (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value))


def _drift_report(text: str) -> ct_drift.DriftReport:
  """The record, every value the page reads checked (ValueError, KeyError,
  TypeError or AttributeError if one is not what drift.py writes)."""
  report = ct_drift.DriftReport.from_json(text)
  if not isinstance(report.span, int) or isinstance(report.span, bool):
    raise TypeError(f'span {report.span!r} is not a number')
  for f in report.features:
    if not isinstance(f.comparator, str):
      raise TypeError(f'{f.feature}: comparator {f.comparator!r}')
    for key in ('distance', 'threshold', 'p_value', 'alpha'):
      if not _number(getattr(f, key)):
        raise TypeError(f'{f.feature}: {key} {getattr(f, key)!r} is not '
                        'a number')
  return report


def drift_over_spans(store, pipeline_name: str,
                     skipped: Optional[List[str]] = None
                    ) -> Dict[str, Dict[str, Any]]:
  """feature -> {'points': [(span, distance, drifted, p_value)],
  'threshold', 'comparator'}: every drift comparison the CT controller
  recorded. A record this version cannot read (not JSON, a key missing, a
  value of the wrong type) is not drawn; a line naming it and why is
  appended to `skipped`, for the page to say so."""
  out: Dict[str, Dict[str, Any]] = {}
  for e in ct_decisions.past_decisions(store, pipeline_name):
    text = graph.property_value(e, 'drift')
    if not text:
      continue
    try:
      report = _drift_report(text)
      points = [(f.feature, f.comparator, f.threshold,
                 (f.distance, f.drifted, f.p_value)) for f in report.features]
    except (ValueError, KeyError, TypeError, AttributeError) as error:
      if skipped is not None:
        skipped.append(f'CT decision {e.id}: its drift record cannot be read '
                       f'({type(error).__name__}: {error}); not drawn')
      continue
    for feature, comparator, threshold, point in points:
      entry = out.setdefault(feature, {'points': {}, 'threshold': threshold,
                                       'comparator': comparator})
      entry['points'][report.span] = point
  for entry in out.values():
    entry['points'] = sorted((s, d, drifted, p)
                             for s, (d, drifted, p) in entry['points'].items())
  return dict(sorted(out.items()))


# --- Models -------------------------------------------------------------------


def _blessing_rule(store, run_id: int) -> List[str]:
  """The rule as the ModelCardGenerator recorded it (pipeline/blessing.py
  `describe`, from the EvalConfig the Evaluator applied)."""
  for e in store.get_executions_by_context(run_id):
    text = graph.property_value(e, 'blessing_rule')
    if text:
      try:
        return list(json.loads(text))
      except ValueError:
        return []
  return []


def trained_spans(store, model_id: int) -> List[int]:
  """The spans of the Examples the Trainer that made a Model read."""
  trainer = graph.producer(store, model_id)
  if trainer is None:
    return []
  inputs, _ = graph.execution_artifacts(store, trainer.id)
  return sorted(prop(a, 'span') for a in inputs.get('examples', [])
                if prop(a, 'span') is not None)


def models(store, pipeline_name: str) -> List[Dict[str, Any]]:
  """Every model the Evaluator judged, oldest first: metrics (overall and
  per slice, candidate and baseline), blessed or not and why, the
  baseline's version, the version it was pushed as."""
  evaluations = {}
  for context in _run_contexts(store, pipeline_name):
    evaluator = _node_in_run(store, context.id, 'Evaluator', pipeline_name)
    if evaluator is None:
      continue
    inputs, outputs = graph.execution_artifacts(store, evaluator.id)
    if not outputs.get('evaluation'):
      continue
    evaluation = outputs['evaluation'][0]
    if evaluation.id in evaluations:  # a cached Evaluator: the same judgement
      evaluations[evaluation.id]['runs'].append(context.name)
      continue
    model = (inputs.get('model') or [None])[0]
    baseline = (inputs.get('baseline_model') or [None])[0]
    blessing = (outputs.get('blessing') or [None])[0]
    pusher = _node_in_run(store, context.id, 'Pusher', pipeline_name)
    pushed = None
    if pusher is not None:
      for a in graph.execution_artifacts(store, pusher.id)[1].get(
          'pushed_model', []):
        if prop(a, 'pushed') == 1:
          pushed = str(prop(a, 'pushed_version'))
    sliced = readers.sliced_metrics(evaluation.uri)
    evaluations[evaluation.id] = {
        'evaluation_id': evaluation.id, 'runs': [context.name],
        'model_id': model.id if model else None,
        'spans': trained_spans(store, model.id) if model else [],
        'baseline_id': baseline.id if baseline else None,
        'baseline_versions': (graph.pushed_versions(store, baseline.id)
                              if baseline else []),
        'blessed': (prop(blessing, 'blessed') == 1) if blessing else None,
        'failures': readers.blessing_failures(evaluation.uri) or [],
        'rule': _blessing_rule(store, context.id),
        'pushed_version': pushed,
        'overall': sliced.get('overall', {}),
        'slices': {k: v for k, v in sorted(sliced.items())
                   if k != 'overall'},
    }
  return sorted(evaluations.values(), key=lambda m: m['evaluation_id'])
