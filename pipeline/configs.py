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
# Under a model base path: where `delivery.versions rollback` moves a version
# (not a number, so no model server serves it; the Pusher never re-pushes it).
ROLLED_BACK_DIR = '.rolled-back'
# Under a model base path: one JSON line per push, rollback, promotion and CD
# step (delivery/versions.py, delivery/cd.py); pipeline/baseline.py reads CD's
# verdicts from it.
ACTION_LOG = '.versions.log'
# Slices for the Evaluator's metrics (raw feature names).
SLICE_FEATURES = ['payment_type']
# Slices whose calibration must also stay in the band to bless a model:
# large enough in every window (a third of trips pay by card) and the only
# ones where the decision is not trivial (Cash trips record no tips, so
# their label is ~always 0 and their calibration undefined). A guarded
# slice missing from the evaluation data fails the blessing (fail closed).
GUARDED_SLICES = {'payment_type': ['Credit Card']}


# Continuous training (continuous_training/controller.py, continuous_training/drift.py,
# continuous_training/replay.py): the one place its thresholds and defaults live.
# Drift (a new span vs the previous one, the CT trigger) and skew (served
# traffic vs the served version's training data, monitoring/) are the same
# comparison, monitoring/distribution.py, with this one rule: per feature, a
# chi-square test of homogeneity of the two samples' counts in bins made
# from the reference (numeric: its deciles; categorical, integer categories
# included: one bin per category, rare ones pooled; missing: a bin), and an
# effect size on those bins. Alarm iff p < DRIFT_ALPHA / (features compared)
# AND the effect is above the floor. Measured false-alarm and detection
# rates: docs/continuous-training.md (bench/shift_alarm_rates.py).
DRIFT_CATEGORICAL_FEATURES = (
    'payment_type', 'company', 'trip_start_hour', 'trip_start_day',
    'pickup_community_area', 'dropoff_community_area')
DRIFT_NUMERIC_FEATURES = (
    'trip_miles', 'fare', 'trip_seconds', 'pickup_latitude',
    'pickup_longitude', 'dropoff_latitude', 'dropoff_longitude')
# Model features not compared because they shift by design: a span is a
# quarter, three months of twelve, so trip_start_month differs between
# consecutive spans and between a span (or a quarter's traffic) and any
# longer training window. (Not model features, so never compared:
# trip_start_timestamp, the census tracts, the label.)
DRIFT_EXCLUDED_FEATURES = ('trip_start_month',)
# Family-wise: the chance that a sample from the reference's own
# distribution alarms on any feature (Bonferroni over the features).
DRIFT_ALPHA = 0.01
# Effect floors. L-infinity (largest change in any category's share): the
# bundled quarters' shares move up to 0.14 against the 16-span window
# (payment_type drifts towards card over 2013-2016; company 0.13 in span 16)
# and that is in-distribution; 0.2 sits above it and below the payment-mix
# shift (half of Cash to card: 0.33). Jensen-Shannon divergence (base 2) of
# the decile bins: real spans measure up to 0.043 (trip_miles) against the
# window; trip length x2 measures 0.15 (trip_seconds), fares x3 0.48.
DRIFT_LINF_THRESHOLD = 0.2
DRIFT_JSD_THRESHOLD = 0.1
# Numeric bins: the reference's deciles (edges that coincide merge).
DRIFT_NUMERIC_BINS = 10
# A bin expected to hold fewer values than this in the smaller sample is
# pooled (the chi-square approximation needs about 5).
DRIFT_MIN_EXPECTED = 5.0
# Schedule trigger: retrain when this much logical time passed since the
# controller's last run (spans are quarters, so 180 days = two quarters).
CT_SCHEDULE_DAYS = 180
# The monitor's report (issue 5, monitoring); missing file = no signal.
MONITORING_REPORT = os.path.join(OUTPUT_DIR, 'monitoring', 'report.json')
# Replay of the spans through the controller: its own outputs and knobs
# (fewer train steps than `make run`, so 16 runs fit in a learner's wait).
REPLAY_DIR = os.path.join(OUTPUT_DIR, 'replay')
REPLAY_DEFAULTS = dict(window_spans=4, train_steps=300, eval_steps=50)


