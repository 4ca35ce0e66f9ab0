"""Pipeline releases: the code continuous training runs, frozen and versioned.

    python -m pipeline.release create            # gate the working tree, release it
    python -m pipeline.release list              # releases, the current one
    python -m pipeline.release show [V]          # what V is (default: current)
    python -m pipeline.release diff V1 V2        # the code change between two
    python -m pipeline.release rollback          # the previous release runs next

A release is a directory `<pipeline root>/releases/<version>/`: `code/`, a
copy of every file the pipeline runs (the project's packages, the runners,
the curated schemas, the lock that pins the environment: RELEASED below;
never data, outputs or tests), `pipeline_ir.json`, the TFX IR that code
compiles for the local runner (what its DAG is, for the record and for
`diff`), and `release.json` (its digest, the git commit and whether the
checkout was dirty, when). Its version is the first 12 hex digits of the
sha256 of its files' names and contents, the way TFX names a packaged
module file's wheel by a hash of its content: the same code is the same
release, and a release never changes once made. `<root>/releases/CURRENT`
names the release continuous training runs (`pipeline/release_run.py`);
`history.jsonl` logs every create and rollback. Each release is also a
`pipeline_release` context in ML Metadata, and every run of a release
records its version on its `pipeline_run` context (lineage/graph.py).

Why code and not only the IR: TFX's IR names user code by module path
(`models.taxi.preprocessing.preprocessing_fn`), so an IR alone would run
whatever the checkout holds; TFX packages a `module_file` into a wheel for
the same reason. Here the whole project is the user code, so it is copied.
"""

import argparse
import dataclasses
import datetime
import difflib
import hashlib
import json
import os
import shutil
import subprocess
import sys
from typing import Dict, List, Optional

from lineage import readers
from project import cli
from project import paths

RELEASES_DIR = 'releases'
CURRENT_FILE = 'CURRENT'
HISTORY_FILE = 'history.jsonl'
RELEASE_FILE = readers.RELEASE_RECORD  # in the release dir and its code/
IR_FILE = 'pipeline_ir.json'
CONTEXT_TYPE = 'pipeline_release'
# What a release holds: these directories' files of these kinds, and these
# top-level files. setup.py's packages are among them (tested).
RELEASED_DIRS = ('project', 'models', 'data', 'ops', 'components', 'pipeline',
                 'lineage', 'continuous_training', 'monitoring', 'serving',
                 'delivery', 'ui', 'schema', 'dags')
RELEASED_SUFFIXES = ('.py', '.j2', '.pbtxt', '.yaml', '.json')
RELEASED_FILES = ('local_runner.py', 'beam_runner.py', 'score_runner.py',
                  'vertex_runner.py', 'setup.py', 'requirements.lock')
VERSION_CHARS = 12


class ReleaseError(Exception):
  """A release command that cannot do what was asked; one line."""


@dataclasses.dataclass
class Release:
  version: str
  path: str  # <root>/releases/<version>
  git_commit: str
  git_dirty: Optional[bool]
  created: str
  problem: str
  files: int

  @property
  def code_dir(self) -> str:
    return os.path.join(self.path, 'code')


def releases_dir(pipeline_root: str) -> str:
  return os.path.join(pipeline_root, RELEASES_DIR)


def source_files(source: str) -> List[str]:
  """The released files of the tree at `source`, relative, sorted."""
  found = [f for f in RELEASED_FILES if os.path.isfile(os.path.join(source, f))]
  for top in RELEASED_DIRS:
    for dirpath, dirnames, filenames in os.walk(os.path.join(source, top)):
      dirnames[:] = sorted(d for d in dirnames
                           if d != '__pycache__' and not d.startswith('.'))
      found += [os.path.relpath(os.path.join(dirpath, f), source)
                for f in filenames if f.endswith(RELEASED_SUFFIXES)]
  return sorted(found)


def digest(source: str, files: List[str]) -> str:
  """sha256 over the files' names and contents (names with / on any OS)."""
  h = hashlib.sha256()
  for name in files:
    with open(os.path.join(source, name), 'rb') as f:
      h.update(name.replace(os.sep, '/').encode() + b'\0' + f.read() + b'\0')
  return h.hexdigest()


def load(pipeline_root: str, version: str) -> Release:
  path = os.path.join(releases_dir(pipeline_root), version)
  try:
    with open(os.path.join(path, RELEASE_FILE)) as f:
      record = json.load(f)
  except (OSError, ValueError) as e:
    raise ReleaseError(f'no release {version!r} under '
                       f'{releases_dir(pipeline_root)} ({e})') from None
  return Release(path=path, **{k: record[k] for k in (
      'version', 'git_commit', 'git_dirty', 'created', 'problem', 'files')})


