"""Run the taxi pipeline with any TFX DAG runner, then summarize the outcome.

Shared by every local runner so that they differ only in the runner object:
  1. fill the training window: ingest earlier spans not yet in ML Metadata
     (ExampleGen only, one small pipeline run per span);
  2. run the full pipeline on the target span (latest by default);
  3. read the outcome from ML Metadata and print a summary.
"""

import dataclasses
import glob
import os
import re
import time
import traceback
from typing import Any, Callable, Dict, List, Optional

from ml_metadata.proto import metadata_store_pb2
from pipeline import configs
from pipeline import console
from pipeline import lineage
from pipeline import metadata_store
from pipeline import pusher

SPAN_DIR = re.compile(r'span-(\d+)$')


def spans_on_disk(data_root: str) -> List[int]:
  """Span numbers with a `span-N/` directory under `data_root`."""
  spans = []
  for path in glob.glob(os.path.join(data_root, 'span-*')):
    match = SPAN_DIR.search(path)
    if match and os.path.isdir(path):
      spans.append(int(match.group(1)))
  return sorted(spans)


def window(target: int, size: int, available: List[int]) -> List[int]:
  """Spans of the rolling window that ends at `target`."""
  return [s for s in available if target - size < s <= target]


@dataclasses.dataclass
class RunOutcome:
  """What a run did, read back from ML Metadata."""
  ok: bool
  error: Optional[str]
  span: Optional[int]
  window: List[int]
  nodes: Dict[str, metadata_store.NodeRun]
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

  @property
  def fully_cached(self) -> bool:
    """Every component reused an earlier execution (resolvers always run)."""
    components = [n for n in self.nodes.values()
                  if not n.node_id.endswith('_resolver')]
    return bool(components) and all(n.state == 'CACHED' for n in components)


def read_outcome(cfg: configs.PipelineConfig,
                 connection: metadata_store_pb2.ConnectionConfig, ok: bool,
                 error: Optional[str], window_spans: List[int],
                 seconds: float) -> RunOutcome:
  """Builds the RunOutcome of the newest run from ML Metadata."""
  store = metadata_store.open_store(connection)
  run = metadata_store.latest_run(store, cfg.pipeline_name)
  nodes = metadata_store.run_nodes(store, run, cfg.pipeline_name) if run else {}
  prop = metadata_store.custom_property

  def output(node: str, key: str):
    artifacts = nodes[node].outputs.get(key) if node in nodes else None
    return artifacts[0] if artifacts else None

  examples = output('CsvExampleGen', 'examples')
  trained_on = nodes['Trainer'].inputs.get('examples', []) if (
      'Trainer' in nodes) else []
  if trained_on:  # the real window: rejected spans are left out
    window_spans = sorted(int(prop(a, 'span')) for a in trained_on)
  blessing = output('Evaluator', 'blessing')
  evaluation = output('Evaluator', 'evaluation')
  pushed = output('Pusher', 'pushed_model')
  metrics = lineage.evaluation_metrics(evaluation.uri) if evaluation else {}
  did_push = bool(pushed and prop(pushed, 'pushed') == 1)
  # A cached Pusher pushed nothing in this run: its artifact is the push of
  # the run it was first made in.
  cached_push = did_push and nodes['Pusher'].state == 'CACHED'
  if cached_push:
    did_push = False
  baseline = (nodes['Evaluator'].inputs.get('baseline_model') or [None])[0] if (
      'Evaluator' in nodes) else None
  return RunOutcome(
      ok=ok, error=error,
      span=int(prop(examples, 'span')) if examples else cfg.span,
      window=window_spans,
      nodes=nodes,
      blessed=bool(prop(blessing, 'blessed')) if blessing else None,
      pushed_version=str(prop(pushed, 'pushed_version')) if did_push else None,
      pushed_path=prop(pushed, 'pushed_destination') if did_push else None,
      already_pushed_version=(
          str(prop(pushed, 'pushed_version')) if cached_push else
          prop(pushed, 'already_pushed_version') if pushed else None),
      metrics=metrics.get('candidate', {}),
      baseline_metrics=metrics.get('baseline', {}),
      seconds=seconds,
      blessing_failures=(lineage.blessing_failures(evaluation.uri) or []
                         if evaluation else []),
      baseline_versions=(lineage.pushed_versions(store, baseline.id)
                         if baseline is not None else []))


def _span_ranges(spans: List[int]) -> str:
  """[1, 2, 3, 5] -> 'spans 1-3, 5'."""
  return 'spans ' + lineage.span_ranges(spans)


def _short(path: str) -> str:
  """Path relative to the working directory when it lies below it."""
  relative = os.path.relpath(path)
  return path if relative.startswith('..') else relative


