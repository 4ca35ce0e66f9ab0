"""Client for the model server (REST or gRPC), from plain instance dicts.

    python -m serving.client                         # the problem's sample, REST
    python -m serving.client --grpc 127.0.0.1:8500 --instance '{"fare": 12.5, ...}'
    python -m serving.client --problem penguin       # another problem's model
    python -m serving.client --example_b64   # the instance as a b64 tf.Example, for curl

An instance is a dict of raw feature values keyed as the problem names them
(models/<problem>/problem.py); missing features are sent as missing ('' for
strings, NaN for floats, 0 for integers), exactly as the `serving_raw`
signature expects. An answer is one row of the model's `outputs`: what it
means is the problem's task's (models/tasks.py).
"""

import http.client
import json
import math
import sys
import urllib.error
import urllib.request
from typing import Dict, List, Mapping, Optional

from models import features
from models import problem as problems
from project import cli


def _missing(value: object) -> bool:
  """A trip's missing value: absent, None or ''."""
  return value is None or value == ''


def raw_instance(problem: problems.Problem,
                 trip: Mapping[str, object]) -> Dict[str, object]:
  """An instance dict -> one `serving_raw` instance with every feature
  typed (the label's own columns, if present, are left out)."""
  unknown = sorted(set(trip) - set(problem.raw_types) -
                   set(problem.label.columns))
  if unknown:
    raise ValueError(f'unknown features {unknown}; expected '
                     f'{sorted(problem.raw_types)}')
  instance = {}
  for key, kind in problem.raw_types.items():
    value = trip.get(key)
    missing = _missing(value)
    if kind == 'string':
      instance[key] = '' if missing else str(value)
    elif kind == 'float':
      instance[key] = math.nan if missing else float(value)
    else:
      instance[key] = 0 if missing else int(float(value))
  return instance


def example_b64(problem: problems.Problem,
                trip: Mapping[str, object]) -> str:
  """`trip` as a serialized tf.Example, base64: what `serving_default` takes
  over REST as {"b64": ...}. A missing value is an absent feature, as in a
  CSV row ExampleGen read; no TensorFlow import (serving/protos.py).
  """
  import base64  # pylint: disable=g-import-not-at-top
  from serving import protos  # pylint: disable=g-import-not-at-top
  example_pb2 = protos.load('tensorflow.core.example.example_pb2')
  instance = raw_instance(problem, trip)  # its checks and typed values
  example = example_pb2.Example()
  for key, kind in problem.raw_types.items():
    if _missing(trip.get(key)):
      continue
    feature = example.features.feature[key]
    if kind == 'string':
      feature.bytes_list.value.append(instance[key].encode('utf-8'))
    elif kind == 'float':
      feature.float_list.value.append(instance[key])
    else:
      feature.int64_list.value.append(instance[key])
  return base64.b64encode(
      example.SerializeToString(deterministic=True)).decode('ascii')


def _needed(problem: Optional[problems.Problem]) -> problems.Problem:
  if problem is None:
    raise ValueError('a client that sends instances needs the problem '
                     '(whose raw features they are)')
  return problem


class HttpError(RuntimeError):
  """The server answered with an error status (a RuntimeError, as before).

  The message is `HTTP <status>: <the body's "error">` for TF Serving's
  JSON error body; for any other body (a proxy's HTML page, a truncated
  answer) its first BODY_SHOWN characters, so the status is never hidden
  behind a JSON decoding error.
  """
  BODY_SHOWN = 200

  def __init__(self, status: int, body: str):
    self.status, self.body = status, body
    try:
      detail = json.loads(body)['error']
    except (ValueError, TypeError, KeyError, IndexError):
      detail = ' '.join(body[:self.BODY_SHOWN].split()) or '(empty body)'
    super().__init__(f'HTTP {status}: {detail}')

  @classmethod
  def of(cls, error: urllib.error.HTTPError) -> 'HttpError':
    try:
      body = error.read().decode('utf-8', 'replace')
    except (OSError, http.client.HTTPException):  # cut short
      body = ''
    return cls(error.code, body)


