"""The one source of truth for the taxi features, their types and the label.

Everything else (preprocessing, model, serving client, tests) reads feature
names and sizes from here. Raw names are the CSV column names; transformed
names carry the `_xf` suffix, as in TFX's own taxi examples.
"""

from typing import Dict, List, Mapping, Optional

# Numeric features, z-scored by tf.Transform. trip_seconds is missing in
# ~0.1% of trips; a missing value gets the mean.
DENSE_FLOAT_FEATURE_KEYS: List[str] = ['trip_miles', 'fare', 'trip_seconds']

# Coordinates, bucketized into quantiles. Dropoff coordinates are missing for
# ~3% of trips; missing values get a bucket of their own (index BUCKET_COUNT).
BUCKET_FEATURE_KEYS: List[str] = [
    'pickup_latitude', 'pickup_longitude', 'dropoff_latitude',
    'dropoff_longitude'
]
FEATURE_BUCKET_COUNT = 10

# Free-text categories turned into vocabularies. `company` is missing for ~34%
# of trips; tf.Transform keeps no empty token, so a missing value (like an
# unseen one) lands in one of the OOV buckets.
VOCAB_FEATURE_KEYS: List[str] = ['payment_type', 'company']
VOCAB_SIZE = 1000
OOV_SIZE = 10

# Integer categories used as they are; value -> one-hot index. The size is
# max value + 1. Community areas are 1..77 (Chicago has 77), missing -> 0.
CATEGORICAL_FEATURE_MAX_VALUES: Dict[str, int] = {
    'trip_start_hour': 24,
    'trip_start_day': 8,
    'trip_start_month': 13,
    'pickup_community_area': 78,
    'dropoff_community_area': 78,
}
CATEGORICAL_FEATURE_KEYS: List[str] = list(CATEGORICAL_FEATURE_MAX_VALUES)

# Columns present in the data but not used by the model, and why:
#   pickup_census_tract  - empty in all 15,002 rows
#   dropoff_census_tract - 28% missing, ~500 ids; community area carries it
#   trip_start_timestamp - used to cut spans; month/day/hour carry its signal
UNUSED_FEATURE_KEYS: List[str] = [
    'pickup_census_tract', 'dropoff_census_tract', 'trip_start_timestamp'
]

# Label: did the rider tip more than 20% of the fare?
LABEL_KEY = 'tips'
FARE_KEY = 'fare'
TIP_FRACTION = 0.2


def is_big_tip(tips, fare):
  """THE label rule: tips > TIP_FRACTION * fare.

  Works on Python floats, NumPy arrays and TensorFlow tensors alike, so
  tf.Transform (models/preprocessing.py), the CD gate, the monitor and the
  span generator all apply this one expression.
  """
  return tips > fare * TIP_FRACTION


def label_of(row: Mapping[str, object]) -> Optional[int]:
  """The label of a raw row (CSV text or numbers), None when it has none.

  A row missing `tips` or `fare` has no label: the curated schema requires
  both (presence 1.0), so such a row never reaches training (the validation
  gate stops its span) and the CD gate and the monitor leave it out rather
  than guess a value for it.
  """
  tips, fare = row.get(LABEL_KEY), row.get(FARE_KEY)
  if tips is None or fare is None or tips == '' or fare == '':
    return None
  return int(is_big_tip(float(tips), float(fare)))

# Type of every raw feature in the CSV / tf.Example (label excluded), as the
# curated schema declares it. The serving signature for JSON clients takes
# these dtypes; a missing value is '' for strings and NaN for floats.
RAW_FEATURE_TYPES: Dict[str, str] = {
    'trip_miles': 'float',
    'fare': 'float',
    'trip_seconds': 'int',
    'pickup_latitude': 'float',
    'pickup_longitude': 'float',
    'dropoff_latitude': 'float',
    'dropoff_longitude': 'float',
    'payment_type': 'string',
    'company': 'string',
    'trip_start_hour': 'int',
    'trip_start_day': 'int',
    'trip_start_month': 'int',
    'pickup_community_area': 'int',
    'dropoff_community_area': 'int',
}
# The TF DataType each kind above is fed as, by its name in TensorFlow's
# types_pb2 (names keep this module pure Python): the `serving_raw`
# signature's inputs (models/model.py), the gRPC client's tensors
# (serving/client.py) and the CD gate's signature check all derive theirs
# from it, e.g. tf.as_dtype(types_pb2.DataType.Value(DATATYPE_NAMES[kind])).
DATATYPE_NAMES: Dict[str, str] = {
    'float': 'DT_FLOAT', 'int': 'DT_INT64', 'string': 'DT_STRING'}
# The tf.train.Feature list each kind is stored in, in a tf.Example.
EXAMPLE_LISTS: Dict[str, str] = {
    'float': 'float_list', 'int': 'int64_list', 'string': 'bytes_list'}
MODEL_FEATURE_KEYS: List[str] = (
    DENSE_FLOAT_FEATURE_KEYS + BUCKET_FEATURE_KEYS + VOCAB_FEATURE_KEYS +
    CATEGORICAL_FEATURE_KEYS)
assert sorted(MODEL_FEATURE_KEYS) == sorted(RAW_FEATURE_TYPES)


# Name of the SavedModel signature that takes one tensor per raw feature
# (RAW_FEATURE_TYPES), for JSON and gRPC clients that send plain values.
RAW_SIGNATURE = 'serving_raw'


def transformed_name(key: str) -> str:
  """Name of the tf.Transform output for raw feature `key`."""
  return key + '_xf'


def transformed_names(keys: List[str]) -> List[str]:
  return [transformed_name(key) for key in keys]


LABEL_XF = transformed_name(LABEL_KEY)
