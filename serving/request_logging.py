"""Sampled request logging, as TF Serving's `logging_config` asks for it.

A model's config in the `--model_config_file` may carry TF Serving's own

    logging_config {
      log_collector_config { type: "tfrecord" filename_prefix: "logs/taxi" }
      sampling_config { sampling_rate: 0.1 }
    }

and this server then writes a `tensorflow.serving.PredictionLog` for that
fraction of the model's successful Predict calls (REST `:predict` and gRPC
`Predict` alike): `predict_log { request response }` plus `log_metadata`
(model name, the version that answered, signature, the sampling config,
saved_model_tags, timestamp). A REST request is logged as the
`PredictRequest` a gRPC client would have sent for it (one TensorProto per
input, in the signature's dtypes), so a reader sees one format.

File format (the `tfrecord` collector type, the only one this server has):
uncompressed TFRecord files of serialized PredictionLog protos, named
`<filename_prefix>-<UTC start time>-<pid>-<seq>.tfrecord`. A file is
rotated once it holds `MAX_FILE_BYTES` or is `MAX_FILE_SECONDS` old, and is
flushed whenever the queue runs empty, so the newest file can be read while
the server writes it (a reader must tolerate a half-written last record:
`monitoring.prediction_logs` does). Uncompressed on purpose: a killed server
leaves every flushed record readable, which GZIP would not.

Logging never slows or fails a request: the request thread only draws the
sample and appends references to a bounded queue (no proto is built there);
one writer thread builds, serializes and writes. A full queue drops the
record and counts it; a write error (say, an unwritable prefix) is logged
and counted, never raised. `stop()` drains the queue and closes the files
(the server calls it on shutdown, SIGTERM included).

The open-source `tensorflow_model_server` registers no log collector, so
the official image refuses a config with a `logging_config` ("No
request-logger-creator provided"): keep it out of the config the official
image reads (serving/deploy/models.config); serving/deploy/
models-logging.config is this server's example.
"""

import dataclasses
import datetime
import logging
import os
import queue
import random
import threading
import time
from typing import Any, Dict, Mapping, Optional

from serving import model_config

log = logging.getLogger('serving')

MAX_QUEUE = 10000  # records waiting for the writer; beyond: dropped
MAX_FILE_BYTES = 64 << 20
MAX_FILE_SECONDS = 3600.0
SUFFIX = '.tfrecord'
_STOP = object()


@dataclasses.dataclass
class _Record:
  """What the request thread hands over; protos are built by the writer."""
  settings: model_config.LoggingConfig
  model_name: str
  version: int
  signature: str
  request: Any = None  # a PredictRequest (gRPC) ...
  inputs: Optional[Mapping[str, Any]] = None  # ... or REST columns
  input_dtypes: Optional[Mapping[str, Any]] = None  # tf.DType per input
  response: Any = None  # a PredictResponse (gRPC) ...
  outputs: Optional[Mapping[str, Any]] = None  # ... or numpy outputs
  timestamp: float = 0.0


