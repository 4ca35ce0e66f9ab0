"""docs/adapt.md is true: a new problem is a folder, its data and its schema.

In a copy of the tree, the page's example problem (`churn`: another feature
set, a binary label derived from a column the model does not read) is added
exactly as the page says: its two files taken from the page, three spans of
generated customers, the schema inferred by `problem_check --write-schema`.
Then the check passes and `local_runner.py --problem churn` ingests,
trains, blesses, pushes and serves it, and no file outside the problem's
folder, data, schema and outputs was touched.
"""

import hashlib
import math
import os
import random
import re
import shutil
import subprocess
import sys

import pytest

from tests import helpers

pytestmark = pytest.mark.e2e

NAME = 'churn'
PAGE = os.path.join(helpers.REPO, 'docs', 'adapt.md')
# What an adopter adds; everything else must stay as it was.
OWN = (f'models/{NAME}/', f'data/{NAME}/', f'schema/{NAME}/', 'outputs/')


def _page_files():
  """{path: text} of each code block the page introduces with `path`:."""
  with open(PAGE) as f:
    page = f.read()
  return dict(re.findall(r'^`([\w/]+\.py)`:\n\n```python\n(.*?)```', page,
                         re.M | re.S))


def _tree_files():
  listed = subprocess.run(
      ['git', 'ls-files', '--cached', '--others', '--exclude-standard', '-z'],
      cwd=helpers.REPO, capture_output=True, check=True).stdout
  return [f for f in listed.decode().split('\0')
          if f and os.path.isfile(os.path.join(helpers.REPO, f))]


def _customers(rng, n):
  """Rows of a CRM export: churn is likelier on monthly contracts, short
  tenure, many support calls; the label's column is days since login."""
  rows = []
  for _ in range(n):
    contract = rng.choice(['monthly', 'monthly', 'yearly', 'two-year'])
    tenure = rng.uniform(1, 60)
    calls = rng.randint(0, 9)
    charges = rng.uniform(20, 120)
    logit = (-1.5 + 2.5 * (contract == 'monthly') - 0.06 * tenure +
             0.45 * calls + 0.01 * (charges - 70))
    churns = rng.random() < 1 / (1 + math.exp(-logit))
    days = rng.randint(31, 90) if churns else rng.randint(0, 30)
    rows.append({'customer_id': str(rng.randrange(10**8)),
                 'tenure_months': f'{tenure:.1f}',
                 'monthly_charges': f'{charges:.2f}', 'contract': contract,
                 'support_calls': str(calls), 'days_since_login': str(days)})
  return rows


def _digests(root, files):
  out = {}
  for f in files:
    with open(os.path.join(root, f), 'rb') as fh:
      out[f] = hashlib.sha256(fh.read()).hexdigest()
  return out


def _run(tree, *args, timeout=900):
  env = {**os.environ, 'PYTHONPATH': str(tree)}
  return subprocess.run([sys.executable, *args], cwd=tree, env=env,
                        capture_output=True, text=True, timeout=timeout)


def test_the_page_names_its_commands():
  with open(PAGE) as f:
    page = f.read()
  for command in (f'python -m pipeline.problem_check --problem {NAME} '
                  '--write-schema',
                  f'python -m pipeline.problem_check --problem {NAME}',
                  f"make run ARGS='--problem {NAME}'"):
    assert command in page
  assert set(_page_files()) == {f'models/{NAME}/problem.py',
                                f'models/{NAME}/preprocessing.py'}


def test_a_new_problem_runs_end_to_end_with_no_edit_elsewhere(tmp_path):
  tree = tmp_path / 'tree'
  files = _tree_files()
  for f in files:
    os.makedirs(tree / os.path.dirname(f), exist_ok=True)
    shutil.copy2(os.path.join(helpers.REPO, f), tree / f)
  before = _digests(tree, files)

  # 1. The folder, as the page writes it.
  for path, text in _page_files().items():
    os.makedirs(tree / os.path.dirname(path), exist_ok=True)
    (tree / path).write_text(text)
  (tree / 'models' / NAME / '__init__.py').write_text('')
  # 2. The data: three spans.
  rng = random.Random(7)
  for span in (1, 2, 3):
    helpers.write_csv(str(tree / 'data' / NAME / f'span-{span}' / 'data.csv'),
                      _customers(rng, 250))
  # Before a schema exists the check says what is missing, and exits 1.
  missing = _run(tree, '-m', 'pipeline.problem_check', '--problem', NAME)
  assert missing.returncode == 1, missing.stdout + missing.stderr
  assert f'schema/{NAME}/schema.pbtxt' in missing.stdout
  assert '--write-schema' in missing.stdout
  # 3. The schema, inferred; 4. the check passes.
  checked = _run(tree, '-m', 'pipeline.problem_check', '--problem', NAME,
                 '--write-schema')
  assert checked.returncode == 0, checked.stdout + checked.stderr
  assert f'{NAME}: ready' in checked.stdout
  schema = (tree / 'schema' / NAME / 'schema.pbtxt').read_text()
  assert 'shape' not in schema and 'not_in_environment: "SERVING"' in schema

  # 5. Run it.
  ran = _run(tree, 'local_runner.py', '--problem', NAME)
  out = ran.stdout
  assert ran.returncode == 0, out + ran.stderr[-3000:]
  assert f"Running pipeline '{NAME}' on span 3, training window 1..3" in out
  assert re.search(r'candidate\s+AUC', out), out
  assert 'blessed            yes' in out, out
  assert 'infra validated    yes' in out
  version = re.search(r'pushed\s+version (\d+)', out).group(1)
  assert (tree / 'outputs' / 'serving' / NAME / version /
          'saved_model.pb').is_file()
  assert (tree / 'outputs' / NAME / 'pipeline' / 'metadata.sqlite').is_file()
  served = re.findall(r'^\s+(REST|gRPC)\s+:\d+\s+P\(churn\) = ([\d.]+)$',
                      out, re.M)
  assert [api for api, _ in served] == ['REST', 'gRPC'], out
  assert 0 < float(served[0][1]) < 1 and served[0][1] == served[1][1]

  # Nothing outside the problem's own files changed or appeared.
  assert _digests(tree, files) == before
  added = [str(p.relative_to(tree)) for p in tree.rglob('*')
           if p.is_file() and '__pycache__' not in p.parts]
  assert [f for f in added
          if f not in before and not f.startswith(OWN)] == []
