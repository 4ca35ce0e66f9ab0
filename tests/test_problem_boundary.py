"""The problem lives in one place: no code outside models/<problem>/ names a
problem's feature, label, label column, class or the problem itself.

Pipeline, components, serving, delivery, monitoring, continuous training,
lineage, the UI, the runners and the tools read the problem
(models/problem.py `load`); a name of one problem written into them would
fail or mislead on another (docs/adapt.md). Scanned: every string literal
that is not a docstring and every identifier of each package's Python, and
the UI's and model card's templates. Docstrings and comments may give an
example; tests, data, bench, docs and schemas are each problem's own or
about them.
"""

import ast
import os
import re

from models import problem as problems
from project import paths

# Not part of the runtime: each is about one problem by design.
SKIPPED_DIRS = {'tests', 'data', 'bench', 'docs', 'schema', 'outputs', 'build',
                '__pycache__'}
# The default problem's deployment (docs/adapt.md "What is the default
# problem's only"): TF Serving's config and manifests name one model.
SKIPPED_PATHS = {'serving/deploy', 'serving/openapi.yaml'}
TEMPLATE_SUFFIXES = ('.j2',)
# Where a name is allowed, and why.
ALLOWED = {
    ('project/paths.py', 'taxi'): 'DEFAULT_PROBLEM: the problem a command '
                                  'runs without --problem',
    ('models/tasks.py', 'penguin'): 'the multi-class accuracy floor says '
                                    'whose threshold it is (TFX\'s example)',
}


def _names():
  names = set()
  for name in problems.names():
    problem = problems.load(name)
    names |= {f.name for f in problem.features}
    names |= {problem.label.name, problem.label.transformed, name}
    names |= set(problem.label.columns) | set(problem.label.classes)
  return names


def _pattern(names):
  alternatives = '|'.join(sorted(map(re.escape, names), key=len, reverse=True))
  return re.compile(rf'(?<![A-Za-z0-9_])({alternatives})(?![A-Za-z0-9_])',
                    re.I)


def _files():
  problem_dirs = {os.path.join('models', n) for n in problems.names()}
  for root, dirs, files in os.walk(paths.REPO_ROOT):
    rel = os.path.relpath(root, paths.REPO_ROOT)
    dirs[:] = sorted(
        d for d in dirs if d not in SKIPPED_DIRS and not d.startswith('.') and
        not d.endswith('.egg-info') and
        os.path.normpath(os.path.join(rel, d)) not in problem_dirs | SKIPPED_PATHS)
    for name in sorted(files):
      path = os.path.normpath(os.path.join(rel, name))
      if path not in SKIPPED_PATHS and name.endswith(('.py',) +
                                                     TEMPLATE_SUFFIXES):
        yield path


def _docstring_lines(tree):
  lines = set()
  for node in ast.walk(tree):
    if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                         ast.AsyncFunctionDef)) and node.body:
      first = node.body[0]
      if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
        lines.add(first.value.lineno)
  return lines


def _identifier_pattern(names):
  """A name as a whole word of an identifier (big_tip_rate, TAXI_ROOT)."""
  alternatives = '|'.join(sorted(map(re.escape, names), key=len, reverse=True))
  return re.compile(rf'(?:^|_)({alternatives})(?:_|$)', re.I)


def _python_hits(text, pattern):
  tree = ast.parse(text)
  docs = _docstring_lines(tree)
  for node in ast.walk(tree):
    if (isinstance(node, ast.Constant) and isinstance(node.value, str) and
        node.lineno not in docs):
      for match in pattern.finditer(node.value):
        yield node.lineno, match.group(0), node.value[:60]
    name = (node.id if isinstance(node, ast.Name) else
            node.attr if isinstance(node, ast.Attribute) else
            node.name if isinstance(node, (ast.FunctionDef, ast.ClassDef))
            else None)
    if name and _IDENTIFIER.search(name):
      yield node.lineno, name, 'identifier'


def _template_hits(text, pattern):
  # Jinja comments ({# ... #}) may give an example, as docstrings do.
  text = re.sub(r'\{#.*?#\}', lambda m: '\n' * m.group(0).count('\n'), text,
                flags=re.S)
  for lineno, line in enumerate(text.splitlines(), start=1):
    for match in pattern.finditer(line):
      yield lineno, match.group(0), line.strip()[:60]


_IDENTIFIER = _identifier_pattern(_names())


def scan():
  pattern = _pattern(_names())
  found = []
  for path in _files():
    with open(os.path.join(paths.REPO_ROOT, path)) as f:
      text = f.read()
    hits = (_python_hits(text, pattern) if path.endswith('.py') else
            _template_hits(text, pattern))
    for lineno, name, context in hits:
      if (path, name.lower()) not in ALLOWED:
        found.append(f'{path}:{lineno}: {name!r} in {context!r}')
  return found


def test_no_module_outside_the_problem_folders_names_a_problem():
  assert scan() == []


def test_the_scan_finds_a_name_where_one_is_written(tmp_path):
  """The scan can fail: a literal, an identifier, a template line."""
  pattern = _pattern(_names())
  code = ("'''A docstring may say fare.'''\n"
          "x = row['payment_type']\nbig_tip_rate = 1\nf'{species}'\n")
  hits = [name for _, name, _ in _python_hits(code, pattern)]
  assert 'payment_type' in hits and 'big_tip_rate' in hits
  assert 'species' in hits and 'fare' not in hits
  template = '{# a comment on tips #}\n<td>{{ row.Adelie }}</td>\n'
  assert [name for _, name, _ in _template_hits(template, pattern)] == [
      'Adelie']
