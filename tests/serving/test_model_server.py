"""Contract tests of `python -m serving` against a real trained model.

Each test talks to a real server process on a free loopback port; the
process is always stopped at the end of the module.
"""

import base64
import json
import math
import os
import shutil
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
import tensorflow as tf

from models import model
from tests import helpers



@pytest.mark.integration
def test_status_of_model_version_and_unknowns(server):
  ok = {'model_version_status': [{'version': '1', 'state': 'AVAILABLE',
                                  'status': {'error_code': 'OK',
                                             'error_message': ''}}]}
  assert server.request('/v1/models/taxi') == (200, ok)
  assert server.request('/v1/models/taxi/versions/1') == (200, ok)
  code, body = server.request('/v1/models/nope')
  assert code == 404 and 'nope' in body['error']
  code, body = server.request('/v1/models/taxi/versions/99')
  assert code == 404 and '99' in body['error']
  code, body = server.request('/v1/models/taxi/labels/stable')
  assert code == 404 and 'stable' in body['error']


@pytest.mark.integration
def test_metadata_lists_the_signatures(server):
  code, body = server.request('/v1/models/taxi/metadata')
  assert code == 200
  assert body['model_spec'] == {'name': 'taxi', 'signature_name': '',
                                'version': '1'}
  defs = body['metadata']['signature_def']['signature_def']
  assert {'serving_default', model.RAW_SIGNATURE} <= set(defs)
  assert set(defs[model.RAW_SIGNATURE]['inputs']) == set(
      helpers.RAW_TYPES)


@pytest.mark.integration
def test_predict_rows_and_columns_equal_in_process(server, trained_model,
                                                   eval_rows):
  rows = eval_rows[:20]
  expected = helpers.in_process(trained_model.serving_model_dir, rows)
  schema = helpers.load_schema()
  b64 = [{'b64': base64.b64encode(helpers.to_example(
      r, schema, drop_label=True).SerializeToString()).decode()} for r in rows]
  code, body = server.request('/v1/models/taxi:predict', {'instances': b64})
  assert code == 200, body
  np.testing.assert_allclose(body['predictions'], expected, rtol=1e-5)
  code, body = server.request('/v1/models/taxi/versions/1:predict',
                              {'inputs': {'examples': b64}})
  assert code == 200, body
  np.testing.assert_allclose(body['outputs'], expected, rtol=1e-5)
  raw = helpers.raw_rows(rows)
  code, body = server.request('/v1/models/taxi:predict', {
      'signature_name': model.RAW_SIGNATURE, 'instances': raw})
  assert code == 200, body
  np.testing.assert_allclose(body['predictions'], expected, rtol=1e-5)


@pytest.mark.integration
@pytest.mark.parametrize('raw, expect', [
    (b'{not json', 'JSON Parse error'),
    (b'[]', 'JSON object'),
    (b'{}', 'exactly one of'),
    (b'{"instances": []}', 'non-empty'),
    (b'{"instances": [{"fare": 1.0}], "signature_name": "serving_raw"}',
     'Missing input'),
    (b'{"instances": ["not base64 bytes"]}', 'Could not parse'),
    (b'{"signature_name": "nope", "instances": [1]}', 'nope'),
    (b'{"instances": [{"b64": "%%%"}]}', 'b64'),
])
def test_malformed_requests_get_400_with_a_message(server, raw, expect):
  code, body = server.request('/v1/models/taxi:predict', raw=raw)
  assert code == 400, body
  assert expect in body['error'], body


@pytest.mark.integration
def test_wrong_dtype_and_oversized_request_are_400(server, eval_rows):
  row = helpers.raw_rows(eval_rows[:1])[0]
  row['trip_miles'] = 'far'
  code, body = server.request('/v1/models/taxi:predict', {
      'signature_name': model.RAW_SIGNATURE, 'instances': [row]})
  assert code == 400 and 'trip_miles' in body['error'], body
  code, body = server.request('/v1/models/taxi:predict',
                              raw=b'{"instances": [' + b'1,' * 150000 + b'1]}')
  assert code == 400 and 'exceeds' in body['error']


@pytest.mark.integration
def test_server_survives_hundreds_of_bad_requests(server, trained_model,
                                                  eval_rows):
  for i in range(300):
    code, _ = server.request('/v1/models/taxi:predict',
                             raw=json.dumps({'instances': [i]}).encode()[:-i % 7 or None])
    assert code == 400
  code, body = server.request('/v1/models/taxi:predict', {
      'signature_name': model.RAW_SIGNATURE,
      'instances': helpers.raw_rows(eval_rows[:3])})
  assert code == 200
  np.testing.assert_allclose(body['predictions'],
                             helpers.in_process(trained_model.serving_model_dir, eval_rows[:3]),
                             rtol=1e-5)


