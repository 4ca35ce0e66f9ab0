"""serving.protos: TF's proto modules without TensorFlow, and TF after them.

Each case runs in a fresh interpreter: whether TensorFlow is imported yet
is what the module's behaviour depends on.
"""

import os
import subprocess
import sys

from tests import helpers


def _run(code: str) -> subprocess.CompletedProcess:
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='0')  # let a banner show
  return subprocess.run([sys.executable, '-c', code], cwd=helpers.REPO,
                        env=env, capture_output=True, text=True, timeout=300,
                        check=False)


def test_client_protos_load_without_tensorflow_then_tensorflow_works():
  result = _run('''
import sys
from models import problem as problems
from serving import client, tensors
taxi = problems.load('taxi')
request = client.GrpcClient('127.0.0.1:1', taxi.name, taxi).request(
    [taxi.sample] * 3)
assert request.model_spec.name == 'taxi'
assert 'tensorflow' not in sys.modules, 'TensorFlow was imported'
assert not [m for m in sys.modules if m.startswith('tensorflow.python')]
tensors.to_array(request.inputs['fare'])
print('IMPORTING TENSORFLOW', file=sys.stderr, flush=True)

import numpy as np
import tensorflow as tf  # the same process: its __init__ runs now
assert sys.modules['tensorflow'] is tf and hasattr(tf, 'constant')
made = tf.make_tensor_proto(np.array([1.5, 2.5], np.float32))
assert type(made) is tensors.tensor_pb2.TensorProto  # one class a message
request.inputs['fare'].CopyFrom(made)  # TF's messages go into ours
np.testing.assert_array_equal(tf.make_ndarray(request.inputs['fare']),
                              [1.5, 2.5])  # and ours into TF
from tensorflow.core.framework import types_pb2
assert types_pb2 is tensors.types_pb2
assert float(tf.reduce_sum(tf.constant([1.0, 2.0]))) == 3.0
print('ok')
''')
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.strip() == 'ok'
  before_tf = result.stderr.split('IMPORTING TENSORFLOW')[0]
  assert 'tensorflow' not in before_tf.lower(), before_tf  # no banner


def test_protos_after_tensorflow_are_tensorflows_own():
  result = _run('''
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2
from serving import protos, tensors
assert tensors.tensor_pb2 is tensor_pb2
predict_pb2 = protos.load('tensorflow_serving.apis.predict_pb2')
request = predict_pb2.PredictRequest()
request.inputs['x'].CopyFrom(tf.make_tensor_proto([1, 2]))
assert list(tf.make_ndarray(request.inputs['x'])) == [1, 2]
print('ok')
''')
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.strip() == 'ok'


def test_only_proto_modules_are_loaded():
  result = _run('''
import sys
from serving import protos
try:
  protos.load('tensorflow.python.framework.dtypes')
except ValueError as e:
  print('refused' if 'not a proto module' in str(e) else repr(e))
assert 'tensorflow' not in sys.modules
''')
  assert result.stdout.strip() == 'refused', (result.stdout,
                                              result.stderr[-3000:])
