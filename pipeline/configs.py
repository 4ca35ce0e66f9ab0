"""Every knob of the pipeline, defined once.

`PipelineConfig` holds the defaults; runners expose every field as a
command-line flag (`--train-steps 200`, `--serving-dir /srv/models`, ...) via
`add_flags` / `from_flags`, so nothing is configured in two places.
`--problem NAME` picks the problem (models/<name>/problem.py): its data,
schema, names and output paths, its model's default hyperparameters and
budget, and its blessing rule's defaults (its task's, with the problem's
own thresholds); every field left unset takes the problem's value.
Model code never imports this module: hyperparameters reach `models.model`
through the Trainer's `custom_config`, which also records them in ML Metadata.
"""

import argparse
import dataclasses
import os
from typing import Any, Dict, List, Optional, Sequence

from lineage import metadata_store
from models import problem as problems
from models import tasks
from project import cli
from project import paths

# TFX loads the user code by module path; `models` is installed with the
# project (setup.py), so no per-run wheel of the module file is built. The
# problem's preprocessing_fn is problem.preprocessing_fn.
RUN_FN = 'models.model.run_fn'
TUNER_FN = 'models.tuning.tuner_fn'

# Fields that choose the ML Metadata store (lineage/metadata_store.py owns
# them); lineage tools take only these.
METADATA_FIELDS = metadata_store.FIELDS
_field = cli.field
_PROBLEMS = ', '.join(problems.names())


def _by_problem(what: str) -> Dict[str, str]:
  """A field the problem fills when it is not given (cli.field derived)."""
  return {'derived': f"the problem's {what}"}


# A threshold of the blessing rule: the problem's task's default, or the
# problem's own (models/tasks.py, models/<problem>/problem.py).
_RULE = _by_problem('rule, if its task has this knob')


@dataclasses.dataclass
class PipelineConfig(metadata_store.ServedConfig):
  """Knobs of one pipeline run. Field name == flag name (dashes for '_').

  The ML Metadata store's fields, the problem and the serving names come
  from ServedConfig. A field whose default is None takes the problem's
  value in __post_init__.
  """
  data_root: Optional[str] = _field(
      None, 'directory holding span-N/*.csv', derived='data/<problem>')
  schema_path: Optional[str] = _field(
      None, 'curated schema imported by ImportSchemaGen',
      derived='schema/<problem>/schema.pbtxt')
  pipeline_root: Optional[str] = _field(
      None, 'where TFX writes artifacts',
      derived='outputs/<problem>/pipeline')
  span: Optional[int] = _field(
      None, 'span ExampleGen ingests (default: the latest on disk)')
  window_spans: int = _field(
      None, 'train on the latest N ingested spans (rolling window); '
      'earlier spans of the window are ingested first if missing',
      **_by_problem('window'))
  train_steps: int = _field(None, 'Trainer train steps',
                            **_by_problem('budget'))
  eval_steps: int = _field(None, 'Trainer eval steps',
                           **_by_problem('budget'))
  batch_size: int = _field(None, 'training batch size',
                           **_by_problem('hyperparameters'))
  hidden_units: List[int] = _field(
      None, 'DNN layer sizes, e.g. 64,32,16',
      **_by_problem('hyperparameters'))
  learning_rate: float = _field(
      None, 'Adam learning rate (too small a rate for the budget leaves a '
      'model predicting one class for every row: docs/decisions.md)',
      **_by_problem('hyperparameters'))
  seed: int = _field(
      None, 'training seed (weights, shuffle): the same seed, data and flags '
      'give the same model; recorded with the hparams in ML Metadata',
      **_by_problem('hyperparameters'))
  tune: bool = _field(
      False, "run TFX's Tuner (KerasTuner random search over hidden units, "
      'learning rate and batch size) before the Trainer; without it the '
      'Trainer uses the latest tuned values, if any, else the flags above')
  tuner_trials: int = _field(
      8, 'Tuner: trials (models tried, each with the Trainer\'s steps) per '
      'tuning run; the first is the configured values')
  # The blessing rule's knobs: every task's (models/tasks.py); the ones of
  # the problem's task default to the problem's rule, the others must stay
  # unset. pipeline/blessing.py applies them.
  min_auc: Optional[float] = _field(
      None, 'binary: ' + tasks.ALL_KNOBS['min_auc'], **_RULE)
  min_balanced_accuracy: Optional[float] = _field(
      None, tasks.ALL_KNOBS['min_balanced_accuracy'], **_RULE)
  min_calibration: Optional[float] = _field(
      None, 'binary: ' + tasks.ALL_KNOBS['min_calibration'], **_RULE)
  max_calibration: Optional[float] = _field(
      None, 'binary: ' + tasks.ALL_KNOBS['max_calibration'], **_RULE)
  min_slice_calibration: Optional[float] = _field(
      None, 'binary: ' + tasks.ALL_KNOBS['min_slice_calibration'], **_RULE)
  max_slice_calibration: Optional[float] = _field(
      None, 'binary: ' + tasks.ALL_KNOBS['max_slice_calibration'], **_RULE)
  max_auc_drop: Optional[float] = _field(
      None, 'binary: ' + tasks.ALL_KNOBS['max_auc_drop'], **_RULE)
  min_accuracy: Optional[float] = _field(
      None, 'multiclass: ' + tasks.ALL_KNOBS['min_accuracy'], **_RULE)
  max_accuracy_drop: Optional[float] = _field(
      None, 'multiclass: ' + tasks.ALL_KNOBS['max_accuracy_drop'], **_RULE)
  model_config_file: Optional[str] = _field(
      None, 'TF Serving model config the server reads; its `stable` label '
      'names the baseline (default: the newest version on disk)')
  enable_cache: bool = _field(True, 'reuse cached component executions')

  def __post_init__(self):
    problem = self.problem_spec  # fails on an unknown problem
    self.data_root = self.data_root or paths.data_root(problem.name)
    self.schema_path = self.schema_path or paths.schema_path(problem.name)
    self.pipeline_root = self.pipeline_root or paths.pipeline_root(
        problem.name)
    for name in ('window_spans', 'train_steps', 'eval_steps'):
      if getattr(self, name) is None:
        setattr(self, name, getattr(problem, name))
    for name, value in {**problems.DEFAULT_HPARAMS,
                        **problem.hparams}.items():
      if getattr(self, name) is None:
        setattr(self, name, list(value) if isinstance(value, list) else value)
    rule = problem.rule()
    for name in BLESSING_FIELDS:
      if name in rule:
        if getattr(self, name) is None:
          setattr(self, name, rule[name])
      elif getattr(self, name) is not None:
        raise SystemExit(f'--{name.replace("_", "-")} is no threshold of a '
                         f'{problem.task.name} task (problem '
                         f'{problem.name}: {", ".join(sorted(rule))})')
    super().__post_init__()

  @property
  def problem_spec(self) -> problems.Problem:
    """The problem (models/<problem>/problem.py)."""
    try:
      return problems.load(self.problem)
    except ValueError as e:
      raise SystemExit(f'--problem {self.problem}: {e}') from None

  @property
  def hparams(self) -> Dict[str, Any]:
    """Model hyperparameters, as passed to run_fn via custom_config."""
    return {
        'hidden_units': list(self.hidden_units),
        'learning_rate': self.learning_rate,
        'batch_size': self.batch_size,
        'seed': self.seed,
    }

  @property
  def rule(self) -> Dict[str, float]:
    """The blessing rule's knobs for this problem's task, as set."""
    return {name: getattr(self, name)
            for name in self.problem_spec.task.knobs}