def current(pipeline_root: str) -> Optional[Release]:
  """The release continuous training runs; None before the first."""
  try:
    with open(os.path.join(releases_dir(pipeline_root), CURRENT_FILE)) as f:
      version = f.read().strip()
  except FileNotFoundError:
    return None
  return load(pipeline_root, version)


def history(pipeline_root: str) -> List[Dict]:
  try:
    with open(os.path.join(releases_dir(pipeline_root), HISTORY_FILE)) as f:
      return [json.loads(line) for line in f if line.strip()]
  except FileNotFoundError:
    return []


def _now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).isoformat(
      timespec='seconds')


def _set_current(pipeline_root: str, version: str, action: str,
                 **details) -> None:
  """CURRENT replaced atomically, then the history line."""
  base = releases_dir(pipeline_root)
  tmp = os.path.join(base, f'.{CURRENT_FILE}.{os.getpid()}')
  with open(tmp, 'w') as f:
    f.write(version + '\n')
  os.replace(tmp, os.path.join(base, CURRENT_FILE))
  with open(os.path.join(base, HISTORY_FILE), 'a') as f:
    f.write(json.dumps({'time': _now(), 'action': action,
                        'version': version, **details}) + '\n')


def create(source: str, pipeline_root: str, problem: str,
           compile_ir: bool = True, activate: bool = True) -> Release:
  """Freezes the tree at `source` as a release (the same code: the same
  release, returned as it is) and, with `activate`, makes it current: the
  step the gate (pipeline/release_gate.py) takes once its checks pass."""
  files = source_files(source)
  if not files:
    raise ReleaseError(f'{source}: none of the released files is there')
  full = digest(source, files)
  version = full[:VERSION_CHARS]
  base = releases_dir(pipeline_root)
  final = os.path.join(base, version)
  if not os.path.isdir(final):
    incoming = os.path.join(base, f'.incoming-{version}-{os.getpid()}')
    shutil.rmtree(incoming, ignore_errors=True)
    for name in files:
      os.makedirs(os.path.dirname(os.path.join(incoming, 'code', name)),
                  exist_ok=True)
      shutil.copy2(os.path.join(source, name),
                   os.path.join(incoming, 'code', name))
    commit, dirty = readers.git_revision(source)
    record = {'version': version, 'digest': full, 'git_commit': commit,
              'git_dirty': dirty, 'created': _now(), 'problem': problem,
              'files': len(files)}
    for where in (incoming, os.path.join(incoming, 'code')):
      with open(os.path.join(where, RELEASE_FILE), 'w') as f:
        json.dump(record, f, indent=2)
    if compile_ir:
      _compile_ir(os.path.join(incoming, 'code'), problem,
                  os.path.join(incoming, IR_FILE), pipeline_root)
    try:
      os.rename(incoming, final)
    except OSError:  # made meanwhile by another create of the same code
      shutil.rmtree(incoming, ignore_errors=True)
  release = load(pipeline_root, version)
  if activate:
    make_current(pipeline_root, release, 'create')
  return release


def make_current(pipeline_root: str, release: Release, action: str) -> None:
  """Makes `release` the one CT runs next (no-op if it already is)."""
  now = current(pipeline_root)
  if now is None or now.version != release.version:
    _set_current(pipeline_root, release.version, action,
                 previous=now.version if now else None)


def _compile_ir(code_dir: str, problem: str, out: str,
                pipeline_root: str) -> None:
  """The release's own code compiles its pipeline (in a process whose
  imports come from `code_dir`, not from the checkout)."""
  env = dict(os.environ, PYTHONPATH=code_dir, PYTHONHASHSEED='0')
  done = subprocess.run(
      [sys.executable, '-m', 'pipeline.release_ir', '--problem', problem,
       '--pipeline-root', pipeline_root, '--out', out],
      cwd=code_dir, env=env, capture_output=True, text=True, check=False)
  if done.returncode != 0:
    tail = (done.stderr.strip().splitlines() or ['no output'])[-1]
    raise ReleaseError(f'the release does not compile: {tail}')


def rollback(pipeline_root: str) -> Release:
  """Makes the release that was current before this one current again."""
  now = current(pipeline_root)
  if now is None:
    raise ReleaseError('no release yet: nothing to roll back')
  currents = [h['version'] for h in history(pipeline_root)]
  earlier = [v for v in currents if v != now.version]
  # The newest other release that was current before the present one.
  for version in reversed(earlier):
    _set_current(pipeline_root, version, 'rollback', previous=now.version)
    return load(pipeline_root, version)
  raise ReleaseError(f'{now.version} is the only release: nothing to roll '
                     'back to')


