"""HTTP for the REST API: framing, limits and errors (RFC 9110 / 9112).

The server is http.server's under project/http_base.py's hardened base
(shared with the UI: a connection cap, one deadline for a request's head
and body, a bounded head, Host rules, SOMAXCONN backlog, lingering close).
This module adds the REST API's own rules in `make_handler`: GET, HEAD,
POST only (405 with Allow); a body needs a plain decimal Content-Length
(RFC 9110 8.6) of at most --max_request_bytes (411 without, 501 for
Transfer-Encoding); the body must arrive by the request's deadline,
--rest_api_timeout_in_ms from its first byte (408); every error,
http.server's and the base's included, is JSON {"error": ...}.

What a request means is serving/rest_api.py's: it hands `make_server` an
`answer(method, path, body)` that returns the response body or raises a
ServingError (its HTTP status is the answer's).
"""

import http
import json
import logging
import re
import socket
from typing import Any, Callable, Dict, Optional, Tuple

import orjson

from project import http_base
from serving.errors import BadRequest
from serving.errors import ServingError

log = logging.getLogger('serving')

# (method, path, body or None) -> the JSON response body.
Answer = Callable[[str, str, Optional[bytes]], Dict[str, Any]]

ALLOWED_METHODS = ('GET', 'HEAD', 'POST')  # HEAD: GET's headers, no body
# A JSON API: nothing in an answer is for a browser to run, frame or sniff.
SECURITY_HEADERS = (
    ('Content-Security-Policy', "default-src 'none'; frame-ancestors 'none'"),
    ('X-Content-Type-Options', 'nosniff'),
)
DEFAULT_MAX_CONNECTIONS = 64
_DECIMAL = re.compile(r'[0-9]+')  # not int(): it takes '+5', '1_0', ' 1'


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


def dumps(body: Dict[str, Any]) -> bytes:
  """`body` as JSON: orjson's, unless json.dumps would write it differently.

  orjson writes NaN and infinities as null, where TF Serving (and
  json.dumps) write NaN / Infinity tokens: any null in its output sends the
  body to json.dumps, as does whatever it cannot encode (bytes, ints beyond
  64 bits, nesting past 255). The output is the same JSON value either way,
  orjson's without spaces and with UTF-8 where json.dumps escapes.
  """
  try:
    data = orjson.dumps(body)
  except (orjson.JSONEncodeError, TypeError):
    data = b'null'
  return data if b'null' not in data else json.dumps(body).encode()


def make_handler(answer: Answer, max_request_bytes: int):
  """A BaseHTTPRequestHandler class whose requests `answer` answers.

  http.server parses the request line and headers; this class adds what it
  lacks for a server on a network: methods other than GET/HEAD/POST are
  405, a body needs a plain decimal Content-Length (Transfer-Encoding is
  501, a POST without a length 411) of at most `max_request_bytes`, the
  body must arrive by the request's deadline, and every error, including
  http.server's own, is JSON {"error": ...}.
  """

  class Handler(http_base.Handler):
    protocol_version = 'HTTP/1.1'
    server_version = 'tfx-reference-model-server'
    security_headers = SECURITY_HEADERS
    default_request_version = 'HTTP/0.9'  # so parse_request can refuse it

    @classmethod
    def busy_answer(cls):
      return 'application/json', dumps({
          'error': 'Too many connections: try again (--rest_api_num_threads)'})

    def setup(self):
      super().setup()
      # Headers and body go out in separate writes; with Nagle's algorithm
      # on, the client's delayed ACK then stalls every response by ~40 ms.
      self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, fmt, *args):  # access log at debug level only
      if log.isEnabledFor(logging.DEBUG):  # else not even formatted
        log.debug('%s %s', self.address_string(), fmt % args)

    def _send(self, code: int, body: Dict[str, Any], headers=()) -> None:
      data = dumps(body)
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
      """The body, all of it by the request's deadline; None: answered."""
      try:
        data = self.read_body(self._length or 0)
      except TimeoutError:
        self.send_error(408, 'The request did not arrive within '
                        f'{self.server.limits.request_timeout_s:g} s '
                        '(--rest_api_timeout_in_ms)')
        return None
      if data is None:  # the client closed before sending it all
        self.close_connection = True
      return data

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
      self._handle(lambda: answer(self.command, self.path, None))

    do_HEAD = do_GET  # pylint: disable=invalid-name  (_send omits the body)

    def do_POST(self):  # pylint: disable=invalid-name
      raw = self._body()
      if raw is None:
        return
      self._handle(lambda: answer(self.command, self.path, raw))

  return Handler


class HTTPServer(http_base.Server):
  """The base's server; its limits come from the REST flags."""


def make_server(answer: Answer, address: Tuple[str, int],
                max_request_bytes: int, timeout_seconds: float = 30.0,
                max_connections: int = DEFAULT_MAX_CONNECTIONS
                ) -> HTTPServer:
  """An HTTP server for `answer`, bound to `address` (port 0: a free one)."""
  return HTTPServer(address, make_handler(answer, max_request_bytes),
                    http_base.Limits(max_connections=max_connections,
                                     request_timeout_s=timeout_seconds))
