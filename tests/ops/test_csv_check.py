"""A span whose CSV CsvExampleGen cannot read is named by span, file and line.

TFX 1.16's CsvExampleGen stops on such a file with "line contains NUL" or
"Columns do not match specified csv headers: [...] -> [...]": no span, no
file, no line. ops/csv_check.py reads the files the way CsvExampleGen
does, before any span is ingested.
"""

import os
import subprocess
import sys

import pytest

from pipeline import configs
from ops import console
from ops import csv_check
from lineage import metadata_store
from pipeline.run_pipeline import run_pipeline
from tests import helpers

HEADER = ('pickup_community_area,fare,trip_start_month,trip_start_hour,'
          'trip_start_day,trip_start_timestamp,pickup_latitude,'
          'pickup_longitude,dropoff_latitude,dropoff_longitude,trip_miles,'
          'pickup_census_tract,dropoff_census_tract,payment_type,company,'
          'trip_seconds,dropoff_community_area,tips')
ROW = ('8,10.25,3,19,5,1362683700,41.89,-87.63,41.9,-87.62,2.1,,,Cash,'
       'Taxi Affiliation Services,600,8,0')


def _write(path, lines, raw=None):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'wb') as f:
    f.write(raw if raw is not None else
            ('\n'.join(lines) + '\n').encode())
  return path


def _problems(path):
  return csv_check.check_file(path)[1]


# --- The check alone --------------------------------------------------------


def test_good_file_passes(tmp_path):
  path = _write(str(tmp_path / 'a.csv'), [HEADER] + [ROW] * 5)
  header, problems = csv_check.check_file(path)
  assert len(header) == 18 and problems == []


def test_every_bundled_span_passes():
  spans = sorted(int(d.split('-')[1]) for d in os.listdir(helpers.DATA_ROOT))
  assert len(spans) == 16
  assert csv_check.check_spans(helpers.DATA_ROOT, spans) == []


def test_wrong_field_count_names_the_line(tmp_path):
  path = _write(str(tmp_path / 'a.csv'),
                [HEADER, ROW, ROW + ',extra', ROW, ROW[:-2]])
  problems = _problems(path)
  assert [(p.line, p.what) for p in problems] == [
      (3, '19 fields, the header has 18'),
      (5, '17 fields, the header has 18')]


def test_nul_byte_names_line_and_column(tmp_path):
  bad = ROW.replace('Cash', 'Ca\0sh')
  path = _write(str(tmp_path / 'a.csv'), [HEADER, ROW, ROW, bad])
  [problem] = _problems(path)
  assert problem.line == 4
  assert problem.what == f'a NUL byte at column {bad.index(chr(0)) + 1}'


def test_undecodable_bytes_name_the_line(tmp_path):
  raw = (HEADER + '\n' + ROW + '\n').encode() + ROW.encode().replace(
      b'Cash', b'Ca\xffsh') + b'\n'
  path = _write(str(tmp_path / 'a.csv'), None, raw)
  [problem] = _problems(path)
  assert problem.line == 3 and 'not UTF-8' in problem.what
  assert '0xff' in problem.what


def test_quoted_fields_may_span_lines_as_in_csv_example_gen(tmp_path):
  multi = ROW.replace('Taxi Affiliation Services', '"Taxi\nAffiliation"')
  path = _write(str(tmp_path / 'a.csv'),
                [HEADER, multi, ROW + ',x', '', ROW])
  # The record on lines 2-3 is one row; the count goes on after it; a blank
  # line is skipped as CsvExampleGen skips it.
  assert [(p.line, p.what) for p in _problems(path)] == [
      (4, '19 fields, the header has 18')]


def test_unclosed_quote_names_where_it_opened(tmp_path):
  path = _write(str(tmp_path / 'a.csv'),
                [HEADER, ROW, ROW.replace('Cash', '"Cash'), ROW])
  [problem] = _problems(path)
  assert problem.line == 3 and 'never closed' in problem.what