def diff(pipeline_root: str, old: str, new: str, context: int = 3) -> str:
  """The code change from release `old` to `new`, as a unified diff."""
  a, b = load(pipeline_root, old), load(pipeline_root, new)
  names = sorted(set(source_files(a.code_dir)) | set(source_files(b.code_dir)))
  out = []
  for name in names:
    before, after = _lines(a, name), _lines(b, name)
    if before != after:
      out += difflib.unified_diff(before, after, f'{old}/{name}',
                                  f'{new}/{name}', n=context)
  return ''.join(out)


def _lines(release: Release, name: str) -> List[str]:
  """A released file's lines; none if the release does not hold it."""
  path = os.path.join(release.code_dir, name)
  if not os.path.exists(path):
    return []
  with open(path, errors='replace') as f:
    return f.read().splitlines(keepends=True)


def record(store, pipeline_name: str, release: Release):
  """The release as a `pipeline_release` context (idempotent)."""
  from ml_metadata.proto import metadata_store_pb2  # pylint: disable=g-import-not-at-top
  name = f'{pipeline_name}@{release.version}'
  found = store.get_context_by_type_and_name(CONTEXT_TYPE, name)
  if found is not None:
    return found
  type_id = store.put_context_type(
      metadata_store_pb2.ContextType(name=CONTEXT_TYPE))
  context = metadata_store_pb2.Context(type_id=type_id, name=name)
  for key in ('version', 'git_commit', 'created', 'problem', 'path'):
    context.custom_properties[key].string_value = str(getattr(release, key))
  if release.git_dirty is not None:
    context.custom_properties['git_dirty'].int_value = int(release.git_dirty)
  [context.id] = store.put_contexts([context])
  return context


def describe(release: Release, is_current: bool = False) -> str:
  dirty = ' (dirty checkout)' if release.git_dirty else ''
  return (f'{release.version}{"  CURRENT" if is_current else ""}  created '
          f'{release.created}  git {release.git_commit[:12]}{dirty}  '
          f'{release.files} files  problem {release.problem}')


def main(argv=None) -> int:
  from pipeline import configs  # pylint: disable=g-import-not-at-top
  parser = cli.ArgumentParser(
      prog='python -m pipeline.release', description=__doc__.split('\n\n')[0],
      epilog=__doc__.split('\n\n', 1)[1],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  common = argparse.ArgumentParser(add_help=False)
  configs.add_flags(common)  # where the pipeline root and its store are
  commands = parser.add_subparsers(dest='command', required=True)
  add = lambda name, text: commands.add_parser(name, help=text,
                                               parents=[common])
  made = add('create', 'run the gate on the working tree; release it if '
             'it passes (pipeline/release_gate.py)')
  made.add_argument('--source', default=paths.REPO_ROOT,
                    help='the tree to release (default: this checkout)')
  made.add_argument('--gate-span', type=int, default=None,
                    help='the span the gate\'s runs use (default: the newest)')
  add('list', 'every release, the current one marked')
  add('show', 'one release (default: the current one)').add_argument(
      'version', nargs='?')
  diffed = add('diff', 'the code change from OLD to NEW')
  diffed.add_argument('old')
  diffed.add_argument('new')
  add('rollback', 'the previous release runs next')
  args = parser.parse_args(argv)
  cfg = configs.from_flags(args)
  root = cfg.pipeline_root
  try:
    if args.command == 'create':
      from lineage import metadata_store  # pylint: disable=g-import-not-at-top
      from pipeline import release_gate  # pylint: disable=g-import-not-at-top
      report = release_gate.gate(os.path.abspath(args.source), cfg,
                                 args.gate_span)
      print(report.text())
      if not report.passed:
        print('nothing released: continuous training keeps running '
              f'{report.current or "the working tree"}')
        return 1
      release = load(root, report.candidate)
      record(metadata_store.open_store(metadata_store.store_config(cfg)),
             cfg.pipeline_name, release)
      print(f'release {release.version} is current: continuous training '
            f'runs it next\n  {describe(release, True)}')
    elif args.command == 'list':
      now = current(root)
      versions = list(dict.fromkeys(h['version'] for h in history(root)))
      for version in reversed(versions):
        print(describe(load(root, version),
                       now is not None and version == now.version))
      if not versions:
        print(f'no release under {releases_dir(root)}: '
              'python -m pipeline.release create')
    elif args.command == 'show':
      release = (load(root, args.version) if args.version else current(root))
      if release is None:
        raise ReleaseError('no release yet: python -m pipeline.release create')
      print(describe(release) + f'\n  {release.path}')
    elif args.command == 'diff':
      print(diff(root, args.old, args.new) or
            f'{args.old} and {args.new} run the same code')
    else:
      release = rollback(root)
      print(f'release {release.version} is current again: continuous '
            'training runs it next')
  except ReleaseError as e:
    print(f'python -m pipeline.release: error: {e}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  sys.exit(main())
