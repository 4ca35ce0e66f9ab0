"""ui/server.py over an empty world: nothing ran yet, or an empty store.

A real `ui.server.Server` on a loopback port in a thread, asked over
http.client or a raw socket: every page answers (never 500), the serving
page shows what is on disk and in the monitor's report, writes are refused
without reading a body, the Host and length checks hold, hostile paths get
404 or 400 and never a file, every answer forbids scripts, names are
escaped. No pipeline runs; sockets get timeouts only as hang guards.
"""

import concurrent.futures
import dataclasses
import hashlib
import html
import http.client
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from typing import Dict, Optional, Tuple

import pytest
from tensorflow_serving.config import model_server_config_pb2

from lineage import metadata_store
from monitoring import config as monitor_config
from monitoring import monitor
from serving import base_path
from serving import model_config
from tests import helpers
from ui import pages
from ui import server as ui_server
from ui import views

TIMEOUT = 10  # seconds: a hang guard only
POLL_S = 0.02  # serve_forever's shutdown poll (its default, 0.5 s, per test)
NO_STORE = 'No ML Metadata store yet: run make run first.'
STATUS_LINE = re.compile(rb'HTTP/1\.[01] (\d{3}) ')
MODEL = 'taxi'
SECRET = 'tfx-reference-ui-test-secret-0x5eed'  # in a file no page may show


@dataclasses.dataclass
class Answer:
  status: Optional[int]  # None: no status line
  headers: Dict[str, str]  # lower-case names
  body: bytes
  raw: bytes


def _parse(raw: bytes) -> Answer:
  m = STATUS_LINE.match(raw)
  if m is None:
    return Answer(None, {}, raw, raw)
  head, _, body = raw.partition(b'\r\n\r\n')
  headers = {}
  for line in head.split(b'\r\n')[1:]:
    name, _, value = line.decode('iso-8859-1').partition(':')
    headers[name.strip().lower()] = value.strip()
  return Answer(int(m.group(1)), headers, body, raw)


@dataclasses.dataclass
class World:
  """A running UI server and where its sources are."""
  root: str
  sources: views.Sources
  port: int

  @property
  def host(self) -> bytes:
    return f'127.0.0.1:{self.port}'.encode()

  def raw(self, data: bytes, timeout: float = TIMEOUT) -> Answer:
    """Sends `data` as is; everything the server sends until it closes."""
    with socket.create_connection(('127.0.0.1', self.port),
                                  timeout=timeout) as s:
      s.sendall(data)
      chunks = []
      while True:
        chunk = s.recv(65536)
        if not chunk:
          break
        chunks.append(chunk)
    return _parse(b''.join(chunks))

  def request(self, target: bytes, method: bytes = b'GET',
              host: Optional[bytes] = None, extra: bytes = b'') -> Answer:
    return self.raw(method + b' ' + target + b' HTTP/1.1\r\nHost: ' +
                    (self.host if host is None else host) + b'\r\n' + extra +
                    b'\r\n')

  def get(self, path: str) -> Tuple[int, http.client.HTTPMessage, str]:
    """GET over http.client, as a browser would send it."""
    conn = http.client.HTTPConnection('127.0.0.1', self.port, timeout=TIMEOUT)
    try:
      conn.request('GET', path)
      response = conn.getresponse()
      return (response.status, response.headers,
              response.read().decode('utf-8'))
    finally:
      conn.close()

  @property
  def base(self) -> str:
    return self.sources.model_base_path

  def write_report(self, report: Dict) -> None:
    monitor.write_json_atomically(self.sources.monitoring_report, report)


@pytest.fixture
def make_world(tmp_path):
  """make_world(store=False): a UI server on an empty world, shut down at
  the end. store=True: the SQLite store exists but holds nothing."""
  started = []

  def make(store: bool = False, config_file: bool = False) -> World:
    root = str(tmp_path / f'world{len(started)}')
    connection = metadata_store.sqlite_config(
        os.path.join(root, 'metadata', 'metadata.sqlite'))
    if store:
      metadata_store.open_store(connection)
    sources = views.Sources(
        connection=connection, pipeline_name='taxi',
        model_base_path=os.path.join(root, 'serving', MODEL),
        monitoring_report=monitor_config.report_path(root),
        model_config_file=(os.path.join(root, 'models.config')
                           if config_file else None))
    httpd = ui_server.Server(('127.0.0.1', 0), sources)
    thread = threading.Thread(target=httpd.serve_forever, args=(POLL_S,),
                              daemon=True)
    thread.start()
    started.append((httpd, thread))
    return World(root, sources, httpd.server_address[1])

  yield make
  for httpd, thread in started:
    httpd.shutdown()
    httpd.server_close()
    thread.join(TIMEOUT)