class _File:
  """One open log file of one filename_prefix; rotated by size and age."""

  def __init__(self, prefix: str, seq: int):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    directory = os.path.dirname(os.path.abspath(prefix))
    os.makedirs(directory, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime(
        '%Y%m%dT%H%M%S')
    self.path = f'{prefix}-{stamp}-{os.getpid()}-{seq:05d}{SUFFIX}'
    self.writer = tf.io.TFRecordWriter(self.path)
    self.opened = time.monotonic()
    self.bytes = 0

  def full(self) -> bool:
    return (self.bytes >= MAX_FILE_BYTES or
            time.monotonic() - self.opened >= MAX_FILE_SECONDS)

  def write(self, data: bytes) -> None:
    self.writer.write(data)
    self.bytes += len(data) + 16  # TFRecord framing

  def close(self) -> None:
    self.writer.close()


class RequestLogger:
  """Samples predictions of the models whose config has a logging_config.

  Reads the registry's current configs on every call, so a config file
  reloaded with --model_config_file_poll_wait_seconds changes the sampling
  rate and prefix of the next request.
  """

  def __init__(self, registry, max_queue: int = MAX_QUEUE):
    self._registry = registry
    self._queue: 'queue.Queue' = queue.Queue(maxsize=max_queue)
    self._files: Dict[str, _File] = {}
    self._seq = 0
    self._failing: Dict[str, str] = {}  # prefix -> last error (logged once)
    self.logged = 0  # records written
    self.dropped = 0  # queue full
    self.errors = 0  # records lost to build/write errors
    self._stopped = False
    self._thread = threading.Thread(target=self._loop, name='request-logger',
                                    daemon=True)
    self._thread.start()

  # --- request threads: cheap, never raise ---------------------------------
  def _sampled(self, name: str) -> Optional[model_config.LoggingConfig]:
    config = model_config.find(self._registry.configs, name)
    settings = config.logging if config else None
    if settings is None or self._stopped:
      return None
    rate = settings.sampling_rate
    return settings if rate >= 1.0 or (rate > 0 and random.random() < rate) \
        else None

  def _put(self, record: _Record) -> None:
    try:
      self._queue.put_nowait(record)
    except queue.Full:
      self.dropped += 1
      if self.dropped == 1 or self.dropped % 1000 == 0:
        log.warning('request log queue full: %d record(s) dropped so far',
                    self.dropped)

  def log_rest(self, name: str, version: int, signature: str,
               inputs: Mapping[str, Any], input_dtypes: Mapping[str, Any],
               outputs: Mapping[str, Any]) -> None:
    """A REST predict: its columns (as parsed) and the numpy outputs."""
    try:
      settings = self._sampled(name)
      if settings:
        self._put(_Record(settings, name, version, signature, inputs=inputs,
                          input_dtypes=input_dtypes, outputs=outputs,
                          timestamp=time.time()))
    except Exception:  # pylint: disable=broad-except
      self.errors += 1  # a logging bug must never fail the request

  def log_grpc(self, name: str, version: int, signature: str, request,
               response) -> None:
    """A gRPC Predict: the PredictRequest and PredictResponse as they are."""
    try:
      settings = self._sampled(name)
      if settings:
        self._put(_Record(settings, name, version, signature, request=request,
                          response=response, timestamp=time.time()))
    except Exception:  # pylint: disable=broad-except
      self.errors += 1

  # --- writer thread --------------------------------------------------------
  @staticmethod
  def prediction_log(record: _Record):
    """The PredictionLog proto of one record."""
    from tensorflow_serving.apis import prediction_log_pb2  # pylint: disable=g-import-not-at-top
    from serving import tensors  # pylint: disable=g-import-not-at-top
    entry = prediction_log_pb2.PredictionLog()
    meta = entry.log_metadata
    meta.model_spec.name = record.model_name
    meta.model_spec.version.value = record.version
    meta.model_spec.signature_name = record.signature
    meta.sampling_config.sampling_rate = record.settings.sampling_rate
    meta.saved_model_tags.append('serve')
    meta.timestamp_secs = int(record.timestamp)
    predict = entry.predict_log
    if record.request is not None:
      predict.request.CopyFrom(record.request)
    else:
      predict.request.model_spec.CopyFrom(meta.model_spec)
      for key, values in record.inputs.items():
        dtype = record.input_dtypes[key]
        predict.request.inputs[key].CopyFrom(
            tensors.to_proto(values, dtype=dtype.as_datatype_enum))
    if record.response is not None:
      predict.response.CopyFrom(record.response)
    else:
      predict.response.model_spec.CopyFrom(meta.model_spec)
      for key, value in record.outputs.items():
        predict.response.outputs[key].CopyFrom(tensors.to_proto(value))
    return entry

  def _file(self, prefix: str) -> _File:
    current = self._files.get(prefix)
    if current is not None and current.full():
      current.close()
      current = None
    if current is None:
      current = _File(prefix, self._seq)
      self._seq += 1
      self._files[prefix] = current
      log.info('request log: writing %s', current.path)
    return current

  def _write(self, record: _Record) -> None:
    prefix = record.settings.filename_prefix
    try:
      data = self.prediction_log(record).SerializeToString()
      self._file(prefix).write(data)
      self.logged += 1
      self._failing.pop(prefix, None)
    except Exception as e:  # pylint: disable=broad-except
      self.errors += 1
      message = f'{type(e).__name__}: {str(e).splitlines()[0][:300]}'
      if self._failing.get(prefix) != message:  # once per distinct error
        self._failing[prefix] = message
        log.error('request log %s: record not written (%s); requests are '
                  'unaffected', prefix, message)
      broken = self._files.pop(prefix, None)
      if broken is not None:
        try:
          broken.close()
        except Exception:  # pylint: disable=broad-except
          pass

  def _flush(self) -> None:
    for prefix, f in list(self._files.items()):
      try:
        f.writer.flush()
      except Exception:  # pylint: disable=broad-except
        self._files.pop(prefix, None)

  def _loop(self) -> None:
    while True:
      record = self._queue.get()
      if record is _STOP:
        break
      self._write(record)
      if self._queue.empty():
        self._flush()  # readers see every record once the server is idle
    for f in self._files.values():
      try:
        f.close()
      except Exception:  # pylint: disable=broad-except
        log.exception('request log %s not closed cleanly', f.path)
    self._files.clear()

  def stop(self, timeout: float = 30.0) -> None:
    """Writes what is queued, closes the files; later records are ignored."""
    self._stopped = True
    try:
      self._queue.put(_STOP, timeout=timeout)  # the writer is draining it
    except queue.Full:
      log.error('request log: writer stuck, %d record(s) not written',
                self._queue.qsize())
      return
    self._thread.join(timeout)
    log.info('request log: %d written, %d dropped (queue full), %d failed',
             self.logged, self.dropped, self.errors)


def make_logger(registry) -> Optional[RequestLogger]:
  """A RequestLogger if any configured model asks for logging, else None.

  A model that gains a logging_config only through a later config reload is
  not logged until the server restarts (no writer thread is started for a
  server that logs nothing).
  """
  if any(c.logging for c in registry.configs):
    return RequestLogger(registry)
  return None
