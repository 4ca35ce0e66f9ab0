"""Model server latency and throughput vs. the in-process SavedModel call.

    .venv/bin/python bench/serving_latency.py [--problem taxi]
        [--model_base_path outputs/serving/taxi]

Starts `python -m serving` on free loopback ports, then for REST and gRPC
measures single-instance latency (p50/p99) at concurrency 1 and 8 and the
throughput of 100-instance batches of the problem's sample instance
(models/<problem>/problem.py), next to the same calls made in-process on
the loaded SavedModel (the floor). Request counts are fixed and bounded;
all traffic stays on 127.0.0.1. Prints a Markdown table; never fails on time.

Every path is measured --rounds times (default 3), the paths interleaved,
and each cell is the median of its rounds: a load that comes and goes
weighs on all paths alike. Client, server and model share the machine's
cores, so each cell also says what a request cost in CPU time: the bench
process's (the client's; for in-process, the whole call) from
time.process_time, and the server's from psutil (user + system time,
in 10 ms ticks: each cell runs 100 requests or more). The sum bounds the
throughput: N cores cannot answer more than N / (client + server CPU)
requests a second. The last lines compare each path with the targets'
terms: p50 overhead at c=1, and c=8 and batch throughput as a ratio.
"""

import concurrent.futures
import functools
import http.client
import json
import os
import statistics
import sys
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from project import cli  # pylint: disable=wrong-import-position
from project import display  # pylint: disable=wrong-import-position
from project import paths  # pylint: disable=wrong-import-position
from project import processes  # pylint: disable=wrong-import-position
from models import features  # pylint: disable=wrong-import-position
from models import problem as problems  # pylint: disable=wrong-import-position
from serving import client  # pylint: disable=wrong-import-position
from serving import server_process  # pylint: disable=wrong-import-position

REQUESTS = 400
BATCH = 100
BATCH_REQUESTS = 100


def percentiles(samples):
  ms = np.array(samples) * 1000
  return np.percentile(ms, 50), np.percentile(ms, 99)


def run_load(call, concurrency, requests):
  """Latencies of `requests` calls spread over `concurrency` threads, and the
  wall time they took."""
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
  problems.add_flag(parser, 'whose model and sample instance')
  parser.add_argument('--model_name', default=None,
                      help="served model (default: the problem's name)")
  parser.add_argument('--model_base_path', default=None,
                      help='directory holding <version>/ SavedModels '
                      '(default: <serving dir>/<model name>, e.g. '
                      'outputs/serving/taxi)')
  parser.add_argument('--rounds', type=int, default=3,
                      help='measure every path this many times, interleaved; '
                      'each cell is the median of its rounds')
  args = parser.parse_args()
  problem = problems.load(args.problem)
  model_name = args.model_name or problem.name
  base_path = args.model_base_path or os.path.join(paths.SERVING_DIR,
                                                   model_name)
  display.quiet_imports()
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  versions = sorted(int(v) for v in os.listdir(base_path) if v.isdigit())
  model = tf.saved_model.load(os.path.join(base_path, str(versions[-1])))
  fn = model.signatures[features.RAW_SIGNATURE]
  one = client.raw_instance(problem, problem.sample)
  dtypes = {'float': tf.float32, 'int': tf.int64, 'string': tf.string}

  def tensors(n):
    return {k: tf.constant([one[k]] * n, dtype=dtypes[kind])
            for k, kind in problem.raw_types.items()}

  one_row = json.dumps({'signature_name': features.RAW_SIGNATURE,
                        'instances': [one]})
  batch_rows = json.dumps({'signature_name': features.RAW_SIGNATURE,
                           'instances': [one] * BATCH})
  single, batch = tensors(1), tensors(BATCH)
  routes = [('in-process', lambda: fn(**single), lambda: fn(**batch), None)]
  servers, closers = [], []
  try:
    for mode, extra in (('', []), (' +batching', ['--enable_batching'])):
      server = server_process.start(
          ['--model_name', model_name, '--model_base_path', base_path,
           *extra])
      servers.append(server)
      rest = RestCaller(server.rest_port, model_name)
      grpc_call = GrpcCaller(server.grpc_address, model_name, problem)
      closers.append(grpc_call.close)
      routes.append(('REST' + mode, functools.partial(rest, one_row),
                     functools.partial(rest, batch_rows), server.proc.pid))
      routes.append(('gRPC' + mode, functools.partial(grpc_call, 1),
                     functools.partial(grpc_call, BATCH), server.proc.pid))
    print(f'load average {" ".join(f"{x:.2f}" for x in os.getloadavg())} '
          f'({os.cpu_count()} CPUs); {args.rounds} rounds, each cell the '
          'median\n')
    # Rounds interleave the paths, so a change of load during the run
    # (another process taking a core) weighs on every path alike.
    rounds = {name: [] for name, *_ in routes}
    for _ in range(args.rounds):
      for name, single_call, batch_call, pid in routes:
        rounds[name].append(measure(single_call, batch_call, pid))
  finally:
    for close in closers:
      close()
    for server in servers:
      server.stop()
  cells = {name: {k: statistics.median(r[k] for r in results)
                  for k in results[0]} for name, results in rounds.items()}
  print('| path | c=1 p50 / p99 (ms) | c=8 p50 / p99 (ms) | c=8 req/s '
        f'| {BATCH}-row batches, rows/s | CPU ms a request, client + server: '
        f'c=1 · c=8 · {BATCH} rows |')
  print('|---|---|---|---|---|---|')
  for name, c in cells.items():
    print(f'| {name} | {c["p50_1"]:.2f} / {c["p99_1"]:.2f} '
          f'| {c["p50_8"]:.2f} / {c["p99_8"]:.2f} | {c["rps_8"]:.0f} '
          f'| {c["rows_s"]:.0f} | {_cpu(c, "1")} · {_cpu(c, "8")} · '
          f'{_cpu(c, "b")} |')
  print(f'\nload average {" ".join(f"{x:.2f}" for x in os.getloadavg())} at '
        'the end\n')
  floor = cells['in-process']
  for name, c in cells.items():
    if name == 'in-process':
      continue
    bound = os.cpu_count() * 1000 / (c['client_8'] + c['server_8'])
    print(f'{name}: c=1 p50 +{c["p50_1"] - floor["p50_1"]:.2f} ms over '
          f'in-process; c=8 {c["rps_8"] / floor["rps_8"]:.2f}x its req/s '
          f'(CPU bound {bound:.0f} req/s = {os.cpu_count()} cores / '
          f'{c["client_8"] + c["server_8"]:.2f} ms); {BATCH}-row batches '
          f'{c["rows_s"] / floor["rows_s"]:.2f}x its rows/s')


