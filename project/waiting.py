"""Wait until something holds, or try something again: one rule for both.

Every loop that slept against a deadline (the model server becoming
AVAILABLE, the Flink cluster answering, a CD step taking effect, a lock
coming free, processes exiting) and every loop that tried again after a
failure used to be written anew, each with its own clock (some the wall
clock, which jumps), its own last try and its own message. tenacity (the
retry library google-genai already pulls in; declared in requirements.in)
runs both kinds here, so the rule is written once:

  * `wait_until(predicate, timeout, interval, what)`: calls `predicate`
    until it returns something true (and returns it), sleeping `interval`
    between calls; the monotonic clock counts. It never gives up early: the
    last call starts at or after `timeout`, so a timeout of 0 is one call.
    Past the timeout, `WaitTimeout` (a TimeoutError) names `what` and how
    long it waited. An exception the predicate raises ends the wait with it.
  * `retry(fn, attempts, errors, backoff)`: calls `fn` up to `attempts`
    times while it raises one of `errors`, sleeping `backoff`, then twice
    that, ... between calls (capped at `max_backoff`); the last error is
    raised as it is.
  * `check_timeout`: the one timeout rule. Seconds, finite and >= 0, or
    None (wait for ever) where the caller allows it; anything else (nan,
    inf, negative) is a ValueError saying so, never a silent endless wait.

tenacity is imported on the first wait, not with this module: it imports
tornado when that is installed (~0.3 s), and every command line imports
this module (project/cli.py's timeout flag, through project/file_lock.py).
"""

import math
from typing import Any, Callable, Optional, Tuple, Type, TypeVar, Union

T = TypeVar('T')


class WaitTimeout(TimeoutError):
  """`what` did not come true within `timeout` seconds."""

  def __init__(self, what: str, timeout: float, waited: float):
    self.what, self.timeout, self.waited = what, timeout, waited
    super().__init__(f'{what}: not within {timeout:g} s (waited '
                     f'{waited:.1f} s)')


def check_timeout(timeout: Optional[float], name: str = 'timeout',
                  forever: bool = True) -> Optional[float]:
  """`timeout` as a float; ValueError unless finite and >= 0 (or None when
  `forever` allows waiting without end)."""
  if timeout is None:
    if forever:
      return None
    raise ValueError(f'{name} must be a number of seconds, not None')
  if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
    raise ValueError(f'{name} must be a number of seconds, got {timeout!r}')
  if not math.isfinite(timeout) or timeout < 0:
    raise ValueError(f'{name} must be a finite number of seconds >= 0, got '
                     f'{timeout!r}')
  return float(timeout)


def wait_until(predicate: Callable[[], T], timeout: Optional[float],
               interval: float = 0.2, what: str = 'the condition') -> T:
  """`predicate()`'s first true value; WaitTimeout after `timeout` seconds
  (None: no end). See the module docstring for the rule."""
  import tenacity  # pylint: disable=g-import-not-at-top
  timeout = check_timeout(timeout)
  interval = check_timeout(interval, 'interval', forever=False)

  def timed_out(state: 'tenacity.RetryCallState'):
    raise WaitTimeout(what, timeout, state.seconds_since_start or 0.0)

  retrying = tenacity.Retrying(
      stop=(tenacity.stop_never if timeout is None else
            tenacity.stop_after_delay(timeout)),
      wait=tenacity.wait_fixed(interval),
      retry=tenacity.retry_if_not_result(bool),
      retry_error_callback=timed_out)
  return retrying(predicate)


def retry(fn: Callable[[], T], attempts: int,
          errors: Union[Type[BaseException],
                        Tuple[Type[BaseException], ...]] = Exception,
          backoff: float = 0.0, max_backoff: Optional[float] = None,
          on_retry: Optional[Callable[[int, BaseException], Any]] = None
         ) -> T:
  """`fn()`, called again (up to `attempts` calls in all) while it raises
  one of `errors`; the last one is raised as it is. `on_retry(number of
  the failed attempt, its error)` is called before each new attempt."""
  import tenacity  # pylint: disable=g-import-not-at-top
  if isinstance(attempts, bool) or not isinstance(attempts, int) or (
      attempts < 1):
    raise ValueError(f'attempts must be an int >= 1, got {attempts!r}')
  backoff = check_timeout(backoff, 'backoff', forever=False)

  def before_sleep(state: 'tenacity.RetryCallState') -> None:
    if on_retry is not None:
      on_retry(state.attempt_number, state.outcome.exception())

  wait = (tenacity.wait_exponential(multiplier=backoff, min=backoff,
                                    max=max_backoff or math.inf)
          if backoff else tenacity.wait_none())
  retrying = tenacity.Retrying(
      stop=tenacity.stop_after_attempt(attempts), wait=wait,
      retry=tenacity.retry_if_exception_type(errors),
      before_sleep=before_sleep, reraise=True)
  return retrying(fn)