@pytest.fixture(params=[False, True], ids=['no store', 'empty store'])
def world(request, make_world):
  return make_world(store=request.param)


def _needs_store(path: str) -> bool:
  return next(needs for pattern, _, needs in pages.ROUTES
              if pattern.fullmatch(path))


def _cell(text: str, cell_id: str) -> str:
  m = re.search(rf'<td[^>]* id="{cell_id}">(.*?)</td>', text, re.S)
  assert m, f'no #{cell_id} in the page'
  return m.group(1)


def _report(degraded_live: bool, reason: Optional[str] = None,
            skewed: str = 'trip_miles') -> Dict:
  """A report with the keys monitoring/monitor.py `run` writes; verdict
  and reason from monitor.verdict."""
  t = monitor_config.THRESHOLDS
  live, baseline, labelled = (0.61 if degraded_live else 0.78), 0.79, 400
  degraded, why = monitor.verdict(live, baseline, labelled, t)
  assert degraded == degraded_live
  return {
      'model_version': '7', 'live_accuracy': live, 'live_auc': 0.7,
      'baseline_accuracy': baseline, 'baseline_source': 'given',
      'degraded': degraded, 'reason': why if reason is None else reason,
      'skew': {
          skewed: {'distance': 0.31, 'threshold': t.numeric_js,
                   'p_value': 1e-9, 'alpha': t.alpha, 'anomalous': True,
                   'measure': 'JSD'},
          'payment_type': {'distance': 0.05, 'threshold': t.categorical_linf,
                           'p_value': 0.4, 'alpha': t.alpha,
                           'anomalous': False, 'measure': 'L-inf'}},
      'skew_detected': True, 'skew_anomalies': [f'{skewed}: skewed'],
      'training_data': 'ML Metadata', 'requests': 500,
      'labelled': labelled, 'ambiguous': 0, 'log_prefix': '/srv/logs/taxi',
      'logged_versions': {'7': 500},
      'thresholds': dataclasses.asdict(t),
      'created': '2026-01-01T00:00:00+00:00',
  }


# --- Pages when nothing ran ---------------------------------------------------


def test_every_nav_page_answers_when_nothing_ran(world):
  has_store = world.sources.open_store() is not None
  for path, _ in pages.NAV:
    status, _, text = world.get(path)
    if has_store or not _needs_store(path):
      assert status == 200, (path, text)
    else:
      assert status == 404, (path, text)
      assert f'<p id="error">{NO_STORE}</p>' in text
  _, _, overview = world.get('/')
  assert ('id="no-store"' in overview) == (not has_store)
  assert _cell(overview, 'run-count') == '0'


def test_pages_never_create_or_change_the_store(world):
  db = world.sources.connection.sqlite.filename_uri

  def digest():
    if not os.path.exists(db):
      return None
    with open(db, 'rb') as f:
      return hashlib.sha256(f.read()).hexdigest()

  before = digest()
  for path in [p for p, _ in pages.NAV] + ['/runs/x', '/artifacts/1',
                                           '/executions/1', '/versions/1',
                                           '/data/spans/3']:
    assert world.get(path)[0] in (200, 404), path
  assert digest() == before


def test_serving_says_nothing_was_pushed_and_how_to_monitor(world):
  status, _, text = world.get('/serving')
  assert status == 200
  assert 'no version pushed yet' in text
  assert 'no pushes, promotions or rollbacks logged' in text
  assert 'id="no-monitoring"' in text
  assert html.escape(world.sources.monitoring_report) in text
  assert 'python -m monitoring' in text
  assert _cell(world.get('/')[2], 'monitor') == 'no report'