class RestClient:
  """TF Serving REST API client.

  With `label` every call addresses `/v1/models/{m}/labels/{label}`: how
  clients ask for `stable` (or `canary`) instead of whichever version is
  newest (delivery.cd moves the labels). `problem`: whose instances it sends
  (its raw features); only `predict` needs it.
  """

  def __init__(self, url: str, model_name: str,
               problem: Optional[problems.Problem] = None,
               timeout: float = 30, label: Optional[str] = None):
    self.url, self.timeout = url.rstrip('/'), timeout
    self.problem, self.model_name = problem, model_name
    self.label = label

  def _call(self, path: str, body=None):
    data = json.dumps(body).encode() if body is not None else None
    model = self.model_name + (f'/labels/{self.label}' if self.label else '')
    request = urllib.request.Request(f'{self.url}/v1/models/{model}{path}',
                                     data=data)
    try:
      with urllib.request.urlopen(request, timeout=self.timeout) as response:
        return json.loads(response.read())
    except urllib.error.HTTPError as e:
      raise HttpError.of(e) from e

  def status(self) -> List[Dict]:
    return self._call('')['model_version_status']

  def predict(self, trips: List[Mapping[str, object]]) -> List[List[float]]:
    """The model's answer per instance: its `outputs` row (a list)."""
    body = {'signature_name': features.RAW_SIGNATURE,
            'instances': [raw_instance(_needed(self.problem), t)
                          for t in trips]}
    return [p if isinstance(p, list) else [p]
            for p in self._call(':predict', body)['predictions']]


class GrpcClient:
  """TF Serving gRPC PredictionService client (`label`:
  ModelSpec.version_label; `problem` as for RestClient)."""

  def __init__(self, address: str, model_name: str,
               problem: Optional[problems.Problem] = None,
               timeout: float = 30, label: Optional[str] = None):
    import grpc  # pylint: disable=g-import-not-at-top
    from serving import protos  # pylint: disable=g-import-not-at-top
    prediction_service_pb2_grpc = protos.load(
        'tensorflow_serving.apis.prediction_service_pb2_grpc')
    self._channel = grpc.insecure_channel(address)
    self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
    self.problem, self.model_name = problem, model_name
    self.timeout, self.label = timeout, label

  def predict(self, trips: List[Mapping[str, object]]) -> List[List[float]]:
    """The model's answer per instance: its `outputs` row (a list)."""
    return self.send(self.request(trips))

  def request(self, trips: List[Mapping[str, object]]):
    """The PredictRequest for `trips` on the `serving_raw` signature."""
    from serving import protos  # pylint: disable=g-import-not-at-top
    from serving import tensors  # pylint: disable=g-import-not-at-top
    predict_pb2 = protos.load('tensorflow_serving.apis.predict_pb2')
    types_pb2 = tensors.types_pb2
    problem = _needed(self.problem)
    instances = [raw_instance(problem, t) for t in trips]
    request = predict_pb2.PredictRequest()
    request.model_spec.name = self.model_name
    request.model_spec.signature_name = features.RAW_SIGNATURE
    if self.label:
      request.model_spec.version_label = self.label
    for key, kind in problem.raw_types.items():
      request.inputs[key].CopyFrom(tensors.to_proto(
          [i[key] for i in instances],
          dtype=types_pb2.DataType.Value(features.DATATYPE_NAMES[kind])))
    return request

  def send(self, request) -> List[List[float]]:
    """Sends a PredictRequest; the `outputs` row of each instance."""
    from serving import tensors  # pylint: disable=g-import-not-at-top
    response = self._stub.Predict(request, timeout=self.timeout)
    return [[float(v) for v in row.reshape(-1)]
            for row in tensors.to_array(response.outputs['outputs'])]

  def close(self) -> None:
    self._channel.close()


def add_instance_flags(parser, what: str) -> None:
  """--problem, --model_name and --instance, as the client and the demo
  take them: the model is the problem's unless named, the instance its
  sample unless given."""
  problems.add_flag(parser, what)
  parser.add_argument('--model_name', default=None,
                      help='served model (default: the problem\'s name)')
  parser.add_argument('--instance', '--trip', dest='instance', default=None,
                      help="an instance as a JSON object (default: the "
                      "problem's sample)")


def main(argv=None) -> int:
  parser = cli.ArgumentParser(prog='python -m serving.client',
                              description=__doc__.split('\n\n')[0],
                              underscores=True)
  target = parser.add_mutually_exclusive_group()
  target.add_argument('--rest', default='http://127.0.0.1:8501',
                      help='REST base URL (default: %(default)s)')
  target.add_argument('--grpc', default=None, help='gRPC address host:port')
  add_instance_flags(parser, 'whose instances and answers')
  parser.add_argument('--example_b64', action='store_true',
                      help='print the instance as a base64 serialized '
                      'tf.Example (the serving_default signature\'s input) '
                      'and exit')
  args = parser.parse_args(argv)
  problem = problems.load(args.problem)
  instance = json.loads(args.instance) if args.instance else problem.sample
  if args.example_b64:
    print(example_b64(problem, instance))
    return 0
  model_name = args.model_name or problem.name
  client = (GrpcClient(args.grpc, model_name, problem) if args.grpc
            else RestClient(args.rest, model_name, problem))
  [answer] = client.predict([instance])
  print(f'{problem.question} = {problem.task.describe(answer, problem.label)}'
        f'  via {"gRPC " + args.grpc if args.grpc else "REST " + args.rest}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
