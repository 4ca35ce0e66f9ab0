"""Seeded fuzzing of both APIs of a real `python -m serving` process.

2,000+ malformed or adversarial REST requests over raw loopback sockets and
500 gRPC calls, generated from random.Random(SEED), so a failure replays
exactly. Afterwards the server must be alive, its memory bounded (resident
and peak RSS grew < 300 MB: a bound on memory, not on time), none of the
answers a 5xx (these are all client errors, not internal ones), and a good
request must get the same answer as before the run.
"""

import base64
import http.client
import json
import os
import random
import socket
import string

import numpy as np
import pytest

from tests import helpers
import tensorflow as tf

from models import features

pytestmark = pytest.mark.integration

SEED = 20240617
REST_CASES = 2000
GRPC_CASES = 500
MAX_BYTES = 200_000  # the test Server's --max_request_bytes
READ_TIMEOUT = 60  # a hang guard only
MAX_GROWTH_MB = 300
# Statuses a client error may get. 501 (Transfer-Encoding) and 505 (HTTP
# version) are refusals of the protocol, not internal errors.
CLIENT_ERRORS = {400, 404, 405, 408, 411, 414, 431, 501, 505}


@pytest.fixture(scope='module')
def server(tmp_path_factory, trained_model):
  base = str(tmp_path_factory.mktemp('fuzz') / 'taxi')
  os.makedirs(base)
  helpers.copy_version(trained_model.serving_model_dir, base, 1)
  s = helpers.Server(base)
  yield s
  s.stop()


# --- REST --------------------------------------------------------------------

def _exchange(port, data):
  """Sends `data`, half-closes, returns (status, headers, body) or None if
  the server closed without an answer (e.g. a body that never came)."""
  with socket.create_connection(('127.0.0.1', port),
                                timeout=READ_TIMEOUT) as sock:
    try:
      sock.sendall(data)
      sock.shutdown(socket.SHUT_WR)
    except (BrokenPipeError, ConnectionResetError):
      pass  # answered and closed before reading it all: read the answer
    # An answer to HEAD has no body, whatever its Content-Length says.
    method = 'HEAD' if data.startswith(b'HEAD ') else 'GET'
    response = http.client.HTTPResponse(sock, method=method)
    try:
      response.begin()
      return response.status, response.headers, response.read()
    except (http.client.RemoteDisconnected, http.client.IncompleteRead,
            ConnectionResetError):
      return None


def _request(method, path, body=b'', headers=None, length=True):
  lines = [f'{method} {path} HTTP/1.1', 'Host: 127.0.0.1']
  if length:
    lines.append(f'Content-Length: {len(body)}')
  lines += list(headers or [])
  return ('\r\n'.join(lines) + '\r\n\r\n').encode('latin-1',
                                                   'replace') + body


def _text(rng, n):
  alphabet = string.printable + 'éü中文\u2028\U0001f600'
  return ''.join(rng.choice(alphabet) for _ in range(n))


def _nested(depth, leaf):
  return '[' * depth + json.dumps(leaf) + ']' * depth


