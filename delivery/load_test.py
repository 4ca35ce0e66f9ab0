"""The CD gate's load test: one-trip REST requests to labels/canary.

`run_load` POSTs prepared bodies from concurrent clients, each on a
kept-alive connection; `check_load` judges the answers: no error answers,
p50 / p99 within the performance targets (README: c=8 p99 is ~21 ms on an
idle 2-core machine).

The clients back off on a connection failure, exponentially from
BACKOFF_START_S up to BACKOFF_CAP_S, and ask the status endpoint whether
the server is still there (cd_infra.reachable): if it is not, or after
MAX_CONNECTION_FAILURES in a row while it is, every client stops and the
run aborts with nothing judged. A server killed mid-test costs about one
failed attempt per client, where a loop without backoff retried ~27,000
times a second.
"""

import argparse
import concurrent.futures
import dataclasses
import http.client
import json
import threading
import time
import urllib.parse
from typing import Dict, List, Optional

from delivery import cd_infra
from delivery import cd_run
from models import features
from serving import client

CANARY = cd_run.CANARY
InfraError = cd_run.InfraError

# A one-off reset costs a client 50 ms, a few times a request's latency;
# five in a row (~0.75 s of waiting) while the status endpoint still
# answers is no blip, and the run aborts rather than judge around it.
BACKOFF_START_S, BACKOFF_CAP_S = 0.05, 2.0
MAX_CONNECTION_FAILURES = 5  # in a row, per client, while the server answers
REQUEST_TIMEOUT_S = 30.0
DEFAULT_CONCURRENCY = 4
MIN_LOAD_REQUESTS = 100  # fewer answers cannot give a p99
DEFAULT_LOAD_SECONDS = 5.0
DEFAULT_P50_TARGET_MS = 25.0
DEFAULT_P99_TARGET_MS = 100.0


@dataclasses.dataclass
class LoadResult:
  latencies: List[float]  # seconds, of 200 answers
  errors: List[str]  # non-200 answers: the model's
  connection_failures: List[str]
  status_checks: int  # calls to the status endpoint after a failure
  server_gone: bool  # clients stopped: unreachable, or failing in a row
  seconds: float


def run_load(url: str, path: str, bodies: List[str], concurrency: int,
             requests: Optional[int], seconds: float, status_url: str
            ) -> LoadResult:
  """POSTs `bodies` round robin to url+path from `concurrency` clients, for
  `requests` answers in all (None: for `seconds`)."""
  where = urllib.parse.urlsplit(url)
  deadline = time.monotonic() + seconds
  shares = ([requests // concurrency + (i < requests % concurrency)
             for i in range(concurrency)] if requests
            else [None] * concurrency)
  gone = threading.Event()  # the server stopped answering: all clients stop
  lost, checks = [], []

  def one_client(index: int, share: Optional[int]):
    latencies, errors, in_a_row, backoff = [], [], 0, BACKOFF_START_S
    conn = None
    while not gone.is_set() and (
        len(latencies) + len(errors) < share if share is not None
        else time.monotonic() < deadline):
      body = bodies[(index + (len(latencies) + len(errors)) * concurrency) %
                    len(bodies)]
      start = time.perf_counter()
      try:
        conn = conn or http.client.HTTPConnection(
            where.hostname, where.port, timeout=REQUEST_TIMEOUT_S)
        conn.request('POST', path, body=body)
        response = conn.getresponse()
        data = response.read()
      except (OSError, http.client.HTTPException) as e:
        if conn:
          conn.close()
        conn, in_a_row = None, in_a_row + 1
        lost.append(f'{type(e).__name__}: {e}')
        if not gone.is_set():
          checks.append(1)
          if (not cd_infra.reachable(status_url) or
              in_a_row >= MAX_CONNECTION_FAILURES):
            gone.set()
        gone.wait(backoff)
        backoff = min(2 * backoff, BACKOFF_CAP_S)
        continue
      in_a_row, backoff = 0, BACKOFF_START_S
      if response.status == 200:
        latencies.append(time.perf_counter() - start)
      else:
        errors.append(f'HTTP {response.status}: {data[:200]!r}')
    if conn:
      conn.close()
    return latencies, errors

  start = time.monotonic()
  with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
    results = list(pool.map(one_client, range(concurrency), shares))
  return LoadResult([x for lat, _ in results for x in lat],
                    [x for _, err in results for x in err], lost, len(checks),
                    gone.is_set(), time.monotonic() - start)


def check_load(run: cd_run.Delivery, trips: List[Dict],
               args: argparse.Namespace) -> cd_run.Check:
  """One-trip REST requests to labels/canary from --concurrency clients that
  back off on connection failures; the server gone, or too
  few answers to judge latency, is InfraError, not a verdict."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  bodies = [json.dumps({'signature_name': features.RAW_SIGNATURE,
                        'instances': [client.raw_instance(run.problem, t)]})
            for t in trips]
  result = run_load(
      run.rest_url, f'/v1/models/{run.model_name}/labels/{CANARY}:predict',
      bodies, args.concurrency, args.load_requests, args.load_seconds,
      run.status_url)
  latencies, errors, lost = (result.latencies, result.errors,
                             result.connection_failures)
  figures = {'requests': len(latencies) + len(errors), 'errors': len(errors),
             'connection_failures': len(lost),
             'status_checks': result.status_checks,
             'concurrency': args.concurrency,
             'seconds': round(result.seconds, 2),
             'p50_target_ms': args.p50_target_ms,
             'p99_target_ms': args.p99_target_ms}
  if result.server_gone:
    raise InfraError(f'load test: the server stopped answering after '
                     f'{figures["requests"]} answers ({len(lost)} connection '
                     f'failures, last: {lost[-1]})', figures)
  failures = []
  if errors:
    failures.append(f'{len(errors)} of {figures["requests"]} requests failed '
                    f'(first: {errors[0]})')
  summary = (f'{figures["requests"]} requests at concurrency '
             f'{args.concurrency} in {result.seconds:.1f} s, {len(errors)} '
             f'errors, {len(lost)} connection failures')
  if latencies:
    p50, p99 = (float(x) for x in np.percentile(np.array(latencies) * 1000,
                                                [50, 99]))
    figures.update(p50_ms=round(p50, 2), p99_ms=round(p99, 2),
                   requests_per_s=round(len(latencies) / result.seconds, 1))
    summary += (f'; p50 {p50:.2f} ms (target {args.p50_target_ms}), '
                f'p99 {p99:.2f} ms (target {args.p99_target_ms})')
    if p50 > args.p50_target_ms:
      failures.append(f'p50 {p50:.2f} ms > target {args.p50_target_ms} ms')
    if p99 > args.p99_target_ms and len(latencies) >= MIN_LOAD_REQUESTS:
      failures.append(f'p99 {p99:.2f} ms > target {args.p99_target_ms} ms')
  if not failures and len(latencies) < MIN_LOAD_REQUESTS:
    raise InfraError(f'load test: {summary}: too few answers to judge p99 '
                     f'(>= {MIN_LOAD_REQUESTS})', figures)
  return cd_run.Check(
      'load', not failures,
      summary + ('; ' + '; '.join(failures) if failures else ''), failures,
      figures)