def format_summary(cfg: configs.PipelineConfig,
                   connection: metadata_store_pb2.ConnectionConfig,
                   outcome: RunOutcome, log_path: str) -> str:
  """Human-readable end-of-run summary."""
  lines = ['', f'Summary ({outcome.seconds:.1f} s wall time)']
  add = lambda k, v: lines.append(f'  {k:<18} {v}')
  add('span ingested', outcome.span)
  if outcome.window:
    add('training window', _span_ranges(outcome.window)
        + f' ({len(outcome.window)} spans)')

  def fmt(m: Dict[str, float]) -> str:
    parts = [f'{label} {m[k]:.4g}' for k, label in (
        ('auc', 'AUC'), ('balanced_accuracy', 'balanced accuracy'),
        ('binary_accuracy', 'accuracy'), ('calibration', 'calibration'))
             if k in m]
    if 'mean_label' in m:  # what saying "no" to every trip would score
      parts.append(f'majority class {max(m["mean_label"], 1 - m["mean_label"]):.4g}')
    if 'example_count' in m:
      parts.append(f'examples {int(m["example_count"])}')
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
                               'see the thresholds in pipeline/configs.py'))
    else:
      add('blessed', {True: 'yes', None: 'n/a'}[outcome.blessed])
    if outcome.pushed_version:
      add('pushed', f'version {outcome.pushed_version} -> {_short(outcome.pushed_path)}')
    elif outcome.already_pushed_version:
      add('pushed', f'nothing new (this model is version '
          f'{outcome.already_pushed_version})')
    else:
      add('pushed', 'nothing new (model not blessed)' if outcome.blessed is False
          else 'nothing new')
    if outcome.fully_cached:
      add('cached', 'every component reused its earlier execution: same '
          'inputs, same model, same decision')
  versions = [str(v) for v in pusher.versions(cfg.serving_model_dir)]
  add('serving', f'{_short(cfg.serving_model_dir)}: '
      + (f'versions {", ".join(versions)} (latest {versions[-1]} is served)'
         if versions else 'no version yet'))
  add('artifacts', _short(cfg.pipeline_root))
  add('metadata', f'{_short(connection.sqlite.filename_uri)} (SQLite)'
      if connection.HasField('sqlite') else metadata_store.describe(connection))
  add('full log', _short(log_path))
  return '\n'.join(lines)


def run_pipeline(cfg: configs.PipelineConfig,
                 make_runner: Callable[[], Any],
                 beam_pipeline_args: Optional[List[str]] = None,
                 started_at: Optional[float] = None) -> RunOutcome:
  """Backfills the window, runs the full pipeline, prints the summary.

  `started_at` (time.time() at process start) makes the summary's time
  include the TensorFlow/TFX imports, as a user's stopwatch would.
  """
  start = started_at or time.time()
  log_path = os.path.join(cfg.pipeline_root, 'logs',
                          time.strftime('run-%Y%m%d-%H%M%S.log'))
  progress = console.quiet_logging(log_path)

  available = spans_on_disk(cfg.data_root)
  if not available:
    raise SystemExit(f'No span-N/ directories under {cfg.data_root}')
  target = cfg.span if cfg.span is not None else available[-1]
  if target not in available:
    raise SystemExit(f'Span {target} not found under {cfg.data_root} '
                     f'(spans there: {available})')
  spans = window(target, cfg.window_spans, available)
  connection = metadata_store.store_config(cfg)
  ingested = set(metadata_store.ingested_spans(
      metadata_store.open_store(connection), cfg.pipeline_name,
      cfg.data_root))
  # TFX only once the store answered: a wrong MySQL setting fails fast.
  from pipeline import pipeline as taxi_pipeline  # pylint: disable=g-import-not-at-top
  missing = [s for s in spans if s != target and s not in ingested]
  if missing:
    print(f'Ingesting {len(missing)} earlier span(s) of the training window '
          f'({missing[0]}..{missing[-1]}):', flush=True)
  # The commit goes on each run's context, never into a component's
  # properties: a docs-only commit must not be a cache miss that retrains.
  revision = lineage.git_revision()
  record_revision = lambda: lineage.record_git_revision(
      metadata_store.open_store(connection), cfg.pipeline_name, revision,
      not_before=start)
  ok, error = True, None
  try:
    for span in missing:
      make_runner().run(taxi_pipeline.create_ingest_pipeline(
          cfg, span, connection, beam_pipeline_args))
      record_revision()
    print(f'Running pipeline {cfg.pipeline_name!r} on span {target}, '
          f'training window {spans[0]}..{spans[-1]}:', flush=True)
    # The span is always pinned, so that `make run` (latest span) and the CT
    # controller (the span it decided on) give ExampleGen the same
    # properties: the same span is then a cache hit, never a re-ingestion.
    make_runner().run(taxi_pipeline.create_pipeline(
        dataclasses.replace(cfg, span=target), connection,
        beam_pipeline_args))
  except Exception as e:  # pylint: disable=broad-except
    node = progress.fail_current()
    ok = False
    error = console.redact(f'{node or "pipeline"} failed: '
                           f'{type(e).__name__}: {e}')
    with open(log_path, 'a') as f:
      f.write(console.redact(traceback.format_exc()))
  if progress.input_errors:  # the first one: the later failures follow from it
    node, why = next(iter(progress.input_errors.items()))
    ok, error = False, console.redact(
        f'{node} failed: its inputs could not be resolved: {why}')
  record_revision()
  outcome = read_outcome(cfg, connection, ok, error, spans,
                         time.time() - start)
  print(format_summary(cfg, connection, outcome, log_path), flush=True)
  return outcome
