"""The layout's rules, checked: which folder may import which, and what the
light processes (the model server, the lineage and delivery tools) load.

Each top-level folder is a role (README "Layout"). A role may import only
the roles below it in ALLOWED; the test reads every import statement (ast,
function-level imports included) and names each one that breaks the table.
The second half starts the real commands with `python -X importtime` and
reads which modules they actually loaded, so an import hidden behind a
function call or a third module is caught too.
"""

import ast
import os
import subprocess
import sys
import time
import urllib.request

import pytest

from tests import helpers

REPO = helpers.REPO

# role -> the project roles it may import ('serving.base_path': that module
# only). Roles are top-level packages; the runners are the top-level
# scripts and dags/. The pipeline reads serving's contract, not its server:
# base_path (what is on disk) and model_config (which version is `stable`:
# the baseline, components/baseline.py; the versions served, for the CT
# controller). data/ (the bundled spans and their rules, data/spans.py) is
# the bottom layer: every role that reads spans may import it.
ALLOWED = {
    'project': set(),
    # The problems and what a prediction means: pure Python, for every role.
    'models': {'project'},
    'data': {'models', 'project'},
    'lineage': {'project', 'serving.base_path'},
    'serving': {'models', 'project'},
    # How a run is operated, whatever it runs: the run lock, dead runs, the
    # console, the CSV check, reproducibility, the private-TFX adapter.
    'ops': {'project', 'data', 'lineage'},
    # The pipeline's own components (custom, beside TFX's stock ones); the
    # InfraValidator loads the candidate in a real `python -m serving`.
    'components': {'project', 'models', 'data', 'lineage', 'ops',
                   'serving.base_path', 'serving.model_config',
                   'serving.server_process', 'serving.client'},
    'monitoring': {'project', 'models', 'data', 'lineage', 'serving'},
    # The DAG and its configuration; a run reads serving's contract (what
    # is on disk, which version is `stable`), not its server.
    'pipeline': {'project', 'models', 'data', 'lineage', 'ops', 'components',
                 'serving.base_path', 'serving.model_config'},
    'continuous_training': {'project', 'models', 'data', 'lineage', 'ops',
                            'monitoring', 'pipeline', 'components',
                            'serving.base_path', 'serving.model_config'},
    'delivery': {'project', 'models', 'data', 'lineage', 'serving'},
    # The local Flink cluster: its harnesses take the pipeline's hash seed.
    'cluster': {'project', 'ops.reproducible'},
    'runners': {'project', 'pipeline', 'components', 'ops', 'lineage', 'data',
                'serving'},
    # The web UI (python -m ui) reads what every other role recorded.
    'ui': {'project', 'models', 'data', 'lineage', 'monitoring',
           'continuous_training', 'delivery', 'serving'},
}
RUNNERS = ('local_runner.py', 'beam_runner.py', 'vertex_runner.py',
           'score_runner.py', 'dags')
# Heavy libraries a role must never import (lineage: the lineage CLI starts
# in a second, and reads artifacts without TF; delivery and serving: no TFX).
_TF_STACK = {'tensorflow', 'tfx', 'tensorflow_model_analysis',
             'tensorflow_data_validation', 'tensorflow_transform',
             'apache_beam', 'keras', 'tf_keras'}
FORBIDDEN_EXTERNAL = {
    'project': _TF_STACK,
    'lineage': _TF_STACK,
    'data': _TF_STACK,
    'serving': _TF_STACK - {'tensorflow'},
    'delivery': _TF_STACK - {'tensorflow'},
    'monitoring': _TF_STACK - {'tensorflow'},
    'cluster': _TF_STACK - {'apache_beam'},  # the worker pool is Beam's
    'ui': _TF_STACK,  # starts in a second: reads artifacts without TF
}
ROLES = set(ALLOWED) - {'runners'}
# Files that may import what their role must not, and why.
EXCEPTIONS = {
    # A one-off converter of the tfx wheel's TFRecords into CSV spans; no
    # process imports it.
    'data/make_penguin_spans.py': {'tensorflow'},
}