@pytest.mark.parametrize('degraded', [True, False], ids=['degraded', 'ok'])
def test_the_monitoring_report_shows_on_serving_and_overview(world, degraded):
  report = _report(degraded)
  world.write_report(report)
  reason = html.escape(report['reason'])
  _, _, serving = world.get('/serving')
  assert 'id="no-monitoring"' not in serving
  assert _cell(serving, 'degraded') == ('YES' if degraded else 'no')
  assert f'<tr><th>reason</th><td>{reason}</td></tr>' in serving
  assert _cell(serving, 'live-accuracy').startswith(
      f'{report["live_accuracy"]:.4f} on 400 labelled')
  row = re.search(r'<tr data-feature="trip_miles">(.*?)</tr>', serving, re.S)
  assert row and '>SKEW<' in row.group(1)
  assert 'data-label="trip_miles" data-value="0.31"' in serving  # the chart
  _, _, overview = world.get('/')
  assert _cell(overview, 'monitor') == (
      f'{"DEGRADED" if degraded else "ok"}: {reason}')


@pytest.mark.parametrize('text', [
    '{}', '[]', '"a string"', 'not json', '{"degraded": true}',
    '{"model_version": "7", "skew": {"trip_miles": 0.3}}',
    '{"degraded": false, "reason": "x", "skew": [], "live_accuracy": "high"}',
    '{"degraded": false, "reason": "x", "skew": {"f": {"distance": "big"}}}',
], ids=['empty', 'list', 'string', 'not JSON', 'no reason', 'skew numbers',
        'wrong types', 'distance text'])
def test_a_report_that_is_not_the_monitors_is_never_a_500(world, text):
  """A hand-edited file or another tool's JSON at the report's path."""
  os.makedirs(os.path.dirname(world.sources.monitoring_report))
  with open(world.sources.monitoring_report, 'w') as f:
    f.write(text)
  for path in ('/', '/serving'):
    status, _, page = world.get(path)
    assert status == 200, (path, page)


def test_report_text_is_escaped(world):
  script = '<script>alert(1)</script>'
  world.write_report(_report(True, reason=script, skewed='<b>f</b>'))
  for path in ('/', '/serving'):
    status, _, text = world.get(path)
    assert status == 200
    assert '&lt;script&gt;alert(1)&lt;/script&gt;' in text, path
    assert '<script' not in text and '<b>' not in text, path
  assert 'data-feature="&lt;b&gt;f&lt;/b&gt;"' in world.get('/serving')[2]


def test_a_run_name_in_a_404_is_escaped(make_world):
  world = make_world(store=True)
  status, _, text = world.get('/runs/%3Cscript%3Ealert(1)%3C%2Fscript%3E')
  assert status == 404
  assert 'no pipeline run &#39;&lt;script&gt;alert(1)&lt;/script&gt;&#39;' in text
  assert '<script' not in text


def _write_labels(path: str, labels: Dict[str, Dict[str, int]], base: str):
  proto = model_server_config_pb2.ModelServerConfig()
  for name, by_label in labels.items():
    entry = proto.model_config_list.config.add(
        name=name, base_path=os.path.join(os.path.dirname(base), name))
    for label, version in by_label.items():
      entry.version_labels[label] = version
  with open(path, 'w') as f:
    f.write(model_config.to_text(proto))


@pytest.mark.parametrize('store', [False, True], ids=['no store', 'empty store'])
def test_labels_from_the_model_config_file_show_on_serving(make_world, store):
  world = make_world(store=store, config_file=True)
  for version in (5, 7):
    os.makedirs(os.path.join(world.base, str(version)))
    open(os.path.join(world.base, str(version), 'saved_model.pb'), 'wb').close()
  os.makedirs(os.path.join(world.base, base_path.INCOMING_PREFIX + '9'))
  assert model_config.versions_on_disk(world.base) == [5, 7]
  _write_labels(world.sources.model_config_file,
                {MODEL: {'stable': 5, 'canary': 7}, 'other': {'stable': 7}},
                world.base)
  status, _, text = world.get('/serving')
  assert status == 200
  rows = dict(re.findall(r'<tr data-version="(\d+)">(.*?)</tr>', text, re.S))
  assert sorted(rows) == ['5', '7']
  labels = {v: re.search(r'<td class="labels">(.*?)</td>', row).group(1)
            for v, row in rows.items()}
  assert labels == {'5': 'stable', '7': 'canary'}
  states = {v: re.search(r'<td class="state[^"]*">(.*?)</td>', row).group(1)
            for v, row in rows.items()}
  assert states == {'5': 'on disk', '7': 'served (latest)'}
  assert html.escape(world.sources.model_config_file) in text


