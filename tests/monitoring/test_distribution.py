"""The drift/skew rule (monitoring/distribution.py) on real bundled trips.

Unit tests of the statistic (bins, pooling, the chi-square test, effect
sizes, missing values from every source), then a seeded alarm-rate test:
in-distribution samples alarm at most 5% of the time and every known shift
is caught in at least 95% of trials at 300 requests. The thresholds are the
configured ones (DRIFT_* in monitoring/distribution.py), so a change of the rule that
breaks either promise fails here; bench/shift_alarm_rates.py measures the
same on more trials and sizes. The data, the compared features and the
known shifts are the taxi problem's (models/taxi/problem.py).
"""

import math

import numpy as np
import pytest
from scipy import stats

from models import problem as problems
from monitoring import distribution
from monitoring import feature_values
from monitoring import replay_traffic
from tests import helpers

# The taxi problem's compared features and their kinds.
KINDS = distribution.kinds_of(helpers.TAXI)
SPANS = range(1, 17)
KNOWN_SHIFTS = {  # shift -> the feature(s) it must alarm on
    'fare-x3': {'fare'},
    'cash-half-to-card': {'payment_type'},
    'credit-card-only': {'payment_type'},
    'night-only': {'trip_start_hour'},
    'trip-length-x2': {'trip_seconds'},
}


@pytest.fixture(scope='module')
def trips():
  """Span -> its trips (CSV text, label dropped)."""
  return {s: replay_traffic.read_instances(
      helpers.TAXI, f'{helpers.DATA_ROOT}/span-{s}/data.csv') for s in SPANS}


@pytest.fixture(scope='module')
def window(trips):
  """Every bundled trip: the 16-span training window, and its Reference."""
  rows = [t for s in SPANS for t in trips[s]]
  values = feature_values.values_from_rows(rows, KINDS)
  return rows, values, distribution.Reference(values, KINDS)


def _sample(values, index):
  return {k: [v[i] for i in index] for k, v in values.items()}


def test_every_model_feature_is_compared_or_excluded_by_design():
  taxi = helpers.TAXI
  compared, excluded = set(KINDS), set(taxi.drift_excluded)
  assert compared | excluded == set(helpers.RAW_TYPES)
  assert not compared & excluded
  assert excluded == {'trip_start_month'}
  # Taxi's features by kind, spelled out: a change of an encoding or of
  # kinds_of that moves one shows here.
  assert KINDS == {
      **{name: distribution.TEXT for name in ('payment_type', 'company')},
      **{name: distribution.CATEGORICAL for name in (
          'trip_start_hour', 'trip_start_day', 'pickup_community_area',
          'dropoff_community_area')},
      **{name: distribution.NUMERIC for name in (
          'trip_miles', 'fare', 'trip_seconds', 'pickup_latitude',
          'pickup_longitude', 'dropoff_latitude', 'dropoff_longitude')},
  }
  # The rule, on every problem: strings are TEXT, integer categories
  # CATEGORICAL, z-scored and bucketized numbers NUMERIC; drift_excluded
  # (each with why) is all that is left out.
  for name in problems.names():
    problem = problems.load(name)
    kinds = distribution.kinds_of(problem)
    assert set(kinds) == {f.name for f in problem.features} - set(
        problem.drift_excluded), name
    assert all(problem.drift_excluded.values()), name
    for feature in problem.features:
      if feature.name in problem.drift_excluded:
        continue
      if feature.dtype == 'string':
        expected = distribution.TEXT
      elif feature.encoding == problems.CATEGORY:
        expected = distribution.CATEGORICAL
      else:
        assert feature.encoding in (problems.Z_SCORE, problems.QUANTILES)
        expected = distribution.NUMERIC
      assert kinds[feature.name] == expected, (name, feature.name)


def test_identical_samples_do_not_alarm(window):
  _, values, reference = window
  result = distribution.compare(reference, values)
  assert not result.alarm
  assert [f.feature for f in result.features] == sorted(KINDS)
  for f in result.features:
    assert f.effect == pytest.approx(0.0, abs=1e-12), f
    assert f.p_value == pytest.approx(1.0), f
    assert f.alpha == pytest.approx(distribution.DRIFT_ALPHA / 13)


