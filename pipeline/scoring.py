"""Batch scoring: a span's rows scored by the model users are served.

  CsvExampleGen (the span, split as the training runs split it)
  served model Resolver (the served version's Model and its ModelBlessing)
    -> BulkInferrer (TFX's own: PredictionLogs, TFRecord)
    -> PredictionsToCsv (a CSV people read, an artifact with lineage:
       components/predictions_to_csv.py)

Which model scores is the served one, decided as the baseline is
(components/baseline.py `served_model`): the `stable` label of
--model-config-file if given, else the newest version on disk; never
another version in its place. Nothing served, a served version no Pusher of
this ML Metadata store recorded, or a Model with no blessing: a clear error
before any TFX work (`create_scoring_pipeline`). BulkInferrer takes the
ModelBlessing the Evaluator gave that Model (`current_model_id`) because it
silently writes nothing for an unblessed model; the CSV step fails if any
row has no prediction.

The pipeline is `<pipeline name>_scoring` (lineage.batch_scoring.scoring_pipeline_name),
not the training pipeline's name. Under the training name, ExampleGen
would be a cache hit of the training runs' ingestion, but a scoring run
would become "the latest run" of the training pipeline for every reader of
it (the runners' summary, `python -m lineage run`, continuous_training/),
and a span scored before it is trained on would count as ingested for the
training window. Under its own name nothing of training changes; the
price is a re-ingestion of the span (seconds) and a Resolver whose input
channels see only this pipeline's artifacts, so the strategy
(`ServedModelAndBlessingStrategy`) reads the served Model and its blessing
from ML Metadata itself (a ResolverStrategy gets the store).

It writes the same store and pipeline root as training, under the same run
lock (pipeline/run_pipeline.py `holding_run_lock`): one run at a time, and
the next run of either pipeline recovers a dead one.
"""

import dataclasses
import os
import shutil
import time
from typing import Any, Callable, Dict, List, Optional

from tfx import types
from tfx.components import BulkInferrer
from tfx.dsl.components.common.resolver import Resolver
from tfx.dsl.io import fileio
from tfx.orchestration import pipeline as tfx_pipeline
from tfx.orchestration.portable.input_resolution import exceptions
from tfx.proto import bulk_inferrer_pb2
from tfx.types import artifact_utils
from tfx.types import Channel
from tfx.types import standard_artifacts

import ml_metadata as mlmd
from data import spans as span_rules
from lineage import batch_scoring
from lineage import graph
from lineage import metadata_store
from lineage import readers
from ml_metadata.proto import metadata_store_pb2
from components import baseline
from components import predictions_to_csv
from pipeline import configs
from ops import console
from ops import csv_check
from pipeline import pipeline as pipeline_lib
from ops import run_lock
from pipeline import run_pipeline as runs
from pipeline import summary
from project import paths

RESOLVER_ID = 'served_model_resolver'
# The signature TF Serving's predict on tf.Examples uses (models/model.py):
# serialized tf.Examples in (`examples`), the task's answer out.
SIGNATURE = 'serving_default'


def pipeline_name(cfg: configs.PipelineConfig) -> str:
  return batch_scoring.scoring_pipeline_name(cfg.pipeline_name)


# --- The served model, as a Resolver ----------------------------------------


def _tfx_artifact(store: mlmd.MetadataStore,
                  artifact: metadata_store_pb2.Artifact) -> types.Artifact:
  [artifact_type] = store.get_artifact_types_by_id([artifact.type_id])
  return artifact_utils.deserialize_artifact(artifact_type, artifact)