@pytest.mark.parametrize('store', [False, True], ids=['no store', 'empty store'])
def test_overview_names_the_version_the_serving_page_serves(make_world, store):
  world = make_world(store=store)
  for version in (3, 4):
    os.makedirs(os.path.join(world.base, str(version)))
  assert '<td class="state">served (latest)</td>' in re.search(
      r'<tr data-version="4">(.*?)</tr>', world.get('/serving')[2],
      re.S).group(1)
  assert _cell(world.get('/')[2], 'served') == '<a href="/versions/4">4</a>'


# --- HTTP: methods, HEAD, limits, Host ----------------------------------------


@pytest.mark.parametrize('method', [b'POST', b'PUT', b'DELETE', b'PATCH'])
def test_writes_get_405(make_world, method):
  world = make_world()
  answer = world.request(b'/', method, extra=b'Content-Length: 0\r\n')
  assert answer.status == 405
  assert answer.headers['allow'] == 'GET, HEAD'
  assert b'read-only' in answer.body


def test_a_post_body_is_never_read(make_world):
  world = make_world()
  # Headers announce 10 MB, none follow: a server reading the body would
  # wait for it (its handler timeout, 30 s) and this recv would time out.
  answer = world.raw(b'POST /runs HTTP/1.1\r\nHost: ' + world.host +
                     b'\r\nContent-Length: 10000000\r\n\r\n', timeout=5)
  assert answer.status == 405
  assert answer.headers['allow'] == 'GET, HEAD'
  assert world.get('/')[0] == 200  # and still serving


def test_a_small_refused_body_is_drained_so_the_client_reads_the_405(
    make_world):
  """A form-sized POST body (under ui.server.MAX_DISCARDED) is read and
  dropped: unread, it would make the kernel reset the connection and the
  client lose the answer. http.client reads the whole answer here."""
  world = make_world()
  conn = http.client.HTTPConnection('127.0.0.1', world.port, timeout=TIMEOUT)
  try:
    conn.request('POST', '/runs', body=b'x' * 50000)
    response = conn.getresponse()
    assert response.status == 405
    assert b'read-only' in response.read()
  finally:
    conn.close()


def _open(world, n: int, send: bytes = b''):
  conns = [socket.create_connection(('127.0.0.1', world.port), timeout=TIMEOUT)
           for _ in range(n)]
  for c in conns:
    c.sendall(send)
  return conns


def test_idle_connections_at_the_cap_make_room_for_a_request(
    make_world, monkeypatch):
  """Connections that send nothing, or their headers a byte at a time,
  hold a thread each: at the cap, a new connection closes the one waiting
  longest and is served at once (no 503 while slow clients stay)."""
  monkeypatch.setattr(ui_server, 'MAX_CONNECTIONS', 3)
  world = make_world()
  idle = _open(world, 2) + _open(world, 2, b'GET / HTTP/1.1\r\nHo')
  try:
    for _ in range(5):
      started = time.monotonic()
      assert world.get('/')[0] == 200
      assert time.monotonic() - started < TIMEOUT / 2
  finally:
    for s in idle:
      s.close()


def test_busy_connections_at_the_cap_get_503_with_csp_and_then_recover(
    make_world, monkeypatch):
  """Connections past their headers (a refused POST whose body is still
  coming) are not evicted: a new one gets 503 with Retry-After and the
  security headers, from the accepting thread; once the busy ones reach
  the request deadline, requests are served again."""
  monkeypatch.setattr(ui_server, 'MAX_CONNECTIONS', 3)
  monkeypatch.setattr(ui_server, 'REQUEST_TIMEOUT_S', 2.0)
  world = make_world()
  busy = _open(world, 3, b'POST / HTTP/1.1\r\nHost: ' + world.host +
               b'\r\nContent-Length: 1000\r\n\r\nx')
  try:
    time.sleep(0.3)  # accepted, past their heads
    answer = world.request(b'/')
    assert answer.status == 503, answer.raw[:300]
    assert answer.headers['retry-after'] == '1'
    _assert_no_scripts(answer, '503 at the connection cap')
  finally:
    for s in busy:
      s.close()
  deadline = time.monotonic() + TIMEOUT
  while world.get('/')[0] != 200 and time.monotonic() < deadline:
    time.sleep(0.05)
  assert world.get('/')[0] == 200


