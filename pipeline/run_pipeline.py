"""Run the pipeline with any TFX DAG runner, then summarize the outcome.

Shared by every local runner so that they differ only in the runner object:
  0. take the pipeline root's run lock (a second concurrent run is refused,
     ops/run_lock.py) and mark what a dead earlier run left RUNNING
     (ops/dead_runs.py);
     check the CSV files of the spans to ingest (ops/csv_check.py);
  1. fill the training window: ingest earlier spans not yet in ML Metadata
     (ExampleGen only, one small pipeline run per span);
  2. run the full pipeline on the target span (latest by default), built
     as these orchestrators need it (`local_pipeline`);
  3. read the outcome from ML Metadata and print a summary.
Steps 0 and 2's lock, recovery and pinned run ids are functions of their
own (`holding_run_lock`, `settle_previous_run`, `run_pinned`,
`record_failure`): batch scoring (pipeline/scoring.py) runs under the same
lock.
"""

import contextlib
import dataclasses
import logging
import os
import time
import traceback
from typing import Any, Callable, Iterator, List, Optional, Tuple

from data import spans as span_rules
import ml_metadata as mlmd
from ml_metadata.proto import metadata_store_pb2
from pipeline import configs
from pipeline import summary
from ops import console
from lineage import secrets
from ops import csv_check
from ops import dead_runs
from ops import run_lock
from ops import tfx_private
from lineage import graph
from lineage import metadata_store
from lineage import readers
from components import infra_validator
from ops import reproducible

Execution = metadata_store_pb2.Execution


def window(target: int, size: int, available: List[int]) -> List[int]:
  """Spans of the rolling window that ends at `target`."""
  return [s for s in available if target - size < s <= target]


def read_outcome(cfg: configs.PipelineConfig,
                 connection: metadata_store_pb2.ConnectionConfig, ok: bool,
                 error: Optional[str], window_spans: List[int],
                 seconds: float, run_id: Optional[str] = None,
                 store: Optional[mlmd.MetadataStore] = None
                 ) -> summary.RunOutcome:
  """Builds the RunOutcome of run `run_id` (default: the newest run) from
  ML Metadata (`store`, the run's own, or one opened on `connection`)."""
  if store is None:
    store = metadata_store.open_store(connection)
  run = (store.get_context_by_type_and_name('pipeline_run', run_id)
         if run_id else None) or graph.latest_run(
             store, cfg.pipeline_name)
  nodes = graph.run_nodes(store, run, cfg.pipeline_name) if run else {}
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
  infra = output('InfraValidator', 'blessing')
  evaluation = output('Evaluator', 'evaluation')
  pushed = output('Pusher', 'pushed_model')
  metrics = readers.evaluation_metrics(evaluation.uri) if evaluation else {}
  did_push = bool(pushed and prop(pushed, 'pushed') == 1)
  # A cached Pusher pushed nothing in this run: its artifact is the push of
  # the run it was first made in.
  cached_push = did_push and nodes['Pusher'].state == 'CACHED'
  if cached_push:
    did_push = False
  baseline = (nodes['Evaluator'].inputs.get('baseline_model') or [None])[0] if (
      'Evaluator' in nodes) else None
  return summary.RunOutcome(
      ok=ok, error=error,
      span=int(prop(examples, 'span')) if examples else None,
      target_span=cfg.span,
      run_id=run.name if run else None,
      window=window_spans,
      nodes=nodes,
      blessed=bool(prop(blessing, 'blessed')) if blessing else None,
      infra_blessed=(bool(prop(infra, infra_validator.BLESSED_KEY))
                     if infra else None),
      infra_reason=prop(infra, infra_validator.REASON_KEY) if infra else None,
      pushed_version=str(prop(pushed, 'pushed_version')) if did_push else None,
      pushed_path=prop(pushed, 'pushed_destination') if did_push else None,
      already_pushed_version=(
          str(prop(pushed, 'pushed_version')) if cached_push else
          prop(pushed, 'already_pushed_version') if pushed else None),
      metrics=metrics.get('candidate', {}),
      baseline_metrics=metrics.get('baseline', {}),
      seconds=seconds,
      blessing_failures=(readers.blessing_failures(evaluation.uri) or []
                         if evaluation else []),
      baseline_versions=(graph.pushed_versions(store, baseline.id)
                         if baseline is not None else []))


