"""REST bodies through orjson read and write as json's did (rest_api.parse_body,
http_server.dumps): the same values, the same refusals, NaN both ways."""

import json
import math

import pytest

from serving import http_server
from serving import rest_api
from serving.errors import BadRequest


def _json_reads(raw: bytes):
  try:
    return 'ok', json.loads(raw, object_hook=rest_api._decode_b64)  # pylint: disable=protected-access
  except (ValueError, RecursionError, BadRequest) as e:
    return 'error', type(e)


def _parse_body_reads(raw: bytes):
  try:
    return 'ok', rest_api.parse_body(raw)
  except (ValueError, RecursionError, BadRequest) as e:
    return 'error', type(e)


@pytest.mark.parametrize('raw', [
    b'{"instances": [{"fare": 9.25, "trip_seconds": 720, "company": "x"}]}',
    b'{"inputs": {"a": [1, 2.5, -0.0, 1e-7, 1E5]}, "signature_name": ""}',
    b'{"instances": [NaN, Infinity, -Infinity]}',  # orjson refuses: json reads
    b'{"instances": [1e400]}', b'\xef\xbb\xbf{"a": 1}', b'"\\ud800"',
    b'{"instances": [{"b64": "aGk="}]}', b'{"a": {"\\u0062\\u0036\\u0034": "aGk="}}',
    b'{"instances": [{"b64": "not base64!"}]}',
    b'{"a": 1, "a": 2}', b'{"a": "caf\xc3\xa9"}', b'{"a": "caf\\u00e9"}',
    b'[9223372036854775807, -9223372036854775808, 18446744073709551615]',
    b'{not json', b'[1,]', b'01', b'"a\x01b"', b'\xff\xfe{}', b'', b'null',
    b'[' * 50000 + b']' * 50000, b'[' * 500 + b']' * 500,
])
def test_parse_body_reads_as_json_loads(raw):
  expected, got = _json_reads(raw), _parse_body_reads(raw)
  if expected[0] == 'ok' and got[0] == 'ok':
    assert repr(got[1]) == repr(expected[1])  # NaN != NaN, and ints stay ints
  else:
    assert got == expected


@pytest.mark.parametrize('body', [
    {'predictions': [[0.7492997646331787], [1e-05], [3.0]]},
    {'predictions': [[math.nan], [math.inf], [-math.inf]]},  # json's tokens
    {'outputs': {'a': ['caf\u00e9', {'b64': 'aGk='}], 'b': [1, 2 ** 70]}},
    {'error': 'Input \'fare\': "quoted" \\ and null'},
    {'model_version_status': [{'version': '1', 'state': 'AVAILABLE'}]},
    {'deep': [[[[[[[[1]]]]]]]] * 3, 'none': None},
])
def test_dumps_writes_what_json_dumps_means(body):
  data = http_server.dumps(body)
  assert repr(json.loads(data)) == repr(json.loads(json.dumps(body)))
  if any(isinstance(v, float) and not math.isfinite(v)
         for row in body.get('predictions', []) for v in row):
    assert b'NaN' in data and b'Infinity' in data