def test_headers_trickling_in_are_cut_at_the_request_deadline(
    make_world, monkeypatch):
  """The deadline is for the whole head, not for each read: a byte every
  0.3 s gets 408 after REQUEST_TIMEOUT_S, not never."""
  monkeypatch.setattr(ui_server, 'REQUEST_TIMEOUT_S', 1.5)
  world = make_world()
  with socket.create_connection(('127.0.0.1', world.port),
                                timeout=TIMEOUT) as s:
    started = time.monotonic()
    chunks = []
    for byte in b'GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ' + b'a' * 40:
      try:
        s.sendall(bytes([byte]))
      except OSError:
        break
      time.sleep(0.3)
      if time.monotonic() - started > 4:
        break
    s.settimeout(TIMEOUT)
    while True:
      try:
        chunk = s.recv(65536)
      except OSError:
        break
      if not chunk:
        break
      chunks.append(chunk)
    answer = _parse(b''.join(chunks))
  assert answer.status == 408, answer.raw[:200]
  assert time.monotonic() - started < 6


@pytest.mark.parametrize('headers, status', [
    (b'X: ' + b'a' * 20000 + b'\r\nY: ' + b'b' * 20000 + b'\r\n', 431),
    (b''.join(b'X-%d: %s\r\n' % (i, b'c' * 1000) for i in range(40)), 431),
], ids=['two 20 KB headers', '40 headers of 1 KB'])
def test_a_head_over_max_head_bytes_gets_431(make_world, headers, status):
  """The head is bounded in total, not only per line (http.server takes
  100 lines of 64 KB each)."""
  world = make_world()
  answer = world.request(b'/', extra=headers)
  assert answer.status == status, answer.raw[:200]
  _assert_no_scripts(answer, status)
  assert world.get('/')[0] == 200


@pytest.mark.parametrize('request_bytes, status', [
    (b'GET / HTTP/1.1\r\nHost: {host}\r\nHost: {host}\r\n\r\n', 400),
    (b'GET / HTTP/1.1\r\n\r\n', 400),
    (b'GET http://evil.example/ HTTP/1.1\r\nHost: {host}\r\n\r\n', 421),
    (b'GET http://{host}/ HTTP/1.1\r\nHost: evil.example\r\n\r\n', 200),
], ids=['two Hosts', 'HTTP/1.1 without Host', 'absolute-form foreign host',
        'absolute-form names the host'])
def test_host_rules_of_rfc_9112(make_world, request_bytes, status):
  """RFC 9112 3.2: two Host headers, or none in HTTP/1.1, are 400; 3.2.2:
  an absolute-form target's authority is the host (a foreign one: 421, as
  a foreign Host is)."""
  world = make_world()
  answer = world.raw(request_bytes.replace(b'{host}', world.host))
  assert answer.status == status, answer.raw[:300]
  _assert_no_scripts(answer, status)


def test_the_listen_backlog_fits_a_burst_of_clients(make_world):
  """socketserver's default backlog is 5 (100 simultaneous requests: 16
  timed out); `ss` shows the listening socket's backlog as Send-Q."""
  if not shutil.which('ss'):
    pytest.skip('needs ss (iproute2)')
  world = make_world()
  out = subprocess.run(['ss', '-ltnH', f'sport = :{world.port}'],
                       capture_output=True, text=True, check=True).stdout
  assert int(out.split()[2]) >= 128, out
  with concurrent.futures.ThreadPoolExecutor(50) as pool:
    statuses = list(pool.map(lambda _: world.get('/')[0], range(100)))
  assert set(statuses) <= {200, 503} and statuses.count(200) >= 16


def test_head_has_headers_and_no_body(world):
  status, _, page = world.get('/serving')
  assert status == 200
  answer = world.request(b'/serving', b'HEAD')
  assert answer.status == 200
  assert answer.body == b''
  assert int(answer.headers['content-length']) == len(page.encode('utf-8'))
  assert answer.headers['content-type'] == 'text/html; charset=utf-8'


