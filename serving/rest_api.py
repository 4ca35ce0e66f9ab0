"""TF Serving's REST API (v1) over a ModelRegistry.

Request and response bodies follow TF Serving 2.16: `instances` (row) or
`inputs` (columnar) in, `predictions` or `outputs` out, bytes as
{"b64": "..."}, NaN / Infinity tokens accepted for float inputs and written
for float outputs (rapidjson's kParseNanAndInfFlag in TF Serving), errors
as {"error": "..."} with 400/404/500 status codes.

The server is http.server's, kept (no new dependency; REST already answers
within the noise of the in-process call in bench/serving_latency.py), with
what it lacks for a network added in
`make_handler` / `HTTPServer`: GET, HEAD, POST only (405 with Allow); a
body needs a plain decimal Content-Length (RFC 9110 8.6) of at most
--max_request_bytes (411 without, 501 for Transfer-Encoding); the body must
arrive within --rest_api_timeout_in_ms (408); JSON nested too deep for
Python or for a tensor is a 400, not a crash; every error, http.server's
own included, is JSON; the listen backlog fits a burst of clients; a
refused connection is closed without resetting its answer away.
"""

import base64
import http
import http.server
import json
import logging
import re
import socket
import sys
import time
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
    r'(?:/versions/(?P<version>[0-9]+)|/labels/(?P<label>[^/:]+))?'
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


def _signature_name(body: Dict[str, Any]) -> str:
  """The body's signature_name; '' if absent. TF Serving refuses any other
  type, null and {} included (which `or` would take for absent)."""
  name = body.get('signature_name', '')
  if not isinstance(name, str):
    raise BadRequest("'signature_name' key must be a string value.")
  return name


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
  name = _signature_name(body) or inference.DEFAULT_SIGNATURE
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
  name = _signature_name(body) if isinstance(body, dict) else ''
  inference.check_method(loaded, name, f'tensorflow/serving/{method}')
  raise FailedPrecondition(f'{method} signatures are not supported')


def status_body(registry: ModelRegistry, name: str, version: Optional[int],
                label: Optional[str]) -> Dict[str, Any]:
  return {'model_version_status': [
      {'version': str(v), 'state': state,
       'status': {'error_code': 'OK', 'error_message': ''}}
      for v, state in registry.status(name, version, label)]}


def metadata_body(loaded: LoadedVersion, name: str) -> Dict[str, Any]:
  """TF Serving prints the SignatureDefs with proto field names and every
  default field (`method_name`, `dtype: DT_INVALID`), not protobuf's JSON
  style (`methodName`, defaults dropped)."""
  return {
      'model_spec': {'name': name, 'signature_name': '',
                     'version': str(loaded.version)},
      'metadata': {'signature_def': {'signature_def': {
          k: json_format.MessageToDict(
              v, preserving_proto_field_name=True,
              including_default_value_fields=True) for k, v in
          sorted(loaded.signature_defs.items())}}},
  }


# --- HTTP: framing, limits and errors (RFC 9110 / 9112) ----------------------

ALLOWED_METHODS = ('GET', 'HEAD', 'POST')  # HEAD: GET's headers, no body
# socketserver listens with a backlog of 5: a burst of connection-per-request
# clients overflows it and the kernel drops their SYNs (retried after 1 s,
# then 3 s). The kernel caps this at net.core.somaxconn.
LISTEN_BACKLOG = socket.SOMAXCONN
_DECIMAL = re.compile(r'[0-9]+')  # not int(): it takes '+5', '1_0', ' 1'
_INT64_MAX = 2**63 - 1


def parse_content_length(values) -> Optional[int]:
  """A request's Content-Length (RFC 9110 8.6: 1*DIGIT); None if absent.

  One header with one value; the optional whitespace around a field value
  is not part of it. Anything else is a 400: a request whose length the
  server reads differently from a proxy in front of it is how requests
  are smuggled.
  """
  if not values:
    return None
  if len(values) != 1:
    raise BadRequest('More than one Content-Length header')
  text = values[0].strip(' \t')
  if not _DECIMAL.fullmatch(text):
    raise BadRequest(f'Content-Length {text[:40]!r} is not a decimal number')
  return int(text) if len(text) <= 18 else 10**18  # no int() of 5000 digits


