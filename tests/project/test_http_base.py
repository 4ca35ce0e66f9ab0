"""A bounded attack round on both HTTP servers (project/http_base.py).

The real `python -m serving` (on the shared trained model) and the real
`python -m ui` (on an empty world), each in its own process, are held by
connections that send nothing, connections that trickle their headers a
byte at a time (reconnecting when closed, as a slow-loris client does) and
requests whose heads are 6 MB (96 headers of 64 KB), all at once and
loopback only, for ATTACK_S. Meanwhile and afterwards a good request is
sent every GOOD_EVERY_S. Asserted: every good request is answered 200
(none refused, and each before the request deadline: an answer that had
to wait for an attacker to be cut off would take at least that); the
server's threads never
exceed its connection cap plus a few of its own; its resident memory grows
less than MAX_GROWTH_MB; the oversized heads are refused with 431.
"""

import concurrent.futures
import os
import re
import socket
import subprocess
import sys
import threading
import time
from typing import Callable, List

import psutil
import pytest

from tests import helpers
from ui import server as ui_server

pytestmark = pytest.mark.integration

ATTACK_S = 12.0
GOOD_EVERY_S = 0.4
IDLE = 80  # connections that send nothing
SLOW = 80  # connections trickling their headers
BIG = 16  # requests with a 6 MB head
BIG_HEAD = b''.join(b'X-%d: %s\r\n' % (i, b'a' * 65000) for i in range(96))
REQUEST_TIMEOUT_S = ui_server.REQUEST_TIMEOUT_S  # the model server's too, here
CAP = 24  # the model server's --rest_api_num_threads here
UI_CAP = ui_server.MAX_CONNECTIONS
OWN_THREADS = 12  # a server's threads besides its connections' (TF, gRPC...)
MAX_GROWTH_MB = 150
STATUS = re.compile(rb'HTTP/1\.[01] (\d{3}) ')


def _status(port: int, request: bytes,
            timeout: float = REQUEST_TIMEOUT_S) -> int:
  with socket.create_connection(('127.0.0.1', port), timeout=timeout) as s:
    s.sendall(request)
    data = b''
    while b'\r\n' not in data:
      chunk = s.recv(4096)
      if not chunk:
        break
      data += chunk
  m = STATUS.match(data)
  return int(m.group(1)) if m else -1


def _big_head(port: int, host: bytes) -> int:
  """Sends a 6 MB head; the status the server answered (-1: none)."""
  with socket.create_connection(('127.0.0.1', port), timeout=5) as s:
    try:
      s.sendall(b'GET / HTTP/1.1\r\nHost: ' + host + b'\r\n' + BIG_HEAD +
                b'\r\n')
    except OSError:  # the server answered and stopped reading: expected
      pass
    try:
      m = STATUS.match(s.recv(4096))
    except OSError:
      return -1
  return int(m.group(1)) if m else -1


class _Attack:
  """Idle, trickling and oversized clients on `port`, from two threads."""

  def __init__(self, port: int, host: bytes):
    self.port, self.host = port, host
    self.stop = threading.Event()
    self.big_statuses: List[int] = []
    self.reconnects = 0

  def _connect(self):
    return socket.create_connection(('127.0.0.1', self.port), timeout=2)

  def _trickle(self):
    header = (b'GET / HTTP/1.1\r\nHost: ' + self.host + b'\r\nX-Slow: ' +
              b'z' * 4000)
    idle = [self._connect() for _ in range(IDLE)]
    slow = [[self._connect(), 0] for _ in range(SLOW)]
    try:
      while not self.stop.wait(0.5):
        for entry in slow:
          try:
            entry[0].sendall(header[entry[1]:entry[1] + 1])
            entry[1] += 1
          except OSError:  # closed by the server: come back, as loris does
            entry[0].close()
            self.reconnects += 1
            try:
              entry[:] = [self._connect(), 0]
            except OSError:
              entry[:] = [socket.socket(), 0]
    finally:
      for s in idle + [e[0] for e in slow]:
        s.close()

  def _oversized(self):
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
      self.big_statuses = list(pool.map(
          lambda _: _big_head(self.port, self.host), range(BIG)))

  def __enter__(self):
    self.threads = [threading.Thread(target=f, daemon=True)
                    for f in (self._trickle, self._oversized)]
    for t in self.threads:
      t.start()
    return self

  def __exit__(self, *exc):
    self.stop.set()
    for t in self.threads:
      t.join(timeout=60)