@pytest.mark.integration
def test_new_version_is_picked_up_and_corrupt_one_refused(
    server, base_path, trained_model):
  helpers.copy_version(trained_model.serving_model_dir, base_path, 2)
  assert helpers.wait_for(lambda: server.request('/v1/models/taxi')[1][
      'model_version_status'][0]['version'] == '2')
  corrupt = os.path.join(base_path, '.incoming-3')
  shutil.copytree(trained_model.serving_model_dir, corrupt)
  with open(os.path.join(corrupt, 'saved_model.pb'), 'wb') as f:
    f.write(b'not a saved model')
  os.rename(corrupt, os.path.join(base_path, '3'))
  time.sleep(2)
  code, body = server.request('/v1/models/taxi')
  assert code == 200
  assert [s['version'] for s in body['model_version_status']] == ['2']
  code, _ = server.request('/v1/models/taxi/versions/3')
  assert code == 404


@pytest.mark.integration
@pytest.mark.parametrize('method', ['classify', 'regress'])
def test_classify_and_regress_need_matching_signatures(server, method):
  """The taxi model exports predict signatures, as TF2 always does: 400."""
  code, body = server.request(f'/v1/models/taxi:{method}',
                              {'examples': [{'fare': 1.0}]})
  assert code == 400
  assert f'tensorflow/serving/{method}' in body['error']
  assert 'tensorflow/serving/predict' in body['error']


# --- gRPC, through the official tensorflow_serving.apis stubs ---------------

@pytest.fixture(scope='module')
def grpc_stubs(server):
  import grpc  # pylint: disable=g-import-not-at-top
  from tensorflow_serving.apis import model_service_pb2_grpc  # pylint: disable=g-import-not-at-top
  from tensorflow_serving.apis import prediction_service_pb2_grpc  # pylint: disable=g-import-not-at-top
  channel = grpc.insecure_channel(server.grpc_address)
  yield (prediction_service_pb2_grpc.PredictionServiceStub(channel),
         model_service_pb2_grpc.ModelServiceStub(channel))
  channel.close()


@pytest.mark.integration
def test_grpc_status_matches_rest(server, grpc_stubs):
  from tensorflow_serving.apis import get_model_status_pb2  # pylint: disable=g-import-not-at-top
  _, model_service = grpc_stubs
  request = get_model_status_pb2.GetModelStatusRequest()
  request.model_spec.name = 'taxi'
  response = model_service.GetModelStatus(request, timeout=30)
  rest = server.request('/v1/models/taxi')[1]['model_version_status']
  assert [str(s.version) for s in response.model_version_status] == [
      s['version'] for s in rest]
  assert all(s.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
             for s in response.model_version_status)


@pytest.mark.integration
def test_grpc_predict_equals_in_process(grpc_stubs, trained_model, eval_rows):
  prediction, _ = grpc_stubs
  rows = eval_rows[:10]
  response = prediction.Predict(helpers.raw_request(rows), timeout=30)
  got = tf.make_ndarray(response.outputs['outputs'])
  np.testing.assert_allclose(got, helpers.in_process(trained_model.serving_model_dir, rows), rtol=1e-5)
  assert response.model_spec.name == 'taxi'
  assert response.model_spec.signature_name == model.RAW_SIGNATURE
  assert response.model_spec.version.value >= 1


@pytest.mark.integration
def test_grpc_metadata_has_signature_defs(grpc_stubs):
  from tensorflow_serving.apis import get_model_metadata_pb2  # pylint: disable=g-import-not-at-top
  prediction, _ = grpc_stubs
  request = get_model_metadata_pb2.GetModelMetadataRequest()
  request.model_spec.name = 'taxi'
  request.metadata_field.append('signature_def')
  response = prediction.GetModelMetadata(request, timeout=30)
  signature_map = get_model_metadata_pb2.SignatureDefMap()
  response.metadata['signature_def'].Unpack(signature_map)
  assert {'serving_default', model.RAW_SIGNATURE} <= set(
      signature_map.signature_def)


