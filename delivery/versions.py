"""List served model versions with their labels and lineage; roll back,
restore, label.

    python -m delivery.versions list          # labels, steps, hparams, run
    python -m delivery.versions rollback      # stop serving the newest version
    python -m delivery.versions rollback 1795690717   # stop serving that one
    python -m delivery.versions restore 1795690717    # undo that rollback
    python -m delivery.versions write-config  # a model config file for labels
    python -m delivery.versions promote 1795690717 --label stable

`list` shows every version under the model base path, one line each: its
state (SERVED (latest), on disk, rolled back), the labels the model config
file points at it, the Trainer's train steps, the pipeline run that pushed
it, whether it was blessed, the Trainer's code version and hyperparameters
(those tuned marked). Run, blessing and code come from ML Metadata; for a
version ML Metadata does not know (a run killed after its push, before the
push was recorded) from the record the Pusher wrote inside the version
(serving.base_path.PUSH_RECORD). Steps and hyperparameters are what the
Trainer's run_fn used, from the model card the Pusher wrote inside the
version (its history.json), else the Trainer's train_args and custom_config
in ML Metadata. Labels are read from --model_config_file; without that
file (the default one not written yet) the labels are left out.

`rollback` moves a version to `<base>/.rolled-back/<version>` with one
atomic rename: TF Serving's default `latest` policy (this project's server
and the official one alike) then serves the previous version on its next
poll, in-flight requests finish on the old one, and the Pusher never pushes
a rolled-back model again (its duplicate check looks in .rolled-back/ too).
`restore V` undoes `rollback V`: it moves V back to `<base>/V`, where a
`latest` policy serves it again if it is the newest version (a label or a
`specific` policy naming it serves it too); the Pusher then finds the model
served as V and still never pushes it again, nor reuses the number.

`write-config` writes a TF Serving model config file for the base path:
the model's name, the absolute base path, a `latest` policy (as
serving/deploy/models.config; `--policy specific` serves the `stable`
version only, which delivery.cd needs) and the `stable` label on the newest
version on disk. Its default place, --model_config_file
outputs/serving/models.config, is git-ignored; it never replaces an
existing file without --force. Serve it with `python -m serving
--model_config_file outputs/serving/models.config
--model_config_file_poll_wait_seconds 1`. `promote` points a label
(`stable`, `canary`) at a version in that file (or the one named),
replacing the file atomically (delivery/config_file.py); a server started
with --model_config_file_poll_wait_seconds > 0 picks it up. It warns when
the policy does not serve the version (`latest` and an older version):
TF Serving refuses a label on a version it does not serve. Safe to run
while a server is serving; every change is appended to
`<base>/.versions.log`.

rollback, restore, write-config and promote hold the base path's lock
(serving.base_path) while they read and change it, as delivery.cd and the
Pusher do, so concurrent ones act one after the other, each on what the
previous one left: `rollback` without a version rolls back the newest
version at the moment it holds the lock (two of them roll back two
versions, never the same one twice), while `rollback V` names its target
and is idempotent (a second one finds V rolled back, says so and changes
nothing): name the version to undo exactly one bad push. `restore V` is
idempotent the same way. promote locks the base path of the model it
labels: what it must keep consistent is that the version it labels is on
disk (not being rolled back, as CD may) and that CD's edits of the same
model's entry are not interleaved with its own.

Exit status: 0 done (or nothing to do), 1 refused or failed (rollback would
leave nothing to serve, restore would replace a version, write-config would
replace a file or serve nothing, the lock is busy, a filesystem error), 2
usage (bad arguments; a config file, model or version named that does not
exist, a version to restore that is neither rolled back nor served). Every
error is one line on stderr.
"""

import argparse
import os
import sys
from typing import Dict, List, Optional

from lineage import metadata_store
from project import cli
from project import paths
from delivery import config_file
from delivery import version_list
from serving import base_path
from serving import model_config

ROLLED_BACK_DIR = base_path.ROLLED_BACK_DIR
ACTION_LOG = base_path.ACTION_LOG
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
LOCK_TIMEOUT_S = base_path.DEFAULT_TIMEOUT_S
PROG = 'python -m delivery.versions'
WRITE_CONFIG = 'write-config'
COMMANDS = ('list', 'rollback', 'restore', WRITE_CONFIG, 'promote')


