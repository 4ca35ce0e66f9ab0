"""The UI's HTTP server: read-only, GET and HEAD only, loopback by default.

Standard library (http.server), like the rest of the project's tools: the
pages are server-rendered HTML with inline SVG, so nothing but this process
is needed. Every response forbids scripts and outside resources
(Content-Security-Policy), so a page cannot load anything from a network,
and a name or property value from ML Metadata cannot run as code. When it
listens on a loopback address it answers only requests whose Host header is
a loopback name (a web page elsewhere cannot read it through DNS
rebinding); an absolute-form target's host counts as the Host. A request
body is never read into memory: a refused one of at most MAX_DISCARDED
bytes is read in small chunks and dropped (so the client gets its 405, not
a reset connection), a larger one is left unread. Pages rendered at once
are capped (MAX_CONCURRENT; past it, 503). Connections, the request
deadline, the head's size and the Host rules are project/http_base.py's,
shared with the model server (limits: MAX_CONNECTIONS, REQUEST_TIMEOUT_S,
MAX_HEAD_BYTES).
"""

import logging
import threading
import urllib.parse
from typing import Tuple

from project import http_base
from project import web
from ui import pages
from ui import views

LOG = logging.getLogger('ui')
MAX_PATH = 2048  # longer request targets get 414
MAX_CONCURRENT = 16  # requests rendered at once; more get 503
MAX_CONNECTIONS = 64  # connections open at once (a thread each)
REQUEST_TIMEOUT_S = 10.0  # idle wait; then a request's whole head
MAX_HEAD_BYTES = 32768  # request line and headers together
MAX_DISCARDED = 65536  # the largest refused body read (and dropped)
LOOPBACK_NAMES = ('127.0.0.1', 'localhost', '[::1]')
SECURITY_HEADERS = (
    ('Content-Security-Policy', web.CONTENT_SECURITY_POLICY),
    ('X-Content-Type-Options', 'nosniff'),
    ('Referrer-Policy', 'no-referrer'),
    ('Cache-Control', 'no-store'),
)


def is_loopback(host: str) -> bool:
  return host in ('127.0.0.1', 'localhost', '::1') or host.startswith('127.')


class Handler(http_base.Handler):
  server_version = 'tfx-reference-ui'
  security_headers = SECURITY_HEADERS

  def log_message(self, format, *args):  # pylint: disable=redefined-builtin
    LOG.info('%s %s', self.address_string(), format % args)

  def _send(self, page: pages.Page, body: bool = True,
            extra: Tuple[Tuple[str, str], ...] = ()) -> None:
    self.send_response(page.status)
    self.send_header('Content-Type', page.content_type)
    self.send_header('Content-Length', str(len(page.body)))
    for name, value in extra:
      self.send_header(name, value)
    self.end_headers()
    if body:
      self.wfile.write(page.body)

  def _plain(self, status: int, text: str, body: bool = True,
             extra: Tuple[Tuple[str, str], ...] = ()) -> None:
    self._send(pages.Page(status, (text + '\n').encode('utf-8'),
                          'text/plain; charset=utf-8'), body, extra)

  def _host_allowed(self) -> bool:
    return (not self.server.loopback_only or
            self.effective_host in LOOPBACK_NAMES)

  def _serve(self, body: bool) -> None:
    if len(self.path) > MAX_PATH:
      self._plain(414, f'request target longer than {MAX_PATH} bytes', body)
      return
    if not self._host_allowed():
      self._plain(421, 'this server answers only to a loopback Host '
                  '(127.0.0.1, localhost)', body)
      return
    if not self.server.slots.acquire(blocking=False):
      self._plain(503, 'busy: too many requests at once', body,
                  (('Retry-After', '1'),))
      return
    try:
      try:
        path = urllib.parse.urlsplit(self.path).path or '/'
      except ValueError:  # e.g. 'http://[/': an invalid bracketed host
        self._plain(400, 'bad request target', body)
        return
      path = path.rstrip('/') or '/'
      try:
        page = pages.render(self.server.sources, path)
      except Exception:  # pylint: disable=broad-except
        LOG.exception('rendering %s failed', path)
        page = pages.Page(500, b'internal error: see the log\n',
                          'text/plain; charset=utf-8')
      self._send(page, body)
    finally:
      self.server.slots.release()

  def do_GET(self):  # pylint: disable=invalid-name
    self._serve(body=True)

  def do_HEAD(self):  # pylint: disable=invalid-name
    self._serve(body=False)

  def _read_only(self):
    self._discard_small_body()
    self._plain(405, 'read-only: GET and HEAD only', True,
                (('Allow', 'GET, HEAD'),))

  def _discard_small_body(self) -> None:
    """Reads and drops a body of at most MAX_DISCARDED bytes, by the
    request's deadline, so the client reads the 405 instead of a reset
    connection; a larger or unstated one is left unread (the connection
    closes)."""
    try:
      left = int(self.headers.get('Content-Length', '0'))
    except ValueError:
      return
    if 0 < left <= MAX_DISCARDED:
      try:
        self.read_body(left, keep=False)
      except OSError:  # TimeoutError included: answer the 405 anyway
        pass

  do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _read_only  # pylint: disable=invalid-name


class Server(http_base.Server):

  def __init__(self, address, sources: views.Sources):
    super().__init__(address, Handler, http_base.Limits(
        max_connections=MAX_CONNECTIONS, request_timeout_s=REQUEST_TIMEOUT_S,
        max_head_bytes=MAX_HEAD_BYTES))
    self.sources = sources
    self.loopback_only = is_loopback(address[0])
    self.slots = threading.BoundedSemaphore(MAX_CONCURRENT)