def test_verdict_is_deterministic_and_order_free(window):
  rows, _, reference = window
  sample = rows[:300]
  shuffled = list(reversed(sample))
  a = distribution.compare(reference,
                           feature_values.values_from_rows(sample, KINDS))
  b = distribution.compare(reference,
                           feature_values.values_from_rows(shuffled, KINDS))
  c = distribution.compare(window[1],
                           feature_values.values_from_rows(sample, KINDS),
                           kinds=KINDS)
  assert a.features == b.features == c.features


@pytest.mark.parametrize('shift', sorted(KNOWN_SHIFTS))
def test_each_known_shift_alarms_at_300_rows(window, trips, shift):
  _, _, reference = window
  # 300 trips of the newest quarters, which the reference contains.
  rows = (trips[16] + trips[15])[:300]
  assert not distribution.compare(
      reference, feature_values.values_from_rows(rows, KINDS)).alarm
  shifted = [helpers.TAXI.traffic_shifts[shift](r) for r in rows]
  result = distribution.compare(reference,
                                feature_values.values_from_rows(shifted, KINDS))
  assert KNOWN_SHIFTS[shift] <= {f.feature for f in result.alarms}, [
      (f.feature, f.effect, f.p_value) for f in result.features]


@pytest.mark.parametrize('span', [13, 14, 15, 16])
def test_a_small_real_span_is_not_an_alarm_against_its_windows(trips, span):
  """~200 trips of one quarter against a window that contains it."""
  current = feature_values.values_from_rows(trips[span], KINDS)
  for members in (SPANS, range(span - 3, span + 1)):
    reference = feature_values.values_from_rows(
        [t for s in members for t in trips[s]], KINDS)
    result = distribution.compare(reference, current, kinds=KINDS)
    assert not result.alarm, [(f.feature, f.effect, f.p_value)
                              for f in result.alarms]


def test_a_trivial_shift_at_large_n_is_significant_but_below_the_floor(
    window, trips):
  """Span 16 (201 trips) repeated 10x: its real company mix differs from the
  window's, significantly at 2010 rows, but by less than the floor."""
  _, _, reference = window
  current = feature_values.values_from_rows(trips[16] * 10, KINDS)
  company = distribution.compare(reference, current).by_name()['company']
  assert company.significant
  assert 0.05 < company.effect < company.threshold
  assert not company.alarm


def test_a_large_effect_on_a_small_sample_is_not_significant(window):
  kinds = {'payment_type': distribution.TEXT}
  reference = {'payment_type': ['Cash', 'Credit Card'] * 500}
  current = {'payment_type': ['Cash'] * 9 + ['Credit Card'] * 3}
  f = distribution.compare(reference, current, kinds=kinds).features[0]
  assert f.effect == pytest.approx(0.25) and f.effect > f.threshold
  assert 0.01 < f.p_value < 0.2  # chi-square 3 on 1 df: p 0.08
  assert not f.significant and not f.alarm
  # A handful of requests never alarms, however odd: every bin is too
  # small for the test, so all are pooled and nothing is compared.
  rows, _, ref = window
  night = [helpers.TAXI.traffic_shifts['night-only'](r) for r in rows[:3]]
  result = distribution.compare(ref,
                                feature_values.values_from_rows(night, KINDS))
  assert not result.alarm
  assert result.by_name()['trip_start_hour'].bins == 1


def test_numeric_bins_are_the_reference_quantiles_with_atoms_kept():
  # 30% zeros (an atom covering three deciles), then 1..70.
  values = [0.0] * 30 + [float(x) for x in range(1, 71)] + [None] * 5
  ref = distribution.Reference({'trip_miles': values},
                               {'trip_miles': distribution.NUMERIC})
  miles = ref.features['trip_miles']
  assert miles.edges[0] == 0.0 and len(set(miles.edges)) == len(miles.edges)
  # the zeros are one bin, the missing values the last one
  assert miles.counts[0] == 30 and miles.counts[-1] == 5
  assert miles.labels[-1] == distribution.MISSING
  # the same function bins the current sample: a value on an edge goes
  # where the reference's own copy of it went
  assert list(miles.counts_of([0.0, miles.edges[1], None])) == (
      [1, 1] + [0] * (len(miles.counts) - 3) + [1])


