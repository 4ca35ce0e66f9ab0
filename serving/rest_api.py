"""TF Serving's REST API (v1) over a ModelRegistry.

Request and response bodies follow TF Serving 2.16: `instances` (row) or
`inputs` (columnar) in, `predictions` or `outputs` out, bytes as
{"b64": "..."}, errors as {"error": "..."} with 400/404/500 status codes.
"""

import base64
import http.server
import json
import logging
import re
import socket
from typing import Any, Dict, Optional, Tuple

from google.protobuf import json_format

from serving import batching
from serving import inference
from serving import request_logging  # pylint: disable=unused-import
from serving.errors import BadRequest
from serving.errors import FailedPrecondition
from serving.errors import NotFound
from serving.errors import ServingError
from serving.model_registry import LoadedVersion
from serving.model_registry import ModelRegistry

log = logging.getLogger('serving')

_MODEL_PATH = re.compile(
    r'^/v1/models/(?P<name>[^/:]+)'
    r'(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?'
    r'(?P<rest>/metadata|:predict|:classify|:regress)?$')


def _decode_b64(obj: Dict[str, Any]) -> Any:
  """json.loads object_hook: {"b64": "..."} becomes the bytes it encodes.

  Decoding while parsing touches only JSON objects, not every value of a
  large request as a walk over the parsed body would.
  """
  if len(obj) == 1 and 'b64' in obj:
    try:
      return base64.b64decode(obj['b64'], validate=True)
    except (ValueError, TypeError) as e:
      raise BadRequest(f'Invalid b64 value: {e}') from e
  return obj


def _to_json(value: Any) -> Any:
  if isinstance(value, bytes):
    try:
      return value.decode('utf-8')
    except UnicodeDecodeError:
      return {'b64': base64.b64encode(value).decode('ascii')}
  if isinstance(value, list):
    return [_to_json(v) for v in value]
  return value


def _columns(body: Dict[str, Any], input_names) -> Tuple[Dict[str, Any], bool]:
  """Request body -> ({input name: column}, row_format)."""
  if ('instances' in body) == ('inputs' in body):
    raise BadRequest('Request must have exactly one of "instances" or "inputs"')
  if 'instances' in body:
    rows = body['instances']
    if not isinstance(rows, list) or not rows:
      raise BadRequest('"instances" must be a non-empty list')
    if all(isinstance(r, dict) for r in rows):
      missing = [n for n in input_names if any(n not in r for r in rows)]
      if missing:
        raise BadRequest(f'Missing input(s) {missing} in some instances')
      return {n: [r[n] for r in rows] for n in input_names}, True
    if len(input_names) != 1:
      raise BadRequest(f'Signature takes named inputs {sorted(input_names)}; '
                       'send each instance as an object')
    return {next(iter(input_names)): rows}, True
  inputs = body['inputs']
  if isinstance(inputs, dict):
    missing = [n for n in input_names if n not in inputs]
    if missing:
      raise BadRequest(f'Missing input(s) {missing} in "inputs"')
    return {n: inputs[n] for n in input_names}, False
  if len(input_names) != 1:
    raise BadRequest(f'Signature takes named inputs {sorted(input_names)}')
  return {next(iter(input_names)): inputs}, False


def predict(loaded: LoadedVersion, body: Dict[str, Any],
            batcher: Optional[batching.Batcher] = None,
            request_logger: Optional['request_logging.RequestLogger'] = None,
            model_name: str = '') -> Dict[str, Any]:
  """Runs a signature on a REST predict body; returns the response body.

  With a `request_logger`, a sample of answered requests is logged as
  PredictionLogs (off this thread; see serving/request_logging.py).
  """
  if not isinstance(body, dict):
    raise BadRequest('Request body must be a JSON object')
  name = body.get('signature_name') or inference.DEFAULT_SIGNATURE
  specs = inference.signature(loaded, name).structured_input_signature[1]
  columns, row_format = _columns(body, list(specs))
  results = inference.run(loaded, name, columns, batcher)
  if request_logger is not None:
    request_logger.log_rest(model_name, loaded.version, name, columns,
                            {k: spec.dtype for k, spec in specs.items()},
                            results)
  outputs = {k: _to_json(v.tolist()) for k, v in results.items()}
  if not row_format:
    return {'outputs': next(iter(outputs.values())) if len(outputs) == 1
            else outputs}
  if len(outputs) == 1:
    return {'predictions': next(iter(outputs.values()))}
  rows = len(next(iter(outputs.values())))
  return {'predictions': [{k: v[i] for k, v in outputs.items()}
                          for i in range(rows)]}