def test_crlf_line_ends_are_fine(tmp_path):
  path = _write(str(tmp_path / 'a.csv'), None,
                ('\r\n'.join([HEADER, ROW, ROW]) + '\r\n').encode())
  assert _problems(path) == []


def test_header_problems(tmp_path):
  bom = _write(str(tmp_path / 'bom.csv'), None,
               b'\xef\xbb\xbf' + (HEADER + '\n' + ROW + '\n').encode())
  assert 'byte-order mark' in _problems(bom)[0].what
  empty = _write(str(tmp_path / 'empty.csv'), None, b'')
  assert _problems(empty)[0].what == 'empty file: no header line'
  twice = _write(str(tmp_path / 'twice.csv'),
                 [HEADER.replace('fare', 'tips'), ROW])
  assert "'tips' twice" in _problems(twice)[0].what


def test_span_messages_name_span_file_and_line(tmp_path):
  root = str(tmp_path / 'data')
  _write(os.path.join(root, 'span-1', 'a.csv'), [HEADER, ROW])
  _write(os.path.join(root, 'span-2', 'a.csv'), [HEADER, ROW, ROW + ',x'])
  other = HEADER.replace('tips', 'tip')
  _write(os.path.join(root, 'span-3', 'a.csv'), [HEADER, ROW])
  _write(os.path.join(root, 'span-3', 'b.csv'), [other, ROW])
  os.makedirs(os.path.join(root, 'span-4'))
  messages = csv_check.check_spans(root, [1, 2, 3, 4])
  path = console.display_path(os.path.join(root, 'span-2', 'a.csv'))
  assert messages[0] == (f'span 2: {path} line 3: 19 fields, the header has '
                         '18')
  assert messages[1].startswith('span 3: ') and 'b.csv' in messages[1]
  assert 'header differs from' in messages[1]
  assert messages[2].startswith('span 4: no file matches ')
  assert len(messages) == 3


def test_more_bad_lines_are_counted_not_listed_forever(tmp_path):
  _write(str(tmp_path / 'span-1' / 'a.csv'), [HEADER] + [ROW + ',x'] * 40)
  [message] = csv_check.check_spans(str(tmp_path), [1])
  assert 'line 2: 19 fields, the header has 18' in message
  assert message.endswith('(and 39 more bad lines: 3, 4, 5, 6, 7, ...)')


def test_a_span_with_a_header_and_no_rows_is_refused(tmp_path):
  _write(str(tmp_path / 'span-1' / 'a.csv'), [HEADER])
  _write(str(tmp_path / 'span-2' / 'a.csv'), [HEADER, '', ''])
  _write(str(tmp_path / 'span-3' / 'a.csv'), [HEADER])
  _write(str(tmp_path / 'span-3' / 'b.csv'), [HEADER, ROW])  # one row: fine
  one, two = csv_check.check_spans(str(tmp_path), [1, 2, 3])
  assert one.startswith('span 1: no rows: ') and 'a.csv' in one
  assert 'a header and nothing else' in one
  assert two.startswith('span 2: no rows: ')


def test_cr_line_endings_are_named_once(tmp_path):
  path = _write(str(tmp_path / 'span-1' / 'a.csv'), None,
                ('\r'.join([HEADER] + [ROW] * 300) + '\r').encode())
  [problem] = _problems(path)
  assert problem.line is None
  assert problem.what.startswith('uses CR line endings')
  [message] = csv_check.check_spans(str(tmp_path), [1])
  assert 'more bad line' not in message and '\n' not in message
  # One CR line end among LF ones is a field's content, not the file's.
  mixed = _write(str(tmp_path / 'b.csv'), None,
                 (HEADER + '\n' + ROW.replace('Cash', '"Ca\rsh"') + '\n'
                  ).encode())
  assert _problems(mixed) == []


# --- In the pipeline ----------------------------------------------------------


