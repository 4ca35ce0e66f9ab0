"""A new version pushed while clients are sending requests: none may fail."""

import os
import threading
import time

import pytest

from tests import helpers
import tensorflow as tf


pytestmark = pytest.mark.integration

CLIENTS = 4
MAX_SECONDS = 240  # a bound for a loaded machine; the test ends as soon as all clients see v2


def test_hot_swap_under_load(tmp_path, trained_model, eval_rows):
  import grpc  # pylint: disable=g-import-not-at-top
  from tensorflow_serving.apis import prediction_service_pb2_grpc  # pylint: disable=g-import-not-at-top
  base = str(tmp_path / 'taxi')
  os.makedirs(base)
  helpers.copy_version(trained_model.serving_model_dir, base, 1)
  server = helpers.Server(base)
  try:
    request = helpers.raw_request(eval_rows[:4])
    stop = threading.Event()
    results = [[] for _ in range(CLIENTS)]  # (version, ok) per request
    errors = []

    def client(i):
      channel = grpc.insecure_channel(server.grpc_address)
      stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
      deadline = time.time() + MAX_SECONDS
      while not stop.is_set() and time.time() < deadline:
        try:
          response = stub.Predict(request, timeout=30)
          assert tf.make_ndarray(response.outputs['outputs']).shape == (4, 1)
          results[i].append(response.model_spec.version.value)
        except Exception as e:  # pylint: disable=broad-except
          errors.append(repr(e))
      channel.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
      t.start()
    time.sleep(2)
    helpers.copy_version(trained_model.serving_model_dir, base, 2)
    deadline = time.time() + MAX_SECONDS - 5
    # Every client (all() of nothing would be True) must see v2 20 times.
    while time.time() < deadline and not all(
        len(r) >= 20 and r[-20:].count(2) == 20 for r in results):
      time.sleep(0.2)
    time.sleep(1)
    stop.set()
    for t in threads:
      t.join()
  finally:
    server.stop()

  assert not errors, errors[:5]
  for answers in results:
    assert answers and answers[0] == 1, answers[:5]
    assert answers[-1] == 2
    # Once a client sees version 2 it never goes back to 1.
    first_new = answers.index(2)
    assert set(answers[first_new:]) == {2}
  assert sum(len(r) for r in results) > 40