def parse_version(text: Optional[str]) -> Optional[int]:
  """A URL's /versions/<n>: versions are int64, as in TF Serving."""
  if text is None:
    return None
  if len(text) > 19 or int(text) > _INT64_MAX:
    shown = text if len(text) <= 30 else text[:30] + '...'
    raise BadRequest(f'Failed to convert version: {shown} to numeric.')
  return int(text)


def make_handler(registry: ModelRegistry, max_request_bytes: int,
                 batcher: Optional[batching.Batcher] = None,
                 request_logger: Optional[
                     'request_logging.RequestLogger'] = None,
                 timeout_seconds: float = 30.0):
  """A BaseHTTPRequestHandler class bound to `registry`.

  http.server parses the request line and headers; this class adds what it
  lacks for a server on a network: methods other than GET/HEAD/POST are
  405, a body needs a plain decimal Content-Length (Transfer-Encoding is
  501, a POST without a length 411) of at most `max_request_bytes`, the
  body must arrive within `timeout_seconds`, and every error, including
  http.server's own, is JSON {"error": ...}.
  """

  class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    server_version = 'tfx-reference-model-server'
    # StreamRequestHandler sets this on the socket: a kept-alive connection
    # idle this long, or a client that stops sending, is closed.
    timeout = timeout_seconds

    def setup(self):
      super().setup()
      # Headers and body go out in separate writes; with Nagle's algorithm
      # on, the client's delayed ACK then stalls every response by ~40 ms.
      self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, fmt, *args):  # access log at debug level only
      log.debug('%s %s', self.address_string(), fmt % args)

    def _send(self, code: int, body: Dict[str, Any], headers=()) -> None:
      data = json.dumps(body).encode()
      self.send_response(code)
      self.send_header('Content-Type', 'application/json')
      self.send_header('Content-Length', str(len(data)))
      for key, value in headers:
        self.send_header(key, value)
      if self.close_connection:
        self.send_header('Connection', 'close')
      self.end_headers()
      if self.command != 'HEAD':
        self.wfile.write(data)

    def send_error(self, code, message=None, explain=None):
      """http.server's errors (bad request line, long headers...) as JSON.

      After such an error the rest of the stream is not a request, so the
      connection closes; a garbled first line still gets a status line.
      """
      if self.request_version == 'HTTP/0.9':
        self.request_version = 'HTTP/1.0'
      self.close_connection = True
      self._send(code, {'error': message or http.HTTPStatus(code).phrase})

    def parse_request(self):
      self._length = None
      self._checked = False
      if not super().parse_request():
        return False
      if self.request_version == 'HTTP/0.9':
        self.send_error(400, 'HTTP/0.9 requests are not supported')
        return False
      return self._checked or self._check_framing()

    def handle_expect_100(self):
      """Refuses a request before its client sends the body in vain."""
      return self._check_framing() and super().handle_expect_100()

    def _check_framing(self) -> bool:
      """Method and body length, before any body is read; False: answered."""
      self._checked = True
      if self.command not in ALLOWED_METHODS:
        self.close_connection = True  # any body it had is left unread
        self._send(405, {'error': f'Method {self.command[:40]!r} is not '
                                  'allowed: use GET or POST'},
                   [('Allow', ', '.join(ALLOWED_METHODS))])
        return False
      if 'Transfer-Encoding' in self.headers:
        self.send_error(501, 'Transfer-Encoding is not supported: send the '
                        'body with a Content-Length')
        return False
      try:
        self._length = parse_content_length(
            self.headers.get_all('Content-Length'))
      except BadRequest as e:
        self.send_error(400, str(e))
        return False
      if self._length is None and self.command == 'POST':
        self.send_error(411, 'A POST needs a Content-Length')
        return False
      if (self._length or 0) > max_request_bytes:
        self.send_error(400, f'Request of {self._length} bytes exceeds the '
                        f'limit of {max_request_bytes} bytes')
        return False
      return True

    def _body(self) -> Optional[bytes]:
      """The body, all of it within `timeout_seconds`; None: answered.

      The socket timeout alone bounds each read, not the whole body: a
      client sending a byte every few seconds would hold the thread for
      good. So the reads share one deadline.
      """
      length, got, chunks = self._length or 0, 0, []
      deadline = time.monotonic() + timeout_seconds
      try:
        while got < length:
          remaining = deadline - time.monotonic()
          if remaining <= 0:
            raise TimeoutError
          self.connection.settimeout(remaining)
          chunk = self.rfile.read1(length - got)
          if not chunk:  # the client closed before sending it all
            self.close_connection = True
            return None
          chunks.append(chunk)
          got += len(chunk)
      except TimeoutError:
        self.send_error(408, f'The request body did not arrive within '
                        f'{timeout_seconds:g} s (--rest_api_timeout_in_ms)')
        return None
      finally:
        if length:
          self.connection.settimeout(timeout_seconds)
      return b''.join(chunks)

    def _route(self):
      match = _MODEL_PATH.match(self.path.split('?')[0])
      if not match:
        raise NotFound(f'Malformed request: {self.command} {self.path[:200]}')
      return (match['name'], parse_version(match['version']),
              match['label'], match['rest'] or '')

    def _handle(self, action):
      try:
        code, body = 200, action()
      except ServingError as e:
        code, body = e.http_status, {'error': str(e)}
      except Exception as e:  # pylint: disable=broad-except
        log.exception('request failed: %s %s', self.command, self.path[:200])
        code, body = 500, {'error': f'{type(e).__name__}: {e}'}
      self._send(code, body)

    def do_GET(self):  # pylint: disable=invalid-name
      if self._length and self._body() is None:  # a GET's body is ignored
        return

      def action():
        name, version, label, rest = self._route()
        if rest == '':
          return status_body(registry, name, version, label)
        if rest == '/metadata':
          return metadata_body(registry.resolve(name, version, label), name)
        raise BadRequest(f'Use POST for {rest}')
      self._handle(action)

    do_HEAD = do_GET  # pylint: disable=invalid-name  (_send omits the body)

    def do_POST(self):  # pylint: disable=invalid-name
      raw = self._body()
      if raw is None:
        return

      def action():
        name, version, label, rest = self._route()
        if rest not in (':predict', ':classify', ':regress'):
          raise BadRequest(f'Use GET for {self.path[:200]}')
        try:
          body = json.loads(raw or b'null', object_hook=_decode_b64)
        except RecursionError as e:
          raise BadRequest('JSON Parse error: nested too deeply') from e
        except ValueError as e:
          raise BadRequest(f'JSON Parse error: {str(e)[:200]}') from e
        loaded = registry.resolve(name, version, label)
        if rest != ':predict':
          check_classify_or_regress(loaded, body, rest[1:])
        return predict(loaded, body, batcher, request_logger, name)
      self._handle(action)

  return Handler