class RestCases:
  """Generators of one adversarial request each (bytes, may_close)."""

  def __init__(self, rng, rows):
    self.rng = rng
    self.rows = rows  # raw instances (dicts), for near-valid bodies

  def body(self):
    """A near-valid predict body, mutated."""
    rng = self.rng
    rows = [dict(r) for r in rng.sample(self.rows, rng.randint(1, 5))]
    body = {'signature_name': features.RAW_SIGNATURE, 'instances': rows}
    for _ in range(rng.randint(1, 3)):
      kind = rng.randrange(12)
      key = rng.choice(list(helpers.RAW_TYPES))
      row = rng.choice(rows)
      if kind == 0:
        row[key] = rng.choice([None, True, [], {}, [1, 2], 'far', 2**70,
                               -2**63 - 1, 1.5, {'b64': 'AAAA'}, [[1]]])
      elif kind == 1:
        row.pop(key, None)
      elif kind == 2:
        row[_text(rng, 8)] = 1
      elif kind == 3:
        body['signature_name'] = rng.choice(
            ['nope', '', None, 5, ['a'], {'a': 1}, _text(rng, 20),
             'serving_default', 'transform_features'])
      elif kind == 4:
        body['instances'] = rng.choice([[], {}, 'x', 5, None, [[]], [1, 'a']])
      elif kind == 5:
        body['inputs'] = {k: [r.get(k) for r in rows] for k in rows[0]}
        if rng.random() < 0.5:
          body.pop('instances', None)
      elif kind == 6:
        row[key] = _text(rng, rng.randint(0, 50))
      elif kind == 7:
        row[key] = json.loads(_nested(rng.randint(1, 400), 1))
      elif kind in (8, 9):  # json.dumps writes NaN / Infinity tokens
        row[key] = rng.choice([float('nan'), float('inf'), float('-inf'),
                               1e308, -0.0])
      else:
        pass  # some bodies stay valid
    return body

  def json_text(self, body):
    text = json.dumps(body)
    rng = self.rng
    if rng.random() < 0.1:
      text = text.replace('"company": "', '"company": "\\ud800', 1)
    if rng.random() < 0.1:
      text = text[:rng.randrange(len(text))]
    return text.encode('utf-8', 'surrogatepass')

  def case(self):
    rng = self.rng
    kind = rng.randrange(16)
    predict = rng.choice(['/v1/models/taxi:predict',
                          '/v1/models/taxi/versions/1:predict',
                          '/v1/models/taxi/labels/stable:predict'])
    if kind == 0:  # bad Content-Length values
      value = rng.choice(['-1', 'abc', '1.5', '0x10', '+5', '1_0', '1 0', '',
                          '\xb2', '5, 5', '9' * rng.randint(19, 6000),
                          '-0', '0' * 50 + '2', str(rng.randint(0, 40))])
      return _request('POST', predict, b'{"instances": [1]}',
                      [f'Content-Length: {value}'], length=False), True
    if kind == 1:  # no length / chunked / both
      headers = rng.choice([[], ['Transfer-Encoding: chunked'],
                            ['Transfer-Encoding: chunked',
                             'Content-Length: 2'],
                            ['Transfer-Encoding: gzip, chunked']])
      return _request('POST', predict, b'2\r\n{}\r\n0\r\n\r\n', headers,
                      length=False), True
    if kind == 2:  # declared larger than sent, or larger than the cap
      declared = rng.choice([MAX_BYTES + 1, 10**12, rng.randint(10, 5000)])
      return _request('POST', predict, b'{"instances": [1]}',
                      [f'Content-Length: {declared}'], length=False), True
    if kind == 3:  # methods
      method = rng.choice(['PUT', 'DELETE', 'PATCH', 'OPTIONS', 'TRACE',
                           'CONNECT', 'get', 'post', 'PRI', 'M' * 300,
                           _text(rng, 6).replace(' ', 'X') or 'X'])
      return _request(method.replace('\r', '').replace('\n', ''),
                      predict, b'{}'), True
    if kind == 4:  # garbage request lines
      line = rng.choice([
          _text(rng, rng.randint(0, 200)), 'GET', 'GET /', 'GET / HTTP/1.1 x',
          'GET / HTTP/9.9', 'GET / HTTP/1', 'GET / FTP/1.1',
          'GET /' + 'a' * 70000 + ' HTTP/1.1', ' / HTTP/1.1'])
      return (line.encode('utf-8', 'replace') + b'\r\nHost: x\r\n\r\n'), True
    if kind == 5:  # random bytes
      return bytes(rng.randrange(256) for _ in range(rng.randint(1, 600))), True
    if kind == 6:  # header garbage
      headers = rng.choice([
          ['no colon here'], ['X: ' + 'a' * 70000], ['X: 1'] * 150,
          [': empty name'], ['X:\x00\x01\x02'], ['Content-Type: ' + 'x' * 500],
          ['Expect: 100-continue'], ['Connection: keep-alive, close']])
      return _request('POST', predict, b'{"instances": [1]}', headers), True
    if kind == 7:  # deep nesting
      depth = rng.choice([100, 254, 255, 600, 990, 1100, 5000, 40000])
      where = rng.randrange(3)
      if where == 0:
        raw = '[' * depth + ']' * depth
      elif where == 1:
        raw = '{"instances": ' + _nested(depth, 'x') + '}'
      else:
        raw = '{"a": ' * depth + '1' + '}' * depth
      return _request('POST', predict, raw.encode()), False
    if kind == 8:  # huge batches, some over the cap
      n = rng.choice([50, 200, 500, 700])
      rows = [rng.choice(self.rows) for _ in range(n)]
      raw = json.dumps({'signature_name': features.RAW_SIGNATURE,
                        'instances': rows}).encode()
      return _request('POST', predict, raw), len(raw) > MAX_BYTES
    if kind == 9:  # invalid b64 and bytes that are no tf.Example
      value = rng.choice([_text(rng, 12), '%%%', 'AAA', '=' * 4, 5, None,
                          base64.b64encode(os.urandom(0) + bytes(
                              rng.randrange(256) for _ in range(30))).decode()])
      raw = json.dumps({'instances': [{'b64': value}]}).encode()
      return _request('POST', predict, raw), False
    if kind == 10:  # unknown model / version / label / signature
      path = rng.choice([
          '/v1/models/nope:predict', '/v1/models/taxi/versions/99:predict',
          '/v1/models/taxi/versions/' + '9' * rng.randint(19, 5000),
          '/v1/models/taxi/versions/-1', '/v1/models/taxi/versions/abc',
          '/v1/models/taxi/labels/' + _text(rng, 10).replace(' ', '_'),
          '/v1/models/' + _text(rng, 20).replace(' ', '%20'), '/v1/models/',
          '/v1/models/taxi:nope', '/', '/v2/models/taxi', '//v1/models/taxi',
          '/v1/models/taxi/metadata?x=1', '/v1/models/taxi:predict?a=b',
          '/v1/models/taxi%3Apredict', '/v1/models/taxi/versions/1/metadata'])
      method = rng.choice(['GET', 'POST', 'HEAD'])
      body = self.json_text(self.body()) if method == 'POST' else b''
      return _request(method, path.replace('\r', '').replace('\n', ''),
                      body), False
    if kind == 11:  # unicode in the path, raw UTF-8
      path = '/v1/models/' + _text(rng, 10).replace(' ', '') + ':predict'
      return (f'POST {path} HTTP/1.1\r\nContent-Length: 2\r\n\r\n{{}}'
              .encode('utf-8', 'surrogatepass')), False
    # wrong JSON types, NaN, unicode, truncation: near-valid bodies
    return _request('POST', predict, self.json_text(self.body())), False