class Error(Exception):
  """A refused or impossible command: one line on stderr, exit `code`."""

  def __init__(self, message: str, code: int = EXIT_FAILED):
    super().__init__(message)
    self.code = code


def _log_action(base: str, action: str, **details) -> None:
  base_path.log_action(base, action, **details)
  print(f'{action}: ' + ', '.join(f'{k}={v}' for k, v in details.items()))


def _locked(base: str, what: str, timeout: Optional[float]):
  if not os.path.isdir(base):
    raise Error(f'model base path {base} is not a directory', EXIT_USAGE)
  return base_path.locked(base, LOCK_TIMEOUT_S if timeout is None else timeout,
                          what=what)


def rollback(base: str, version: Optional[int] = None,
             lock_timeout: Optional[float] = None) -> Optional[int]:
  """Moves a version aside; returns the newest one left (what `latest` serves).

  Without `version`, the newest, and only if another one is left to serve.
  delivery.cd names the version it rejected: never "the newest", since the
  Pusher may have pushed another one meanwhile, and a rejected first version
  may leave nothing (it was never stable). A named version already rolled
  back is left as it is (idempotent). Holds the base path's lock.
  """
  with _locked(base, f'rollback {version or "newest"}', lock_timeout):
    served = model_config.versions_on_disk(base)
    if version is None:
      if len(served) < 2:
        raise Error(f'rollback needs at least two versions under {base}; '
                    f'found {served}')
      version = served[-1]
    elif version not in served:
      if version in version_list.rolled_back_versions(base):
        now_serving = served[-1] if served else None
        print(f'rollback: version {version} is already rolled back, '
              f'now_serving={now_serving}')
        return now_serving
      raise Error(f'version {version} is not under {base} (there: {served})',
                  EXIT_USAGE)
    target = os.path.join(base, ROLLED_BACK_DIR, str(version))
    if os.path.lexists(target):  # a number pushed again after its rollback
      raise Error(f'{target} already exists: move it away first')
    left = [v for v in served if v != version]
    os.makedirs(os.path.join(base, ROLLED_BACK_DIR), exist_ok=True)
    os.rename(os.path.join(base, str(version)), target)
    now_serving = left[-1] if left else None
    _log_action(base, 'rollback', rolled_back=version, now_serving=now_serving)
    return now_serving


def restore(base: str, version: int,
            lock_timeout: Optional[float] = None) -> Optional[int]:
  """Moves rolled-back `version` back to `<base>/<version>`; returns the
  newest version then on disk (what `latest` serves).

  Idempotent: a version already served is left as it is. Refused (Error,
  exit 1) when `<base>/<version>` exists beside the rolled-back copy;
  usage (exit 2) when the version is neither served nor rolled back. Holds
  the base path's lock. The Pusher, which never pushes a model it finds
  under the base path or .rolled-back/, then finds it served as `version`.
  """
  with _locked(base, f'restore {version}', lock_timeout):
    served = model_config.versions_on_disk(base)
    source = os.path.join(base, ROLLED_BACK_DIR, str(version))
    target = os.path.join(base, str(version))
    if version not in version_list.rolled_back_versions(base):
      if version in served:
        print(f'restore: version {version} is already served, '
              f'now_serving={served[-1]}')
        return served[-1]
      raise Error(f'version {version} is not rolled back under {base} '
                  '(rolled back: '
                  f'{version_list.rolled_back_versions(base)})', EXIT_USAGE)
    if os.path.lexists(target):
      raise Error(f'{target} already exists beside {source}: move one of '
                  'them away first')
    os.rename(source, target)
    now_serving = max(served + [version])
    _log_action(base, 'restore', restored=version, now_serving=now_serving)
    return now_serving


def _config_error(e: config_file.Error, path: str) -> Error:
  """A usage error (the file named is wrong); a missing file says which
  command writes it."""
  if os.path.exists(path):
    return Error(str(e), EXIT_USAGE)
  flag = ('' if path == paths.MODEL_CONFIG_FILE else
          f' --model_config_file {path}')
  return Error(f'{e} (write it first: {PROG} {WRITE_CONFIG}{flag})',
               EXIT_USAGE)


