"""The taxi problem's preprocessing_fn (models/transform.py from its declared
encodings) run through tf.Transform on Beam, on real rows."""

import math

import numpy as np
import pytest

from models import features
from models import problem as problems
from models import transform
from tests import helpers
from tests.conftest import analyze_and_transform


def _row(**overrides):
  """A real bundled row with some cells replaced."""
  row = dict(next(r for r in helpers.read_span(5)
                  if r['dropoff_latitude'] and r['dropoff_community_area']))
  row.update({k: str(v) for k, v in overrides.items()})
  return row


@pytest.fixture(scope='module')
def transformed(tmp_path_factory):
  rows = [
      _row(fare='10', tips='3', trip_miles='1', trip_seconds='100',
           payment_type='Cash', company='A', trip_start_hour='5'),
      _row(fare='20', tips='1', trip_miles='2', trip_seconds='200',
           payment_type='Cash', company='', trip_start_hour='99'),
      _row(fare='30', tips='0', trip_miles='3', trip_seconds='300',
           payment_type='Credit Card', company='A', trip_start_hour='23',
           dropoff_latitude='', dropoff_longitude='',
           dropoff_community_area=''),
      _row(fare='40', tips='9', trip_miles='4', trip_seconds='400',
           payment_type='Cash', company='B', trip_start_hour='0'),
      _row(fare='50', tips='0', trip_miles='5', trip_seconds='',
           payment_type='Cash', company='B', trip_start_hour='1'),
  ]
  schema = helpers.load_schema()
  out = str(tmp_path_factory.mktemp('tft'))
  result = analyze_and_transform([helpers.to_instance(r, schema) for r in rows],
                                 out)
  return out, result


def test_numeric_features_are_z_scored(transformed):
  _, rows = transformed
  z_scored = [f.name for f in helpers.TAXI.features
              if f.encoding == problems.Z_SCORE]
  assert z_scored == ['trip_miles', 'fare', 'trip_seconds']
  for key in z_scored:
    present = rows if key != 'trip_seconds' else rows[:4]
    values = np.array([r[features.transformed_name(key)] for r in present])
    assert values.mean() == pytest.approx(0.0, abs=1e-5), key
    assert values.std() == pytest.approx(1.0, abs=1e-4), key
  fares = [r['fare_xf'] for r in rows]
  assert fares == sorted(fares)  # order preserved


def test_missing_number_gets_the_mean(transformed):
  _, rows = transformed
  assert float(rows[4]['trip_seconds_xf']) == 0.0


def test_label_is_tip_above_twenty_percent_of_fare(transformed):
  _, rows = transformed
  # tips 3/10 > 20%, 1/20 no, 0/30 no, 9/40 > 20%
  assert [int(r[helpers.TAXI.label.transformed]) for r in rows] == [1, 0, 0, 1, 0]


def test_vocabularies_are_built_by_frequency(transformed):
  import tensorflow_transform as tft  # pylint: disable=g-import-not-at-top
  out, rows = transformed
  output = tft.TFTransformOutput(out)
  payment = [v.decode() for v in output.vocabulary_by_name('payment_type')]
  assert payment == ['Cash', 'Credit Card']
  assert [int(r['payment_type_xf']) for r in rows] == [0, 0, 1, 0, 0]
  company = [v.decode() for v in output.vocabulary_by_name('company')]
  assert sorted(company) == ['A', 'B']  # tf.Transform keeps no empty token
  # A missing company lands in an out-of-vocabulary bucket.
  assert len(company) <= int(rows[1]['company_xf']) < (
      len(company) + transform.OOV_SIZE)


def test_missing_coordinates_get_their_own_bucket(transformed):
  _, rows = transformed
  missing = rows[2]
  buckets = helpers.TAXI.feature('dropoff_latitude').size
  assert int(missing['dropoff_latitude_xf']) == buckets
  assert int(missing['dropoff_longitude_xf']) == buckets
  for r in rows[:2] + rows[3:]:
    assert 0 <= int(r['dropoff_latitude_xf']) < buckets


def test_categories_out_of_range_or_missing_map_to_zero(transformed):
  _, rows = transformed
  assert [int(r['trip_start_hour_xf']) for r in rows] == [5, 0, 23, 0, 1]
  assert int(rows[2]['dropoff_community_area_xf']) == 0


def test_no_nan_in_transformed_features(transformed):
  _, rows = transformed
  for r in rows:
    for key, value in r.items():
      assert not any(math.isnan(float(v)) for v in np.ravel(value)), key
