"""The Chicago taxi problem (TFX's own taxi example, on its bundled data).

Data: data/taxi/span-N/data.csv, 16 quarters of 2013-2016 trips from the
City of Chicago (data/make_spans.py cuts them from the tfx wheel's sample).
Schema: schema/taxi/schema.pbtxt. Label: did the rider tip more than 20% of
the fare? A binary task (models/tasks.py).
"""

import zlib
from typing import Any, Dict

from models import problem as p
from models import tasks

TIP_FRACTION = 0.2


def _big_tip(columns):
  """THE label rule: tips > TIP_FRACTION * fare (numbers or tensors)."""
  return columns['tips'] > columns['fare'] * TIP_FRACTION


def _scaled(text: Any, factor: float, kind=float) -> str:
  """A CSV number times `factor`, in the column's own type ('' stays '')."""
  return str(kind(float(text) * factor)) if text not in ('', None) else ''



def _half_to_card(row: Dict[str, Any]) -> Dict[str, Any]:
  """Half of the Cash trips paid by card: chosen by a checksum of the trip,
  so the same trip is always chosen or not, whatever the order or seed."""
  chosen = zlib.crc32(repr(sorted(row.items())).encode()) % 2 == 0
  if row['payment_type'] == 'Cash' and chosen:
    return {**row, 'payment_type': 'Credit Card'}
  return row


_COORDINATE = ('a coordinate, bucketized into quantiles; missing for ~3% of '
               'dropoffs: a bucket of its own')

PROBLEM = p.Problem(
    name='taxi',
    title='Chicago taxi tips',
    question=f'P(tip > {TIP_FRACTION:.0%} of fare)',
    features=(
        p.Feature('trip_miles', 'float', p.Z_SCORE),
        p.Feature('fare', 'float', p.Z_SCORE),
        p.Feature('trip_seconds', 'int', p.Z_SCORE,
                  why='missing in ~0.1% of trips: the mean'),
        p.Feature('pickup_latitude', 'float', p.QUANTILES, 10,
                  why=_COORDINATE),
        p.Feature('pickup_longitude', 'float', p.QUANTILES, 10,
                  why=_COORDINATE),
        p.Feature('dropoff_latitude', 'float', p.QUANTILES, 10,
                  why=_COORDINATE),
        p.Feature('dropoff_longitude', 'float', p.QUANTILES, 10,
                  why=_COORDINATE),
        p.Feature('payment_type', 'string', p.VOCABULARY, 1000),
        p.Feature('company', 'string', p.VOCABULARY, 1000,
                  why='missing for ~34% of trips: an OOV bucket, as an '
                  'unseen company'),
        p.Feature('trip_start_hour', 'int', p.CATEGORY, 24),
        p.Feature('trip_start_day', 'int', p.CATEGORY, 8),
        p.Feature('trip_start_month', 'int', p.CATEGORY, 13),
        p.Feature('pickup_community_area', 'int', p.CATEGORY, 78,
                  why='1..77 (Chicago has 77); missing -> 0'),
        p.Feature('dropoff_community_area', 'int', p.CATEGORY, 78,
                  why='1..77; missing -> 0'),
    ),
    label=p.Label(
        name='big_tip', columns=('tips', 'fare'),
        classes=('no big tip', 'big tip'), derive=_big_tip,
        why=f'the tip is more than {TIP_FRACTION:.0%} of the fare'),
    task=tasks.BINARY,
    unused_columns={
        'pickup_census_tract': 'empty in all 15,002 rows',
        'dropoff_census_tract': '28% missing, ~500 ids; community area '
                                'carries it',
        'trip_start_timestamp': 'used to cut spans; month, day and hour '
                                'carry its signal',
    },
    # Cash trips record no tips, so their label is ~always 0 and their
    # calibration undefined; card payments are a third of trips in every
    # window and the slice where the decision is not trivial.
    slices=('payment_type',),
    guarded_slices={'payment_type': ('Credit Card',)},
    # A span is a quarter, three months of twelve: trip_start_month differs
    # between consecutive spans, and between a quarter's traffic and any
    # longer training window, by design.
    drift_excluded={'trip_start_month': 'a span is a quarter: the month '
                    'moves by design'},
    sample={
        'trip_miles': 2.1, 'fare': 9.25, 'trip_seconds': 720,
        'pickup_latitude': 41.892, 'pickup_longitude': -87.627,
        'dropoff_latitude': 41.880, 'dropoff_longitude': -87.642,
        'payment_type': 'Credit Card', 'company': 'Taxi Affiliation Services',
        'trip_start_hour': 19, 'trip_start_day': 6, 'trip_start_month': 5,
        'pickup_community_area': 8, 'dropoff_community_area': 28,
    },
    sample_text='2.1 mi, $9.25 fare, Credit Card, 19:00',
    intended_use=(
        'Ranks Chicago taxi trips by the chance that the tip exceeds 20% of '
        'the fare, from what is known when the trip ends (fare, distance, '
        'time, place, payment type, company). A teaching model of the '
        'tfx-reference pipeline: for demonstrating an MLOps level-2 loop, not '
        'for decisions about drivers or riders.'),
    limitations=(
        'Trained on the Chicago taxi sample bundled with TFX (2013-2016 '
        'trips), in quarterly spans: trips of other cities or years are '
        'outside what it has seen.',
        'Cash trips record (almost) no tips, so their label is ~always 0: the '
        'model is judged on them only overall; calibration is guarded on the '
        'card-paying slice (models/taxi/problem.py guarded_slices).',
        'Accuracy rewards the majority class (~78% of trips have no big '
        'tip); read AUC, balanced accuracy and calibration instead.',
    ),
    # Known shifts of served traffic, on CSV rows (monitoring drills; the
    # skew and drift rule is measured on them: bench/shift_alarm_rates.py).
    traffic_shifts={
        'fare-x3': lambda r: {**r, 'fare': _scaled(r['fare'], 3)},
        'credit-card-only': lambda r: {**r, 'payment_type': 'Credit Card'},
        'cash-only': lambda r: {**r, 'payment_type': 'Cash'},
        'cash-half-to-card': _half_to_card,
        'night-only': lambda r: {**r, 'trip_start_hour': '3'},
        'trip-length-x2': lambda r: {
            **r, 'trip_miles': _scaled(r['trip_miles'], 2),
            'trip_seconds': _scaled(r['trip_seconds'], 2, int)},
    },
    id_columns=('trip_start_timestamp', 'fare', 'trip_miles', 'payment_type',
                'company'),
    hparams={'hidden_units': [64, 32, 16], 'learning_rate': 0.01,
             'batch_size': 40, 'seed': 42},
    train_steps=1000, eval_steps=150, window_spans=16,
)