def test_rest_fuzz_and_grpc_fuzz_leave_the_server_well(server, eval_rows):
  import grpc  # pylint: disable=g-import-not-at-top
  from tensorflow_serving.apis import prediction_service_pb2_grpc  # pylint: disable=g-import-not-at-top
  rng = random.Random(SEED)
  good = {'signature_name': features.RAW_SIGNATURE,
          'instances': helpers.raw_rows(eval_rows[:4])}
  code, before = server.request('/v1/models/taxi:predict', good)
  assert code == 200, before
  channel = grpc.insecure_channel(server.grpc_address)
  stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
  grpc_good = helpers.raw_request(eval_rows[:4])
  grpc_before = tf.make_ndarray(stub.Predict(grpc_good, timeout=READ_TIMEOUT)
                                .outputs['outputs'])
  pid = server.proc.pid
  rss0, peak0 = helpers.status_kb(pid, 'VmRSS'), helpers.status_kb(pid, 'VmHWM')
  port = int(server.url.rsplit(':', 1)[1])

  cases = RestCases(rng, helpers.raw_rows(eval_rows[:50]))
  statuses, closed, bad = {}, 0, []
  for i in range(REST_CASES):
    data, may_close = cases.case()
    try:
      answer = _exchange(port, data)
    except (OSError, http.client.HTTPException) as e:  # e.g. no status line
      bad.append((i, repr(e), data[:200]))
      continue
    if answer is None:
      closed += 1
      if not may_close:
        bad.append((i, 'closed without an answer', data[:200]))
      continue
    status, headers, body = answer
    statuses[status] = statuses.get(status, 0) + 1
    if status != 200 and status not in CLIENT_ERRORS:
      bad.append((i, status, data[:200], body[:300]))
    elif status != 200 and body:
      try:
        assert headers['Content-Type'] == 'application/json'
        assert list(json.loads(body)) == ['error']
      except (AssertionError, ValueError):
        bad.append((i, 'not a JSON error', status, body[:300]))
  assert not bad, bad[:10]
  assert server.proc.poll() is None
  # Most cases are answered, so the run exercised the server, not its
  # connection handling alone.
  assert sum(statuses.values()) > REST_CASES * 0.8, (statuses, closed)

  grpc_codes = {}
  grpc_bad = []
  fuzz = GrpcCases(rng, eval_rows[:50])
  for i in range(GRPC_CASES):
    method, request = fuzz.case()
    try:
      getattr(stub, method)(request, timeout=READ_TIMEOUT)
      code = grpc.StatusCode.OK
    except grpc.RpcError as e:
      code = e.code()
    grpc_codes[code.name] = grpc_codes.get(code.name, 0) + 1
    allowed = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT,
               grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION}
    if request.ByteSize() > MAX_BYTES:
      allowed = {grpc.StatusCode.RESOURCE_EXHAUSTED}
    if code not in allowed:
      grpc_bad.append((i, method, code, str(request)[:300]))
  assert not grpc_bad, grpc_bad[:10]
  assert server.proc.poll() is None

  rss_mb = (helpers.status_kb(pid, 'VmRSS') - rss0) / 1024
  peak_mb = (helpers.status_kb(pid, 'VmHWM') - peak0) / 1024
  print(f'\nREST statuses {dict(sorted(statuses.items()))}, closed {closed}; '
        f'gRPC {dict(sorted(grpc_codes.items()))}; RSS grew {rss_mb:.0f} MB, '
        f'peak RSS grew {peak_mb:.0f} MB')
  assert rss_mb < MAX_GROWTH_MB and peak_mb < MAX_GROWTH_MB, (rss_mb, peak_mb)
  code, after = server.request('/v1/models/taxi:predict', good)
  assert code == 200 and after == before
  grpc_after = tf.make_ndarray(stub.Predict(grpc_good, timeout=READ_TIMEOUT)
                               .outputs['outputs'])
  np.testing.assert_array_equal(grpc_after, grpc_before)
  channel.close()