class ServedModelAndBlessingStrategy(baseline.ServedModelStrategy):
  """Resolves `model` and `model_blessing` to the served version's Model
  and the blessing its Evaluator gave it (baseline.served_model), read from
  the store: the input channels, this pipeline's own, are not looked at.

  Config: `base_path` (the Pusher's base directory), `model_config_file`
  (optional), `model_name`. Fails input resolution, naming why, when
  nothing this store can trace is served. Same config as the baseline's
  ServedModelStrategy, whose __init__ it keeps.
  """

  def resolve_artifacts(
      self, store: mlmd.MetadataStore,
      input_dict: Dict[str, List[types.Artifact]]
  ) -> Optional[Dict[str, List[types.Artifact]]]:
    del input_dict  # what this pipeline made: not what is served
    try:
      served = baseline.served_model(store, self._base_path,
                                     self._model_config_file, self._model_name)
    except baseline.NotServedError as e:
      raise exceptions.InputResolutionError(str(e)) from e
    return {'model': [_tfx_artifact(store, served.model)],
            'model_blessing': [_tfx_artifact(store, served.blessing)]}


# --- PredictionLogs -> CSV --------------------------------------------------


# --- The pipeline ------------------------------------------------------------


def create_scoring_pipeline(
    cfg: configs.PipelineConfig,
    span: int,
    metadata_connection_config: Optional[
        metadata_store_pb2.ConnectionConfig] = None,
    beam_pipeline_args: Optional[List[str]] = None,
) -> tfx_pipeline.Pipeline:
  """Span `span` of cfg.data_root scored by the served model (module
  docstring). Raises baseline.NotServedError, before building anything,
  when nothing this store can trace is served."""
  connection = metadata_connection_config or metadata_store.store_config(cfg)
  served = baseline.served_model(
      metadata_store.open_store(connection), cfg.serving_model_dir,
      cfg.model_config_file, cfg.model_name)
  # The same ExampleGen as training's: the same split of every row.
  ingest = pipeline_lib.example_gen(cfg, span)
  served_model = Resolver(
      strategy_class=ServedModelAndBlessingStrategy,
      config={'base_path': cfg.serving_model_dir,
              'model_config_file': cfg.model_config_file or '',
              'model_name': cfg.model_name},
      model=Channel(type=standard_artifacts.Model),
      model_blessing=Channel(type=standard_artifacts.ModelBlessing),
  ).with_id(RESOLVER_ID)
  bulk_inferrer = BulkInferrer(
      examples=ingest.outputs['examples'],
      model=served_model.outputs['model'],
      model_blessing=served_model.outputs['model_blessing'],
      data_spec=bulk_inferrer_pb2.DataSpec(),  # every split
      model_spec=bulk_inferrer_pb2.ModelSpec(
          model_signature_name=[SIGNATURE]))
  to_csv = predictions_to_csv.PredictionsToCsv(
      examples=ingest.outputs['examples'],
      inference_result=bulk_inferrer.outputs['inference_result'],
      model=served_model.outputs['model'],
      served_version=served.version,
      served_model_id=served.model.id,
      problem=cfg.problem)
  return tfx_pipeline.Pipeline(
      pipeline_name=pipeline_name(cfg),
      pipeline_root=cfg.pipeline_root,
      components=[ingest, served_model, bulk_inferrer, to_csv],
      enable_cache=cfg.enable_cache,
      metadata_connection_config=connection,
      beam_pipeline_args=beam_pipeline_args)


# --- A scoring run, and its summary ------------------------------------------


@dataclasses.dataclass
class ScoringOutcome:
  """What a scoring run did, read back from ML Metadata."""
  ok: bool
  error: Optional[str]
  span: int
  served: baseline.ServedModel  # what was served when the run began
  seconds: float
  run_id: Optional[str] = None
  nodes: Dict[str, graph.NodeRun] = dataclasses.field(default_factory=dict)
  scoring: Optional[batch_scoring.Scoring] = None  # the CSV and its lineage
  copied_to: Optional[str] = None  # the CSV's copy at a stable path
  mean_label: Optional[float] = None
  dead_run_marked: List[Any] = dataclasses.field(default_factory=list)

  @property
  def fully_cached(self) -> bool:
    components = [n for n in self.nodes.values()
                  if not n.node_id.endswith('_resolver')]
    return bool(components) and all(n.state == 'CACHED' for n in components)


