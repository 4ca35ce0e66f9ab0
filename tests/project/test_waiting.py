"""project/waiting.py: the one wait-until and retry rule (tenacity)."""

import math
import time

import pytest

from project import waiting


def test_wait_until_returns_the_first_true_value():
  answers = iter([None, 0, '', 'ready'])
  assert waiting.wait_until(lambda: next(answers), 5, interval=0) == 'ready'


def test_wait_until_times_out_naming_what_and_how_long():
  calls = []
  start = time.monotonic()
  with pytest.raises(waiting.WaitTimeout) as e:
    waiting.wait_until(lambda: calls.append(1), 0.2, interval=0.05,
                       what='the model AVAILABLE')
  waited = time.monotonic() - start
  assert isinstance(e.value, TimeoutError)
  assert 'the model AVAILABLE' in str(e.value) and '0.2 s' in str(e.value)
  assert 0.2 <= waited < 2 and len(calls) >= 3
  # timeout 0: exactly one call, no sleep
  calls.clear()
  with pytest.raises(waiting.WaitTimeout):
    waiting.wait_until(lambda: calls.append(1), 0, interval=10)
  assert len(calls) == 1


def test_an_error_of_the_predicate_ends_the_wait_with_it():
  def exploded():
    raise RuntimeError('server exited')
  with pytest.raises(RuntimeError, match='server exited'):
    waiting.wait_until(exploded, 5, interval=0)


@pytest.mark.parametrize('bad', [math.nan, -1, math.inf, '3'])
def test_the_timeout_rule_refuses_what_would_never_end(bad):
  with pytest.raises(ValueError, match='timeout'):
    waiting.wait_until(lambda: True, bad)
  with pytest.raises(ValueError):
    waiting.check_timeout(bad)
  assert waiting.check_timeout(None) is None
  with pytest.raises(ValueError):
    waiting.check_timeout(None, forever=False)
  assert waiting.check_timeout(2) == 2.0


def test_retry_tries_again_on_the_named_errors_only():
  calls, retried = [], []

  def flaky():
    calls.append(time.monotonic())
    if len(calls) < 3:
      raise ConnectionError(f'try {len(calls)}')
    return 'answer'

  assert waiting.retry(flaky, 5, ConnectionError, backoff=0.02,
                       on_retry=lambda n, e: retried.append((n, str(e)))
                       ) == 'answer'
  assert retried == [(1, 'try 1'), (2, 'try 2')]
  # exponential backoff: 0.02 s, then 0.04 s
  assert calls[1] - calls[0] >= 0.02 and calls[2] - calls[1] >= 0.04

  def broken():
    calls.append(1)
    raise KeyError('not retried')
  calls.clear()
  with pytest.raises(KeyError):
    waiting.retry(broken, 5, ConnectionError)
  assert len(calls) == 1


def test_retry_raises_the_last_error_after_its_attempts():
  calls = []

  def down():
    calls.append(1)
    raise OSError(f'refused {len(calls)}')
  with pytest.raises(OSError, match='refused 3'):
    waiting.retry(down, 3, OSError)
  assert len(calls) == 3
  with pytest.raises(ValueError):
    waiting.retry(down, 0)
