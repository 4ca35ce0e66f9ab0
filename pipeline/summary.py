"""What a run did (RunOutcome) and the summary the runners print after it.

The summary names the span ingested, the training window, the candidate's
and the baseline's headline metrics (the problem's task decides which), the
blessing with every threshold it failed, infra validation, what was pushed
and where, the model card, what is served, and where the artifacts, ML
Metadata and the full log are. pipeline/run_pipeline.py runs a pipeline and
reads its outcome back from ML Metadata; scoring prints its own summary with
the same lines.
"""

import dataclasses
import os
from typing import Dict, List, Optional

from ml_metadata.proto import metadata_store_pb2

from components import pusher
from lineage import graph
from lineage import metadata_store
from lineage import report
from ops import console
from ops import dead_runs
from pipeline import configs
from serving import base_path

@dataclasses.dataclass
class RunOutcome:
  """What a run did, read back from ML Metadata."""
  ok: bool
  error: Optional[str]
  span: Optional[int]  # the span ExampleGen ingested (None: none was)
  window: List[int]
  nodes: Dict[str, graph.NodeRun]
  blessed: Optional[bool]
  pushed_version: Optional[str]
  pushed_path: Optional[str]
  already_pushed_version: Optional[str]
  metrics: Dict[str, float]
  baseline_metrics: Dict[str, float]
  seconds: float
  # Why the Evaluator did not bless (one line per failed threshold).
  blessing_failures: List[str] = dataclasses.field(default_factory=list)
  baseline_versions: List[str] = dataclasses.field(default_factory=list)
  # The span this run was to ingest, ingested or not.
  target_span: Optional[int] = None
  # The `pipeline_run` context the outcome was read from (None: none ran).
  run_id: Optional[str] = None
  # What this run marked that a dead earlier run had left RUNNING.
  dead_run_marked: List[dead_runs.Marked] = dataclasses.field(
      default_factory=list)
  # The InfraValidator's verdict (None: it did not run) and why not.
  infra_blessed: Optional[bool] = None
  infra_reason: Optional[str] = None

  @property
  def fully_cached(self) -> bool:
    """Every component reused an earlier execution (resolvers always run)."""
    components = [n for n in self.nodes.values()
                  if not n.node_id.endswith('_resolver')]
    return bool(components) and all(n.state == 'CACHED' for n in components)


def _span_ranges(spans: List[int]) -> str:
  """[1, 2, 3, 5] -> 'spans 1-3, 5'."""
  return 'spans ' + report.span_ranges(spans)


def dead_run_line(marked: dead_runs.Marked) -> str:
  """A summary's line for what a run marked that a dead run left."""
  return (f'pipeline run {marked.run} died mid-run: {marked.nodes} marked '
          f'{marked.state}')


def store_line(connection: metadata_store_pb2.ConnectionConfig) -> str:
  """A summary's line for the ML Metadata store a run wrote."""
  if connection.HasField('sqlite'):
    return f'{console.display_path(connection.sqlite.filename_uri)} (SQLite)'
  return metadata_store.describe(connection)


def format_summary(cfg: configs.PipelineConfig,
                   connection: metadata_store_pb2.ConnectionConfig,
                   outcome: RunOutcome, log_path: str) -> str:
  """Human-readable end-of-run summary."""
  lines = ['', f'Summary ({outcome.seconds:.1f} s wall time)']
  add = lambda k, v: lines.append(f'  {k:<18} {v}')
  if outcome.span is not None:
    add('span ingested', outcome.span)
  elif outcome.target_span is not None:
    add('span ingested', f'none (span {outcome.target_span} was not ingested)')
  else:
    add('span ingested', 'none')
  if outcome.window:
    add('training window', _span_ranges(outcome.window)
        + f' ({len(outcome.window)} spans)')

  task = cfg.problem_spec.task

  def fmt(m: Dict[str, float]) -> str:
    parts = [f'{task.labels[k]} {m[k]:.4g}' for k in task.headline if k in m]
    if 'mean_label' in m:  # what always saying the majority class scores
      parts.append(f'majority class {max(m["mean_label"], 1 - m["mean_label"]):.4g}')
    if 'example_count' in m:
      parts.append(f'examples {console.figure(m["example_count"])}')
    return ', '.join(parts)

  if not outcome.ok:
    add('result', 'STOPPED - nothing was pushed')
    add('reason', (outcome.error or 'unknown').strip().replace('\n', '\n' + ' ' * 21))
  else:
    if outcome.metrics:
      add('candidate', fmt(outcome.metrics))
    if outcome.baseline_metrics:
      served = ', '.join(outcome.baseline_versions) or 'not pushed'
      add('baseline', f'served version {served}: '
          + fmt(outcome.baseline_metrics))
    elif outcome.already_pushed_version:
      add('baseline', 'none (no served version other than this model)')
    else:
      add('baseline', 'none (no served version to compare with)')
    if outcome.blessed is False:
      add('blessed', 'NO: ' + ('; '.join(outcome.blessing_failures) or
                               'see the rule in pipeline/blessing.py'))
    else:
      add('blessed', {True: 'yes', None: 'n/a'}[outcome.blessed])
    if outcome.infra_blessed is not None:
      add('infra validated', 'yes (it loads in python -m serving and '
          'answers)' if outcome.infra_blessed else
          f'NO: {outcome.infra_reason or "see the InfraValidator log"}')
    if outcome.pushed_version:
      add('pushed', f'version {outcome.pushed_version} -> '
          f'{console.display_path(outcome.pushed_path)}')
      card = base_path.model_card_path(outcome.pushed_path)
      if os.path.exists(card):
        add('model card', console.display_path(card))
    elif outcome.already_pushed_version:
      add('pushed', f'nothing new (this model is version '
          f'{outcome.already_pushed_version})')
    elif outcome.blessed is False:
      add('pushed', 'nothing new (model not blessed)')
    elif outcome.infra_blessed is False:
      add('pushed', 'nothing new (the model server could not serve it)')
    else:
      add('pushed', 'nothing new')
    if outcome.fully_cached:
      add('cached', 'every component reused its earlier execution: same '
          'inputs, same model, same decision')
  for marked in outcome.dead_run_marked:
    add('dead run', dead_run_line(marked))
  versions = [str(v) for v in pusher.versions(cfg.serving_model_dir)]
  add('serving', f'{console.display_path(cfg.serving_model_dir)}: '
      + (f'versions {", ".join(versions)} (latest {versions[-1]} is served)'
         if versions else 'no version yet'))
  add('artifacts', console.display_path(cfg.pipeline_root))
  add('metadata', store_line(connection))
  add('full log', console.display_path(log_path))
  return '\n'.join(lines)
