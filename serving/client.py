"""Client for the model server (REST or gRPC), from plain trip dicts.

    python -m serving.client                              # a sample trip, REST
    python -m serving.client --grpc 127.0.0.1:8500 --trip '{"fare": 12.5, ...}'
    python -m serving.client --example_b64   # the trip as a b64 tf.Example, for curl

A trip is a dict of raw feature values keyed as in models/features.py;
missing features are sent as missing ('' for strings, NaN for floats, 0 for
integer categories), exactly as the `serving_raw` signature expects.
"""

import json
import math
import sys
import urllib.error
import urllib.request
from typing import Dict, List, Mapping, Optional

from models import features
from project import cli
from project import paths

SAMPLE_TRIP = {
    'trip_miles': 2.1, 'fare': 9.25, 'trip_seconds': 720,
    'pickup_latitude': 41.892, 'pickup_longitude': -87.627,
    'dropoff_latitude': 41.880, 'dropoff_longitude': -87.642,
    'payment_type': 'Credit Card', 'company': 'Taxi Affiliation Services',
    'trip_start_hour': 19, 'trip_start_day': 6, 'trip_start_month': 5,
    'pickup_community_area': 8, 'dropoff_community_area': 28,
}


def _missing(value: object) -> bool:
  """A trip's missing value: absent, None or ''."""
  return value is None or value == ''


def raw_instance(trip: Mapping[str, object]) -> Dict[str, object]:
  """A trip dict -> one `serving_raw` instance with every feature typed."""
  unknown = sorted(set(trip) - set(features.RAW_FEATURE_TYPES) -
                   {features.LABEL_KEY})
  if unknown:
    raise ValueError(f'unknown features {unknown}; expected '
                     f'{sorted(features.RAW_FEATURE_TYPES)}')
  instance = {}
  for key, kind in features.RAW_FEATURE_TYPES.items():
    value = trip.get(key)
    missing = _missing(value)
    if kind == 'string':
      instance[key] = '' if missing else str(value)
    elif kind == 'float':
      instance[key] = math.nan if missing else float(value)
    else:
      instance[key] = 0 if missing else int(float(value))
  return instance


def example_b64(trip: Mapping[str, object]) -> str:
  """`trip` as a serialized tf.Example, base64: what `serving_default` takes
  over REST as {"b64": ...}. A missing value is an absent feature, as in a
  CSV row ExampleGen read; no TensorFlow import (serving/protos.py).
  """
  import base64  # pylint: disable=g-import-not-at-top
  from serving import protos  # pylint: disable=g-import-not-at-top
  example_pb2 = protos.load('tensorflow.core.example.example_pb2')
  instance = raw_instance(trip)  # its checks and typed values
  example = example_pb2.Example()
  for key, kind in features.RAW_FEATURE_TYPES.items():
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


class RestClient:
  """TF Serving REST API client.

  With `label` every call addresses `/v1/models/{m}/labels/{label}`: how
  clients ask for `stable` (or `canary`) instead of whichever version is
  newest (delivery.cd moves the labels).
  """

  def __init__(self, url: str, model_name: str = 'taxi', timeout: float = 30,
               label: Optional[str] = None):
    self.url, self.model_name, self.timeout = url.rstrip('/'), model_name, timeout
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
      raise RuntimeError(f'HTTP {e.code}: {json.loads(e.read())["error"]}') from e

  def status(self) -> List[Dict]:
    return self._call('')['model_version_status']

  def predict(self, trips: List[Mapping[str, object]]) -> List[float]:
    body = {'signature_name': features.RAW_SIGNATURE,
            'instances': [raw_instance(t) for t in trips]}
    return [p[0] for p in self._call(':predict', body)['predictions']]


class GrpcClient:
  """TF Serving gRPC PredictionService client (`label`: ModelSpec.version_label)."""

  def __init__(self, address: str, model_name: str = 'taxi', timeout: float = 30,
               label: Optional[str] = None):
    import grpc  # pylint: disable=g-import-not-at-top
    from serving import protos  # pylint: disable=g-import-not-at-top
    prediction_service_pb2_grpc = protos.load(
        'tensorflow_serving.apis.prediction_service_pb2_grpc')
    self._channel = grpc.insecure_channel(address)
    self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
    self.model_name, self.timeout, self.label = model_name, timeout, label

  def predict(self, trips: List[Mapping[str, object]]) -> List[float]:
    return self.send(self.request(trips))

  def request(self, trips: List[Mapping[str, object]]):
    """The PredictRequest for `trips` on the `serving_raw` signature."""
    from serving import protos  # pylint: disable=g-import-not-at-top
    from serving import tensors  # pylint: disable=g-import-not-at-top
    predict_pb2 = protos.load('tensorflow_serving.apis.predict_pb2')
    types_pb2 = tensors.types_pb2
    instances = [raw_instance(t) for t in trips]
    request = predict_pb2.PredictRequest()
    request.model_spec.name = self.model_name
    request.model_spec.signature_name = features.RAW_SIGNATURE
    if self.label:
      request.model_spec.version_label = self.label
    for key, kind in features.RAW_FEATURE_TYPES.items():
      request.inputs[key].CopyFrom(tensors.to_proto(
          [i[key] for i in instances],
          dtype=types_pb2.DataType.Value(features.DATATYPE_NAMES[kind])))
    return request

  def send(self, request) -> List[float]:
    """Sends a PredictRequest; the probability of a big tip per row."""
    from serving import tensors  # pylint: disable=g-import-not-at-top
    response = self._stub.Predict(request, timeout=self.timeout)
    return [float(p[0]) for p in tensors.to_array(response.outputs['outputs'])]

  def close(self) -> None:
    self._channel.close()


def main(argv=None) -> int:
  parser = cli.ArgumentParser(prog='python -m serving.client',
                              description=__doc__.split('\n\n')[0],
                              underscores=True)
  target = parser.add_mutually_exclusive_group()
  target.add_argument('--rest', default='http://127.0.0.1:8501',
                      help='REST base URL (default: %(default)s)')
  target.add_argument('--grpc', default=None, help='gRPC address host:port')
  parser.add_argument('--model_name', default=paths.MODEL_NAME)
  parser.add_argument('--trip', default=None,
                      help='trip as a JSON object (default: a sample trip)')
  parser.add_argument('--example_b64', action='store_true',
                      help='print the trip as a base64 serialized tf.Example '
                      '(the serving_default signature\'s input) and exit')
  args = parser.parse_args(argv)
  trip = json.loads(args.trip) if args.trip else SAMPLE_TRIP
  if args.example_b64:
    print(example_b64(trip))
    return 0
  client = (GrpcClient(args.grpc, args.model_name) if args.grpc
            else RestClient(args.rest, args.model_name))
  probability = client.predict([trip])[0]
  print(f'P(tip > {features.TIP_FRACTION:.0%} of fare) = {probability:.4f}  '
        f'via {"gRPC " + args.grpc if args.grpc else "REST " + args.rest}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