def promote(path: str, model_name: str, version: int,
            label: str, lock_timeout: Optional[float] = None) -> None:
  """Points `label` at `version` in a TF Serving model config file.

  The version must exist under the model's base path; with a `specific`
  policy it is added to the served versions. The file is replaced
  atomically, so a server re-reading it never sees half a config. Holds
  the lock of the model's base path from the version check to the write.
  A label TF Serving cannot serve (config_file.check_label) is a usage
  error, before the file is read.
  """
  try:
    config_file.check_label(label)
  except ValueError as e:
    raise Error(str(e), EXIT_USAGE) from None
  try:
    base = config_file.load(path, model_name).base_path
    with _locked(base, f'promote {version} as {label}', lock_timeout):
      proto = config_file.read(path)  # again: as it is now, under the lock
      entry = config_file.entry(proto, model_name, path)
      on_disk = model_config.versions_on_disk(base)
      if version not in on_disk:
        raise Error(f'version {version} is not under {base} (there: '
                    f'{on_disk})', EXIT_USAGE)
      previous = config_file.set_label(entry, label, version)
      config_file.write(path, proto)
      _log_action(base, 'promote', model=model_name, label=label,
                  version=version, previous=previous, config=path)
      _warn_if_not_served(proto, model_name, version, on_disk)
  except config_file.Error as e:
    raise _config_error(e, path) from None


def _warn_if_not_served(proto, model_name: str, version: int,
                        on_disk: List[int]) -> None:
  """TF Serving refuses a config whose label names a version its policy
  does not serve (this server answers 404 for the label): say so."""
  config = model_config.find(model_config.parse(model_config.to_text(proto)),
                             model_name)
  if version not in model_config.wanted_versions(config, on_disk):
    print(f'{PROG}: warning: the {config.policy} policy does not serve '
          f'version {version}, so TF Serving refuses its label; a specific '
          f'policy serves what is promoted ({WRITE_CONFIG} --policy specific '
          '--force)', file=sys.stderr)


def write_config(path: str, model_name: str, base: str,
                 policy: str = 'latest', force: bool = False,
                 lock_timeout: Optional[float] = None) -> Optional[int]:
  """Writes a TF Serving model config file serving the model at `base`.

  The entry is serving/deploy/models.config's with this base path
  (absolute) and the `stable` label on the newest version on disk, if any
  (config_file.new_config). An existing file is kept (Error, exit 1)
  unless `force`; either way the file appears whole. Returns the version
  labelled stable. Holds the base path's lock, so the label names a version
  on disk.
  """
  with _locked(base, f'{WRITE_CONFIG} {path}', lock_timeout):
    served = model_config.versions_on_disk(base)
    stable = served[-1] if served else None
    if policy == 'specific' and stable is None:
      raise Error(f'a specific policy would serve nothing: no version under '
                  f'{base}')
    proto = config_file.new_config(model_name, os.path.abspath(base), policy,
                                   stable)
    try:
      config_file.create(path, proto, replace_existing=force)
    except FileExistsError:
      raise Error(f'{path} exists: kept as it is (--force replaces it)'
                 ) from None
    _log_action(base, 'write_config', model=model_name, config=path,
                policy=policy, stable=stable)
  print(f'serve it: python -m serving --model_config_file {path} '
        '--model_config_file_poll_wait_seconds 1')
  return stable


def parser() -> cli.ArgumentParser:
  doc = __doc__.split('\n\n', 1)
  p = cli.ArgumentParser(prog=PROG, description=doc[0], epilog=doc[1],
                         formatter_class=argparse.RawDescriptionHelpFormatter,
                         underscores=True)
  p.add_argument('command', choices=COMMANDS)
  p.add_argument('version', nargs='?', type=int,
                 help='promote: the version to label; rollback: the version '
                 'to roll back (default: the newest); restore: the rolled-'
                 'back version to serve again')
  p.add_argument('--label', default=config_file.STABLE_LABEL,
                 help='promote: label name, one TF Serving can serve: not '
                 "empty, no '/', ':', whitespace or control characters "
                 '(default: %(default)s)')
  p.add_argument('--model_config_file', default=paths.MODEL_CONFIG_FILE,
                 help=f'TF Serving model config file: {WRITE_CONFIG} writes '
                 'it, promote edits it, list shows its labels (default: '
                 '%(default)s, git-ignored)')
  p.add_argument('--policy', choices=config_file.POLICIES, default='latest',
                 help=f'{WRITE_CONFIG}: serve the newest version (latest) or '
                 'the stable one only (specific, for delivery.cd) (default: '
                 '%(default)s)')
  p.add_argument('--force', action='store_true',
                 help=f'{WRITE_CONFIG}: replace an existing file')
  p.add_argument('--model_name', default=None,
                 help="model in the config file (default: the problem's "
                 'name, --problem)')
  p.add_argument('--model_base_path', default=None,
                 help='TF Serving model base path (default: '
                 f'{os.path.join(paths.SERVING_DIR, "<model_name>")})')
  p.add_argument('--lock_timeout', type=cli.timeout_seconds,
                 default=LOCK_TIMEOUT_S,
                 help='rollback, restore, write-config, promote: seconds to '
                 'wait for another rollback, promote, CD run or push on the '
                 'same base path to finish (default: %(default)s)')
  # Lineage comes from the store the pipeline wrote: the runners' flags.
  metadata_store.add_flags(p)
  return p