# --- gRPC --------------------------------------------------------------------

class GrpcCases:
  """Generators of one adversarial gRPC call each: (method, request)."""

  def __init__(self, rng, rows):
    from tensorflow.core.framework import types_pb2  # pylint: disable=g-import-not-at-top
    self.rng = rng
    self.rows = rows
    self.dtypes = sorted(types_pb2.DataType.values()) + [-1, 30, 99, 200,
                                                         2**31 - 1]

  def _dims(self):
    rng = self.rng
    rank = rng.choice([0, 1, 1, 2, 3, 8, 33, 254, 255, 400])
    sizes = [0, 1, 2, 3, -1, -2**63, 2**31, 2**40, 2**62, 2**63 - 1,
             25_000_000, 200_001]
    return [rng.choice(sizes) if rng.random() < 0.3 else rng.randint(0, 4)
            for _ in range(rank)]

  def case(self):
    rng = self.rng
    kind = rng.randrange(12)
    if kind == 0:
      from tensorflow_serving.apis import get_model_metadata_pb2  # pylint: disable=g-import-not-at-top
      request = get_model_metadata_pb2.GetModelMetadataRequest()
      request.model_spec.name = rng.choice(['taxi', 'nope', ''])
      request.metadata_field.extend(rng.choice(
          [['signature_def'], [], ['x'], ['signature_def'] * 2]))
      return 'GetModelMetadata', request
    n = rng.choice([1, 3, 20, 1000]) if kind != 1 else 1
    request = helpers.raw_request(rng.sample(self.rows, min(n, len(self.rows)))
                           if n <= len(self.rows) else
                           [rng.choice(self.rows) for _ in range(n)])
    key = rng.choice(list(request.inputs))
    proto = request.inputs[key]
    if kind == 1:  # declared shapes, any size, with the values it had
      del proto.tensor_shape.dim[:]
      for d in self._dims():
        proto.tensor_shape.dim.add(size=d)
      if rng.random() < 0.5 and proto.tensor_content:
        proto.ClearField('tensor_content')
        proto.float_val.append(1.0)
    elif kind == 2:  # every DataType enum value
      proto.dtype = rng.choice(self.dtypes)
    elif kind == 3:  # tensor_content of any length
      proto.ClearField('string_val')
      proto.tensor_content = bytes(rng.randrange(256)
                                   for _ in range(rng.randint(0, 80)))
    elif kind == 4:  # unknown model / version / label / signature
      spec = request.model_spec
      choice = rng.randrange(4)
      if choice == 0:
        spec.name = rng.choice(['nope', '', 'taxi ', 'ταξί', 'x' * 1000,
                                'x' * 100_000, '中' * 30_000])
      elif choice == 1:
        spec.version.value = rng.choice([0, -1, 2, 2**63 - 1, -2**63])
      elif choice == 2:
        spec.version_label = rng.choice(['stable', '', 'canary', '\x00'])
      else:
        spec.signature_name = rng.choice(['nope', 'serving_default',
                                          'transform_features', '\x00'])
    elif kind == 5:  # a huge batch: within the message limit, or one
      # value that would fill it (refused: one value per element)
      rows = rng.choice([1200, 1500, 14000])
      if rows == 14000:
        for k in request.inputs:
          p = request.inputs[k]
          value = tf.make_ndarray(p).reshape(-1)[0]
          p.CopyFrom(tf.make_tensor_proto(value, shape=[rows]))
      else:
        request = helpers.raw_request([rng.choice(self.rows) for _ in range(rows)])
    elif kind == 6:  # NaN and infinities
      for k, t in helpers.RAW_TYPES.items():
        if t == 'float':
          values = tf.make_ndarray(request.inputs[k]).copy()
          values[rng.randrange(values.size)] = rng.choice(
              [np.nan, np.inf, -np.inf])
          request.inputs[k].CopyFrom(tf.make_tensor_proto(values))
    elif kind == 7:  # missing and unknown inputs
      if rng.random() < 0.5:
        del request.inputs[key]
      else:
        request.inputs[rng.choice(['extra', '', key + ' ', 'k' * 60_000])
                      ].CopyFrom(proto)
    elif kind == 8:  # value fields of the wrong count
      values = tf.make_ndarray(proto).reshape(-1)
      proto.ClearField('tensor_content')
      proto.ClearField('string_val')
      count = rng.choice([0, 2, values.size + 1, values.size * 3])
      if proto.dtype == 7:  # DT_STRING
        proto.string_val.extend([b'x'] * count)
      elif proto.dtype == 1:
        proto.float_val.extend([1.0] * count)
      else:
        proto.int64_val.extend([1] * count)
    elif kind == 9:
      request.output_filter.extend(rng.choice([['nope'], ['outputs'], ['']]))
    elif kind == 10:  # string values: random bytes, invalid UTF-8
      k = rng.choice(['company', 'payment_type'])
      p = request.inputs[k]
      count = len(p.string_val)
      del p.string_val[:]
      p.string_val.extend(bytes(rng.randrange(256)
                                for _ in range(rng.randint(0, 40)))
                          for _ in range(count))
    return 'Predict', request