def run_scoring(cfg: configs.PipelineConfig, make_runner: Callable[[], Any],
                scores_dir: str, span: Optional[int] = None,
                beam_pipeline_args: Optional[List[str]] = None,
                started_at: Optional[float] = None) -> ScoringOutcome:
  """Scores `span` (default: the latest on disk), prints the summary; the
  CSV is also copied to `<scores_dir>/span-N.csv`.

  Raises SystemExit, before any TFX work, when the span is missing or
  nothing this store can trace is served; run_lock.RunInProgress while
  another run holds the pipeline root. A span CsvExampleGen cannot read, or
  with no rows to score (ops/csv_check.py), stops the run before any TFX
  work too, its summary saying why: BulkInferrer would write nothing and
  PredictionsToCsv blame the model.
  """
  start = started_at or time.time()
  log_path, progress = runs.start_run_log(cfg, 'score')
  available = span_rules.spans_on_disk(cfg.data_root)
  target = span if span is not None else (available or [None])[-1]
  if target is None or target not in available:
    raise SystemExit(f'Span {target} not found under {cfg.data_root} '
                     f'(spans there: {available or "none"})')
  connection = metadata_store.store_config(cfg)
  store = metadata_store.open_store(connection)
  try:
    served = baseline.served_model(store, cfg.serving_model_dir,
                                   cfg.model_config_file, cfg.model_name)
  except baseline.NotServedError as e:
    raise SystemExit(f'Nothing to score with: {e}') from None
  name = pipeline_name(cfg)
  with runs.holding_run_lock(cfg, connection, name) as (lock, previous):
    outcome = ScoringOutcome(ok=True, error=None, span=target, served=served,
                             seconds=0.0)
    outcome.dead_run_marked = runs.settle_previous_run(cfg, store, lock,
                                                       previous)
    unreadable = csv_check.check_spans(cfg.data_root, [target])
    if unreadable:
      outcome.ok, outcome.error = False, '\n'.join(unreadable)
    else:
      print(f'Scoring span {target} with version {served.version} (Model '
            f'#{served.model.id}, {served.why}):', flush=True)
      try:
        runs.run_pinned(make_runner, lock, create_scoring_pipeline(
            cfg, target, connection, beam_pipeline_args))
      except Exception as e:  # pylint: disable=broad-except
        outcome.ok = False
        outcome.error = runs.record_failure(
            cfg, connection, lock, progress, log_path, e, name,
            store=store) + _hint(str(e))
      if progress.input_errors:
        outcome.ok, outcome.error = False, runs.input_error(progress)
      graph.record_git_revision(store, name, readers.git_revision(),
                                not_before=start)
      _read_outcome(store, name, cfg.pipeline_name, lock, outcome)
      if outcome.ok:
        outcome.copied_to = _copy_csv(outcome.scoring.csv_path, scores_dir,
                                      target)
  outcome.seconds = time.time() - start
  print(format_summary(cfg, connection, outcome, log_path), flush=True)
  return outcome


# What tfx_bsl's TF1 loader says of a SavedModel whose variables it did not
# restore (Keras 3 exports: tensorflow/tfx#7782).
_UNRESTORED = 'Could not find variable'


def _hint(error: str) -> str:
  if _UNRESTORED not in error:
    return ''
  return ('\nBulkInferrer loads the SavedModel with TF1\'s loader '
          '(tfx_bsl RunInference), which restores only the variables the '
          'SavedModel tracks: a Keras 3 model must be exported with its '
          'tf.Variables tracked (models/model.py export_serving_model; '
          'tensorflow/tfx#7782). TF Serving\'s C++ server loads it the same '
          'way.')


