"""The session's shared world: expensive things built once, for every worker.

`make test` runs two pytest-xdist workers. A session fixture alone would be
built once per worker; these are built once per test session, in a folder
both workers see (the session's base temporary folder), under a file lock
(pytest-xdist's documented pattern, with the `filelock` package):

    path = world.once(tmp_path_factory, 'pushed', build)

The first worker to ask builds it while the other waits on the lock; every
later caller gets the folder. A build that fails is recorded, so the other
worker fails at once with the same message instead of building it again.

A test that only reads a world reads it in place. A test that changes one
(a new run, a rollback, a label) works on `copy(world, tmp_path)`: a copy
of the folder whose ML Metadata store and text files name the copy's paths,
so runs on the copy cache, resolve and push exactly as on the original.
tests/README.md says which world serves what.
"""

import contextlib
import dataclasses
import io
import json
import os
import pathlib
import shutil
import sqlite3
import traceback
from typing import Any, Callable, Dict, Optional

import filelock
import pytest

from tests import helpers

BUILT = '.built'
# A build that waits longer than this on the other worker's build is
# stuck, not slow (the slowest world takes a few minutes).
LOCK_TIMEOUT_S = 1800
# The text files a run writes that may name its own paths (model cards,
# reports, logs, the run lock, push records, configs); binary files
# (SavedModels, TFRecords) are copied as they are: nothing reads a path
# out of them.
TEXT_SUFFIXES = ('.json', '.md', '.html', '.log', '.lock', '.pbtxt', '.txt',
                 '.config', '.csv')


def shared_dir(tmp_path_factory) -> pathlib.Path:
  """The folder every worker of this session sees: the base temporary
  folder of the session (each xdist worker's own is a folder inside it)."""
  base = tmp_path_factory.getbasetemp()
  return base.parent if os.environ.get('PYTEST_XDIST_WORKER') else base


def once(tmp_path_factory, name: str,
         build: Callable[[pathlib.Path], None]) -> pathlib.Path:
  """The folder of world `name`, built by `build(folder)` on first use."""
  shared = shared_dir(tmp_path_factory)
  target = shared / 'world' / name
  failed = shared / 'world' / f'{name}.failed'
  target.parent.mkdir(parents=True, exist_ok=True)
  with filelock.FileLock(str(target) + '.lock', timeout=LOCK_TIMEOUT_S):
    if (target / BUILT).exists():
      return target
    if failed.exists():
      pytest.fail(f'the shared world {name!r} failed to build earlier in '
                  f'this session:\n{failed.read_text()}', pytrace=False)
    if target.exists():  # a build killed half-way
      shutil.rmtree(target)
    target.mkdir()
    try:
      build(target)
    except BaseException as e:
      # pytest's skip/fail outcomes are BaseExceptions too: record them.
      failed.write_text(''.join(traceback.format_exception_only(type(e), e))
                        + traceback.format_exc()[-6000:])
      raise
    (target / BUILT).write_text('')
  return target


def copy(world: pathlib.Path, dest: pathlib.Path) -> pathlib.Path:
  """A copy of `world` at `dest` (new or empty) that names itself: every path under the
  world in the ML Metadata stores (artifact URIs, execution and artifact
  properties such as ExampleGen's input_base or the Pusher's destination)
  and in its text files becomes the same path under `dest`."""
  dest = pathlib.Path(dest)
  shutil.copytree(world, dest, symlinks=True, dirs_exist_ok=True,
                  ignore=shutil.ignore_patterns(BUILT))
  old, new = str(world), str(dest)
  for path in dest.rglob('*'):
    if path.is_symlink() or not path.is_file():
      continue
    if path.name.endswith('.sqlite'):
      _rewrite_store(path, old, new)
    elif path.suffix in TEXT_SUFFIXES:
      try:
        text = path.read_text()
      except UnicodeDecodeError:
        continue
      if old in text:
        path.write_text(text.replace(old, new))
  return dest


