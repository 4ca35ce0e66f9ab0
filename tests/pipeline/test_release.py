"""pipeline/release.py and pipeline/release_run.py: the code continuous
training runs is a release, frozen and versioned, not the checkout.

Unit tests on copies of this tree's released files (no pipeline); one
integration test runs the CT controller twice on a copy of the shared
pipeline world: on a release whose preprocessing differs from the checkout
(a marker the module writes when it is imported), then after a rollback.
"""

import ast
import json
import os
import subprocess
import sys

import pytest

from lineage import graph
from pipeline import release
from project import paths
from tests import helpers


def test_a_release_holds_every_package_setup_py_installs():
  with open(os.path.join(paths.REPO_ROOT, 'setup.py')) as f:
    tree = ast.parse(f.read())
  [include] = [k.value for node in ast.walk(tree) if isinstance(node, ast.Call)
               for k in node.keywords if k.arg == 'include']
  packages = {e.value.split('.')[0] for e in include.elts}
  assert packages <= set(release.RELEASED_DIRS), packages
  files = release.source_files(paths.REPO_ROOT)
  assert 'models/taxi/preprocessing.py' in files
  assert 'schema/taxi/schema.pbtxt' in files
  assert 'requirements.lock' in files
  assert not [f for f in files if '__pycache__' in f or f.endswith('.csv')
              or f.startswith(('tests/', 'outputs/', 'docs/'))]


def test_the_version_is_the_digest_of_the_code(tmp_path):
  source = helpers.copy_released_tree(tmp_path / 'src')
  root = str(tmp_path / 'pipeline')
  first = release.create(source, root, 'taxi', compile_ir=False)
  assert len(first.version) == release.VERSION_CHARS
  # Bytecode, data and outputs are not code: the same release.
  os.makedirs(os.path.join(source, 'data', 'taxi', 'span-99'))
  helpers.append_to(source, os.path.join('data', 'taxi', 'span-99', 'data.csv'), 'a,b\n')
  os.makedirs(os.path.join(source, 'models', '__pycache__'), exist_ok=True)
  helpers.append_to(source, os.path.join('models', '__pycache__', 'x.pyc'), 'junk')
  assert release.create(source, root, 'taxi',
                        compile_ir=False).version == first.version
  assert [h['action'] for h in release.history(root)] == ['create']
  helpers.append_to(source, 'models/taxi/preprocessing.py', '\n# a change\n')
  second = release.create(source, root, 'taxi', compile_ir=False)
  assert second.version != first.version
  assert release.current(root).version == second.version
  # A release never changes: the first still holds the old file.
  with open(os.path.join(first.code_dir, 'models/taxi/preprocessing.py')) as f:
    assert '# a change' not in f.read()
  assert '+# a change' in release.diff(root, first.version, second.version)
  assert release.diff(root, first.version, first.version) == ''


def test_rollback_makes_the_previous_release_current(tmp_path):
  source = helpers.copy_released_tree(tmp_path / 'src')
  root = str(tmp_path / 'pipeline')
  with pytest.raises(release.ReleaseError, match='no release yet'):
    release.rollback(root)
  first = release.create(source, root, 'taxi', compile_ir=False)
  with pytest.raises(release.ReleaseError, match='only release'):
    release.rollback(root)
  helpers.append_to(source, 'pipeline/configs.py', '\n# two\n')
  second = release.create(source, root, 'taxi', compile_ir=False)
  assert release.rollback(root).version == first.version
  assert release.current(root).version == first.version
  assert [(h['action'], h['version']) for h in release.history(root)] == [
      ('create', first.version), ('create', second.version),
      ('rollback', first.version)]
  # Releasing the second again makes it current again, as it was.
  assert release.create(source, root, 'taxi',
                        compile_ir=False).version == second.version
  assert release.current(root).version == second.version


def test_a_release_records_its_commit_and_runs_report_it(tmp_path):
  source = helpers.copy_released_tree(tmp_path / 'src')
  made = release.create(source, str(tmp_path / 'pipeline'), 'taxi',
                        compile_ir=False)
  from lineage import readers  # pylint: disable=g-import-not-at-top
  # The copy is no checkout: its commit is unknown, and the release's code,
  # though inside this checkout's outputs/, reports the release's own.
  assert made.git_commit == readers.UNKNOWN
  with open(os.path.join(made.code_dir, release.RELEASE_FILE), 'w') as f:
    json.dump({'git_commit': 'abc123', 'git_dirty': False}, f)
  assert readers.git_revision(made.code_dir) == ('abc123', False)