def _role(path: str) -> str:
  top = path.split(os.sep)[0]
  if top in RUNNERS:
    return 'runners'
  return top


def _sources():
  for role_dir in sorted(ROLES) + list(RUNNERS):
    full = os.path.join(REPO, role_dir)
    if os.path.isfile(full):
      yield role_dir
      continue
    for root, _, files in os.walk(full):
      for name in sorted(files):
        if name.endswith('.py'):
          yield os.path.relpath(os.path.join(root, name), REPO)


def _imports(path: str):
  """(line, dotted name) of every absolute import in the file."""
  with open(os.path.join(REPO, path)) as f:
    tree = ast.parse(f.read(), path)
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for alias in node.names:
        yield node.lineno, alias.name
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
      for alias in node.names:
        yield node.lineno, f'{node.module}.{alias.name}'


def _allowed(role: str, name: str) -> bool:
  top = name.split('.')[0]
  if top == role or top not in ROLES:
    return True
  for rule in ALLOWED[role]:
    if name == rule or name.startswith(rule + '.') or rule == top:
      return True
  return False


def violations():
  found = []
  for path in _sources():
    role = _role(path)
    for line, name in _imports(path):
      top = name.split('.')[0]
      if not _allowed(role, name):
        found.append(f'{path}:{line} imports {name} ({role} may import '
                     f'{sorted(ALLOWED[role]) or "no project role"})')
      if (top in FORBIDDEN_EXTERNAL.get(role, ())
          and top not in EXCEPTIONS.get(path, ())):
        found.append(f'{path}:{line} imports {top} ({role} must not)')
  return found


def test_every_import_follows_the_layer_table():
  assert violations() == []


def test_the_table_can_fail(tmp_path, monkeypatch):
  # A serving module importing the pipeline, and lineage importing TFX,
  # are each named (the check is not vacuous).
  os.makedirs(tmp_path / 'serving')
  os.makedirs(tmp_path / 'lineage')
  (tmp_path / 'serving' / 'bad.py').write_text(
      'def f():\n  from pipeline import configs\n')
  (tmp_path / 'lineage' / 'bad.py').write_text('import tfx.v1 as tfx\n')
  monkeypatch.setattr(sys.modules[__name__], 'REPO', str(tmp_path))
  monkeypatch.setattr(sys.modules[__name__], 'RUNNERS', ())
  assert violations() == [
      'lineage/bad.py:1 imports tfx (lineage must not)',
      "serving/bad.py:2 imports pipeline.configs (serving may import "
      "['models', 'project'])",
  ]


def _cycle(edges):
  """A cycle in {node: {nodes it points to}} as a list, else None."""
  state = {}

  def visit(node, path):
    state[node] = 'open'
    for nxt in sorted(edges.get(node, ())):
      if state.get(nxt) == 'open':
        return path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt]
      if nxt not in state:
        found = visit(nxt, path + [nxt])
        if found:
          return found
    state[node] = 'done'
    return None

  for start in sorted(edges):
    if start not in state:
      found = visit(start, [start])
      if found:
        return found
  return None


def _role_edges(table):
  return {role: {rule.split('.')[0] for rule in rules} - {role}
          for role, rules in table.items()}


def test_the_table_has_no_import_cycle():
  """A role may import only roles that never import it back, even through
  a third: the table is a layering, not a web."""
  assert _cycle(_role_edges(ALLOWED)) is None
  # The check can fail: lineage importing ui closes ui -> lineage.
  cycle = _cycle(_role_edges({**ALLOWED, 'lineage': {'ui'}}))
  assert cycle and cycle[0] == cycle[-1] and {'lineage', 'ui'} <= set(cycle)


def test_the_code_has_no_import_cycle_between_roles():
  """What the files import, role to role (the table allows a subset)."""
  edges = {}
  for path in _sources():
    role = _role(path)
    for _, name in _imports(path):
      top = name.split('.')[0]
      if top in ROLES and top != role:
        edges.setdefault(role, set()).add(top)
  assert _cycle(edges) is None