def test_rare_and_unseen_categories_are_pooled():
  kinds = {'payment_type': distribution.TEXT}
  reference = {'payment_type': ['Cash'] * 600 + ['Credit Card'] * 390 +
                               ['No Charge'] * 8 + ['Dispute'] * 2}
  current = {'payment_type': ['Cash'] * 55 + ['Credit Card'] * 40 +
                             ['Bitcoin'] * 5}
  f = distribution.compare(reference, current, kinds=kinds).features[0]
  # 100 rows: 'No Charge' and 'Dispute' expect < 5 each, as does the unseen
  # 'Bitcoin': one pool, itself too small, so it joins the smallest bin.
  assert f.bins == 2 and f.df == 1
  assert not f.alarm


def test_chi_square_is_pearsons_test_of_homogeneity():
  ref, cur = np.array([500, 300, 150, 50]), np.array([40, 40, 15, 5])
  statistic, df, p = distribution.chi_square(ref, cur)
  expected, p_value, dof, _ = stats.chi2_contingency(np.vstack([ref, cur]),
                                                     correction=False)
  assert (statistic, df, p) == pytest.approx((expected, dof, p_value))
  assert distribution.chi_square(np.array([5, 0]), np.array([3, 0]))[2] == 1.0


def test_effect_sizes():
  p, q = np.array([1.0, 0.0]), np.array([0.0, 1.0])
  assert distribution.jensen_shannon(p, q) == pytest.approx(1.0)
  assert distribution.jensen_shannon(p + 1, p + 1) == pytest.approx(0.0)
  assert distribution.linf(np.array([6, 4]), np.array([3, 7])) == (
      pytest.approx(0.3))


def test_a_shift_in_missing_values_alarms_and_all_missing_does_not(window):
  rows, _, reference = window
  sample = rows[:300]
  gone = [{**r, 'company': ''} for r in sample]  # ~34% missing -> 100%
  result = distribution.compare(reference,
                                feature_values.values_from_rows(gone, KINDS))
  assert {f.feature for f in result.alarms} == {'company'}
  nothing = {'company': [None] * 50}
  kinds = {'company': distribution.TEXT}
  f = distribution.compare(nothing, nothing, kinds=kinds).features[0]
  assert f.p_value == 1.0 and not f.alarm