@pytest.mark.integration
def test_grpc_errors_carry_tf_serving_status_codes(grpc_stubs, eval_rows):
  import grpc  # pylint: disable=g-import-not-at-top
  prediction, _ = grpc_stubs
  with pytest.raises(grpc.RpcError) as err:
    prediction.Predict(helpers.raw_request(eval_rows[:1], name='nope'), timeout=30)
  assert err.value.code() == grpc.StatusCode.NOT_FOUND
  with pytest.raises(grpc.RpcError) as err:
    prediction.Predict(helpers.raw_request(eval_rows[:1], version=999), timeout=30)
  assert err.value.code() == grpc.StatusCode.NOT_FOUND
  request = helpers.raw_request(eval_rows[:1])
  request.inputs['trip_miles'].CopyFrom(tf.make_tensor_proto(['far']))
  with pytest.raises(grpc.RpcError) as err:
    prediction.Predict(request, timeout=30)
  assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
  assert 'trip_miles' in err.value.details()
  # and the server still answers
  assert prediction.Predict(helpers.raw_request(eval_rows[:2]), timeout=30).outputs


# --- the client, REST and gRPC ----------------------------------------------

@pytest.mark.integration
def test_client_rest_and_grpc_agree_with_in_process(server, trained_model,
                                                    eval_rows):
  from serving import client  # pylint: disable=g-import-not-at-top
  trips = [{k: r[k] for k in helpers.RAW_TYPES}
           for r in eval_rows[:5]]
  # (5, 1): one answer row, [P(big tip)], per trip, as predict returns them
  expected = helpers.in_process(trained_model.serving_model_dir, eval_rows[:5])
  rest = client.RestClient(server.url, 'taxi', helpers.TAXI).predict(trips)
  grpc_client = client.GrpcClient(server.grpc_address, 'taxi', helpers.TAXI)
  try:
    via_grpc = grpc_client.predict(trips)
  finally:
    grpc_client.close()
  np.testing.assert_allclose(rest, expected, rtol=1e-5)
  np.testing.assert_allclose(via_grpc, expected, rtol=1e-5)


@pytest.mark.integration
def test_b64_example_gets_the_raw_signatures_answer(server):
  """The README's curl of a b64 tf.Example (serving_default) answers as
  serving_raw does for the same trip, missing values included."""
  from serving import client  # pylint: disable=g-import-not-at-top
  sample = helpers.TAXI.sample
  partial = dict(sample, company='', trip_seconds=None)
  for trip in (sample, partial):
    result = subprocess.run(
        [sys.executable, '-m', 'serving.client', '--problem', 'taxi',
         '--example_b64', '--instance', json.dumps(trip)], cwd=helpers.REPO,
        capture_output=True, text=True, timeout=120, check=True)
    body = json.dumps({'instances': [{'b64': result.stdout.strip()}]})
    request = urllib.request.Request(
        f'{server.url}/v1/models/taxi:predict', data=body.encode())
    with urllib.request.urlopen(request, timeout=30) as response:
      [via_example] = json.loads(response.read())['predictions']
    [via_raw] = client.RestClient(server.url, 'taxi',
                                  helpers.TAXI).predict([trip])
    assert len(via_example) == len(via_raw) == 1, (via_example, via_raw)
    assert math.isclose(via_example[0], via_raw[0], rel_tol=1e-5), (
        trip, via_example, via_raw)


@pytest.mark.integration
def test_grpc_client_command_runs_without_tensorflow(server):
  """`python -m serving.client --grpc` loads TF Serving's protos without
  TensorFlow (serving/protos.py): no TF/CUDA banner, no TF import."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='0')  # a banner would show
  result = subprocess.run(
      [sys.executable, '-X', 'importtime', '-m', 'serving.client', '--grpc',
       server.grpc_address], cwd=helpers.REPO, env=env, capture_output=True,
      text=True, timeout=120, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'via gRPC' in result.stdout
  imported = [line.rsplit('|', 1)[-1].strip()
              for line in result.stderr.splitlines() if '|' in line]
  assert 'tensorflow.core.framework.tensor_pb2' in imported
  assert 'tensorflow' not in imported
  assert not [m for m in imported if m.startswith('tensorflow.python')]
  others = [line for line in result.stderr.splitlines()
            if not line.startswith('import time:')]
  assert not [l for l in others if 'tensorflow' in l.lower() or
              'cuda' in l.lower()], others


def test_client_rejects_unknown_features():
  from serving import client  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match='tip_percent'):
    client.raw_instance(helpers.TAXI, {'fare': 3.0, 'tip_percent': 20})
