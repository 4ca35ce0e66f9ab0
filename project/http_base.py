"""One hardened HTTP/1.1 server base: the model server's REST API and the UI.

http.server parses requests well but is written for a trusted client: a
thread per connection without a cap, a socket timeout per read (a client
sending a byte a second holds its thread for good), headers bounded only
per line (100 lines of 64 KB each), a listen backlog of 5. Both servers of
this project face the same clients, so the rules live here, once:

- **Connections are capped** (`Limits.max_connections`, a thread each).
  A connection past the cap closes the one that has waited longest for a
  request (idle keep-alive, or headers still arriving: the slow-loris
  shape) and takes its place; when none waits (every connection is busy
  with a request), it is answered 503 with Retry-After and the server's
  security headers, without starting a thread.
- **One deadline for a whole request**: a kept-alive connection may idle
  for `request_timeout_s`; from a request's first byte, its request line
  and headers (and the body, for handlers that read one: `read_body`)
  must arrive within `request_timeout_s`, however slowly they trickle
  (408 if part of it came, a silent close if none).
- **The head is bounded in total**: request line and headers together at
  most `max_head_bytes` (a request line alone past it: 414; else 431),
  read into one buffer that is never larger.
- **Host** (RFC 9112 3.2): an HTTP/1.1 request without one, or any
  request with two, is 400; an absolute-form target's authority is the
  request's host (`effective_host`), as 3.2.2 says.
- **The listen backlog** is the kernel's SOMAXCONN, not 5.
- **Security headers** (`security_headers`) go on every answer: the
  handler's, http.server's own errors, and the cap's 503.
- **A lingering close**, as Apache and nginx do: the answer is sent (FIN),
  what the client still sends is read and dropped for at most
  `linger_s`, then the socket closes (closing with unread input makes the
  kernel send a reset, which can destroy the answer before it is read).

Written here rather than taken from a library: the lock has no HTTP server
with these limits that stays synchronous (aiohttp and tornado would turn
both servers asynchronous; gunicorn and waitress are not in it), and the
rules are few.
"""

import dataclasses
import http.server
import io
import logging
import socket
import sys
import threading
import time
import urllib.parse
from typing import Dict, Optional, Tuple

log = logging.getLogger('http')

Headers = Tuple[Tuple[str, str], ...]


@dataclasses.dataclass(frozen=True)
class Limits:
  max_connections: int = 64  # a thread each
  request_timeout_s: float = 10.0  # idle wait; then one request's head+body
  max_head_bytes: int = 65536  # request line and headers together
  linger_s: float = 2.0
  evict_wait_s: float = 1.0  # a new connection waits this long for a slot


class HeadError(Exception):
  """A request head refused before it was parsed; `status` says why."""

  def __init__(self, status: int, message: str):
    super().__init__(message)
    self.status = status


class Handler(http.server.BaseHTTPRequestHandler):
  """A request handler reading each request's head under `Limits`."""
  security_headers: Headers = ()
  # A request line without a version (HTTP/0.9) is answered as HTTP/1.0:
  # a status line and headers (http.server's default sends neither).
  default_request_version = 'HTTP/1.0'
  request_deadline = 0.0  # time.monotonic() by which the request must arrive

  @classmethod
  def busy_answer(cls) -> Tuple[str, bytes]:
    """(Content-Type, body) of the 503 past the connection cap."""
    return 'text/plain; charset=utf-8', b'busy: too many connections\n'

  def end_headers(self):
    # Here, not in a handler's own send: http.server's errors carry them too.
    for name, value in self.security_headers:
      self.send_header(name, value)
    super().end_headers()

  @property
  def effective_host(self) -> str:
    """The request's host, lower case and without the port: the authority
    of an absolute-form target (RFC 9112 3.2.2), else the Host header."""
    authority = ''
    if '://' in self.path:
      authority = urllib.parse.urlsplit(self.path).netloc
    host = (authority or self.headers.get('Host') or '').strip().lower()
    host = host.rsplit('@', 1)[-1]
    if host.startswith('['):
      return host[:host.find(']') + 1]
    return host.rsplit(':', 1)[0]

  def parse_request(self):
    if not super().parse_request():
      return False
    hosts = self.headers.get_all('Host') or []
    if len(hosts) > 1:
      self.send_error(400, 'More than one Host header')
      return False
    if not hosts and self.request_version >= 'HTTP/1.1':
      self.send_error(400, 'An HTTP/1.1 request needs a Host header')
      return False
    if '://' in self.path:
      try:
        urllib.parse.urlsplit(self.path)
      except ValueError:  # e.g. 'http://[/x': an invalid bracketed host
        self.send_error(400, 'Bad request target')
        return False
    return True

  def handle_one_request(self):
    """http.server's, with the head read under one deadline and size."""
    self.close_connection = True
    self.command, self.requestline = None, ''
    self.request_version = self.default_request_version
    try:
      head = self._read_head()
    except HeadError as e:
      self.send_error(e.status, str(e))
      return
    except OSError:  # reset by the client, or its socket was evicted
      return
    if head is None:
      return
    socket_file, self.rfile = self.rfile, io.BytesIO(head)
    try:
      self.raw_requestline = self.rfile.readline()
      parsed = self.parse_request()
    finally:
      self.rfile = socket_file
    if not parsed:
      return
    method = getattr(self, 'do_' + self.command, None)
    if method is None:
      self.send_error(501, f'Unsupported method ({self.command[:40]!r})')
      return
    method()
    self.wfile.flush()

  def read_body(self, length: int, keep: bool = True) -> Optional[bytes]:
    """`length` bytes of body, by the request's deadline (TimeoutError
    past it); None if the client closed first. `keep=False` drops them.

    The socket timeout alone bounds each read, not the whole body: a
    client sending a byte every few seconds would hold the thread for
    good. So the reads share the deadline the head started.
    """
    got, chunks = 0, []
    try:
      while got < length:
        remaining = self.request_deadline - time.monotonic()
        if remaining <= 0:
          raise TimeoutError
        self.connection.settimeout(remaining)
        chunk = self.rfile.read1(min(length - got, 1 << 16))
        if not chunk:
          return None
        got += len(chunk)
        if keep:
          chunks.append(chunk)
    finally:
      self.connection.settimeout(self.server.limits.request_timeout_s)
    return b''.join(chunks)

  def _read_head(self) -> Optional[bytes]:
    """The request line and headers, through the empty line; None: the
    client closed, or sent nothing while idle (closed quietly).

    `peek` makes at most one read of the socket and returns what is
    buffered; only the head's bytes are consumed, so a body stays in
    `rfile` for the handler.
    """
    limits: Limits = self.server.limits
    self.server.waiting(self.connection, True)
    try:
      self.connection.settimeout(limits.request_timeout_s)
      try:
        if not self.rfile.peek(1):
          return None
      except TimeoutError:
        return None  # an idle kept-alive connection
      self.request_deadline = time.monotonic() + limits.request_timeout_s
      head, line_start = bytearray(), 0
      while True:
        remaining = self.request_deadline - time.monotonic()
        try:
          if remaining <= 0:
            raise TimeoutError
          self.connection.settimeout(remaining)
          buffered = self.rfile.peek(1)
        except TimeoutError:
          raise HeadError(408, 'The request headers did not arrive within '
                          f'{limits.request_timeout_s:g} s') from None
        if not buffered:
          return None
        room = limits.max_head_bytes - len(head)
        end = buffered.find(b'\n', 0, room)
        head += self.rfile.read(end + 1 if end >= 0 else
                                min(len(buffered), room))
        if end < 0:
          if len(head) >= limits.max_head_bytes:
            raise (HeadError(431, 'Request headers exceed '
                             f'{limits.max_head_bytes} bytes') if line_start
                   else HeadError(414, 'Request line exceeds '
                                  f'{limits.max_head_bytes} bytes'))
          continue
        if head[line_start:] in (b'\r\n', b'\n'):
          if line_start:
            return bytes(head)
          head.clear()  # RFC 9112 2.2: empty lines before a request line
          continue
        line_start = len(head)
    finally:
      self.server.waiting(self.connection, False)
      self.connection.settimeout(limits.request_timeout_s)