def local_pipeline(cfg: configs.PipelineConfig,
                   connection: Optional[
                       metadata_store_pb2.ConnectionConfig] = None,
                   beam_pipeline_args: Optional[List[str]] = None) -> Any:
  """The full pipeline as LocalDagRunner and BeamDagRunner run it.

  What these orchestrators choose (pipeline/pipeline.py lists the choices):
  they run in a process that reads ML Metadata and this machine's files, so
  the schema is a snapshot under the pipeline root, the knobs are constants
  (the pipeline is built for each run), the training window is the span
  window Resolver's and the baseline the served model.
  """
  from pipeline import cache_keys  # pylint: disable=g-import-not-at-top
  from pipeline import pipeline as pipeline_lib  # pylint: disable=g-import-not-at-top
  return pipeline_lib.create_pipeline(
      cfg,
      schema_file=cache_keys.schema_snapshot(cfg),
      knobs=pipeline_lib.fixed_knobs(cfg),
      window_spans=cfg.window_spans,
      baseline_model=pipeline_lib.SERVED_MODEL,
      metadata_connection_config=connection,
      beam_pipeline_args=beam_pipeline_args)


def run_pipeline(cfg: configs.PipelineConfig,
                 make_runner: Callable[[], Any],
                 beam_pipeline_args: Optional[List[str]] = None,
                 started_at: Optional[float] = None) -> summary.RunOutcome:
  """Backfills the window, runs the full pipeline, prints the summary.

  `started_at` (time.time() at process start) makes the summary's time
  include the TensorFlow/TFX imports, as a user's stopwatch would.
  Raises run_lock.RunInProgress (a SystemExit) while another run holds the
  pipeline root.
  """
  start = started_at or time.time()
  log_path, progress = start_run_log(cfg, 'run')

  available = span_rules.spans_on_disk(cfg.data_root)
  if not available:
    raise SystemExit(f'No span-N/ directories under {cfg.data_root}')
  target = cfg.span if cfg.span is not None else available[-1]
  if target not in available:
    raise SystemExit(f'Span {target} not found under {cfg.data_root} '
                     f'(spans there: {available})')
  connection = metadata_store.store_config(cfg)
  with holding_run_lock(cfg, connection) as (lock, previous):
    return _run_locked(cfg, make_runner, beam_pipeline_args, start, log_path,
                       progress, available, target, connection, lock,
                       previous)


# --- Runs under the pipeline root's lock: run_pipeline's and scoring's ------


def start_run_log(cfg: configs.PipelineConfig, kind: str
                 ) -> Tuple[str, console.ComponentProgress]:
  """Fixes Beam's batching (the same batches on any load) and sends the
  libraries' logging to `<root>/logs/<kind>-<time>.log`, the console to one
  line per component: (that log's path, the progress handler)."""
  reproducible.fix_batching()
  log_path = os.path.join(cfg.pipeline_root, 'logs',
                          time.strftime(f'{kind}-%Y%m%d-%H%M%S.log'))
  return log_path, console.quiet_logging(log_path)


@contextlib.contextmanager
def holding_run_lock(
    cfg: configs.PipelineConfig,
    connection: metadata_store_pb2.ConnectionConfig,
    pipeline_name: Optional[str] = None,
) -> Iterator[Tuple[run_lock.RunLock, Optional[run_lock.Holder]]]:
  """Holds the pipeline root's run lock: yields (lock, previous record).

  What this run's runner left NEW/RUNNING when an exception (Ctrl-C,
  SystemExit) ends the block is marked CANCELED. The record is always
  `cfg.pipeline_name`'s, whichever pipeline runs (pipeline/scoring.py runs
  another in the same root and store): the next run of either then finds a
  dead one's runs. `pipeline_name` (default: cfg's) is the pipeline this
  run runs, whose node ids name its executions in what is marked.
  """
  lock = run_lock.RunLock(cfg.pipeline_root, cfg.pipeline_name,
                          run_lock.store_id(connection))
  previous = lock.acquire()
  try:
    yield lock, previous
  except BaseException as e:  # Ctrl-C, SystemExit: nothing may stay RUNNING
    _finish_left_running(cfg, connection, lock, Execution.CANCELED,
                         f'the run was interrupted ({type(e).__name__})',
                         echo=True, pipeline_name=pipeline_name)
    raise
  finally:
    lock.release()


