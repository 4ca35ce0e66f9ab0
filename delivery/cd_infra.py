"""How delivery.cd tells a failing server from a failing model.

A connection failure (refused, reset, timed out, the process gone) says
nothing about the model under test: delivery.cd raises InfraError and
aborts with nothing judged. An answer from a live server, even HTTP 500 or
a gRPC error code other than UNAVAILABLE / DEADLINE_EXCEEDED, is the
model's own. delivery/load_test.py's clients use the same rule.
"""

import http.client
import urllib.error
import urllib.request
from typing import Callable, Dict, List, Optional, Tuple

STATUS_TIMEOUT_S = 5.0  # the status endpoint is cheap: slower is not there


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
