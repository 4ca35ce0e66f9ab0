"""data/generate_spans.py: deterministic, schema-valid, drift exactly as asked.

Drift does not change the random draws, so a drifted span and an undrifted
one from the same seed are row-for-row the same trips: the drift tests
compare them row by row and can check that nothing but the intended columns
moved.
"""

import datetime
import os
import subprocess
import sys
from typing import Dict, List

import pytest

from tests import helpers

GENERATOR = os.path.join(helpers.REPO, 'data', 'generate_spans.py')
ROWS = 4000
ALL_DRIFTS = ['trip_miles=2', 'fare=1.3', 'hour=5', 'payment_type=0.5']
TIME_COLUMNS = {'trip_start_timestamp', 'trip_start_month', 'trip_start_day',
                'trip_start_hour'}


def generate(out, *args: str) -> str:
  result = subprocess.run(
      [sys.executable, GENERATOR, '--out', str(out), *args],
      capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  return result.stderr


def read(out, span: int = 1) -> List[Dict[str, str]]:
  return helpers.read_span(span, data_root=str(out))


def raw(out, span: int = 1) -> bytes:
  with open(os.path.join(out, f'span-{span}', 'data.csv'), 'rb') as f:
    return f.read()


def label(row: Dict[str, str]) -> bool:
  return float(row['tips']) > 0.2 * float(row['fare'])


@pytest.fixture(scope='module')
def base(tmp_path_factory):
  out = tmp_path_factory.mktemp('base')
  generate(out, '--rows', str(ROWS), '--spans', '2', '--seed', '7')
  return out


def drifted(tmp_path_factory, spec: str):
  out = tmp_path_factory.mktemp('drift')
  generate(out, '--rows', str(ROWS), '--spans', '2', '--seed', '7',
           '--drift', spec)
  return out


def test_same_seed_same_bytes_other_seed_differs(tmp_path, base):
  generate(tmp_path / 'again', '--rows', str(ROWS), '--spans', '2',
           '--seed', '7')
  assert raw(tmp_path / 'again', 1) == raw(base, 1)
  assert raw(tmp_path / 'again', 2) == raw(base, 2)
  assert raw(base, 1) != raw(base, 2)  # spans are not copies of each other
  generate(tmp_path / 'other', '--rows', str(ROWS), '--seed', '8')
  assert raw(tmp_path / 'other', 1) != raw(base, 1)


def test_span_does_not_depend_on_how_many_spans_are_made(tmp_path, base):
  generate(tmp_path, '--rows', str(ROWS), '--spans', '1', '--seed', '7')
  assert raw(tmp_path, 1) == raw(base, 1)


def test_row_count_header_and_types_match_the_bundled_spans(base):
  with open(os.path.join(helpers.DATA_ROOT, 'span-1', 'data.csv')) as f:
    bundled_header = f.readline()
  for span in (1, 2):
    content = raw(base, span).decode()
    assert content.startswith(bundled_header)
    assert content.count('\n') == ROWS + 1
  rows = read(base)
  schema = helpers.load_schema()
  for row in rows:
    helpers.to_example(row, schema)  # raises on a non-numeric cell
  for column in ('fare', 'tips', 'trip_miles'):  # FLOAT stays FLOAT in CSV
    assert all('.' in r[column] for r in rows), column


def test_rows_look_like_the_bundled_data(base):
  bundled = [r for s in range(1, 17) for r in helpers.read_span(s)]
  rows = read(base) + read(base, 2)

  def share(rs, predicate):
    return sum(1 for r in rs if predicate(r)) / len(rs)

  assert abs(share(rows, label) - share(bundled, label)) < 0.02
  cash = lambda r: r['payment_type'] == 'Cash'
  assert abs(share(rows, cash) - share(bundled, cash)) < 0.02
  no_company = lambda r: not r['company']
  assert abs(share(rows, no_company) - share(bundled, no_company)) < 0.02
  assert {r['payment_type'] for r in rows} <= {
      r['payment_type'] for r in bundled}
  for r in rows:  # time fields agree with the timestamp, as in the source
    t = datetime.datetime.fromtimestamp(int(r['trip_start_timestamp']),
                                        tz=datetime.timezone.utc)
    assert int(r['trip_start_hour']) == t.hour
    assert int(r['trip_start_month']) == t.month
    assert int(r['trip_start_day']) == t.isoweekday() % 7 + 1


def _same_except(a: Dict[str, str], b: Dict[str, str], columns) -> None:
  for key in a:
    if key not in columns:
      assert a[key] == b[key], (key, a, b)


def test_fare_drift_scales_fare_and_tips_only(tmp_path_factory, base):
  out = drifted(tmp_path_factory, 'fare=1.3')
  assert raw(out, 1) == raw(base, 1)  # the last span drifts by default
  for a, b in zip(read(base, 2), read(out, 2)):
    _same_except(a, b, {'fare', 'tips'})
    assert float(b['fare']) == pytest.approx(1.3 * float(a['fare']), abs=0.012)
    assert float(b['tips']) == pytest.approx(1.3 * float(a['tips']), abs=0.03)
    assert label(a) == label(b)


def test_trip_miles_drift_scales_trip_miles_only(tmp_path_factory, base):
  out = drifted(tmp_path_factory, 'trip_miles=2')
  for a, b in zip(read(base, 2), read(out, 2)):
    _same_except(a, b, {'trip_miles'})
    assert float(b['trip_miles']) == pytest.approx(
        2 * float(a['trip_miles']), abs=0.016)


def test_hour_drift_shifts_start_time_only(tmp_path_factory, base):
  out = drifted(tmp_path_factory, 'hour=5')
  for a, b in zip(read(base, 2), read(out, 2)):
    _same_except(a, b, TIME_COLUMNS)
    assert (int(b['trip_start_timestamp'])
            - int(a['trip_start_timestamp'])) == 5 * 3600
    assert int(b['trip_start_hour']) == (int(a['trip_start_hour']) + 5) % 24


def test_payment_drift_moves_the_asked_share_of_cash_trips(tmp_path_factory,
                                                           base):
  out = drifted(tmp_path_factory, 'payment_type=0.5')
  pairs = list(zip(read(base, 2), read(out, 2)))
  cash = [i for i, (a, _) in enumerate(pairs) if a['payment_type'] == 'Cash']
  moved = {i for i in cash if pairs[i][1]['payment_type'] == 'Credit Card'}
  assert len(moved) / len(cash) == pytest.approx(0.5, abs=0.03)
  for i, (a, b) in enumerate(pairs):
    if i in moved:
      _same_except(a, b, {'payment_type', 'tips'})
    else:
      assert a == b
  switched = [pairs[i] for i in moved]
  # Switched trips tip like real card trips do, so the label follows.
  card_rate = (sum(label(a) for a, _ in pairs if a['payment_type'] ==
                   'Credit Card') /
               sum(1 for a, _ in pairs if a['payment_type'] == 'Credit Card'))
  switched_rate = sum(label(b) for _, b in switched) / len(switched)
  assert switched_rate == pytest.approx(card_rate, abs=0.05)


def test_bad_drift_is_refused_with_the_reason(tmp_path):
  result = subprocess.run(
      [sys.executable, GENERATOR, '--out', str(tmp_path), '--rows', '10',
       '--drift', 'tips=2'], capture_output=True, text=True, timeout=60)
  assert result.returncode == 2
  assert "'tips=2'" in result.stderr and 'payment_type' in result.stderr
  assert not os.path.exists(tmp_path / 'span-1')


def test_help_documents_every_drift():
  out = subprocess.run([sys.executable, GENERATOR, '--help'],
                       capture_output=True, text=True, timeout=60,
                       check=True).stdout
  for flag in ('--rows', '--spans', '--seed', '--out', '--drift',
               '--drift-spans'):
    assert flag in out
  for kind in ('trip_miles=F', 'fare=F', 'hour=H', 'payment_type=P'):
    assert kind in out


@pytest.mark.integration
def test_generated_spans_match_the_curated_schema(tmp_path_factory, base):
  """As test_bundled_spans: TFDV statistics of each CSV vs the schema."""
  import tensorflow_data_validation as tfdv  # pylint: disable=g-import-not-at-top
  schema = helpers.load_schema()
  outs = [base] + [drifted(tmp_path_factory, spec) for spec in ALL_DRIFTS]
  for out in outs:
    stats = tfdv.generate_statistics_from_csv(
        os.path.join(out, 'span-2', 'data.csv'))
    anomalies = tfdv.validate_statistics(stats, schema)
    assert not anomalies.anomaly_info, (out, anomalies.anomaly_info)
    assert not anomalies.HasField('dataset_anomaly_info'), out