# The password of a MySQL store is deliberately no field (so no flag: a
# command line shows in `ps`); it comes from the file or variable below.
MYSQL_PASSWORD_ENV = 'MLMD_MYSQL_PASSWORD'
# Fields that choose the ML Metadata store; lineage tools take only these.
METADATA_FIELDS = ('metadata_path', 'metadata_config', 'mysql_host',
                   'mysql_port', 'mysql_database', 'mysql_user',
                   'mysql_password_file')
METADATA_HELP = (
    'SQLite at --metadata-path unless --metadata-config or a MySQL host is '
    'given. Precedence: --metadata-config FILE (any ml_metadata backend, used '
    'as is) > MySQL (--mysql-host or $MLMD_MYSQL_HOST) > SQLite. Each '
    '--mysql-* flag overrides its $MLMD_MYSQL_* variable. The MySQL password '
    'is never a flag: it is read from --mysql-password-file (or '
    f'$MLMD_MYSQL_PASSWORD_FILE), else ${MYSQL_PASSWORD_ENV}; it also fills '
    'a --metadata-config MySQL config that has none. It is never printed or '
    'logged.')


def _field(default: Any, help_text: str, env: Optional[str] = None,
           fallback: Any = None, **kwargs) -> Any:
  """A config field; `env` names a variable used when no flag is given.

  A field with `env` defaults to None so that `__post_init__` can tell "not
  given" from "given", then takes the variable's value, else `fallback`.
  """
  metadata = {'help': help_text, 'env': env, 'fallback': fallback}
  return dataclasses.field(default=default, metadata=metadata, **kwargs)


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
  learning_rate: float = _field(
      0.01, 'Adam learning rate (0.001 left 300-step models predicting "no '
      'big tip" for every trip: docs/decisions.md)')
  seed: int = _field(
      42, 'training seed (weights, shuffle): the same seed, data and flags '
      'give the same model; recorded with the hparams in ML Metadata')
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
      'baseline is the served model, pipeline/baseline.py)')
  model_config_file: Optional[str] = _field(
      None, 'TF Serving model config the server reads; its `stable` label '
      'names the baseline (default: the newest version on disk)')
  enable_cache: bool = _field(True, 'reuse cached component executions')
  mysql_host: Optional[str] = _field(
      None, 'MySQL/MariaDB host for ML Metadata; setting it selects MySQL '
      'instead of SQLite', env='MLMD_MYSQL_HOST')
  mysql_port: Optional[int] = _field(None, 'MySQL port',
                                     env='MLMD_MYSQL_PORT', fallback=3306)
  mysql_database: Optional[str] = _field(
      None, 'MySQL database (created if missing and the user may)',
      env='MLMD_MYSQL_DATABASE', fallback='mlmd')
  mysql_user: Optional[str] = _field(None, 'MySQL user',
                                     env='MLMD_MYSQL_USER')
  mysql_password_file: Optional[str] = _field(
      None, f'file holding the MySQL password (else ${MYSQL_PASSWORD_ENV})',
      env='MLMD_MYSQL_PASSWORD_FILE')

  def __post_init__(self):
    if self.hidden_units is None:
      self.hidden_units = [64, 32, 16]
    for field in dataclasses.fields(self):
      env = field.metadata.get('env')
      if env and getattr(self, field.name) is None:
        text = os.environ.get(env)
        try:
          value = _parse_value(_kind(field), text) if text else None
        except (ValueError, argparse.ArgumentTypeError) as e:
          raise SystemExit(f'${env}={text!r} is not a valid '
                           f'{_kind(field)}: {e}') from None
        setattr(self, field.name,
                field.metadata['fallback'] if value is None else value)
    if self.metadata_path is None:
      self.metadata_path = os.path.join(self.pipeline_root, 'metadata.sqlite')

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


class _RefusePassword(argparse.Action):
  """`--mysql-password`: refused, and taken before argparse would read it as
  an abbreviation of --mysql-password-file."""

  def __call__(self, parser, namespace, values, option_string=None):
    parser.error(f'{option_string} is not accepted (a command line shows in '
                 f'`ps`): put the password in ${MYSQL_PASSWORD_ENV} or in a '
                 'file named by --mysql-password-file')


