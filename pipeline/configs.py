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
from typing import Any, Dict, List, Optional

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUTPUT_DIR = os.path.join(REPO_ROOT, 'outputs')

PIPELINE_NAME = 'taxi'
MODEL_NAME = 'taxi'
# TFX loads the user code by module path; `models` is installed with the
# project (setup.py), so no per-run wheel of the module file is built.
PREPROCESSING_FN = 'models.preprocessing.preprocessing_fn'
RUN_FN = 'models.model.run_fn'
MODELS_DIR = os.path.join(REPO_ROOT, 'models')
# `{SPAN}` is TFX's span spec: ExampleGen ingests one span per run.
SPAN_PATTERN = 'span-{SPAN}/*.csv'
# Under a model base path: where `serving.versions rollback` moves a version
# (not a number, so no model server serves it; the Pusher never re-pushes it).
ROLLED_BACK_DIR = '.rolled-back'
# Slices for the Evaluator's metrics (raw feature names).
SLICE_FEATURES = ['payment_type']


def _field(default: Any, help_text: str, **kwargs) -> Any:
  return dataclasses.field(default=default, metadata={'help': help_text},
                           **kwargs)


@dataclasses.dataclass
class PipelineConfig:
  """Knobs of one pipeline run. Field name == flag name (dashes for '_')."""
  pipeline_name: str = _field(PIPELINE_NAME, 'TFX pipeline name')
  model_name: str = _field(MODEL_NAME,
                           'model name under the serving base path')
  data_root: str = _field(os.path.join(REPO_ROOT, 'data', 'taxi'),
                          'directory holding span-N/*.csv')
  schema_path: str = _field(os.path.join(REPO_ROOT, 'schema', 'schema.pbtxt'),
                            'curated schema imported by ImportSchemaGen')
  pipeline_root: str = _field(os.path.join(OUTPUT_DIR, 'pipeline'),
                              'where TFX writes artifacts')
  metadata_path: Optional[str] = _field(
      None, 'SQLite ML Metadata file (default: <pipeline-root>/metadata.sqlite)')
  metadata_config: Optional[str] = _field(
      None, 'text-format ml_metadata ConnectionConfig file (e.g. MySQL); '
      'overrides --metadata-path')
  serving_dir: str = _field(
      os.path.join(OUTPUT_DIR, 'serving'),
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
  learning_rate: float = _field(0.001, 'Adam learning rate')
  min_auc: float = _field(0.7, 'Evaluator: bless only if AUC >= this')
  min_binary_accuracy: float = _field(
      0.6, 'Evaluator: bless only if binary accuracy >= this')
  max_auc_drop: float = _field(
      0.01, 'Evaluator: bless only if AUC >= baseline AUC - this')
  enable_cache: bool = _field(True, 'reuse cached component executions')

  def __post_init__(self):
    if self.hidden_units is None:
      self.hidden_units = [64, 32, 16]
    if self.metadata_path is None:
      self.metadata_path = os.path.join(self.pipeline_root, 'metadata.sqlite')

  @property
  def hparams(self) -> Dict[str, Any]:
    """Model hyperparameters, as passed to run_fn via custom_config."""
    return {
        'hidden_units': list(self.hidden_units),
        'learning_rate': self.learning_rate,
        'batch_size': self.batch_size,
    }

  @property
  def serving_model_dir(self) -> str:
    """The TF Serving model base path Pusher writes versions into."""
    return os.path.join(self.serving_dir, self.model_name)


def _parse_value(kind: str, text: str) -> Any:
  if kind == 'List[int]':
    return [int(x) for x in text.split(',') if x.strip()]
  if kind == 'bool':
    if text.lower() in ('1', 'true', 'yes'):
      return True
    if text.lower() in ('0', 'false', 'no'):
      return False
    raise argparse.ArgumentTypeError(f'expected true/false, got {text!r}')
  if kind in ('int', 'Optional[int]'):
    return int(text)
  if kind == 'float':
    return float(text)
  return text


def add_flags(parser: argparse.ArgumentParser) -> None:
  """One flag per PipelineConfig field, defaults shown in --help."""
  defaults = PipelineConfig()
  for field in dataclasses.fields(PipelineConfig):
    kind = getattr(field.type, '__name__', None) if isinstance(
        field.type, type) else str(field.type).replace('typing.', '')
    default = getattr(defaults, field.name)
    if isinstance(default, list):
      default = ','.join(map(str, default))
    parser.add_argument(
        '--' + field.name.replace('_', '-'),
        dest=field.name,
        default=None,
        metavar=field.name.upper(),
        type=lambda text, kind=kind: _parse_value(kind, text),
        help=f'{field.metadata["help"]} (default: {default})')


def from_flags(args: argparse.Namespace) -> PipelineConfig:
  """PipelineConfig with every flag the user gave applied."""
  given = {
      f.name: getattr(args, f.name)
      for f in dataclasses.fields(PipelineConfig)
      if getattr(args, f.name, None) is not None
  }
  return PipelineConfig(**given)