def _rewrite_store(path: pathlib.Path, old: str, new: str) -> None:
  """Replaces `old` with `new` in every text column of an ML Metadata
  SQLite store (its schema is ML Metadata's; no other tool reads it)."""
  with sqlite3.connect(str(path)) as db:
    tables = [row[0] for row in db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'")]
    for table in tables:
      for _, column, kind, *_ in db.execute(f'PRAGMA table_info("{table}")'):
        if kind.upper() == 'TEXT' or 'CHAR' in kind.upper():
          db.execute(f'UPDATE "{table}" SET "{column}" = '
                     f'REPLACE("{column}", ?, ?) WHERE "{column}" LIKE ?',
                     (old, new, f'%{old}%'))


@dataclasses.dataclass
class PipelineWorld:
  """A folder holding data/, pipeline/ (artifacts and ML Metadata) and
  serving/, and the runs made there (world.json: each run's knobs, its
  pipeline_run id, window, error, what it printed and the versions it left
  on disk)."""
  root: pathlib.Path
  runs: Dict[str, Dict[str, Any]]

  @classmethod
  def load(cls, root) -> 'PipelineWorld':
    root = pathlib.Path(root)
    path = root / 'world.json'
    runs = json.loads(path.read_text()) if path.exists() else {}
    return cls(root, runs)

  def cfg(self, run: Optional[str] = None, **changes):
    """The PipelineConfig of `run` (default: FAST_PIPELINE's) here."""
    from pipeline import configs  # pylint: disable=g-import-not-at-top
    knobs = self.runs[run]['knobs'] if run else helpers.FAST_PIPELINE
    return configs.PipelineConfig(**{
        'data_root': str(self.root / 'data'),
        'pipeline_root': str(self.root / 'pipeline'),
        'serving_dir': str(self.root / 'serving'), **knobs, **changes})

  def run(self, name: str, **knobs):
    """Runs the pipeline (LocalDagRunner) with FAST_PIPELINE and `knobs`;
    records it as `name`; returns its RunOutcome."""
    from pipeline.run_pipeline import run_pipeline  # pylint: disable=g-import-not-at-top
    from tfx.orchestration.local.local_dag_runner import LocalDagRunner  # pylint: disable=g-import-not-at-top
    knobs = {**helpers.FAST_PIPELINE, **knobs}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
      outcome = run_pipeline(self.cfg(**knobs), LocalDagRunner)
    self.runs[name] = {'knobs': knobs, 'run_id': outcome.run_id,
                       'ok': outcome.ok, 'error': outcome.error,
                       'window': outcome.window,
                       'pushed_version': outcome.pushed_version,
                       # What the run left served (version directories).
                       'versions_after': helpers.pushed_versions(
                           self.cfg(**knobs)),
                       'printed': printed.getvalue()}
    (self.root / 'world.json').write_text(json.dumps(self.runs, indent=1))
    return outcome

  def outcome(self, name: str):
    """Run `name`'s RunOutcome, read back from this folder's store."""
    from lineage import metadata_store  # pylint: disable=g-import-not-at-top
    from pipeline import run_pipeline  # pylint: disable=g-import-not-at-top
    run = self.runs[name]
    cfg = self.cfg(name)
    outcome = run_pipeline.read_outcome(
        cfg, metadata_store.store_config(cfg), run['ok'], run['error'],
        run['window'], 0.0, run['run_id'])
    assert outcome.pushed_version == run['pushed_version'], (name, run)
    return outcome

  def store(self):
    """This folder's ML Metadata store."""
    from lineage import metadata_store  # pylint: disable=g-import-not-at-top
    return metadata_store.open_store(metadata_store.store_config(self.cfg()))

  def copy(self, dest) -> 'PipelineWorld':
    """A copy at `dest` to change (tests/world.py `copy`)."""
    return PipelineWorld.load(copy(self.root, pathlib.Path(dest)))
