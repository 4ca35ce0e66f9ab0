"""The lineage CLI's text: a version's lineage, a span's models, a diff, a run.

The JSON output is the dataclasses of lineage/graph.py as they are; this
is the form people read (`python -m lineage ...`, the runners' summary).
"""

import json
from typing import Any, Dict, List, Optional

from lineage import graph
from lineage import provenance
from lineage import metadata_store
from lineage import readers

prop = metadata_store.custom_property

# Custom properties `format_run` shows beside an artifact, when it has them.
_PROPERTIES = ('span', 'blessed', 'pushed', 'pushed_version',
               'already_pushed_version')


def _cell(value: float) -> str:
  """A metrics table's cell: a count whole (example_count 147, not
  147.0000), any other value to 4 decimals, so the column lines up."""
  return f'{value:.0f}' if float(value).is_integer() else f'{value:.4f}'


def format_run(store, pipeline_name: str) -> str:
  """The newest run of `pipeline_name`: every node, its state, its outputs."""
  run = graph.latest_run(store, pipeline_name)
  if run is None:
    return f'No runs of pipeline {pipeline_name!r} in this store.'
  lines = [f'Pipeline {pipeline_name!r}, run {run.name}:']
  for node_id, node in graph.run_nodes(store, run, pipeline_name).items():
    lines.append(f'  {node_id:<30} {node.state}')
    for key, artifacts in sorted(node.outputs.items()):
      for artifact in artifacts:
        props = ', '.join(f'{p}={prop(artifact, p)}' for p in _PROPERTIES
                          if prop(artifact, p) is not None)
        lines.append(f'      {key} #{artifact.id}: {artifact.uri}'
                     + (f'  [{props}]' if props else ''))
  return '\n'.join(lines)


def span_ranges(spans: List[int]) -> str:
  """[1, 2, 3, 5] -> '1-3, 5' ('-' for none)."""
  ranges: List[List[int]] = []
  for span in spans:
    if ranges and span == ranges[-1][1] + 1:
      ranges[-1][1] = span
    else:
      ranges.append([span, span])
  return ', '.join(f'{x}-{y}' if x != y else str(x) for x, y in ranges) or '-'


def _git(e: Optional[graph.ExecutionInfo]) -> str:
  if e is None or e.git_commit is None:
    return 'git commit not recorded'
  release = f', pipeline release {e.release}' if e.release else ''
  if e.git_commit == readers.UNKNOWN:
    return f'git commit unknown (not a git checkout){release}'
  return (f'git {e.git_commit[:12]}' + (' (dirty tree)' if e.git_dirty else '')
          + release)


def _execution_line(label: str, e: Optional[graph.ExecutionInfo]) -> str:
  if e is None:
    return f'  {label:<16} not recorded'
  return (f'  {label:<16} execution {e.id}, run {e.run or "?"}, {e.state}, '
          f'{e.started} .. {e.finished}')


def format_version(v: provenance.VersionLineage) -> str:
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
  if v.hyperparameters:
    add('tuned', (', '.join(v.tuned) or 'no key') + ' from HyperParameters '
        f'#{v.hyperparameters.id}'
        + (f', by Tuner execution {v.tuner.id} (run {v.tuner.run or "?"})'
           if v.tuner else ''))
  baseline = ('none (first blessed model)' if v.baseline_model is None else
              f'model #{v.baseline_model.id}, version '
              + (', '.join(v.baseline_versions) or 'never pushed'))
  add('blessed', {True: 'yes', False: 'no', None: '?'}[v.blessed]
      + f'; baseline {baseline}')
  candidate, base = v.metrics.get('candidate', {}), v.metrics.get(
      'baseline', {})
  if candidate:
    add('metrics', f'{"":4}{"candidate":>12} {"baseline":>12} {"delta":>10}')
    for name in sorted(candidate):
      if name in base:
        lines.append(f'    {name:<18} {_cell(candidate[name]):>12} '
                     f'{_cell(base[name]):>12} '
                     f'{candidate[name] - base[name]:>+10.4f}')
      else:
        lines.append(f'    {name:<18} {_cell(candidate[name]):>12}')
  add('code', f'trainer {v.trainer_code_version}, transform '
      f'{v.transform_code_version}; trained with {_git(v.trainer)}')
  add('model card', v.model_card or 'none (pushed before model cards)')
  return '\n'.join(lines)


def format_span(span: int, uses: List[provenance.ModelUse]) -> str:
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
    add('metrics', f'{"":4}{d["from"]:>12} {d["to"]:>12} {"delta":>10}')
  for name, m in d['metrics'].items():
    lines.append(f'    {name:<18} {_cell(m["from"]):>12} {_cell(m["to"]):>12} '
                 f'{m["delta"]:>+10.4f}')
  return '\n'.join(lines)