def add_flags(parser: argparse.ArgumentParser,
              fields: Optional[Sequence[str]] = None) -> None:
  """One flag per PipelineConfig field (or per name in `fields`); the ML
  Metadata flags form one group whose description states which store wins,
  shown only when `fields` has one of them (vertex_runner's have none)."""
  if fields is not None and not set(fields) & set(METADATA_FIELDS):
    cli.add_flags(parser, PipelineConfig, fields=fields)
  else:
    metadata_store.add_flags(parser, PipelineConfig, fields)


def from_flags(args: argparse.Namespace) -> PipelineConfig:
  """PipelineConfig with every flag the user gave applied."""
  return cli.from_flags(args, PipelineConfig)


# The fields that are the blessing rule's thresholds, every task's
# (pipeline/blessing.py reads the problem's); the replay exposes each.
BLESSING_FIELDS = tuple(tasks.ALL_KNOBS)


# Vertex AI Pipelines (vertex_runner.py, Dockerfile). The image every task runs
# in is built FROM this TFX release's image, with this project installed.
TFX_BASE_IMAGE = 'tensorflow/tfx:1.16.0'
# Where the Dockerfile puts the project inside the image, and the curated
# schema's content-addressed copy: <IMAGE_SCHEMA_DIR>/<sha256[:16]>/schema.pbtxt
# (pipeline.cache_keys.image_schema_file).
IMAGE_PROJECT_DIR = '/opt/tfx-reference'
IMAGE_SCHEMA_DIR = IMAGE_PROJECT_DIR + '/schema-snapshots'
# PipelineConfig fields with no meaning on Vertex: it keeps lineage in Vertex ML
# Metadata, and its window is the span each run ingests (vertex_runner.py).
NOT_ON_VERTEX = METADATA_FIELDS + ('window_spans',)


@dataclasses.dataclass
class VertexConfig:
  """Where vertex_runner.py compiles for and submits to. Field == flag."""
  project: Optional[str] = _field(None, 'Google Cloud project id (required)')
  region: str = _field('us-central1', 'Vertex AI region')
  bucket: Optional[str] = _field(
      None, 'GCS bucket (no gs://) for the pipeline root '
      'gs://BUCKET/<problem>/pipeline, data gs://BUCKET/data/<problem> and '
      'pushes gs://BUCKET/serving (default: PROJECT-tfx-reference)')
  # Its default, vertex_runner.with_image: a tag derived from the files the
  # image is built from, never a reused `latest`.
  image: Optional[str] = _field(
      None, 'image built from ./Dockerfile that every task runs in (default: '
      'REGION-docker.pkg.dev/PROJECT/tfx-reference/pipeline:src-DIGEST, '
      'DIGEST of the files the Dockerfile copies: the same files, the same '
      'tag)')
  service_account: Optional[str] = _field(
      None, "service account the job runs as (default: Vertex's default)")
  pipeline_spec: Optional[str] = _field(
      None, 'where the compiled PipelineJob JSON is written',
      derived='outputs/<problem>/vertex/pipeline.json')

  def __post_init__(self):
    if self.project:
      self.bucket = self.bucket or f'{self.project}-tfx-reference'

  def spec_path(self, problem: str) -> str:
    return self.pipeline_spec or os.path.join(
        paths.problem_outputs(problem), 'vertex', 'pipeline.json')

  def pipeline_config(self, problem: str = paths.DEFAULT_PROBLEM,
                      **given: Any) -> PipelineConfig:
    """`problem`'s PipelineConfig with paths on GCS unless `given` sets
    them."""
    gcs = {'pipeline_root': f'gs://{self.bucket}/{problem}/pipeline',
           'data_root': f'gs://{self.bucket}/data/{problem}',
           'serving_dir': f'gs://{self.bucket}/serving'}
    return PipelineConfig(**{**gcs, 'problem': problem, **given})
