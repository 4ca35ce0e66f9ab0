"""TF Serving's REST API (v1) over a ModelRegistry.

Request and response bodies follow TF Serving 2.16: `instances` (row) or
`inputs` (columnar) in, `predictions` or `outputs` out, bytes as
{"b64": "..."}, NaN / Infinity tokens accepted for float inputs and written
for float outputs (rapidjson's kParseNanAndInfFlag in TF Serving), errors
as {"error": "..."} with 400/404/500 status codes.

This module is what a request means (routes, bodies, versions, labels);
JSON nested too deep for Python or for a tensor is a 400, not a crash.
How requests arrive over HTTP (methods, framing, limits, timeouts) is
serving/http_server.py's.
"""

import base64
import json
import re
from typing import Any, Dict, Optional, Tuple

from google.protobuf import json_format
import orjson

from serving import batching
from serving import http_server
from serving import inference
from serving import request_logging  # pylint: disable=unused-import
from serving.errors import BadRequest
from serving.errors import FailedPrecondition
from serving.errors import NotFound
from serving.model_registry import LoadedVersion
from serving.model_registry import ModelRegistry

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


def parse_body(raw: bytes) -> Any:
  """A request body as json.loads(raw, object_hook=_decode_b64) reads it.

  orjson parses a predict body ~4x faster, but refuses what TF Serving
  accepts (NaN / Infinity tokens, 1e400, a UTF-8 BOM, lone surrogates) and
  has no object_hook for {"b64": ...}: a body it refuses, or one that may
  hold a b64 object (its key may be spelled with \\u escapes), is read by
  json.loads, whose answer (value or error) it then is. Where both read a
  body, they agree, but for two kinds of input no tensor takes anyway:
  integer literals beyond 64 bits (orjson makes them floats: for a float
  input the same value, for others TF's 400 for a float instead of its 400
  for an out-of-range integer), and nesting between ~1000 levels (json's
  RecursionError, "nested too deeply") and 1024 (orjson's limit): orjson
  reads it, and an input nested so deep is still a 400 (`inference`: deeper
  than a tensor's 254 dimensions). Either parser bounds its own recursion:
  no body crashes the server.
  """
  if b'b64' not in raw and b'\\u' not in raw:
    try:
      return orjson.loads(raw)
    except orjson.JSONDecodeError:
      pass  # json.loads below: it accepts NaN and the like, or says why not
  return json.loads(raw, object_hook=_decode_b64)


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
  outputs = {k: _to_json(v.tolist()) if v.dtype.kind in 'OSU' else v.tolist()
             for k, v in results.items()}
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


_INT64_MAX = 2**63 - 1


def parse_version(text: Optional[str]) -> Optional[int]:
  """A URL's /versions/<n>: versions are int64, as in TF Serving."""
  if text is None:
    return None
  if len(text) > 19 or int(text) > _INT64_MAX:
    shown = text if len(text) <= 30 else text[:30] + '...'
    raise BadRequest(f'Failed to convert version: {shown} to numeric.')
  return int(text)


def route(method: str, path: str) -> Tuple[str, Optional[int],
                                         Optional[str], str]:
  """(model name, version, label, what: '' | /metadata | :predict ...)."""
  match = _MODEL_PATH.match(path.split('?')[0])
  if not match:
    raise NotFound(f'Malformed request: {method} {path[:200]}')
  return (match['name'], parse_version(match['version']), match['label'],
          match['rest'] or '')


def make_answer(registry: ModelRegistry,
                batcher: Optional[batching.Batcher] = None,
                request_logger: Optional[
                    'request_logging.RequestLogger'] = None
               ) -> http_server.Answer:
  """The API over `registry`: GET (and HEAD) status and metadata, POST
  :predict (:classify / :regress refused as TF Serving refuses them)."""

  def answer(method: str, path: str, raw: Optional[bytes]) -> Dict[str, Any]:
    name, version, label, rest = route(method, path)
    if method != 'POST':
      if rest == '':
        return status_body(registry, name, version, label)
      if rest == '/metadata':
        return metadata_body(registry.resolve(name, version, label), name)
      raise BadRequest(f'Use POST for {rest}')
    if rest not in (':predict', ':classify', ':regress'):
      raise BadRequest(f'Use GET for {path[:200]}')
    try:
      body = parse_body(raw or b'null')
    except RecursionError as e:
      raise BadRequest('JSON Parse error: nested too deeply') from e
    except ValueError as e:
      raise BadRequest(f'JSON Parse error: {str(e)[:200]}') from e
    loaded = registry.resolve(name, version, label)
    if rest != ':predict':
      check_classify_or_regress(loaded, body, rest[1:])
    return predict(loaded, body, batcher, request_logger, name)
  return answer


def make_server(registry: ModelRegistry, address: Tuple[str, int],
                max_request_bytes: int,
                batcher: Optional[batching.Batcher] = None,
                request_logger: Optional[
                    'request_logging.RequestLogger'] = None,
                timeout_seconds: float = 30.0,
                max_connections: int = http_server.DEFAULT_MAX_CONNECTIONS
                ) -> http_server.HTTPServer:
  """The REST API server, bound to `address` (port 0: a free one)."""
  return http_server.make_server(
      make_answer(registry, batcher, request_logger), address,
      max_request_bytes, timeout_seconds, max_connections)
