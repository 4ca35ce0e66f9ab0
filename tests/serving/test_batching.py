"""Server-side batching: merged executions give every request its own answer."""

import concurrent.futures
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from models import features
from serving import batching
from serving import inference
from serving import model_registry
from serving.errors import BadRequest
from serving.errors import Unavailable
from tests import helpers


def test_parameters_in_tf_serving_text_format():
  params = batching.parse_parameters('''
      # as in TF Serving's docs
      max_batch_size { value: 32 }
      batch_timeout_micros { value: 500 }
      num_batch_threads: 1
      pad_variable_length_inputs: true
  ''')
  assert params == batching.BatchingParameters(
      max_batch_size=32, batch_timeout_micros=500, num_batch_threads=1)
  assert batching.parse_parameters('') == batching.BatchingParameters()


@pytest.mark.parametrize('text, message', [
    ('max_batch_sise { value: 3 }', "unknown batching parameter 'max_batch_sise'"),
    ('max_batch_size { value: 0 }', 'must be positive'),
    ('max_batch_size { value: "x" }', 'must be an integer'),
    ('max_batch_size {', 'cannot parse'),
])
def test_bad_parameters_name_the_field(text, message):
  with pytest.raises(ValueError, match=message):
    batching.parse_parameters(text, 'batching.config')


@pytest.fixture(scope='module')
def loaded(trained_model):
  return model_registry.load_version(trained_model.serving_model_dir, 1)


def _concurrently(calls):
  """Runs `calls` from as many threads, released together."""
  barrier = threading.Barrier(len(calls))

  def call(fn):
    barrier.wait()
    try:
      return fn()
    except Exception as e:  # pylint: disable=broad-except
      return e
  with concurrent.futures.ThreadPoolExecutor(len(calls)) as pool:
    return list(pool.map(call, calls))


def test_concurrent_requests_share_executions_and_keep_their_rows(
    loaded, eval_rows):
  # A generous timeout makes merging certain, not a matter of timing.
  batcher = batching.Batcher(batching.BatchingParameters(
      max_batch_size=64, batch_timeout_micros=300_000, num_batch_threads=1))
  try:
    raw = helpers.raw_rows(eval_rows[:24])
    requests = [raw[i:i + n] for i, n in zip(range(0, 24, 3), [1, 2, 3] * 3)]

    def columns(rows):
      return {k: [r[k] for r in rows] for k in helpers.RAW_TYPES}
    expected = [inference.run(loaded, features.RAW_SIGNATURE, columns(rows))
                for rows in requests]
    answers = _concurrently([
        lambda rows=rows: inference.run(loaded, features.RAW_SIGNATURE,
                                        columns(rows), batcher)
        for rows in requests])
  finally:
    batcher.stop()
  for rows, want, got in zip(requests, expected, answers):
    assert not isinstance(got, Exception), got
    assert got['outputs'].shape == (len(rows), 1)
    np.testing.assert_allclose(got['outputs'], want['outputs'], rtol=1e-5)
  assert batcher.batches < len(requests)


def test_a_bad_request_fails_alone_inside_a_batch(loaded, eval_rows):
  schema = helpers.load_schema()
  good = [helpers.to_example(r, schema, drop_label=True).SerializeToString()
          for r in eval_rows[:4]]
  batcher = batching.Batcher(batching.BatchingParameters(
      max_batch_size=64, batch_timeout_micros=300_000, num_batch_threads=1))
  try:
    # Passes the dtype/shape checks; fails only when the model parses it.
    inputs = [[good[0]], [b'not a tf.Example'], [good[1]], good[2:]]
    answers = _concurrently([
        lambda x=x: inference.run(loaded, '', {'examples': x}, batcher)
        for x in inputs])
  finally:
    batcher.stop()
  assert batcher.batches < len(inputs)  # they did share an execution
  assert isinstance(answers[1], BadRequest), answers[1]
  assert 'parse' in str(answers[1]).lower()
  expected = _in_process_examples(loaded, good)
  np.testing.assert_allclose(answers[0]['outputs'], expected[:1], rtol=1e-5)
  np.testing.assert_allclose(answers[2]['outputs'], expected[1:2], rtol=1e-5)
  np.testing.assert_allclose(answers[3]['outputs'], expected[2:], rtol=1e-5)


def _in_process_examples(loaded, examples):
  return inference.execute(loaded, '', {'examples': np.array(
      examples, dtype=object)})['outputs']


@pytest.mark.integration
def test_server_with_batching_answers_concurrent_rest_and_grpc(
    tmp_path, trained_model, eval_rows):
  import grpc  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorflow_serving.apis import prediction_service_pb2_grpc  # pylint: disable=g-import-not-at-top
  base = str(tmp_path / 'taxi')
  os.makedirs(base)
  helpers.copy_version(trained_model.serving_model_dir, base, 1)
  params = tmp_path / 'batching.config'
  params.write_text('max_batch_size { value: 16 }\n'
                    'batch_timeout_micros { value: 2000 }\n')
  server = helpers.Server(base, ['--enable_batching',
                         '--batching_parameters_file', str(params)])
  try:
    rows = eval_rows[:16]
    expected = helpers.in_process(trained_model.serving_model_dir, rows)
    channel = grpc.insecure_channel(server.grpc_address)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

    def rest(i):
      return server.request('/v1/models/taxi:predict', {
          'signature_name': features.RAW_SIGNATURE,
          'instances': helpers.raw_rows(rows[i:i + 1])})

    def grpc_call(i):
      response = stub.Predict(helpers.raw_request(rows[i:i + 2]), timeout=30)
      return tf.make_ndarray(response.outputs['outputs'])
    answers = _concurrently([lambda i=i: rest(i) for i in range(8)] +
                            [lambda i=i: grpc_call(i) for i in range(8, 14)])
    channel.close()
  finally:
    log = server.stop()
  assert 'batching concurrent requests' in log
  for i, (code, body) in enumerate(answers[:8]):
    assert code == 200, body
    np.testing.assert_allclose(body['predictions'], expected[i:i + 1], rtol=1e-5)
  for i, got in zip(range(8, 14), answers[8:]):
    assert not isinstance(got, Exception), got
    np.testing.assert_allclose(got, expected[i:i + 2], rtol=1e-5)


def test_server_refuses_a_bad_batching_parameters_file(tmp_path):
  params = tmp_path / 'batching.config'
  params.write_text('max_batch_size { value: -1 }\n')
  result = subprocess.run(
      [sys.executable, '-m', 'serving', '--model_name', 'taxi',
       '--model_base_path', str(tmp_path), '--enable_batching',
       '--batching_parameters_file', str(params)],
      cwd=helpers.REPO, capture_output=True, text=True, timeout=120)
  assert result.returncode == 2
  assert 'max_batch_size must be positive' in result.stderr


def test_a_stopped_batcher_refuses_instead_of_hanging(loaded, eval_rows):
  batcher = batching.Batcher(batching.BatchingParameters())
  batcher.stop()
  raw = helpers.raw_rows(eval_rows[:1])
  with pytest.raises(Unavailable, match='shutting down'):
    inference.run(loaded, features.RAW_SIGNATURE,
                  {k: [r[k] for r in raw] for k in helpers.RAW_TYPES},
                  batcher)
