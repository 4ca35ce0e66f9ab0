"""How raw values are typed and named, whatever the problem.

A problem (models/problem.py) declares each raw feature's dtype ('float',
'int', 'string'); these tables say what that dtype is in TensorFlow and in a
tf.Example, and how the model's signatures and tf.Transform's outputs are
named. Pure Python, like the problems: the model server and its clients read
it without TensorFlow.
"""

from typing import Dict, List

# The TF DataType each dtype is fed as, by its name in TensorFlow's
# types_pb2 (names keep this module pure Python): the `serving_raw`
# signature's inputs (models/model.py), the gRPC client's tensors
# (serving/client.py) and the CD gate's signature check all derive theirs
# from it, e.g. tf.as_dtype(types_pb2.DataType.Value(DATATYPE_NAMES[kind])).
DATATYPE_NAMES: Dict[str, str] = {
    'float': 'DT_FLOAT', 'int': 'DT_INT64', 'string': 'DT_STRING'}
# The tf.train.Feature list each dtype is stored in, in a tf.Example.
EXAMPLE_LISTS: Dict[str, str] = {
    'float': 'float_list', 'int': 'int64_list', 'string': 'bytes_list'}

# Name of the SavedModel signature that takes one tensor per raw feature
# (a problem's raw_types), for JSON and gRPC clients that send plain values.
RAW_SIGNATURE = 'serving_raw'


def transformed_name(key: str) -> str:
  """Name of the tf.Transform output for raw feature `key`."""
  return key + '_xf'


def transformed_names(keys: List[str]) -> List[str]:
  return [transformed_name(key) for key in keys]