@pytest.fixture
def bad_cfg(tmp_path):
  """Spans 1-4; 3 has a NUL byte on line 5, 4 an extra field on line 7."""
  root = tmp_path / 'data'
  helpers.small_spans(str(root), sources=(9, 10, 11, 12), rows=40)
  for span, line, corrupt in (
      (3, 5, lambda text: text.replace(',Cash,', ',Ca\0sh,', 1)
       if ',Cash,' in text else text.replace(',', ',\0', 1)),
      (4, 7, lambda text: text + ',extra')):
    path = root / f'span-{span}' / 'data.csv'
    lines = path.read_text().split('\n')
    lines[line - 1] = corrupt(lines[line - 1])
    path.write_text('\n'.join(lines))
  return configs.PipelineConfig(
      data_root=str(root), pipeline_root=str(tmp_path / 'pipeline'),
      serving_dir=str(tmp_path / 'serving'), **helpers.FAST_PIPELINE)


def _span_file(cfg, span):
  return console.display_path(
      os.path.join(cfg.data_root, f'span-{span}', 'data.csv'))


@pytest.mark.integration
def test_run_stops_before_ingesting_and_names_both_bad_spans(bad_cfg, capsys):
  from tfx.orchestration.local.local_dag_runner import LocalDagRunner  # pylint: disable=g-import-not-at-top
  outcome = run_pipeline(bad_cfg, LocalDagRunner)
  out = capsys.readouterr().out
  assert not outcome.ok
  assert f'span 3: {_span_file(bad_cfg, 3)} line 5: a NUL byte' in (
      outcome.error)
  assert (f'span 4: {_span_file(bad_cfg, 4)} line 7: 19 fields, the header '
          'has 18') in outcome.error
  assert 'span ingested      None' not in out
  assert 'span ingested      none (span 4 was not ingested)' in out
  assert f'span 3: {_span_file(bad_cfg, 3)} line 5' in out
  # Checked before any ExampleGen ran: no span of the window was ingested.
  store = metadata_store.open_store(
      metadata_store.sqlite_config(bad_cfg.metadata_path))
  assert store.get_executions() == []
  assert outcome.nodes == {}


@pytest.mark.integration
def test_local_runner_exits_1_with_the_line(bad_cfg):
  done = subprocess.run(
      [sys.executable, 'local_runner.py', '--data-root', bad_cfg.data_root,
       '--pipeline-root', bad_cfg.pipeline_root, '--serving-dir',
       bad_cfg.serving_dir, '--skip-served-prediction'] +
      helpers.as_flags(helpers.FAST_PIPELINE),
      cwd=helpers.REPO, capture_output=True, text=True, timeout=600)
  assert done.returncode == 1, done.stdout + done.stderr
  assert 'line 7: 19 fields, the header has 18' in done.stdout
  assert 'span ingested      None' not in done.stdout
  assert 'Traceback' not in done.stdout + done.stderr


@pytest.mark.integration
def test_run_stops_on_an_empty_span_and_names_it(bad_cfg, capsys):
  from tfx.orchestration.local.local_dag_runner import LocalDagRunner  # pylint: disable=g-import-not-at-top
  for span in (3, 4):  # spans 3 and 4: good again, 4 with no rows
    path = os.path.join(bad_cfg.data_root, f'span-{span}', 'data.csv')
    with open(path, encoding='utf-8', errors='replace') as f:
      lines = f.read().split('\n')
    with open(path, 'w') as f:
      f.write('\n'.join(lines[:1] if span == 4 else
                         [lines[0]] + lines[8:]) + '\n')
  outcome = run_pipeline(bad_cfg, LocalDagRunner)
  assert not outcome.ok
  assert outcome.error.startswith(f'span 4: no rows: {_span_file(bad_cfg, 4)}')
  assert 'span 4: no rows' in capsys.readouterr().out
  store = metadata_store.open_store(
      metadata_store.sqlite_config(bad_cfg.metadata_path))
  assert store.get_executions() == []  # stopped before any ingestion