def test_every_role_is_in_the_table():
  tops = {name for name in os.listdir(REPO)
          if os.path.isfile(os.path.join(REPO, name, '__init__.py'))}
  assert tops - {'tests', 'bench', 'docs'} == ROLES


# --- what the light processes really load ---------------------------------
def _loaded(stderr: str):
  """Module names from `python -X importtime` output."""
  names = set()
  for line in stderr.splitlines():
    if line.startswith('import time:') and '|' in line:
      names.add(line.rsplit('|', 1)[1].strip())
  return names


def _heavy(names):
  return sorted(n for n in names
                if n.split('.')[0] in {'tfx', 'tensorflow_model_analysis',
                                       'tensorflow_data_validation',
                                       'apache_beam', 'pipeline'})


@pytest.mark.integration
def test_the_model_server_never_loads_tfx_or_the_pipeline(tmp_path,
                                                          trained_model):
  base = tmp_path / 'taxi'
  os.makedirs(base)
  subprocess.run(['cp', '-r', trained_model.serving_model_dir,
                  str(base / '1')], check=True)
  # stderr to a file: -X importtime writes more than a pipe holds.
  err_path = tmp_path / 'stderr'
  with open(err_path, 'w') as err:
    proc = subprocess.Popen(
        [sys.executable, '-X', 'importtime', '-m', 'serving', '--model_name',
         'taxi', '--model_base_path', str(base), '--rest_api_port', '0',
         '--port', '0'],
        cwd=REPO, stdout=subprocess.PIPE, stderr=err, text=True)
  try:
    line, deadline = '', time.time() + 120
    while time.time() < deadline and not line.startswith('REST_API_PORT='):
      line = proc.stdout.readline()
      if not line and proc.poll() is not None:
        break
    assert line.startswith('REST_API_PORT='), 'server did not start'
    port = dict(i.split('=') for i in line.split())['REST_API_PORT']
    body = urllib.request.urlopen(
        f'http://127.0.0.1:{port}/v1/models/taxi', timeout=30).read()
    assert b'AVAILABLE' in body  # the model is loaded, not just the module
  finally:
    proc.terminate()
    proc.wait(timeout=30)
  stderr = err_path.read_text()
  loaded = _loaded(stderr)
  assert 'tensorflow' in loaded  # the check sees what the server imports
  assert _heavy(loaded) == []


@pytest.mark.parametrize('command', [
    ['-m', 'lineage', 'version', '1'],
    ['-m', 'delivery.versions', 'list'],
])
def test_the_lineage_and_delivery_tools_never_load_tfx(tmp_path, command):
  # An empty store and base path: the tools open both, find nothing, exit.
  result = subprocess.run(
      [sys.executable, '-X', 'importtime', *command,
       '--metadata-path', str(tmp_path / 'metadata.sqlite'),
       '--model-base-path' if 'delivery' in command[1] else '--serving-dir',
       str(tmp_path / 'serving')],
      cwd=REPO, capture_output=True, text=True, timeout=120)
  loaded = _loaded(result.stderr)
  assert 'ml_metadata' in loaded or 'delivery.versions' in loaded
  assert _heavy(loaded) == []
  assert 'tensorflow' not in {n.split('.')[0] for n in loaded}


def test_tests_mirror_the_packages():
  # A folder of tests per role (and tests/runners/ for the runners).
  missing = [role for role in sorted(ALLOWED)
             if not os.path.isfile(os.path.join(REPO, 'tests', role,
                                                '__init__.py'))]
  assert missing == []


# One concept per module: over this many lines, a module is usually two.
MAX_MODULE_LINES = 450


def test_no_module_is_over_the_line_budget():
  long = []
  for path in _sources():
    with open(os.path.join(REPO, path)) as f:
      lines = sum(1 for _ in f)
    if lines > MAX_MODULE_LINES:
      long.append(f'{path}: {lines} lines')
  assert long == []