def _round(pid: int, port: int, host: bytes, good: bytes, cap: int):
  proc = psutil.Process(pid)
  base_threads, base_rss = proc.num_threads(), proc.memory_info().rss
  assert _status(port, good) == 200
  peak_threads = peak_rss = 0
  answers = []

  def sample():
    nonlocal peak_threads, peak_rss
    peak_threads = max(peak_threads, proc.num_threads())
    peak_rss = max(peak_rss, proc.memory_info().rss)

  with _Attack(port, host) as attack:
    end = time.monotonic() + ATTACK_S
    while time.monotonic() < end:
      started = time.monotonic()
      try:
        answers.append((_status(port, good), time.monotonic() - started))
      except OSError as e:
        answers.append((repr(e), time.monotonic() - started))
      sample()
      time.sleep(GOOD_EVERY_S)
  after = [_status(port, good) for _ in range(5)]
  sample()
  during = [a for a, _ in answers]
  assert during and set(during) == {200}, answers
  assert after == [200] * 5
  assert max(t for _, t in answers) < REQUEST_TIMEOUT_S, answers
  assert set(attack.big_statuses) <= {431, -1}, attack.big_statuses
  assert 431 in attack.big_statuses
  assert peak_threads <= base_threads + cap + OWN_THREADS, (
      peak_threads, base_threads, cap)
  growth_mb = (peak_rss - base_rss) / 2**20
  assert growth_mb < MAX_GROWTH_MB, growth_mb
  return attack.reconnects


def test_model_server_holds_under_idle_slow_and_oversized_clients(
    tmp_path, trained_model):
  base = str(tmp_path / 'taxi')
  os.makedirs(base)
  helpers.copy_version(trained_model.serving_model_dir, base, 1)
  server = helpers.Server(base, [
      '--rest_api_num_threads', str(CAP),
      '--rest_api_timeout_in_ms', str(int(REQUEST_TIMEOUT_S * 1000))])
  try:
    good = b'GET /v1/models/taxi HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'
    reconnects = _round(server.proc.pid, server.rest_port, b'x', good, CAP)
    assert reconnects > 0  # the cap closed waiting connections
  finally:
    server.stop()


def _start_ui(tmp_path) -> subprocess.Popen:
  proc = subprocess.Popen(
      [sys.executable, '-m', 'ui', '--port', '0',
       '--metadata-path', str(tmp_path / 'none.sqlite'),
       '--serving-dir', str(tmp_path / 'serving'),
       '--log-file', str(tmp_path / 'ui.log')],
      cwd=helpers.REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
      text=True)
  return proc


def _port_of(proc: subprocess.Popen, read: Callable[[], str]) -> int:
  for _ in range(20):
    line = read()
    m = re.search(r'http://127\.0\.0\.1:(\d+)/', line)
    if m:
      return int(m.group(1))
  proc.kill()
  raise AssertionError('python -m ui printed no address')


def test_ui_holds_under_idle_slow_and_oversized_clients(tmp_path):
  proc = _start_ui(tmp_path)
  try:
    port = _port_of(proc, proc.stdout.readline)
    host = f'127.0.0.1:{port}'.encode()
    good = b'GET / HTTP/1.1\r\nHost: ' + host + b'\r\n\r\n'
    _round(proc.pid, port, host, good, UI_CAP)
  finally:
    proc.terminate()
    proc.wait(timeout=30)