def test_a_request_target_over_2048_bytes_gets_414(make_world):
  world = make_world()
  longest = b'/' + b'a' * (ui_server.MAX_PATH - 1)
  assert world.request(longest).status == 404
  answer = world.request(longest + b'a')
  assert answer.status == 414
  assert b'2048' in answer.body


@pytest.mark.parametrize('host', [b'localhost:{port}', b'127.0.0.1:{port}',
                                  b'localhost', b'LOCALHOST:{port}'])
def test_a_loopback_host_is_served(make_world, host):
  world = make_world()
  assert world.request(b'/', host=host.replace(
      b'{port}', str(world.port).encode())).status == 200


@pytest.mark.parametrize('host', [b'evil.example', b'evil.example:{port}',
                                  b'localhost.evil.example:{port}',
                                  b'127.0.0.1.evil.example', b''])
def test_another_host_gets_421(make_world, host):
  world = make_world()
  answer = world.request(b'/', host=host.replace(
      b'{port}', str(world.port).encode()))
  assert answer.status == 421
  assert b'loopback' in answer.body
  assert b'<h1>' not in answer.body  # no page content


# --- Hostile paths ------------------------------------------------------------

BAD_TARGETS = [
    b'/artifacts/abc', b'/artifacts/99999999999999999999999',
    b'/artifacts/-1', b'/executions/1.5', b'/data/spans/1e3',
    b'/runs/../../etc/passwd', b'/runs/..%2F..%2Fetc%2Fpasswd',
    b'/versions/1/../../x', b'/versions/1/../../secret.txt',
    b'/versions/1/model_card/../../../secret.txt',
    b'/versions/1/model_card%00', b'/versions/01/model_card',
    b'/../../etc/passwd', b'/%2e%2e/%2e%2e/etc/passwd', b'/secret.txt',
    b'/%00', b'/runs/%00', b'/\x00', b'/runs/\x01\x02',
    b'/' + b'x' * 2000, b'/runs/' + b'r' * 1500,
    b'/runs/\xff\xfe', b'/\xc3\x28', b'/artifacts/\xff', b'/nope',
    b'/index.html', b'/models/', b'/serving?x=<b>', b'//etc/passwd',
]


@pytest.mark.parametrize('target', BAD_TARGETS, ids=lambda t: repr(t)[:40])
def test_unknown_paths_and_bad_ids_get_404_or_400(world, target):
  os.makedirs(os.path.join(world.base, '1', 'assets.extra'), exist_ok=True)
  with open(os.path.join(world.root, 'secret.txt'), 'w') as f:
    f.write(SECRET)
  with open(base_path.model_card_path(os.path.join(world.base, '1')),
            'w') as f:
    f.write(SECRET)
  answer = world.request(target)
  if target in (b'/models/', b'/serving?x=<b>'):  # a page, as its path
    expected = (200, 404) if target == b'/models/' else (200,)
    assert answer.status in expected
  else:
    assert answer.status in (400, 404), answer.raw[:300]
  assert SECRET.encode() not in answer.body
  assert b'root:' not in answer.body


def test_the_model_card_is_the_one_file_served(world):
  """The positive control of the test above: the card is reachable."""
  card = base_path.model_card_path(os.path.join(world.base, '1'))
  os.makedirs(os.path.dirname(card))
  with open(card, 'w') as f:
    f.write(SECRET)
  answer = world.request(b'/versions/1/model_card')
  assert answer.status == 200 and answer.body == SECRET.encode()
  assert "default-src 'none'" in answer.headers['content-security-policy']


@pytest.mark.parametrize('target', [b'http://[/x', b'http://[::1/x',
                                    b'http://a]b/'])
def test_an_absolute_target_with_a_bad_host_gets_an_answer(make_world, target):
  world = make_world()
  answer = world.request(target)
  assert answer.status in (400, 404), answer.raw[:300]
  assert world.get('/')[0] == 200


# --- Security headers ---------------------------------------------------------


