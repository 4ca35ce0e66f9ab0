"""Shared fixtures: a real tf.Transform graph and a real trained model."""

import os
import tempfile

import pytest

from tests import helpers


def analyze_and_transform(instances, out_dir):
  """Runs models.preprocessing through tf.Transform on Beam (in memory).

  Returns the transformed instances; writes the transform graph to out_dir.
  """
  import tensorflow_transform as tft  # pylint: disable=g-import-not-at-top
  import tensorflow_transform.beam as tft_beam  # pylint: disable=g-import-not-at-top
  from tensorflow_transform.tf_metadata import metadata_io  # pylint: disable=g-import-not-at-top
  from tensorflow_transform.tf_metadata import dataset_metadata  # pylint: disable=g-import-not-at-top
  from models import preprocessing  # pylint: disable=g-import-not-at-top

  metadata = dataset_metadata.DatasetMetadata(helpers.load_schema())
  # TFT's in-memory mode: a list in, a list out, on Beam's DirectRunner.
  with tft_beam.Context(temp_dir=tempfile.mkdtemp(dir=out_dir)):
    (transformed, _), transform_fn = (
        (instances, metadata)
        | tft_beam.AnalyzeAndTransformDataset(preprocessing.preprocessing_fn))
    _ = transform_fn | tft_beam.WriteTransformFn(out_dir)
  # TFX's Transform also writes the raw metadata; run_fn reads it.
  metadata_io.write_metadata(
      metadata, os.path.join(out_dir, tft.TFTransformOutput.RAW_METADATA_DIR))
  return transformed


@pytest.fixture(scope='session')
def train_rows():
  """Real rows from two bundled spans."""
  return helpers.read_span(5, 500) + helpers.read_span(6, 500)


@pytest.fixture(scope='session')
def eval_rows():
  return helpers.read_span(7, 200)


@pytest.fixture(scope='session')
def transform_dir(tmp_path_factory, train_rows):
  """tf.Transform graph analyzed on train_rows."""
  out = str(tmp_path_factory.mktemp('transform'))
  schema = helpers.load_schema()
  analyze_and_transform([helpers.to_instance(r, schema) for r in train_rows],
                        out)
  return out


# The fixture model's budget: the tests' short budget (helpers.FAST_PIPELINE)
# on 1,000 real rows, which trains a model that passes the blessing rule.
TRAINED_MODEL_STEPS = 150
TRAINED_MODEL_HPARAMS = {'hidden_units': [16, 8], 'learning_rate': 0.02,
                         'batch_size': 32, 'seed': 7}


def write_split_examples(root, train_rows, eval_rows):
  """An Examples artifact at <root>/examples: train and eval splits of
  GZIP tf.Examples, as ExampleGen writes them."""
  from tfx.types import standard_artifacts  # pylint: disable=g-import-not-at-top
  from tfx.types import artifact_utils  # pylint: disable=g-import-not-at-top

  examples = standard_artifacts.Examples()
  examples.uri = os.path.join(root, 'examples')
  examples.split_names = artifact_utils.encode_split_names(['train', 'eval'])
  helpers.write_examples(
      os.path.join(examples.uri, 'Split-train', 'data.gz'), train_rows)
  helpers.write_examples(
      os.path.join(examples.uri, 'Split-eval', 'data.gz'), eval_rows)
  return examples


def train(root, transform_dir, train_rows, eval_rows, train_steps,
          hparams, hyperparameters=None):
  """models.model.run_fn run for real on raw examples; returns its FnArgs.

  `hyperparameters`: what the Trainer passes from a HyperParameters input
  (a KerasTuner HyperParameters config), or None, as without a Tuner.
  """
  from tfx.components.trainer.fn_args_utils import DataAccessor  # pylint: disable=g-import-not-at-top
  from tfx.components.trainer.fn_args_utils import FnArgs  # pylint: disable=g-import-not-at-top
  from tfx.components.util import tfxio_utils  # pylint: disable=g-import-not-at-top
  from models import model  # pylint: disable=g-import-not-at-top

  examples = write_split_examples(root, train_rows, eval_rows)
  fn_args = FnArgs(
      train_files=[os.path.join(examples.uri, 'Split-train', '*')],
      eval_files=[os.path.join(examples.uri, 'Split-eval', '*')],
      transform_output=transform_dir,
      serving_model_dir=os.path.join(root, 'serving_model'),
      model_run_dir=os.path.join(root, 'model_run'),
      train_steps=train_steps,
      eval_steps=5,
      hyperparameters=hyperparameters,
      custom_config={'hparams': dict(hparams)},
      data_accessor=DataAccessor(
          tf_dataset_factory=tfxio_utils.get_tf_dataset_factory_from_artifact(
              [examples], []),
          record_batch_factory=None,
          data_view_decode_fn=None))
  model.run_fn(fn_args)
  return fn_args


@pytest.fixture(scope='session')
def trained_model(tmp_path_factory, transform_dir, train_rows, eval_rows):
  """A real model (run_fn) on real rows; returns its FnArgs."""
  return train(str(tmp_path_factory.mktemp('trainer')), transform_dir,
               train_rows, eval_rows, TRAINED_MODEL_STEPS,
               TRAINED_MODEL_HPARAMS)


# --- A replay of three small real spans (CT controller + three pipeline runs)
# Shared by tests/continuous_training/test_replay.py and the UI's browser
# tests (tests/ui), which read the store it leaves: ~5 min, paid once.


@pytest.fixture(scope='session')
def replayed(tmp_path_factory):
  """(out dir, replay argv); the replay runs in `replay_result`."""
  root = tmp_path_factory.mktemp('replay')
  source = root / 'source'
  helpers.small_spans(str(source))  # 300 real rows of 2015-Q1..Q3
  # Span 3: every Cash trip paid by card instead (tips untouched), a shift
  # in payment_type's distribution that breaks no schema rule.
  rows = helpers.read_span(3, data_root=str(source))
  for row in rows:
    if row['payment_type'] == 'Cash':
      row['payment_type'] = 'Credit Card'
  helpers.write_csv(str(source / 'span-3' / 'data.csv'), rows)
  out = root / 'out'
  argv = ['--data-root', str(source), '--out', str(out), '--spans', '1-3',
          '--window-spans', '3', '--eval-steps', '10', '--max-auc-drop', '0.2']
  # (train steps: the replay's default, a budget that trains real models)
  return out, argv


@pytest.fixture(scope='session')
def replay_result(replayed):
  """(exit code, what the replay printed)."""
  import contextlib  # pylint: disable=g-import-not-at-top
  import io  # pylint: disable=g-import-not-at-top
  from continuous_training import replay  # pylint: disable=g-import-not-at-top
  out, argv = replayed
  buffer = io.StringIO()
  with contextlib.redirect_stdout(buffer):
    code = replay.main(argv)
  return code, buffer.getvalue()
