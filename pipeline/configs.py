"""Every knob of the taxi pipeline, defined once.

`PipelineConfig` holds the defaults; runners expose every field as a
command-line flag (`--train-steps 200`, `--serving-dir /srv/models`, ...) via
`add_flags` / `from_flags`, so nothing is configured in two places.
Model code never imports this module: hyperparameters reach `models.model`
through the Trainer's `custom_config`, which also records them in ML Metadata.
"""

import argparse
import dataclasses
import os
from typing import Any, Dict, List, Optional, Sequence

from lineage import metadata_store
from project import cli
from project.paths import MODEL_NAME, OUTPUT_DIR, PIPELINE_NAME, REPO_ROOT
from project import paths

# TFX loads the user code by module path; `models` is installed with the
# project (setup.py), so no per-run wheel of the module file is built.
PREPROCESSING_FN = 'models.preprocessing.preprocessing_fn'
RUN_FN = 'models.model.run_fn'
TUNER_FN = 'models.tuning.tuner_fn'
MODELS_DIR = os.path.join(REPO_ROOT, 'models')
# Slices for the Evaluator's metrics (raw feature names).
SLICE_FEATURES = ['payment_type']
# Slices whose calibration must also stay in the band to bless a model:
# large enough in every window (a third of trips pay by card) and the only
# ones where the decision is not trivial (Cash trips record no tips, so
# their label is ~always 0 and their calibration undefined). A guarded
# slice missing from the evaluation data fails the blessing (fail closed).
GUARDED_SLICES = {'payment_type': ['Credit Card']}


# Fields that choose the ML Metadata store (lineage/metadata_store.py owns
# them); lineage tools take only these.
METADATA_FIELDS = metadata_store.FIELDS
_field = cli.field


@dataclasses.dataclass
class PipelineConfig(metadata_store.StoreConfig):
  """Knobs of one pipeline run. Field name == flag name (dashes for '_').

  The ML Metadata store's fields come from StoreConfig."""
  pipeline_name: str = _field(PIPELINE_NAME, 'TFX pipeline name')
  model_name: str = _field(MODEL_NAME,
                           'model name under the serving base path')
  data_root: str = _field(paths.DATA_ROOT,
                          'directory holding span-N/*.csv')
  schema_path: str = _field(paths.SCHEMA_PATH,
                            'curated schema imported by ImportSchemaGen')
  pipeline_root: str = _field(paths.PIPELINE_ROOT,
                              'where TFX writes artifacts')
  serving_dir: str = _field(
      paths.SERVING_DIR,
      'TF Serving model base path root: pushes go to <dir>/<model>/<version>/')
  span: Optional[int] = _field(
      None, 'span ExampleGen ingests (default: the latest on disk)')
  window_spans: int = _field(
      16, 'train on the latest N ingested spans (rolling window); '
      'earlier spans of the window are ingested first if missing')
  train_steps: int = _field(1000, 'Trainer train steps')
  eval_steps: int = _field(150, 'Trainer eval steps')
  batch_size: int = _field(40, 'training batch size')
  hidden_units: List[int] = _field(None, 'DNN layer sizes, e.g. 64,32,16')
  learning_rate: float = _field(
      0.01, 'Adam learning rate (0.001 left 300-step models predicting "no '
      'big tip" for every trip: docs/decisions.md)')
  seed: int = _field(
      42, 'training seed (weights, shuffle): the same seed, data and flags '
      'give the same model; recorded with the hparams in ML Metadata')
  tune: bool = _field(
      False, "run TFX's Tuner (KerasTuner random search over hidden units, "
      'learning rate and batch size) before the Trainer; without it the '
      'Trainer uses the latest tuned values, if any, else the flags above')
  tuner_trials: int = _field(
      8, 'Tuner: trials (models tried, each with the Trainer\'s steps) per '
      'tuning run; the first is the configured values')
  min_auc: float = _field(
      0.7, 'Evaluator: bless only if AUC >= this (chance is 0.5)')
  min_balanced_accuracy: float = _field(
      0.7, 'Evaluator: bless only if balanced accuracy (mean of the true '
      'positive and true negative rates at p > 0.5) >= this; the majority '
      'class scores 0.5 whatever the base rate')
  min_calibration: float = _field(
      0.8, 'Evaluator: bless only if calibration (mean prediction / mean '
      'label) >= this, overall')
  max_calibration: float = _field(
      1.25, 'Evaluator: ... and <= this, overall')
  min_slice_calibration: float = _field(
      0.7, 'Evaluator: calibration floor on each guarded slice '
      '(GUARDED_SLICES in pipeline/configs.py)')
  max_slice_calibration: float = _field(
      1.43, 'Evaluator: calibration ceiling on each guarded slice')
  max_auc_drop: float = _field(
      0.01, 'Evaluator: bless only if AUC >= baseline AUC - this (the '
      'baseline is the served model, components/baseline.py)')
  model_config_file: Optional[str] = _field(
      None, 'TF Serving model config the server reads; its `stable` label '
      'names the baseline (default: the newest version on disk)')
  enable_cache: bool = _field(True, 'reuse cached component executions')
  def __post_init__(self):
    if self.hidden_units is None:
      self.hidden_units = [64, 32, 16]
    if self.metadata_path is None:
      self.metadata_path = paths.metadata_path(self.pipeline_root)
    super().__post_init__()

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
  def serving_model_dir(self) -> str:
    """The TF Serving model base path Pusher writes versions into."""
    return os.path.join(self.serving_dir, self.model_name)


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


# The fields that are the blessing rule's thresholds (pipeline/blessing.py
# reads them); the replay exposes each as a flag.
BLESSING_FIELDS = ('min_auc', 'min_balanced_accuracy', 'min_calibration',
                   'max_calibration', 'min_slice_calibration',
                   'max_slice_calibration', 'max_auc_drop')


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
      None, 'GCS bucket (no gs://) for the pipeline root gs://BUCKET/pipeline,'
      ' data gs://BUCKET/data/taxi and pushes gs://BUCKET/serving '
      '(default: PROJECT-tfx-reference)')
  # Its default, vertex_runner.with_image: a tag derived from the files the
  # image is built from, never a reused `latest`.
  image: Optional[str] = _field(
      None, 'image built from ./Dockerfile that every task runs in (default: '
      'REGION-docker.pkg.dev/PROJECT/tfx-reference/taxi-pipeline:src-DIGEST, '
      'DIGEST of the files the Dockerfile copies: the same files, the same '
      'tag)')
  service_account: Optional[str] = _field(
      None, "service account the job runs as (default: Vertex's default)")
  pipeline_spec: str = _field(
      os.path.join(OUTPUT_DIR, 'vertex', 'taxi_pipeline.json'),
      'where the compiled PipelineJob JSON is written')

  def __post_init__(self):
    if self.project:
      self.bucket = self.bucket or f'{self.project}-tfx-reference'

  def pipeline_config(self, **given: Any) -> PipelineConfig:
    """PipelineConfig whose paths are on GCS unless `given` sets them."""
    paths = {'pipeline_root': f'gs://{self.bucket}/pipeline',
             'data_root': f'gs://{self.bucket}/data/taxi',
             'serving_dir': f'gs://{self.bucket}/serving'}
    return PipelineConfig(**{**paths, **given})
