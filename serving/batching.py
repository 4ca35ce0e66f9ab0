"""Server-side batching: concurrent requests share one model execution.

Mirrors TF Serving's `--enable_batching` / `--batching_parameters_file`
(the same text-format BatchingParameters file the real server reads):

    max_batch_size { value: 128 }        # rows per model execution
    batch_timeout_micros { value: 0 }    # wait this long for a batch to fill
    num_batch_threads { value: 2 }       # model executions in parallel
    max_enqueued_batches { value: 100 }  # queue bound; beyond it: UNAVAILABLE

Calling a SavedModel signature from Python costs ~0.5 ms however few rows
it gets, so eight concurrent one-row requests answered by one eight-row call
cost about one eighth as much each. With `batch_timeout_micros` 0 (the
default here), a batch holds whatever queued while the previous one ran:
an idle server adds no waiting, a busy one batches by itself.

A batch only merges requests for the same loaded version and signature.
Each request was validated on its own before it queued (inference.prepare);
if a merged execution still fails, each request of the batch runs alone,
so a bad request gets its own error and never fails its neighbours.
"""

import collections
import dataclasses
import logging
import re
import threading
import time
from typing import Deque, Dict, List, Mapping, Optional, Tuple

import numpy as np

from serving import inference
from serving.errors import Unavailable
from serving.model_registry import LoadedVersion

log = logging.getLogger('serving')


@dataclasses.dataclass(frozen=True)
class BatchingParameters:
  """The fields of TF Serving's BatchingParameters this server honours."""
  max_batch_size: int = 128
  batch_timeout_micros: int = 0
  num_batch_threads: int = 2
  max_enqueued_batches: int = 100


# Fields of TF Serving's BatchingParameters that this server accepts but
# does not act on (they tune TF Serving's padding and thread pools).
_IGNORED = {'thread_pool_name', 'allowed_batch_sizes',
            'pad_variable_length_inputs', 'enable_large_batch_splitting'}
_ENTRY = re.compile(r'(\w+)\s*(?::\s*("[^"]*"|[\w.+-]+)|\{\s*value\s*:\s*'
                    r'("[^"]*"|[\w.+-]+)\s*\})')


def parse_parameters(text: str, source: str = '<text>') -> BatchingParameters:
  """BatchingParameters from TF Serving's text format; errors name the field.

  The proto itself is not in the tensorflow-serving-api wheel, so the few
  fields are read here: `name { value: N }` (its wrapper-type form) or
  `name: N`.
  """
  body = re.sub(r'#[^\n]*', '', text)
  values: Dict[str, int] = {}
  fields = {f.name for f in dataclasses.fields(BatchingParameters)}
  position = 0
  for match in _ENTRY.finditer(body):
    gap = body[position:match.start()].strip()
    if gap:
      raise ValueError(f'{source}: cannot parse {gap[:60]!r}')
    position = match.end()
    name, value = match[1], match[2] or match[3]
    if name in _IGNORED:
      log.warning('%s: %s is not used by this server', source, name)
      continue
    if name not in fields:
      raise ValueError(f'{source}: unknown batching parameter {name!r} '
                       f'(known: {sorted(fields | _IGNORED)})')
    try:
      values[name] = int(value)
    except ValueError:
      raise ValueError(f'{source}: {name} must be an integer, got {value}') from None
    if values[name] < (0 if name == 'batch_timeout_micros' else 1):
      raise ValueError(f'{source}: {name} must be positive, got {value}')
  if body[position:].strip():
    raise ValueError(f'{source}: cannot parse {body[position:].strip()[:60]!r}')
  return BatchingParameters(**values)


def load_parameters(path: Optional[str]) -> BatchingParameters:
  if not path:
    return BatchingParameters()
  with open(path) as f:
    return parse_parameters(f.read(), path)


class _Task:
  """One request waiting for its share of a batch."""
  __slots__ = ('arrays', 'rows', 'done', 'outputs', 'error')

  def __init__(self, arrays: Mapping[str, np.ndarray], rows: int):
    self.arrays, self.rows = arrays, rows
    self.done = threading.Event()
    self.outputs: Optional[Dict[str, np.ndarray]] = None
    self.error: Optional[BaseException] = None


def _rows(arrays: Mapping[str, object]) -> Optional[int]:
  """Rows of a request: the common first dimension, None if there is none."""
  sizes = {a.shape[0] if len(a.shape) else None for a in arrays.values()}
  return sizes.pop() if len(sizes) == 1 else None


