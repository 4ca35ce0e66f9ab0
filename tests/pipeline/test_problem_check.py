"""pipeline/problem_check.py: what a problem still misses, where to fix it."""

import os
import shutil
import subprocess
import sys

import pytest

from models import problem as problems
from pipeline import problem_check
from project import paths

PENGUIN = problems.load('penguin')
HEADER = 'species,culmen_length_mm,culmen_depth_mm,flipper_length_mm,body_mass_g'


def _spans(root, *spans):
  for i, rows in enumerate(spans, start=1):
    os.makedirs(root / f'span-{i}')
    (root / f'span-{i}' / 'data.csv').write_text(
        '\n'.join([HEADER] + rows) + '\n')
  return str(root)


def _row(species):
  return f'{species},0.5,0.5,0.5,0.5'


def _text(found):
  return '\n'.join(map(str, found))


def test_bundled_data_of_every_problem_has_every_column_and_class():
  for name in problems.names():
    problem = problems.load(name)
    assert problem_check.check_preprocessing(problem) == []
    assert problem_check.check_data(problem, paths.data_root(name)) == []
    assert problem_check.check_schema(problem, paths.schema_path(name)) == []


def test_no_span_directory(tmp_path):
  assert 'no span-N/' in _text(problem_check.check_data(PENGUIN,
                                                        str(tmp_path)))


def test_a_header_without_a_feature_names_it(tmp_path):
  root = tmp_path / 'd'
  os.makedirs(root / 'span-1')
  (root / 'span-1' / 'data.csv').write_text(
      'species,culmen_length_mm\n0,0.5\n')
  text = _text(problem_check.check_data(PENGUIN, str(root)))
  assert 'header lacks culmen_depth_mm, flipper_length_mm, body_mass_g' in text


def test_a_class_no_row_has_is_named(tmp_path):
  root = _spans(tmp_path / 'd', [_row(0), _row(2)], [_row(0)])
  text = _text(problem_check.check_data(PENGUIN, root))
  assert 'no row of class Chinstrap' in text


def test_a_label_out_of_the_classes_and_unlabelled_rows(tmp_path):
  root = _spans(tmp_path / 'd', [_row(0), _row(1), _row(7)],
                [_row(2), ',0.5,0.5,0.5,0.5'])
  text = _text(problem_check.check_data(PENGUIN, root))
  assert 'row 4: label 7 is no class index (0..2)' in text
  assert '1 rows miss a column of the label' in text


def test_schema_missing_wrong_type_and_fixed_shape(tmp_path):
  missing = str(tmp_path / 'none.pbtxt')
  assert '--write-schema' in _text(problem_check.check_schema(PENGUIN,
                                                              missing))
  text = open(paths.schema_path('penguin')).read()
  # body_mass_g as INT, with a shape; culmen_length_mm gone.
  text = text.replace(
      'name: "body_mass_g"\n  type: FLOAT\n  value_count { min: 1 max: 1 }',
      'name: "body_mass_g"\n  type: INT\n  shape { dim { size: 1 } }')
  text = text.replace('name: "culmen_length_mm"', 'name: "other"')
  bad = tmp_path / 'schema.pbtxt'
  bad.write_text(text)
  found = _text(problem_check.check_schema(PENGUIN, str(bad)))
  assert "declares no 'culmen_length_mm'" in found
  assert "'body_mass_g' is INT, the problem says float (FLOAT)" in found
  assert "'body_mass_g' has a fixed shape" in found
  bad.write_text('feature { nonsense')
  assert 'does not parse' in _text(problem_check.check_schema(PENGUIN,
                                                              str(bad)))


def test_an_unknown_problem_names_the_folder():
  assert 'models/nope/problem.py: no problem' in _text(
      problem_check.check('nope'))


def _main(*args):
  return subprocess.run(
      [sys.executable, '-m', 'pipeline.problem_check', *args],
      cwd=paths.REPO_ROOT, capture_output=True, text=True, timeout=600)


@pytest.mark.integration
def test_a_bad_span_is_found_by_tfdv(tmp_path):
  """(The bundled spans of every problem pass: tests/data.)"""
  root = tmp_path / 'data'
  shutil.copytree(paths.data_root('penguin'), root)
  path = root / 'span-2' / 'data.csv'
  lines = path.read_text().splitlines()
  # A mass in grams where the data is scaled to [0, 1]: schema-invalid.
  lines[1] = lines[1].rsplit(',', 1)[0] + ',4200'
  path.write_text('\n'.join(lines) + '\n')
  found = _main('--problem', 'penguin', '--data-root', str(root))
  assert found.returncode == 1
  out = found.stdout
  # The console has the findings only; TFDV's log goes to a file.
  assert found.stderr == ''
  assert 'span-2/data.csv: body_mass_g:' in out
  assert 'penguin: 1 thing(s) to fix' in out
