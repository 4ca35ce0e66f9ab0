"""List served model versions with their lineage, roll back, promote.

    python -m delivery.versions list
    python -m delivery.versions rollback          # stop serving the newest version
    python -m delivery.versions rollback 1795690717   # stop serving that one
    python -m delivery.versions promote 1795690717 --label stable --model_config_file models.config

`list` shows every version under the model base path and, from ML Metadata,
the pipeline run that pushed it, whether it was blessed, the Trainer's
hyperparameters and code version; for a version ML Metadata does not know
(a run killed after its push, before the push was recorded) it falls back
to the record the Pusher wrote inside the version
(serving.base_path.PUSH_RECORD). `rollback` moves a version to
`<base>/.rolled-back/<version>` with one atomic rename: TF Serving's default
`latest` policy (this project's server and the official one alike) then
serves the previous version on its next poll, in-flight requests finish on
the old one, and the Pusher never pushes a rolled-back model again. `promote` points a
version label (`stable`, `canary`) at a version in a TF Serving model config
file, replacing the file atomically (delivery/config_file.py); a server
started with --model_config_file_poll_wait_seconds > 0 picks it up. Safe to run while a
server is serving; every action is appended to `<base>/.versions.log`.

rollback and promote hold the base path's lock (serving.base_path) while
they read and change it, as delivery.cd and the Pusher do, so concurrent
ones act one after the other, each on what the previous one left:
`rollback` without a version rolls back the newest version at the moment it
holds the lock (two of them roll back two versions, never the same one
twice), while `rollback V` names its target and is idempotent (a second
one finds V rolled back, says so and changes nothing): name the version to
undo exactly one bad push. promote locks the base path of the model it
labels: what it must keep consistent is that the version it labels is on
disk (not being rolled back, as CD may) and that CD's edits of the same
model's entry are not interleaved with its own.

Exit status: 0 done (or nothing to do), 1 refused or failed (rollback would
leave nothing to serve, the lock is busy, a filesystem error), 2 usage (bad
arguments; a config file, model or version named that does not exist).
Every error is one line on stderr.
"""

import argparse
import dataclasses
import json
import os
import sys
from typing import Dict, List, Optional

from lineage import graph
from lineage import metadata_store
from project import cli
from project import paths
from delivery import config_file
from serving import base_path
from serving import model_config

ROLLED_BACK_DIR = base_path.ROLLED_BACK_DIR
ACTION_LOG = base_path.ACTION_LOG
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
LOCK_TIMEOUT_S = base_path.DEFAULT_TIMEOUT_S


class Error(Exception):
  """A refused or impossible command: one line on stderr, exit `code`."""

  def __init__(self, message: str, code: int = EXIT_FAILED):
    super().__init__(message)
    self.code = code


@dataclasses.dataclass
class VersionInfo:
  version: int
  path: str
  rolled_back: bool
  run: Optional[str] = None
  blessed: Optional[bool] = None
  hparams: Optional[Dict] = None
  code_version: Optional[str] = None
  # Where run/blessed came from: 'metadata', 'push record' (ML Metadata
  # does not know the version; the Pusher's file in it does), or None.
  lineage_source: Optional[str] = None


def rolled_back_versions(base: str) -> List[int]:
  return model_config.versions_on_disk(os.path.join(base, ROLLED_BACK_DIR))


def _trainer_config(store, model_id) -> Dict:
  """The Trainer's custom_config (hparams, code_version) of a Model id."""
  try:
    trainer = graph.producer(store, int(model_id))
  except (TypeError, ValueError):
    return {}
  return graph.custom_config(trainer) if trainer is not None else {}


def _lineage(store, info: VersionInfo) -> None:
  """Fills run / blessing / Trainer config from ML Metadata, if recorded,
  else from the Pusher's record in the version directory."""
  found = (graph.version_lineage(store, str(info.version), read_files=False)
           if store is not None else None)
  if found is not None:
    info.run = found.pusher.run if found.pusher else None
    info.blessed = found.blessed
    info.hparams = found.hparams
    info.code_version = found.trainer_code_version
    info.lineage_source = 'metadata'
    return
  record = _push_record(info)
  if record is None:
    return
  info.run = record.get('pipeline_run_id')
  info.blessed = record.get('blessed')
  info.lineage_source = 'push record'
  if store is not None and record.get('model_id'):
    config = _trainer_config(store, record['model_id'])
    info.hparams = config.get('hparams')
    info.code_version = config.get('code_version')


def _push_record(info: VersionInfo) -> Optional[Dict]:
  """The record, wherever the version is now (a rollback may move it)."""
  for path in (info.path, os.path.join(os.path.dirname(info.path),
                                       ROLLED_BACK_DIR, str(info.version))):
    record = base_path.read_push_record(path)
    if record is not None:
      return record
  return None


