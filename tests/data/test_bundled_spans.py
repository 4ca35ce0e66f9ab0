"""The bundled spans: reproducible from the tfx wheel, valid against the schema."""

import os
import subprocess
import sys

import pytest

from models import problem as problems
from pipeline import problem_check
from tests import helpers


def test_spans_are_reproduced_byte_for_byte_from_the_tfx_wheel():
  result = subprocess.run(
      [sys.executable, os.path.join(helpers.REPO, 'data', 'make_spans.py'),
       '--check'], capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stdout + result.stderr
  assert '16 spans, 15002 rows: identical' in result.stdout


def test_penguin_spans_are_reproduced_from_the_tfx_wheel():
  result = subprocess.run(
      [sys.executable, os.path.join(helpers.REPO, 'data',
                                    'make_penguin_spans.py'), '--check'],
      capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stdout + result.stderr
  assert '3 spans, 334 rows: identical' in result.stdout


def test_spans_are_time_ordered_quarters():
  import datetime  # pylint: disable=g-import-not-at-top
  for span in range(1, 17):
    year, quarter = 2013 + (span - 1) // 4, (span - 1) % 4 + 1
    for row in helpers.read_span(span):
      t = datetime.datetime.fromtimestamp(int(row['trip_start_timestamp']),
                                          tz=datetime.timezone.utc)
      assert (t.year, (t.month - 1) // 3 + 1) == (year, quarter), span


@pytest.mark.integration
@pytest.mark.parametrize('name', problems.names())
def test_every_bundled_span_matches_the_curated_schema(name):
  """The default run validates only the newest span; this covers the rest
  (TFDV, as ExampleValidator), with every column and class present."""
  assert problem_check.check(name) == []