def settle_previous_run(cfg: configs.PipelineConfig,
                        store: mlmd.MetadataStore, lock: run_lock.RunLock,
                        previous: Optional[run_lock.Holder]
                       ) -> List[dead_runs.Marked]:
  """Marks what a dead previous run left RUNNING and removes what it
  half-wrote (ops/dead_runs.py), says so, and settles the record."""
  marked, lines = dead_runs.recover_dead_run(store, previous,
                                             cfg.pipeline_name, lock.store)
  litter = dead_runs.remove_litter(store, cfg.pipeline_root, marked)
  if litter:
    lines.append(f'Removed {len(litter)} director'
                 f'{"y" if len(litter) == 1 else "ies"} those executions '
                 'left half-written: ' + ', '.join(
                     os.path.relpath(p, cfg.pipeline_root) for p in litter))
  for line in lines:
    logging.warning(line)
    print(line, flush=True)
  lock.settle()
  return marked


def run_pinned(make_runner: Callable[[], Any], lock: run_lock.RunLock,
               pipeline: Any) -> None:
  """Runs `pipeline` under a run id recorded in the lock's record before
  TFX makes the run's context: a kill at any moment leaves the next run
  able to find what this one left."""
  run_id = run_lock.new_run_id()
  lock.add_run(run_id)
  tfx_private.pin_run_id(make_runner(), run_id).run(pipeline)


def record_failure(cfg: configs.PipelineConfig,
                   connection: metadata_store_pb2.ConnectionConfig,
                   lock: run_lock.RunLock,
                   progress: console.ComponentProgress, log_path: str,
                   error: Exception, pipeline_name: Optional[str] = None,
                   store: Optional[mlmd.MetadataStore] = None) -> str:
  """After a runner raised `error` (call it in the `except`): the failed
  node's console line, the traceback in the log, what the run left
  RUNNING marked FAILED. Returns the error line for the summary."""
  node = progress.fail_current()
  line = secrets.redact(f'{node or "pipeline"} failed: '
                        f'{type(error).__name__}: {error}')
  with open(log_path, 'a') as f:
    f.write(secrets.redact(traceback.format_exc()))
  # TFX publishes a failed executor, not a failed driver: that execution
  # would stay RUNNING.
  _finish_left_running(cfg, connection, lock, Execution.FAILED, line,
                       pipeline_name=pipeline_name, store=store)
  return line


def input_error(progress: console.ComponentProgress) -> Optional[str]:
  """The first node whose inputs TFX could not resolve (the later failures
  follow from it), as the summary's error line; None if none."""
  if not progress.input_errors:
    return None
  node, why = next(iter(progress.input_errors.items()))
  return secrets.redact(f'{node} failed: its inputs could not be resolved: '
                        f'{why}')


def _finish_left_running(cfg: configs.PipelineConfig,
                         connection: metadata_store_pb2.ConnectionConfig,
                         lock: run_lock.RunLock, state: int, why: str,
                         echo: bool = False,
                         pipeline_name: Optional[str] = None,
                         store: Optional[mlmd.MetadataStore] = None) -> None:
  """Marks what this run's runner left NEW/RUNNING (its runs are over), in
  `store` (the run's own) or one opened on `connection` (an interrupted
  run's lock, which holds none)."""
  if not lock.runs:
    return
  try:
    marked = dead_runs.mark_active(
        store if store is not None else metadata_store.open_store(connection),
        pipeline_name or cfg.pipeline_name, lock.runs,
        state, secrets.redact(why)[:2000])
  except BaseException:  # pylint: disable=broad-except
    # Never hide why the run stopped: the next run marks them instead (the
    # record then does not say 'finished').
    logging.exception('Could not mark the executions left RUNNING by runs %s',
                      lock.runs)
    lock.settled = False
    return
  for m in marked:
    line = (f'Marked {len(m.executions)} execution(s) {m.state} that this run '
            f'left RUNNING: {m.nodes} (pipeline run {m.run}; {why})')
    logging.warning(line)
    if echo:
      print(line, flush=True)


