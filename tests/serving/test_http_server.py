"""serving/http_server.py in process: the REST layer's limits on a real
loopback server whose `answer` echoes the request (no model: the limits are
the HTTP layer's). Every error is JSON and carries the security headers."""

import json
import re
import socket
import threading
import time

import pytest

from serving import http_server

TIMEOUT = 10  # a hang guard only
STATUS = re.compile(rb'HTTP/1\.[01] (\d{3}) ')


def _answer(method, path, body):
  return {'method': method, 'path': path, 'body': len(body or b'')}


@pytest.fixture
def make_server():
  started = []

  def make(max_connections=4, timeout_seconds=1.5):
    server = http_server.make_server(_answer, ('127.0.0.1', 0), 1000,
                                     timeout_seconds, max_connections)
    thread = threading.Thread(target=server.serve_forever,
                              kwargs={'poll_interval': 0.02}, daemon=True)
    thread.start()
    started.append(server)
    return server.server_address[1]

  yield make
  for server in started:
    server.shutdown()
    server.server_close()


def _read_all(sock) -> bytes:
  chunks = []
  while True:
    try:
      chunk = sock.recv(65536)
    except OSError:
      break
    if not chunk:
      break
    chunks.append(chunk)
  return b''.join(chunks)


def _exchange(port, data: bytes):
  with socket.create_connection(('127.0.0.1', port), timeout=TIMEOUT) as s:
    s.sendall(data)
    raw = _read_all(s)
  m = STATUS.match(raw)
  head, _, body = raw.partition(b'\r\n\r\n')
  headers = dict(line.decode().split(': ', 1)
                 for line in head.split(b'\r\n')[1:])
  return (int(m.group(1)) if m else None), headers, body


def _get(host_lines=b'Host: x\r\n', target=b'/v1/models/m'):
  return (b'GET ' + target + b' HTTP/1.1\r\n' + host_lines +
          b'Connection: close\r\n\r\n')


def _assert_json_error(headers, body):
  assert headers['Content-Type'] == 'application/json'
  assert 'error' in json.loads(body)
  assert "default-src 'none'" in headers['Content-Security-Policy']
  assert headers['X-Content-Type-Options'] == 'nosniff'


def test_a_good_request_is_answered_with_security_headers(make_server):
  status, headers, body = _exchange(make_server(), _get())
  assert status == 200 and json.loads(body)['path'] == '/v1/models/m'
  assert headers['X-Content-Type-Options'] == 'nosniff'


@pytest.mark.parametrize('request_bytes', [
    _get(b'Host: x\r\nHost: y\r\n'), _get(b''),
], ids=['two Hosts', 'HTTP/1.1 without Host'])
def test_host_rules_of_rfc_9112_are_400(make_server, request_bytes):
  status, headers, body = _exchange(make_server(), request_bytes)
  assert status == 400, body
  _assert_json_error(headers, body)


def test_a_head_over_64_kb_in_total_is_431(make_server):
  """http.server bounds each line (64 KB) and the count (100), not the
  total: 96 headers of 1 KB passed, 96 of 64 KB held 6 MB a request."""
  lines = b''.join(b'X-%d: %s\r\n' % (i, b'a' * 1000) for i in range(96))
  status, headers, body = _exchange(make_server(), _get(b'Host: x\r\n' + lines))
  assert status == 431, body
  _assert_json_error(headers, body)


def test_headers_trickling_in_get_408_at_the_request_deadline(make_server):
  """One deadline for the head: a byte every 0.2 s does not extend it."""
  port = make_server(timeout_seconds=1.0)
  with socket.create_connection(('127.0.0.1', port), timeout=TIMEOUT) as s:
    started = time.monotonic()
    for byte in _get()[:-4] + b'X: ' + b'a' * 100:
      try:
        s.sendall(bytes([byte]))
      except OSError:
        break
      time.sleep(0.2)
      if time.monotonic() - started > 5:
        break
    raw = _read_all(s)
  assert STATUS.match(raw).group(1) == b'408', raw[:200]
  assert b'--rest_api_timeout_in_ms' in raw or b'did not arrive' in raw


def test_head_and_body_share_one_deadline(make_server):
  """Headers sent slowly, then a body: the body's time counts from the
  request's first byte, not from its own."""
  port = make_server(timeout_seconds=1.5)
  with socket.create_connection(('127.0.0.1', port), timeout=TIMEOUT) as s:
    for line in (b'POST /v1/models/m:predict HTTP/1.1\r\n', b'Host: x\r\n',
                 b'Content-Length: 10\r\n'):
      s.sendall(line)
      time.sleep(0.5)
    s.sendall(b'\r\n{"a"')
    time.sleep(0.8)  # 1.5 s after the first byte: past the deadline
    try:
      s.sendall(b': 1}')
    except OSError:
      pass
    raw = _read_all(s)
  assert STATUS.match(raw).group(1) == b'408', raw[:200]


def test_at_the_cap_the_longest_waiting_connection_makes_room(make_server):
  port = make_server(max_connections=2)
  idle = [socket.create_connection(('127.0.0.1', port), timeout=TIMEOUT)
          for _ in range(2)]
  try:
    time.sleep(0.2)
    status, _, _ = _exchange(port, _get())
    assert status == 200
    assert idle[0].recv(1) == b''  # the first idle one was closed for it
  finally:
    for s in idle:
      s.close()


def test_at_the_cap_with_none_waiting_a_503_is_json_with_headers(make_server):
  port = make_server(max_connections=2, timeout_seconds=3)
  busy = [socket.create_connection(('127.0.0.1', port), timeout=TIMEOUT)
          for _ in range(2)]
  try:
    for s in busy:  # past their heads, reading a body that is not coming
      s.sendall(b'POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\n'
                b'Content-Length: 100\r\n\r\n{')
    time.sleep(0.3)
    status, headers, body = _exchange(port, _get())
    assert status == 503, body
    assert headers['Retry-After'] == '1'
    _assert_json_error(headers, body)
    assert 'rest_api_num_threads' in json.loads(body)['error']
  finally:
    for s in busy:
      s.close()
  deadline = time.monotonic() + TIMEOUT
  while _exchange(port, _get())[0] != 200 and time.monotonic() < deadline:
    time.sleep(0.05)
  assert _exchange(port, _get())[0] == 200