def process_cpu(pid):
  """CPU seconds (user + system) process `pid` has used (psutil)."""
  return processes.cpu_seconds(pid)


def measured(load, pid, requests):
  """load() -> (its result, client CPU ms a request, server's or None)."""
  client_start = time.process_time()
  server_start = process_cpu(pid) if pid else 0
  result = load()
  client = (time.process_time() - client_start) * 1000 / requests
  server = ((process_cpu(pid) - server_start) * 1000 / requests if pid
            else None)
  return result, client, server


def measure(single_call, batch_call, pid):
  """One round of a path's cells: {cell name: value}."""
  for _ in range(20):  # warm up
    single_call()
    batch_call()
  (lat1, _), client1, server1 = measured(
      lambda: run_load(single_call, 1, REQUESTS), pid, REQUESTS)
  (lat8, wall8), client8, server8 = measured(
      lambda: run_load(single_call, 8, REQUESTS), pid, REQUESTS)
  (_, wall_batch), client_b, server_b = measured(
      lambda: run_load(batch_call, 2, BATCH_REQUESTS), pid, BATCH_REQUESTS)
  p50_1, p99_1 = percentiles(lat1)
  p50_8, p99_8 = percentiles(lat8)
  return {'p50_1': p50_1, 'p99_1': p99_1, 'p50_8': p50_8, 'p99_8': p99_8,
          'rps_8': REQUESTS / wall8,
          'rows_s': BATCH * BATCH_REQUESTS / wall_batch,
          'client_1': client1, 'server_1': server1 or 0.0,
          'client_8': client8, 'server_8': server8 or 0.0,
          'client_b': client_b, 'server_b': server_b or 0.0,
          'has_server': 1.0 if pid else 0.0}


def _cpu(cell, which):
  text = f'{cell["client_" + which]:.2f}'
  if cell['has_server']:
    text += f' + {cell["server_" + which]:.2f}'
  return text


class RestCaller:
  """POSTs a prepared JSON body on a kept-alive connection per thread."""

  def __init__(self, port, model_name):
    self.port, self.local = port, threading.local()
    self.path = f'/v1/models/{model_name}:predict'

  def __call__(self, body):
    if not hasattr(self.local, 'conn'):
      self.local.conn = http.client.HTTPConnection('127.0.0.1', self.port)
    self.local.conn.request('POST', self.path, body=body)
    response = self.local.conn.getresponse()
    data = response.read()
    assert response.status == 200, data


class GrpcCaller:
  """Sends a prepared, serialized PredictRequest of 1 or BATCH copies of the
  problem's sample instance.

  As RestCaller posts a prepared body and reads the answer's bytes, this
  sends the request's bytes (serving.client builds it, once) and reads the
  response's: a unary call without serializers, so each side of the table
  pays for its transport and the server's work, not for the client's
  (de)serialization. The first call's answer is checked as a response.
  """

  def __init__(self, address, model_name, problem):
    import grpc  # pylint: disable=g-import-not-at-top
    from serving import protos  # pylint: disable=g-import-not-at-top
    self.channel = grpc.insecure_channel(address)
    self.predict = self.channel.unary_unary(
        '/tensorflow.serving.PredictionService/Predict')
    builder = client.GrpcClient(address, model_name, problem)
    self.requests = {n: builder.request([problem.sample] * n)
                     .SerializeToString() for n in (1, BATCH)}
    builder.close()
    response = protos.load('tensorflow_serving.apis.predict_pb2')\
        .PredictResponse.FromString(self.predict(self.requests[BATCH]))
    assert response.outputs['outputs'].tensor_shape.dim[0].size == BATCH

  def __call__(self, rows):
    self.predict(self.requests[rows], timeout=30)

  def close(self):
    self.channel.close()


if __name__ == '__main__':
  main()