class HTTPServer(http.server.ThreadingHTTPServer):
  """A thread per connection (daemon: stopping never waits for clients),
  listening with a backlog sized for real clients; a client that goes away
  mid-request is a debug line, not a traceback on stderr."""
  request_queue_size = LISTEN_BACKLOG
  daemon_threads = True
  linger_seconds = 2.0

  def shutdown_request(self, request):
    """A lingering close, as Apache and nginx do: the answer is sent (FIN),
    then what the client still sends is read and dropped, for at most
    `linger_seconds`, before closing.

    Closing a socket with unread input makes the kernel send a reset, and a
    reset can destroy the answer before the client reads it: a client whose
    oversized body was refused saw "connection reset", not the 400 saying
    why. A client that closes first (the usual case) costs one recv.
    """
    try:
      request.shutdown(socket.SHUT_WR)
      deadline = time.monotonic() + self.linger_seconds
      buffer = bytearray(1 << 16)
      while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
          break
        request.settimeout(remaining)
        if not request.recv_into(buffer):
          break
    except OSError:
      pass
    self.close_request(request)

  def handle_error(self, request, client_address):
    error = sys.exc_info()[1]
    if isinstance(error, OSError):
      log.debug('connection from %s ended: %r', client_address, error)
    else:
      log.exception('error serving %s', client_address)


def make_server(registry: ModelRegistry, address: Tuple[str, int],
                max_request_bytes: int,
                batcher: Optional[batching.Batcher] = None,
                request_logger: Optional[
                    'request_logging.RequestLogger'] = None,
                timeout_seconds: float = 30.0) -> HTTPServer:
  """The REST API server, bound to `address` (port 0: a free one)."""
  return HTTPServer(address, make_handler(
      registry, max_request_bytes, batcher, request_logger, timeout_seconds))