def _kind(field: dataclasses.Field) -> str:
  """'int', 'Optional[int]', 'List[int]', ...: how to parse a flag's text."""
  return getattr(field.type, '__name__', None) if isinstance(
      field.type, type) else str(field.type).replace('typing.', '')


def add_flags(parser: argparse.ArgumentParser,
              fields: Optional[Sequence[str]] = None) -> None:
  """One flag per PipelineConfig field (or per name in `fields`).

  Defaults are shown in --help; the ML Metadata flags form one group whose
  description states which store wins. Lineage tools pass
  `fields=METADATA_FIELDS` to open the same store the runners write.
  """
  defaults = PipelineConfig()
  names = [f.name for f in dataclasses.fields(PipelineConfig)
           if fields is None or f.name in fields]
  metadata_group = parser.add_argument_group(
      'ML Metadata store', METADATA_HELP) if set(names) & set(
          METADATA_FIELDS) else None
  if 'mysql_password_file' in names:
    metadata_group.add_argument('--mysql-password', nargs='?',
                                action=_RefusePassword, help=argparse.SUPPRESS)
  for field in dataclasses.fields(PipelineConfig):
    if field.name not in names:
      continue
    kind = _kind(field)
    default = getattr(defaults, field.name)
    if isinstance(default, list):
      default = ','.join(map(str, default))
    env = field.metadata['env']
    target = metadata_group if field.name in METADATA_FIELDS else parser
    target.add_argument(
        '--' + field.name.replace('_', '-'),
        dest=field.name,
        default=None,
        metavar=field.name.upper(),
        type=lambda text, kind=kind: _parse_value(kind, text),
        help=f'{field.metadata["help"]}'
        + (f'; env ${env}' if env else '') + f' (default: {default})')


def from_flags(args: argparse.Namespace) -> PipelineConfig:
  """PipelineConfig with every flag the user gave applied."""
  given = {
      f.name: getattr(args, f.name)
      for f in dataclasses.fields(PipelineConfig)
      if getattr(args, f.name, None) is not None
  }
  return PipelineConfig(**given)


# Vertex AI Pipelines (vertex_runner.py, Dockerfile). The image every task runs
# in is built FROM this TFX release's image, with this project installed.
TFX_BASE_IMAGE = 'tensorflow/tfx:1.16.0'
# Where the Dockerfile puts the project inside the image, and the curated
# schema's content-addressed copy: <IMAGE_SCHEMA_DIR>/<sha256[:16]>/schema.pbtxt
# (pipeline.pipeline.image_schema_file).
IMAGE_PROJECT_DIR = '/opt/tfx-reference'
IMAGE_SCHEMA_DIR = IMAGE_PROJECT_DIR + '/schema-snapshots'
# PipelineConfig fields with no meaning on Vertex: it keeps lineage in Vertex ML
# Metadata, and its window is the span each run ingests (pipeline/pipeline.py).
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
  image: Optional[str] = _field(
      None, 'image built from ./Dockerfile that every task runs in (default: '
      'REGION-docker.pkg.dev/PROJECT/tfx-reference/taxi-pipeline:latest)')
  service_account: Optional[str] = _field(
      None, "service account the job runs as (default: Vertex's default)")
  pipeline_spec: str = _field(
      os.path.join(OUTPUT_DIR, 'vertex', 'taxi_pipeline.json'),
      'where the compiled PipelineJob JSON is written')

  def __post_init__(self):
    if self.project:
      self.bucket = self.bucket or f'{self.project}-tfx-reference'
      self.image = self.image or (
          f'{self.region}-docker.pkg.dev/{self.project}/tfx-reference/'
          'taxi-pipeline:latest')

  def pipeline_config(self, **given: Any) -> PipelineConfig:
    """PipelineConfig whose paths are on GCS unless `given` sets them."""
    paths = {'pipeline_root': f'gs://{self.bucket}/pipeline',
             'data_root': f'gs://{self.bucket}/data/taxi',
             'serving_dir': f'gs://{self.bucket}/serving'}
    return PipelineConfig(**{**paths, **given})
