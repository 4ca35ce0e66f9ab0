"""Model server latency and throughput vs. the in-process SavedModel call.

    .venv/bin/python bench/serving_latency.py [--model_base_path outputs/serving/taxi]

Starts `python -m serving` on free loopback ports, then for REST and gRPC
measures single-instance latency (p50/p99) at concurrency 1 and 8 and the
throughput of 100-instance batches, next to the same calls made in-process
on the loaded SavedModel (the floor). Request counts are fixed and bounded;
all traffic stays on 127.0.0.1. Prints a Markdown table; never fails on time.
"""

import concurrent.futures
import http.client
import json
import os
import sys
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from project import cli  # pylint: disable=wrong-import-position
from models import features  # pylint: disable=wrong-import-position
from serving import client  # pylint: disable=wrong-import-position
from serving import server_process  # pylint: disable=wrong-import-position

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REQUESTS = 400
BATCH = 100
BATCH_REQUESTS = 40


def percentiles(samples):
  ms = np.array(samples) * 1000
  return np.percentile(ms, 50), np.percentile(ms, 99)


def run_load(call, concurrency, requests):
  """Latencies of `requests` calls spread over `concurrency` threads."""
  def worker(n):
    out = []
    for _ in range(n):
      start = time.perf_counter()
      call()
      out.append(time.perf_counter() - start)
    return out
  per = [requests // concurrency] * concurrency
  start = time.perf_counter()
  with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
    latencies = sum(pool.map(worker, per), [])
  return latencies, time.perf_counter() - start


def main():
  parser = cli.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--model_base_path',
                      default=os.path.join(REPO, 'outputs', 'serving', 'taxi'))
  args = parser.parse_args()
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  versions = sorted(int(v) for v in os.listdir(args.model_base_path) if v.isdigit())
  model = tf.saved_model.load(os.path.join(args.model_base_path, str(versions[-1])))
  fn = model.signatures[features.RAW_SIGNATURE]
  one = client.raw_instance(client.SAMPLE_TRIP)
  dtypes = {'float': tf.float32, 'int': tf.int64, 'string': tf.string}

  def tensors(n):
    return {k: tf.constant([one[k]] * n, dtype=dtypes[kind])
            for k, kind in features.RAW_FEATURE_TYPES.items()}

  one_row = json.dumps({'signature_name': features.RAW_SIGNATURE,
                        'instances': [one]})
  batch_rows = json.dumps({'signature_name': features.RAW_SIGNATURE,
                           'instances': [one] * BATCH})
  single, batch = tensors(1), tensors(BATCH)
  print(f'load average {" ".join(f"{x:.2f}" for x in os.getloadavg())} '
        f'({os.cpu_count()} CPUs)\n')
  print('| path | c=1 p50 / p99 (ms) | c=8 p50 / p99 (ms) | c=8 req/s '
        f'| {BATCH}-row batches, rows/s |')
  print('|---|---|---|---|---|')
  report('in-process', lambda: fn(**single), lambda: fn(**batch))
  for mode, extra in (('', []), (' +batching', ['--enable_batching'])):
    server = server_process.start(
        ['--model_name', 'taxi', '--model_base_path', args.model_base_path,
         *extra])
    try:
      rest = RestCaller(server.rest_port)
      grpc_call = GrpcCaller(server.grpc_address)
      report('REST' + mode, lambda: rest(one_row), lambda: rest(batch_rows))
      report('gRPC' + mode, lambda: grpc_call(1), lambda: grpc_call(BATCH))
      grpc_call.close()
    finally:
      server.stop()


def report(name, single_call, batch_call):
  for _ in range(20):  # warm up
    single_call()
    batch_call()
  lat1, _ = run_load(single_call, 1, REQUESTS)
  lat8, wall8 = run_load(single_call, 8, REQUESTS)
  _, wall_batch = run_load(batch_call, 2, BATCH_REQUESTS)
  p50_1, p99_1 = percentiles(lat1)
  p50_8, p99_8 = percentiles(lat8)
  print(f'| {name} | {p50_1:.2f} / {p99_1:.2f} | {p50_8:.2f} / {p99_8:.2f} '
        f'| {REQUESTS / wall8:.0f} | {BATCH * BATCH_REQUESTS / wall_batch:.0f} |',
        flush=True)


class RestCaller:
  """POSTs a prepared JSON body on a kept-alive connection per thread."""

  def __init__(self, port):
    self.port, self.local = port, threading.local()

  def __call__(self, body):
    if not hasattr(self.local, 'conn'):
      self.local.conn = http.client.HTTPConnection('127.0.0.1', self.port)
    self.local.conn.request('POST', '/v1/models/taxi:predict', body=body)
    response = self.local.conn.getresponse()
    data = response.read()
    assert response.status == 200, data


class GrpcCaller:
  """Sends a prepared PredictRequest of 1 or BATCH sample trips."""

  def __init__(self, address):
    self.client = client.GrpcClient(address)
    self.requests = {n: self.client.request([client.SAMPLE_TRIP] * n)
                     for n in (1, BATCH)}

  def __call__(self, rows):
    self.client.send(self.requests[rows])

  def close(self):
    self.client.close()


if __name__ == '__main__':
  main()
