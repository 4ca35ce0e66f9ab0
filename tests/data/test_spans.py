"""The span rules (data/spans.py): what is span N on disk and on the calendar."""

import datetime
import os

from data import spans
from tests import helpers


def test_a_span_directory_is_named_as_tfx_spells_a_pinned_span(tmp_path):
  root = tmp_path / 'data'
  for name in ('span-1', 'span-10', 'span-03', 'span-x', 'other'):
    (root / name).mkdir(parents=True)
  (root / 'span-7').write_text('a file, not a span')
  os.symlink(root / 'span-1', root / 'span-2')  # a replay's arrived span
  os.symlink(root / 'missing', root / 'span-4')  # dangling: no span
  assert spans.spans_on_disk(str(root)) == [1, 2, 10]
  assert spans.span_number('span-03') is None  # TFX reads span-3/ for 3
  assert spans.span_number('span-\u0663') is None  # ASCII digits only
  assert spans.spans_on_disk(str(tmp_path / 'nowhere')) == []


def test_span_files_are_what_csv_example_gen_reads(tmp_path):
  root = str(tmp_path)
  for path in (spans.csv_path(root, 3),
               os.path.join(root, 'span-03', 'data.csv')):
    helpers.write_csv(path, [{'a': '1'}])
  os.makedirs(os.path.join(root, 'span-3', 'dir.csv'))
  assert spans.span_files(root, 3) == [spans.csv_path(root, 3)]
  assert spans.span_glob(root, 3) == os.path.join(root, 'span-3', '*.csv')


def test_bundled_spans_are_the_quarters_of_their_trips():
  assert spans.quarter(1) == '2013-Q1'
  assert spans.quarter(16) == '2016-Q4'
  assert spans.span_of(int(datetime.datetime(
      2013, 3, 31, 23, 59, tzinfo=datetime.timezone.utc).timestamp())) == 1
  assert spans.span_of(int(datetime.datetime(
      2016, 10, 1, tzinfo=datetime.timezone.utc).timestamp())) == 16
  assert spans.spans_on_disk(helpers.DATA_ROOT) == list(range(1, 17))


def test_logical_dates_are_quarter_ends():
  assert spans.logical_date(1).date() == datetime.date(2013, 4, 1)
  assert spans.logical_date(4).date() == datetime.date(2014, 1, 1)
  assert spans.logical_date(16).date() == datetime.date(2017, 1, 1)