def test_a_release_compiles_its_ir_and_the_cli_reads_it(tmp_path):
  """The IR is compiled by the release's own code (a process importing
  from it); the CLI lists and shows releases and names errors in one line."""
  flags = ['--pipeline-root', str(tmp_path / 'pipeline'),
           '--metadata-path', str(tmp_path / 'metadata.sqlite')]
  cli = lambda *args: subprocess.run(
      [sys.executable, '-m', 'pipeline.release', *args, *flags],
      cwd=helpers.REPO, capture_output=True, text=True, timeout=300,
      check=False)
  done = cli('show')
  assert done.returncode == 2 and done.stderr.count('\n') == 1, done.stderr
  assert 'no release yet' in done.stderr
  made = release.create(helpers.copy_released_tree(tmp_path / 'src'),
                        str(tmp_path / 'pipeline'), 'taxi')
  with open(os.path.join(made.path, release.IR_FILE)) as f:
    ir = json.load(f)
  nodes = {n['pipelineNode']['nodeInfo']['id'] for n in ir['nodes']}
  assert {'CsvExampleGen', 'Transform', 'Trainer', 'Evaluator',
          'Pusher'} <= nodes
  done = cli('list')
  assert made.version in done.stdout and 'CURRENT' in done.stdout
  assert made.version in cli('show').stdout
  done = cli('diff', made.version, 'nope')
  assert done.returncode == 2 and "no release 'nope'" in done.stderr


MARKER = '''
import os as _os
if _os.environ.get('RELEASE_MARKER'):
  with open(_os.environ['RELEASE_MARKER'], 'a') as _f:
    _f.write(__file__ + '\\n')
'''


def _trainer_code_version(store, run_id: str) -> str:
  [trainer] = [e for e in graph.run_executions(store, run_id)
               if graph.node_id(store.get_contexts_by_execution(e.id),
                                'taxi') == 'Trainer']
  return graph.custom_config(trainer)['code_version']


@pytest.mark.integration
def test_ct_runs_the_current_release_not_the_checkout(pipeline_world,
                                                      tmp_path, monkeypatch):
  """The case that flips it: the release's preprocessing differs from the
  checkout's. CT runs the release's (its module is imported from the
  release's code, the Trainer's code fingerprint is the release's); after
  a rollback it runs the previous release's (the checkout's code)."""
  from continuous_training import config as ct_config  # pylint: disable=g-import-not-at-top
  from continuous_training import controller  # pylint: disable=g-import-not-at-top
  from pipeline import cache_keys  # pylint: disable=g-import-not-at-top
  world = pipeline_world.copy(tmp_path / 'world')
  cfg = world.cfg()
  marker = tmp_path / 'imported.txt'
  monkeypatch.setenv('RELEASE_MARKER', str(marker))
  checkout = release.create(paths.REPO_ROOT, cfg.pipeline_root, 'taxi',
                            compile_ir=False)
  source = helpers.copy_released_tree(tmp_path / 'src')
  helpers.append_to(source, 'models/taxi/preprocessing.py', MARKER)
  edited = release.create(source, cfg.pipeline_root, 'taxi', compile_ir=False)
  ct = ct_config.CTConfig(
      monitoring_report=str(tmp_path / 'monitoring' / 'report.json'))

  def ct_run():
    result = controller.run_once(cfg, ct, None, force_reason='test')
    assert result.outcome.ok, result.outcome.error
    store = world.store()
    [decision] = store.get_executions_by_id([result.decision.execution_id])
    return result.outcome, store, decision

  outcome, store, decision = ct_run()
  imported = marker.read_text().split()
  assert imported and all(p.startswith(edited.code_dir) for p in imported)
  assert _trainer_code_version(store, outcome.run_id) != (
      cache_keys.code_version('taxi', cache_keys.TRAINER_CODE))
  assert decision.properties['release'].string_value == edited.version
  run = store.get_context_by_type_and_name('pipeline_run', outcome.run_id)
  assert run.custom_properties[graph.RELEASE_KEY].string_value == (
      edited.version)
  if outcome.pushed_version:  # its lineage and its card name the release
    from lineage import provenance  # pylint: disable=g-import-not-at-top
    from serving import base_path  # pylint: disable=g-import-not-at-top
    found = provenance.version_lineage(store, outcome.pushed_version,
                                       read_files=False)
    assert found.trainer.release == edited.version
    with open(base_path.model_card_path(outcome.pushed_path, 'json')) as f:
      card = json.load(f)
    assert card['model_details']['pipeline_release'] == edited.version

  assert release.rollback(cfg.pipeline_root).version == checkout.version
  marker.unlink()
  outcome, store, decision = ct_run()
  assert not marker.exists()  # the checkout's preprocessing has no marker
  assert _trainer_code_version(store, outcome.run_id) == (
      cache_keys.code_version('taxi', cache_keys.TRAINER_CODE))
  assert decision.properties['release'].string_value == checkout.version

  # A release that fails at run time is named by the decision that ran it.
  helpers.append_to(source, 'models/taxi/preprocessing.py', '\ndef broken(:\n')
  broken = release.create(source, cfg.pipeline_root, 'taxi', compile_ir=False)
  result = controller.run_once(cfg, ct, None, force_reason='test')
  assert not result.outcome.ok
  [decision] = world.store().get_executions_by_id(
      [result.decision.execution_id])
  assert decision.properties['release'].string_value == broken.version
  outcome_text = decision.properties['outcome'].string_value
  assert outcome_text.startswith(f'failed: release {broken.version}: ')
  assert 'SyntaxError' in outcome_text, outcome_text