def list_versions(base: str, store=None) -> List[VersionInfo]:
  """Served and rolled-back versions, newest first, with lineage if known.

  Takes no lock: a version rolled back while it lists is shown once, as
  rolled back (the served directory is listed first).
  """
  found = {v: VersionInfo(v, os.path.join(base, str(v)), False)
           for v in model_config.versions_on_disk(base)}
  found.update({v: VersionInfo(v, os.path.join(base, ROLLED_BACK_DIR, str(v)),
                               True)
                for v in rolled_back_versions(base)})
  infos = sorted(found.values(), key=lambda i: i.version, reverse=True)
  for info in infos:
    _lineage(store, info)
  return infos


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
      if version in rolled_back_versions(base):
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


def promote(path: str, model_name: str, version: int,
            label: str, lock_timeout: Optional[float] = None) -> None:
  """Points `label` at `version` in a TF Serving model config file.

  The version must exist under the model's base path; with a `specific`
  policy it is added to the served versions. The file is replaced
  atomically, so a server re-reading it never sees half a config. Holds
  the lock of the model's base path from the version check to the write.
  """
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
  except config_file.Error as e:
    raise Error(str(e), EXIT_USAGE) from None  # the file named is wrong


def main(argv=None) -> int:
  parser = cli.ArgumentParser(prog='python -m delivery.versions',
                              description=__doc__.split('\n\n')[0],
                              underscores=True)
  parser.add_argument('command', choices=['list', 'rollback', 'promote'])
  parser.add_argument('version', nargs='?', type=int,
                      help='promote: the version to label; rollback: the '
                      'version to roll back (default: the newest)')
  parser.add_argument('--label', default='stable', help='promote: label name')
  parser.add_argument('--model_config_file', default=None,
                      help='promote: TF Serving model config file to edit')
  parser.add_argument('--model_name', default=paths.MODEL_NAME)
  parser.add_argument('--model_base_path',
                      default=os.path.join(paths.SERVING_DIR, paths.MODEL_NAME),
                      help='TF Serving model base path (default: %(default)s)')
  parser.add_argument('--lock_timeout', type=float, default=LOCK_TIMEOUT_S,
                      help='rollback, promote: seconds to wait for another '
                      'rollback, promote, CD run or push on the same base '
                      'path to finish (default: %(default)s)')
  # Lineage comes from the store the pipeline wrote: the runners' flags.
  metadata_store.add_flags(parser)
  args = parser.parse_args(argv)
  try:
    return _run(parser, args)
  except Error as e:
    print(f'{parser.prog}: error: {e}', file=sys.stderr)
    return e.code
  except base_path.Busy as e:
    print(f'{parser.prog}: error: {e}', file=sys.stderr)
    return EXIT_FAILED
  except OSError as e:  # the filesystem refused: permissions, disk, ...
    print(f'{parser.prog}: error: {e}', file=sys.stderr)
    return EXIT_FAILED


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
  base = args.model_base_path
  if args.command == 'promote':
    if args.version is None or not args.model_config_file:
      parser.error('promote needs VERSION and --model_config_file')
    promote(args.model_config_file, args.model_name, args.version, args.label,
            args.lock_timeout)
    return EXIT_OK
  if args.command == 'rollback':
    rollback(base, args.version, args.lock_timeout)
    return EXIT_OK
  if args.version is not None:
    parser.error('list takes no VERSION')
  connection = metadata_store.store_config(metadata_store.from_flags(args))
  store = None  # no SQLite file yet: list versions without lineage
  if (not connection.HasField('sqlite') or
      os.path.exists(connection.sqlite.filename_uri)):
    store = metadata_store.open_store(connection)
  infos = list_versions(base, store)
  if not infos:
    print(f'No versions under {base}')
  serving = next((i.version for i in infos if not i.rolled_back), None)
  for info in infos:
    state = ('rolled back' if info.rolled_back else
             'SERVED (latest)' if info.version == serving else 'on disk')
    source = (' (lineage from the push record: not in ML Metadata)'
              if info.lineage_source == 'push record' else '')
    print(f'{info.version}  {state:<16} run={info.run or "?"}  '
          f'blessed={info.blessed}  code={info.code_version}  '
          f'hparams={json.dumps(info.hparams) if info.hparams else None}'
          f'{source}')
  busy = base_path.holder(base) if os.path.isdir(base) else None
  if busy is not None:
    print(f'(a change is in progress: {base}/{base_path.LOCK_FILE} is held '
          f'by pid {busy.get("pid", "?")}: {busy.get("command", "?")})')
  return EXIT_OK


if __name__ == '__main__':
  sys.exit(main())