def test_missing_values_are_the_same_from_every_source(tmp_path):
  """A missing CSV cell, an empty tf.Example feature, '' / NaN / 0 from the
  serving_raw signature: all None, so all in the missing bin."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from monitoring import prediction_logs  # pylint: disable=g-import-not-at-top
  from serving import client  # pylint: disable=g-import-not-at-top
  rows = helpers.read_span(16, 40)
  rows[0].update(company='', dropoff_latitude='', dropoff_community_area='')
  rows[1].update(payment_type='', fare='', trip_start_day='')
  assert sum(r['company'] == '' for r in rows) > 5  # and real missing ones
  csv_path = tmp_path / 'span.csv'
  helpers.write_csv(str(csv_path), rows)
  from_csv = feature_values.values_from_csv([str(csv_path)], KINDS)

  schema = helpers.load_schema()
  examples = [helpers.to_example(r, schema).SerializeToString() for r in rows]
  from_examples = feature_values.values_from_examples(examples, KINDS)
  artifact = tmp_path / 'examples'
  helpers.write_examples(str(artifact / 'Split-train' / 'data.gz'), rows)
  from_artifact = feature_values.values_from_examples_dir(str(artifact),
                                                        'train', KINDS)

  # What the server logs: serving_raw tensors as the REST client sends
  # them ('' / NaN / 0), and serving_default's serialized tf.Examples.
  # pylint: disable=protected-access
  instances = [client.raw_instance(
      helpers.TAXI, {k: r[k] for k in helpers.RAW_TYPES}) for r in rows]
  dtypes = {'string': tf.string, 'float': tf.float32, 'int': tf.int64}
  tensors = {k: tf.make_tensor_proto([i[k] for i in instances],
                                     dtype=dtypes[kind])
             for k, kind in helpers.RAW_TYPES.items()}
  served_raw = feature_values.values_from_rows(prediction_logs._raw_rows(
      helpers.TAXI, tensors,
      prediction_logs._int_missing_below(helpers.TAXI)), KINDS)
  served_default = feature_values.values_from_rows(prediction_logs._example_rows(
      helpers.TAXI,
      {'examples': tf.make_tensor_proto(examples, dtype=tf.string)}), KINDS)
  # pylint: enable=protected-access

  assert from_csv['company'][0] is None and from_csv['fare'][1] is None
  assert from_csv['trip_start_day'][1] is None
  assert from_csv['payment_type'][1] is None
  assert from_csv['dropoff_community_area'][0] is None
  for other in (from_examples, from_artifact, served_raw, served_default):
    assert set(other) == set(from_csv)
    for name, column in from_csv.items():
      # exactly equal: numbers are compared at float32, the precision of a
      # tf.Example and of serving_raw, so a CSV value on a bin edge falls
      # where the same trip's served value does
      assert column == other[name], name
  result = distribution.compare(from_csv, served_raw, kinds=KINDS)
  assert len(result.features) == len(KINDS)
  assert all(f.effect == 0 and not f.alarm for f in result.features)


def test_readers_agree_on_types():
  row = {'trip_start_hour': '3', 'trip_seconds': '300', 'fare': '7.25',
         'payment_type': 'Cash', 'company': ' '}
  served = {'trip_start_hour': 3, 'trip_seconds': 300, 'fare': 7.25,
            'payment_type': 'Cash', 'company': None}
  a = feature_values.values_from_rows([row], KINDS)
  b = feature_values.values_from_rows([served], KINDS)
  assert a == b
  assert a['trip_start_hour'] == ['3'] and a['fare'] == [7.25]
  assert a['company'] == [None] and a['pickup_latitude'] == [None]
  assert feature_values.values_from_rows([{'fare': math.nan}],
                                       KINDS)['fare'] == [None]
  # An integer category is one label however written; a string category
  # is its text, even when it reads as a number.
  kinds = {'hour': distribution.CATEGORICAL, 'code': distribution.TEXT}
  assert feature_values.values_from_rows(
      [{'hour': '3.0', 'code': '3.0'}, {'hour': 3, 'code': ' 03 '}],
      kinds) == {'hour': ['3', '3'], 'code': ['3.0', '03']}
  with pytest.raises(ValueError):
    feature_values.values_from_rows([{'fare': 'seven'}],
                                  {'fare': distribution.NUMERIC})
  with pytest.raises(ValueError, match='kinds'):
    distribution.compare({'fare': [1.0]}, {'fare': [1.0]})


# --- Seeded alarm rates ------------------------------------------------------

TRIALS = 20  # per family of samples; fixed seed, so a fixed outcome
REQUESTS = 300


def test_alarm_rates_in_distribution_and_on_known_shifts(window, trips):
  rows, values, reference = window
  rng = np.random.default_rng(20160101)
  verdicts = []  # in-distribution samples: alarmed or not
  # (a) every real span against the 16-span window (which contains it), at
  # 200 and 1000 requests (with replacement where the span is smaller).
  for s in SPANS:
    span_values = feature_values.values_from_rows(trips[s], KINDS)
    for size in (200, 1000):
      for _ in range(2):
        index = rng.choice(len(trips[s]), size=size,
                           replace=size > len(trips[s]))
        verdicts.append(distribution.compare(
            reference, _sample(span_values, index)).alarm)
  # (b) held out: n rows against all the other rows, re-drawn each time.
  for size in (200, 2000):
    for _ in range(TRIALS // 2):
      order = rng.permutation(len(rows))
      verdicts.append(distribution.compare(
          distribution.Reference(_sample(values, order[size:]), KINDS),
          _sample(values, order[:size])).alarm)
  assert len(verdicts) == 84
  assert sum(verdicts) / len(verdicts) <= 0.05, sum(verdicts)

  for shift, expected in KNOWN_SHIFTS.items():
    shifted = feature_values.values_from_rows(
        [helpers.TAXI.traffic_shifts[shift](r) for r in rows], KINDS)
    caught = 0
    for _ in range(TRIALS):
      index = rng.choice(len(rows), size=REQUESTS, replace=False)
      result = distribution.compare(reference, _sample(shifted, index))
      caught += expected <= {f.feature for f in result.alarms}
    assert caught / TRIALS >= 0.95, (shift, caught)