class Server(http.server.ThreadingHTTPServer):
  """A thread per connection, at most `limits.max_connections` of them
  (daemon threads: stopping never waits for clients)."""
  daemon_threads = True
  request_queue_size = socket.SOMAXCONN  # the kernel caps it at somaxconn

  def __init__(self, address, handler_class, limits: Limits):
    self.limits = limits
    self._slots = threading.BoundedSemaphore(limits.max_connections)
    self._lock = threading.Lock()
    self._waiting: Dict[socket.socket, float] = {}
    super().__init__(address, handler_class)

  def waiting(self, connection: socket.socket, is_waiting: bool) -> None:
    """Marks a connection as waiting for a request (evictable) or not."""
    with self._lock:
      if is_waiting:
        self._waiting[connection] = time.monotonic()
      else:
        self._waiting.pop(connection, None)

  def _evict_longest_waiting(self) -> bool:
    with self._lock:
      if not self._waiting:
        return False
      victim = min(self._waiting, key=self._waiting.get)
      del self._waiting[victim]
    try:  # its blocked read returns b'': its thread ends, freeing a slot
      victim.shutdown(socket.SHUT_RDWR)
    except OSError:
      pass
    return True

  def process_request(self, request, client_address):
    if not (self._slots.acquire(blocking=False) or (
        self._evict_longest_waiting() and
        self._slots.acquire(timeout=self.limits.evict_wait_s))):
      self._refuse_busy(request)
      return
    try:
      super().process_request(request, client_address)
    except BaseException:
      self._slots.release()
      raise

  def process_request_thread(self, request, client_address):
    try:
      super().process_request_thread(request, client_address)
    finally:
      self._slots.release()

  def _refuse_busy(self, request: socket.socket) -> None:
    """503 from the accepting thread: no thread, no wait for the client."""
    content_type, body = self.RequestHandlerClass.busy_answer()
    headers = (('Content-Type', content_type),
               ('Content-Length', str(len(body))), ('Retry-After', '1'),
               ('Connection', 'close')) + tuple(
                   self.RequestHandlerClass.security_headers)
    data = b'HTTP/1.1 503 Service Unavailable\r\n' + b''.join(
        f'{k}: {v}\r\n'.encode('latin-1') for k, v in headers) + b'\r\n' + body
    try:
      request.setblocking(False)
      try:  # what already arrived, so closing does not reset the answer away
        while request.recv(65536):
          pass
      except (BlockingIOError, InterruptedError):
        pass
      request.settimeout(0.5)
      request.sendall(data)
      request.shutdown(socket.SHUT_WR)
    except OSError:
      pass
    self.close_request(request)
    log.warning('%d connections open: refused one with 503',
                self.limits.max_connections)

  def shutdown_request(self, request):
    """A lingering close (see the module docstring)."""
    try:
      request.shutdown(socket.SHUT_WR)
      deadline = time.monotonic() + self.limits.linger_s
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