def _assert_no_scripts(answer: Answer, what) -> None:
  csp = answer.headers.get('content-security-policy')
  assert csp, (what, answer.raw[:300])
  assert "default-src 'none'" in csp
  assert 'script-src' not in csp
  assert answer.headers.get('x-content-type-options') == 'nosniff'


def test_every_answer_forbids_scripts(make_world):
  world = make_world()
  answers = {
      'overview': world.request(b'/'),
      'serving': world.request(b'/serving'),
      '404 no store': world.request(b'/runs'),
      '404 no page': world.request(b'/nope'),
      'HEAD': world.request(b'/', b'HEAD'),
      '405': world.request(b'/', b'POST', extra=b'Content-Length: 0\r\n'),
      '414': world.request(b'/' + b'a' * 3000),
      '421': world.request(b'/', host=b'evil.example'),
  }
  assert {k: a.status for k, a in answers.items()} == {
      'overview': 200, 'serving': 200, '404 no store': 404,
      '404 no page': 404, 'HEAD': 200, '405': 405, '414': 414, '421': 421}
  for what, answer in answers.items():
    _assert_no_scripts(answer, what)


@pytest.mark.parametrize('request_bytes', [
    b'GET /a b HTTP/1.1\r\nHost: {host}\r\n\r\n',  # 400: bad request line
    b'BREW / HTTP/1.1\r\nHost: {host}\r\n\r\n',  # 501: unknown method
    b'GET / HTTP/2.0\r\nHost: {host}\r\n\r\n',  # 505
    # 414: a request line longer than http.server reads (65536 bytes); just
    # that many bytes are sent, so none is left unread when it closes.
    b'GET /' + b'a' * (65537 - len(b'GET /')),
], ids=['400', '501', '505', '414 of http.server'])
def test_errors_http_server_sends_itself_forbid_scripts(make_world,
                                                        request_bytes):
  world = make_world()
  answer = world.raw(request_bytes.replace(b'{host}', world.host))
  assert answer.status is not None and 400 <= answer.status < 600
  _assert_no_scripts(answer, answer.status)


@pytest.mark.parametrize('request_bytes', [
    b'GET /\r\n\r\n', b'GET /\r\nHost: {host}\r\n\r\n',
    b'POST /\r\n\r\n'], ids=['no Host', 'loopback Host', 'POST'])
def test_an_http_0_9_request_gets_a_status_line_and_headers(make_world,
                                                           request_bytes):
  """A request line without a version: http.server answers it as HTTP/0.9,
  the body alone, unless told otherwise."""
  world = make_world()
  answer = world.raw(request_bytes.replace(b'{host}', world.host))
  assert answer.status is not None, answer.raw[:200]
  _assert_no_scripts(answer, 'HTTP/0.9')


# --- Fuzz ---------------------------------------------------------------------


def test_fuzzed_request_paths_always_get_a_status_line(make_world):
  world = make_world(store=True)
  rng = random.Random(0)
  # Printable and control bytes but CR and LF, which end the request line.
  alphabet = bytes(b for b in range(0x80) if b not in b'\r\n')
  prefixes = [b'/', b'//', b'/runs/', b'/artifacts/', b'/executions/',
              b'/versions/', b'/versions/1/', b'/data/spans/', b'/%']
  seen = set()
  for _ in range(300):
    target = rng.choice(prefixes) + bytes(
        rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
    answer = world.request(target)
    assert answer.status is not None, (target, answer.raw[:200])
    assert answer.status == 200 or 400 <= answer.status < 500, (
        target, answer.status, answer.raw[:300])
    seen.add(answer.status)
  assert {400, 404} <= seen  # the fuzz reached the parser and the routes
  assert world.get('/')[0] == 200


# --- The command line ---------------------------------------------------------


def _ui(*args) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, '-m', 'ui', *args], cwd=helpers.REPO,
                        capture_output=True, text=True, timeout=120,
                        check=False)


def test_help_exits_0_and_names_the_loopback_address():
  done = _ui('--help')
  assert done.returncode == 0, done.stderr
  assert '127.0.0.1' in done.stdout


def test_a_port_out_of_range_is_one_line_and_exit_2():
  done = _ui('--port', '70000')
  assert done.returncode == 2
  assert done.stdout == ''
  assert done.stderr.endswith('\n') and done.stderr.count('\n') == 1
  assert '--port 70000' in done.stderr