def _run_locked(cfg: configs.PipelineConfig, make_runner: Callable[[], Any],
                beam_pipeline_args: Optional[List[str]], start: float,
                log_path: str, progress: console.ComponentProgress,
                available: List[int], target: int,
                connection: metadata_store_pb2.ConnectionConfig,
                lock: run_lock.RunLock,
                previous: Optional[run_lock.Holder]) -> summary.RunOutcome:
  """run_pipeline, holding the pipeline root's lock. The run's one
  ML Metadata store: dead-run recovery, the ingest check, the git revision
  and the outcome read it (TFX's runner opens its own)."""
  spans = window(target, cfg.window_spans, available)
  store = metadata_store.open_store(connection)
  marked = settle_previous_run(cfg, store, lock, previous)
  ingested = set(graph.ingested_spans(
      store, cfg.pipeline_name, cfg.data_root))
  # TFX only once the store answered: a wrong MySQL setting fails fast.
  from pipeline import pipeline as pipeline_lib  # pylint: disable=g-import-not-at-top
  missing = [s for s in spans if s != target and s not in ingested]
  # Before any span is ingested: CsvExampleGen's own errors name no span,
  # file or line. The target is always checked: a changed file is a cache
  # miss that ExampleGen ingests again.
  unreadable = csv_check.check_spans(cfg.data_root, missing + [target])
  if unreadable:
    logging.error('CsvExampleGen cannot read these spans; nothing was '
                  'ingested:\n%s', '\n'.join(unreadable))
    outcome = summary.RunOutcome(
        ok=False, error='\n'.join(unreadable), span=None, window=[],
        nodes={}, blessed=None, pushed_version=None, pushed_path=None,
        already_pushed_version=None, metrics={}, baseline_metrics={},
        seconds=time.time() - start, target_span=target,
        dead_run_marked=marked)
    print(summary.format_summary(cfg, connection, outcome, log_path),
          flush=True)
    return outcome
  if missing:
    print(f'Ingesting {len(missing)} earlier span(s) of the training window '
          f'({missing[0]}..{missing[-1]}):', flush=True)
  # The commit goes on each run's context, never into a component's
  # properties: a docs-only commit must not be a cache miss that retrains.
  revision = readers.git_revision()
  record_revision = lambda: graph.record_git_revision(
      store, cfg.pipeline_name, revision, not_before=start)
  run = lambda pipeline: run_pinned(make_runner, lock, pipeline)

  ok, error = True, None
  try:
    for span in missing:
      run(pipeline_lib.create_ingest_pipeline(
          cfg, span, connection, beam_pipeline_args))
      record_revision()
    print(f'Running pipeline {cfg.pipeline_name!r} on span {target}, '
          f'training window {spans[0]}..{spans[-1]}:', flush=True)
    # The span is always pinned, so that `make run` (latest span) and the CT
    # controller (the span it decided on) give ExampleGen the same
    # properties: the same span is then a cache hit, never a re-ingestion.
    run(local_pipeline(dataclasses.replace(cfg, span=target), connection,
                       beam_pipeline_args))
  except Exception as e:  # pylint: disable=broad-except
    ok = False
    error = record_failure(cfg, connection, lock, progress, log_path, e,
                           store=store)
  if progress.input_errors:
    ok, error = False, input_error(progress)
  record_revision()
  outcome = read_outcome(dataclasses.replace(cfg, span=target), connection,
                         ok, error, spans, time.time() - start,
                         run_id=lock.runs[-1] if lock.runs else None,
                         store=store)
  outcome.dead_run_marked = marked
  print(summary.format_summary(cfg, connection, outcome, log_path), flush=True)
  return outcome
