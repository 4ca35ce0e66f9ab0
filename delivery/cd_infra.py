"""How delivery.cd tells a failing server from a failing model; load clients.

A connection failure (refused, reset, timed out, the process gone) says
nothing about the model under test: delivery.cd raises InfraError and
aborts with nothing judged. An answer from a live server, even HTTP 500 or
a gRPC error code other than UNAVAILABLE / DEADLINE_EXCEEDED, is the
model's own.

The load test's clients back off on a connection failure, exponentially
from BACKOFF_START_S up to BACKOFF_CAP_S, and ask the status endpoint
whether the server is still there: if it is not, or after
MAX_CONNECTION_FAILURES in a row while it is, every client stops. A server
killed mid-test costs about one failed attempt per client, where a loop
without backoff retried ~27,000 times a second.
"""

import concurrent.futures
import dataclasses
import http.client
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Callable, Dict, List, Optional, Tuple

# A one-off reset costs a client 50 ms, a few times a request's latency;
# five in a row (~0.75 s of waiting) while the status endpoint still
# answers is no blip, and the run aborts rather than judge around it.
BACKOFF_START_S, BACKOFF_CAP_S = 0.05, 2.0
MAX_CONNECTION_FAILURES = 5  # in a row, per client, while the server answers
STATUS_TIMEOUT_S = 5.0  # the status endpoint is cheap: slower is not there
REQUEST_TIMEOUT_S = 30.0


class InfraError(Exception):
  """CD could not judge the version (config, server, data): exit 2."""

  def __init__(self, message: str, figures: Optional[Dict] = None):
    super().__init__(message)
    self.figures = figures or {}


def connection_failure(error: BaseException) -> bool:
  """Whether `error` is the way to the server failing, not an answer."""
  if isinstance(error, (OSError, http.client.HTTPException)):
    return True  # urllib's HTTPError is an answer; RestClient re-raises it
  code = getattr(error, 'code', None)  # grpc.RpcError
  return callable(code) and getattr(code(), 'name', '') in (
      'UNAVAILABLE', 'DEADLINE_EXCEEDED')


def reachable(status_url: str) -> bool:
  """Whether the server answers its status endpoint at all (any status)."""
  try:
    with urllib.request.urlopen(status_url, timeout=STATUS_TIMEOUT_S):
      return True
  except urllib.error.HTTPError:
    return True
  except (OSError, http.client.HTTPException):
    return False


def ask(what: str, predict: Callable[[List], List[float]], rows: List,
        chunk: int) -> Tuple[Optional[List[float]], Optional[str]]:
  """`predict` over `rows`, `chunk` at a time: (answers, None), or (None,
  the error a live server answered with); InfraError if it was not reached."""
  answers = []
  try:
    for i in range(0, len(rows), chunk):
      answers += predict(rows[i:i + chunk])
  except Exception as e:  # pylint: disable=broad-except
    if connection_failure(e):
      raise InfraError(f'{what}: server not reachable: {e}') from e
    return None, f'{what}: {type(e).__name__}: {str(e)[:300]}'
  return answers, None


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

  def client(index: int, share: Optional[int]):
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
          if not reachable(status_url) or in_a_row >= MAX_CONNECTION_FAILURES:
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
    results = list(pool.map(client, range(concurrency), shares))
  return LoadResult([x for lat, _ in results for x in lat],
                    [x for _, err in results for x in err], lost, len(checks),
                    gone.is_set(), time.monotonic() - start)