def main(argv=None) -> int:
  p = parser()
  args = p.parse_args(argv)
  args.model_name = args.model_name or metadata_store.from_flags(args).problem
  args.model_base_path = args.model_base_path or os.path.join(
      paths.SERVING_DIR, args.model_name)
  try:
    return _run(p, args)
  except Error as e:
    print(f'{p.prog}: error: {e}', file=sys.stderr)
    return e.code
  except base_path.Busy as e:
    print(f'{p.prog}: error: {e}', file=sys.stderr)
    return EXIT_FAILED
  except OSError as e:  # the filesystem refused: permissions, disk, ...
    print(f'{p.prog}: error: {e}', file=sys.stderr)
    return EXIT_FAILED


def _run(p: argparse.ArgumentParser, args: argparse.Namespace) -> int:
  base = args.model_base_path
  if args.command in ('promote', 'restore') and args.version is None:
    p.error(f'{args.command} needs VERSION')
  if args.command in (WRITE_CONFIG, 'list') and args.version is not None:
    p.error(f'{args.command} takes no VERSION')
  if args.command == 'promote':
    promote(args.model_config_file, args.model_name, args.version, args.label,
            args.lock_timeout)
  elif args.command == 'rollback':
    rollback(base, args.version, args.lock_timeout)
  elif args.command == 'restore':
    restore(base, args.version, args.lock_timeout)
  elif args.command == WRITE_CONFIG:
    write_config(args.model_config_file, args.model_name, base, args.policy,
                 args.force, args.lock_timeout)
  else:
    _list(args)
  return EXIT_OK


def _open_store(args: argparse.Namespace):
  """The pipeline's store; None when its SQLite file does not exist yet."""
  connection = metadata_store.store_config(metadata_store.from_flags(args))
  if (connection.HasField('sqlite') and
      not os.path.exists(connection.sqlite.filename_uri)):
    return None
  return metadata_store.open_store(connection)


def _labels(args: argparse.Namespace) -> Optional[Dict[int, List[str]]]:
  """version -> labels from the model config file; None (no labels shown)
  when the default file has not been written."""
  path = args.model_config_file
  if path == paths.MODEL_CONFIG_FILE and not os.path.exists(path):
    return None
  try:
    return config_file.version_labels(path, args.model_name)
  except config_file.Error as e:
    raise _config_error(e, path) from None


def _list(args: argparse.Namespace) -> None:
  base = args.model_base_path
  labelled = _labels(args)
  infos = version_list.list_versions(base, _open_store(args))
  if not infos:
    print(f'No versions under {base}')
  else:
    for line in version_list.table(infos, labelled):
      print(line)
  if labelled is None and infos:
    print(f'(no labels: {args.model_config_file} does not exist; '
          f'{PROG} {WRITE_CONFIG} writes it)')
  for skipped in model_config.scan_versions(base).skipped:  # never counted
    print(f'{PROG}: warning: not a version, never served: {skipped.path}: '
          f'{skipped.why}', file=sys.stderr)
  busy = base_path.holder(base) if os.path.isdir(base) else None
  if busy is not None:
    print(f'(a change is in progress: {base}/{base_path.LOCK_FILE} is held '
          f'by pid {busy.get("pid", "?")}: {busy.get("command", "?")})')


if __name__ == '__main__':
  sys.exit(main())
