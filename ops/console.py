"""Readable console output for long pipeline runs.

TensorFlow, Beam and TFX together print thousands of log lines per run. The
console gets one line per component (what ran, whether it was cached, how
long it took) and errors; everything else goes to a log file whose path the
summary prints.
"""

import logging
import os
import sys
import time
from typing import Dict, Optional, TextIO

from ops import tfx_private
from project import display

def display_path(path: str) -> str:
  """Path relative to the working directory when it lies below it."""
  relative = os.path.relpath(path)
  return path if relative.startswith('..') else relative


# What a runner prints before importing TF and TFX: 8-9 s here with the
# venv's compiled bytecode (35-50 s without it, see the Makefile).
LOADING = 'Loading TensorFlow and TFX (~10 s) ...'


# The console's rules, owned by project/display.py (every layer may import
# it): what is silenced before TensorFlow loads, how a number is printed.
quiet_imports = display.quiet_imports
figure = display.figure


class ComponentProgress(logging.Handler):
  """Turns TFX's launcher log records into one console line per component."""

  def __init__(self, out: TextIO = sys.stdout):
    super().__init__(level=logging.INFO)
    self._out = out
    self._started: Dict[str, float] = {}
    self._cached: Dict[str, bool] = {}
    self._current: Optional[str] = None
    self.states: Dict[str, str] = {}  # node id -> ran / cached / failed
    # node id -> why TFX could not resolve its inputs. TFX logs it, records
    # the execution FAILED and carries on: the nodes after it are skipped,
    # and a run would otherwise look complete.
    self.input_errors: Dict[str, str] = {}

  def emit(self, record: logging.LogRecord) -> None:
    msg, args = record.msg, record.args or ()
    # LocalDagRunner says 'Component %s ...', BeamDagRunner 'node %s ...'.
    if msg in tfx_private.RUNNING_MESSAGES:
      self._current = str(args[0])
      self._started[self._current] = time.time()
      self._out.write(f'  {self._current:<30} ')
      self._out.flush()
    elif msg == tfx_private.CACHED_MESSAGE and self._current:
      self._cached[self._current] = True
    elif msg == tfx_private.INPUT_ERROR_MESSAGE and len(args) == 2:
      self.input_errors.setdefault(str(args[0]), str(args[1]))
    elif msg in tfx_private.FINISHED_MESSAGES:
      node = str(args[0])
      state = ('FAILED' if node in self.input_errors else
               'cached' if self._cached.get(node) else 'ran')
      self._finish(node, state)

  def _finish(self, node: str, state: str) -> None:
    elapsed = time.time() - self._started.get(node, time.time())
    self.states[node] = state
    self._out.write(f'{state:<7} {elapsed:6.1f} s\n')
    self._out.flush()
    self._current = None

  def fail_current(self) -> Optional[str]:
    """Marks the component that was running as failed; returns its id."""
    node = self._current
    if node:
      self._finish(node, 'FAILED')
    return node


def quiet_logging(log_path: str) -> ComponentProgress:
  """Full INFO log to `log_path`; console: component progress only.

  Errors are not echoed as they happen: a failed run's summary names the
  component and the error, and the log file has the traceback.
  """
  os.makedirs(os.path.dirname(log_path), exist_ok=True)
  quiet_imports()
  # Every other warning goes to the log, not the console.
  logging.captureWarnings(True)
  import absl.logging  # pylint: disable=g-import-not-at-top
  root = logging.getLogger()
  for handler in list(root.handlers):
    root.removeHandler(handler)
  # TensorFlow adds its own stderr handler when imported before this call.
  tf_logger = logging.getLogger('tensorflow')
  for handler in list(tf_logger.handlers):
    tf_logger.removeHandler(handler)
  tf_logger.propagate = True
  root.setLevel(logging.INFO)
  absl.logging.set_verbosity(absl.logging.INFO)
  file_handler = logging.FileHandler(log_path)
  file_handler.setFormatter(
      logging.Formatter('%(asctime)s %(levelname)s %(name)s: %(message)s'))
  root.addHandler(file_handler)
  progress = ComponentProgress()
  root.addHandler(progress)
  return progress