def check_classify_or_regress(loaded: LoadedVersion, body: Any,
                              method: str) -> None:
  """:classify / :regress need a classify / regress signature.

  The taxi model exports predict signatures only (TF2 tf.function
  signatures always are), so TF Serving answers these with
  FAILED_PRECONDITION; this server does the same.
  """
  name = body.get('signature_name', '') if isinstance(body, dict) else ''
  inference.check_method(loaded, name, f'tensorflow/serving/{method}')
  raise FailedPrecondition(f'{method} signatures are not supported')


def status_body(registry: ModelRegistry, name: str, version: Optional[int],
                label: Optional[str]) -> Dict[str, Any]:
  return {'model_version_status': [
      {'version': str(v), 'state': state,
       'status': {'error_code': 'OK', 'error_message': ''}}
      for v, state in registry.status(name, version, label)]}


def metadata_body(loaded: LoadedVersion, name: str) -> Dict[str, Any]:
  return {
      'model_spec': {'name': name, 'signature_name': '',
                     'version': str(loaded.version)},
      'metadata': {'signature_def': {'signature_def': {
          k: json_format.MessageToDict(v) for k, v in
          sorted(loaded.signature_defs.items())}}},
  }


def make_handler(registry: ModelRegistry, max_request_bytes: int,
                 batcher: Optional[batching.Batcher] = None,
                 request_logger: Optional[
                     'request_logging.RequestLogger'] = None):
  """A BaseHTTPRequestHandler class bound to `registry`."""

  class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    server_version = 'tfx-reference-model-server'

    def setup(self):
      super().setup()
      # Headers and body go out in separate writes; with Nagle's algorithm
      # on, the client's delayed ACK then stalls every response by ~40 ms.
      self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, fmt, *args):  # access log at debug level only
      log.debug('%s %s', self.address_string(), fmt % args)

    def _send(self, code: int, body: Dict[str, Any]) -> None:
      data = json.dumps(body).encode()
      self.send_response(code)
      self.send_header('Content-Type', 'application/json')
      self.send_header('Content-Length', str(len(data)))
      self.end_headers()
      self.wfile.write(data)

    def _route(self):
      match = _MODEL_PATH.match(self.path.split('?')[0])
      if not match:
        raise NotFound(f'Malformed request: {self.command} {self.path}')
      version = match['version']
      return (match['name'], int(version) if version else None,
              match['label'], match['rest'] or '')

    def _handle(self, action):
      try:
        code, body = 200, action()
      except ServingError as e:
        code, body = e.http_status, {'error': str(e)}
      except Exception as e:  # pylint: disable=broad-except
        log.exception('request failed: %s %s', self.command, self.path)
        code, body = 500, {'error': f'{type(e).__name__}: {e}'}
      self._send(code, body)

    def do_GET(self):  # pylint: disable=invalid-name
      def action():
        name, version, label, rest = self._route()
        if rest == '':
          return status_body(registry, name, version, label)
        if rest == '/metadata':
          return metadata_body(registry.resolve(name, version, label), name)
        raise BadRequest(f'Use POST for {rest}')
      self._handle(action)

    def do_POST(self):  # pylint: disable=invalid-name
      def action():
        length = int(self.headers.get('Content-Length') or 0)
        if length > max_request_bytes:
          self.close_connection = True  # the unread body ends the connection
          raise BadRequest(f'Request of {length} bytes exceeds the limit of '
                           f'{max_request_bytes} bytes')
        raw = self.rfile.read(length)
        name, version, label, rest = self._route()
        if rest not in (':predict', ':classify', ':regress'):
          raise BadRequest(f'Use GET for {self.path}')
        try:
          body = json.loads(raw or b'null', object_hook=_decode_b64)
        except ValueError as e:
          raise BadRequest(f'JSON Parse error: {e}') from e
        loaded = registry.resolve(name, version, label)
        if rest != ':predict':
          check_classify_or_regress(loaded, body, rest[1:])
        return predict(loaded, body, batcher, request_logger, name)
      self._handle(action)

  return Handler