def _read_outcome(store: mlmd.MetadataStore, name: str, training_name: str,
                  lock: run_lock.RunLock, outcome: ScoringOutcome) -> None:
  """The run's nodes and its CSV's lineage (batch_scoring.scorings)."""
  run = (store.get_context_by_type_and_name('pipeline_run', lock.runs[-1])
         if lock.runs else None)
  if run is None:
    return
  outcome.run_id = run.name
  outcome.nodes = graph.run_nodes(store, run, name)
  node = outcome.nodes.get('PredictionsToCsv')
  csv_artifact = (node.outputs.get('scores') or [None])[0] if node else None
  if csv_artifact is None:
    if outcome.ok:
      outcome.ok, outcome.error = False, 'the run wrote no CSV artifact'
    return
  outcome.mean_label = metadata_store.custom_property(csv_artifact,
                                                      'mean_label')
  outcome.scoring = next((s for s in batch_scoring.scorings(
      store, training_name, outcome.span) if s.csv.id == csv_artifact.id),
                         None)
  if outcome.scoring is None and outcome.ok:
    outcome.ok, outcome.error = False, (
        f'{batch_scoring.SCORES_TYPE} #{csv_artifact.id} has no lineage to a span '
        'and a model in ML Metadata')


def _copy_csv(source: str, scores_dir: str, span: int) -> str:
  """The CSV at `<scores_dir>/span-N.csv`, replaced whole (never half)."""
  os.makedirs(scores_dir, exist_ok=True)
  target = os.path.join(scores_dir, f'span-{span}.csv')
  partial = target + '.partial'
  if '://' in source:
    fileio.copy(source, partial, overwrite=True)
  else:
    shutil.copyfile(source, partial)
  os.replace(partial, target)
  return target


def format_summary(cfg: configs.PipelineConfig,
                   connection: metadata_store_pb2.ConnectionConfig,
                   outcome: ScoringOutcome, log_path: str) -> str:
  """Human-readable end-of-run summary."""
  lines = ['', f'Summary ({outcome.seconds:.1f} s wall time)']
  add = lambda k, v: lines.append(f'  {k:<18} {v}')
  served = outcome.served
  s = outcome.scoring
  add('span', outcome.span)
  add('model', f'version {served.version} (Model #{served.model.id}; '
      f'{served.why})')
  if not outcome.ok or s is None:
    add('result', 'STOPPED - nothing was scored')
    add('reason', (outcome.error or 'unknown').strip().replace(
        '\n', '\n' + ' ' * 21))
  else:
    add('rows scored', s.rows)
    problem = cfg.problem_spec
    mean = f'{s.mean_prediction:.4f} (' + (
        problem.question if problem.task.name == 'binary' else
        "the predicted class's probability") + ')'
    if outcome.mean_label is not None:
      mean += (f'; share of {problem.label.classes[1]} among the labelled '
               f'rows {outcome.mean_label:.4f}')
    add('mean prediction', mean)
    add('PredictionLogs', f'{console.display_path(s.predictions.uri)} '
        '(TFRecord, BulkInferrer)')
    add('CSV', console.display_path(s.csv_path))
    add('copied to', console.display_path(outcome.copied_to))
    trainer = (f' <- Trainer execution {s.trainer.id} (run {s.trainer.run})'
               if s.trainer else '')
    add('lineage', f'{batch_scoring.SCORES_TYPE} #{s.csv.id} <- BulkInferrer '
        f'execution {s.bulk_inferrer.id} <- Examples #{s.examples.id} '
        f'(span {s.span}), Model #{s.model.id}{trainer}')
    add('', f'python -m lineage scores {outcome.span}' + (
        f' --metadata-path {console.display_path(cfg.metadata_path)}'
        if connection.HasField('sqlite') and
        cfg.metadata_path != paths.metadata_path(
            paths.pipeline_root(cfg.problem)) else ''))
    if outcome.fully_cached:
      add('cached', 'every component reused its earlier execution: same '
          'span, same model')
  for marked in outcome.dead_run_marked:
    add('dead run', summary.dead_run_line(marked))
  add('metadata', summary.store_line(connection))
  add('full log', console.display_path(log_path))
  return '\n'.join(lines)