class Batcher:
  """Queues prepared requests and runs them in merged batches."""

  def __init__(self, params: BatchingParameters):
    self.params = params
    self._queues: Dict[Tuple[int, str], Deque[_Task]] = {}
    self._keys: Dict[Tuple[int, str], Tuple[LoadedVersion, str]] = {}
    self._queued_rows = 0
    self._cond = threading.Condition()
    self._stopped = False
    self.batches = 0  # executions, for tests and logs
    self._threads = [
        threading.Thread(target=self._loop, name=f'batch-{i}', daemon=True)
        for i in range(params.num_batch_threads)]
    for thread in self._threads:
      thread.start()

  def run(self, loaded: LoadedVersion, signature_name: str,
          arrays: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """The outputs for `arrays`, computed in a batch with other requests."""
    rows = _rows(arrays)
    if rows is None or rows == 0 or rows > self.params.max_batch_size:
      # Nothing to merge along: no common batch dimension, or too large.
      return inference.execute(loaded, signature_name, arrays)
    task = _Task(arrays, rows)
    key = (id(loaded), signature_name)
    with self._cond:
      if self._stopped:  # no batch thread would ever answer it
        raise Unavailable('The server is shutting down')
      limit = self.params.max_enqueued_batches * self.params.max_batch_size
      if self._queued_rows + rows > limit:
        raise Unavailable('The batch scheduling queue to which this task was '
                          'submitted is full')
      self._queues.setdefault(key, collections.deque()).append(task)
      self._keys[key] = (loaded, signature_name)
      self._queued_rows += rows
      self._cond.notify()
    task.done.wait()
    if task.error is not None:
      raise task.error
    return task.outputs

  def stop(self) -> None:
    with self._cond:
      self._stopped = True
      self._cond.notify_all()

  # --- batch threads ---------------------------------------------------------
  def _take(self) -> Optional[Tuple[Tuple[LoadedVersion, str], List[_Task]]]:
    """The next batch: the oldest waiting key's tasks, up to max_batch_size."""
    with self._cond:
      while not self._stopped and not self._queues:
        self._cond.wait()
      if self._stopped:
        return None
      key = next(iter(self._queues))  # dicts keep insertion order: oldest
      target = self._keys[key]
      deadline = time.monotonic() + self.params.batch_timeout_micros / 1e6
      batch: List[_Task] = []
      rows = 0
      while True:
        queue = self._queues.get(key)
        while queue and rows + queue[0].rows <= self.params.max_batch_size:
          task = queue.popleft()
          batch.append(task)
          rows += task.rows
        if queue is not None and not queue:
          del self._queues[key]
          del self._keys[key]  # no reference kept to an unloaded version
        remaining = deadline - time.monotonic()
        if queue or rows >= self.params.max_batch_size or remaining <= 0:
          break
        self._cond.wait(remaining)  # let the batch fill up to the timeout
      self._queued_rows -= rows
      return target, batch

  def _loop(self) -> None:
    while True:
      taken = self._take()
      if taken is None:
        return
      (loaded, signature_name), batch = taken
      self._execute(loaded, signature_name, batch)

  def _execute(self, loaded: LoadedVersion, signature_name: str,
               batch: List[_Task]) -> None:
    self.batches += 1
    if len(batch) > 1:
      merged = self._merge(batch)
      if merged is not None:
        try:
          if self._split(batch, inference.execute(loaded, signature_name,
                                                  merged)):
            return
        except Exception:  # pylint: disable=broad-except
          pass  # run each alone below: every request gets its own answer
    for task in batch:
      self._finish(task, loaded, signature_name)

  @staticmethod
  def _finish(task: _Task, loaded: LoadedVersion, signature_name: str) -> None:
    try:
      task.outputs = inference.execute(loaded, signature_name, task.arrays)
    except BaseException as e:  # pylint: disable=broad-except
      task.error = e
    task.done.set()

  @staticmethod
  def _merge(batch: List[_Task]) -> Optional[Dict[str, np.ndarray]]:
    """Inputs concatenated along the batch dimension; None if they differ."""
    first = batch[0].arrays
    shapes = {k: a.shape[1:] for k, a in first.items()}
    for task in batch[1:]:
      if {k: a.shape[1:] for k, a in task.arrays.items()} != shapes:
        return None
    return {k: np.concatenate([np.asarray(t.arrays[k]) for t in batch])
            for k in first}

  @staticmethod
  def _split(batch: List[_Task], outputs: Mapping[str, np.ndarray]) -> bool:
    """Hands each task its rows; False if an output has no batch dimension."""
    total = sum(t.rows for t in batch)
    if any(o.ndim == 0 or o.shape[0] != total for o in outputs.values()):
      return False
    offset = 0
    for task in batch:
      task.outputs = {k: o[offset:offset + task.rows] for k, o in outputs.items()}
      offset += task.rows
      task.done.set()
    return True
