"""List served model versions with their lineage, and roll back.

    python -m serving.versions list
    python -m serving.versions rollback          # stop serving the newest version
    python -m serving.versions promote 1795690717 --label stable --model-config-file models.config

`list` shows every version under the model base path and, from ML Metadata,
the pipeline run that pushed it, whether it was blessed, the Trainer's
hyperparameters and code version. `rollback` moves the newest version to
`<base>/.rolled-back/<version>` with one atomic rename: TF Serving's default
`latest` policy (this project's server and the official one alike) then
serves the previous version on its next poll, in-flight requests finish on
the old one, and the Pusher never pushes a rolled-back model again. `promote` points a
version label (`stable`, `canary`) at a version in a TF Serving model config
file, replacing the file atomically; a server started with
--model_config_file_poll_wait_seconds > 0 picks it up. Safe to run while a
server is serving; every action is appended to `<base>/.versions.log`.
"""

import argparse
import dataclasses
import datetime
import json
import os
import sys
from typing import Dict, List, Optional

from pipeline import configs
from pipeline import lineage
from pipeline import metadata_store
from serving import model_config

ROLLED_BACK_DIR = configs.ROLLED_BACK_DIR
ACTION_LOG = configs.ACTION_LOG


@dataclasses.dataclass
class VersionInfo:
  version: int
  path: str
  rolled_back: bool
  run: Optional[str] = None
  blessed: Optional[bool] = None
  hparams: Optional[Dict] = None
  code_version: Optional[str] = None


def rolled_back_versions(base: str) -> List[int]:
  return model_config.versions_on_disk(os.path.join(base, ROLLED_BACK_DIR))


def _lineage(store, info: VersionInfo) -> None:
  """Fills run / blessing / Trainer config from ML Metadata, if recorded."""
  found = lineage.version_lineage(store, str(info.version), read_files=False)
  if found is None:
    return
  info.run = found.pusher.run if found.pusher else None
  info.blessed = found.blessed
  info.hparams = found.hparams
  info.code_version = found.trainer_code_version


def list_versions(base: str, store=None) -> List[VersionInfo]:
  """Served and rolled-back versions, newest first, with lineage if known."""
  infos = [VersionInfo(v, os.path.join(base, str(v)), False)
           for v in model_config.versions_on_disk(base)]
  infos += [VersionInfo(v, os.path.join(base, ROLLED_BACK_DIR, str(v)), True)
            for v in rolled_back_versions(base)]
  if store is not None:
    for info in infos:
      _lineage(store, info)
  return sorted(infos, key=lambda i: i.version, reverse=True)


def _log_action(base: str, action: str, **details) -> None:
  record = {'time': datetime.datetime.now(datetime.timezone.utc).isoformat(),
            'action': action, **details}
  with open(os.path.join(base, ACTION_LOG), 'a') as f:
    f.write(json.dumps(record) + '\n')
  print(f'{action}: ' + ', '.join(f'{k}={v}' for k, v in details.items()))


def rollback(base: str, version: Optional[int] = None) -> Optional[int]:
  """Moves a version aside; returns the newest one left (what `latest` serves).

  Without `version`, the newest, and only if another one is left to serve.
  serving.cd names the version it rejected: never "the newest", since the
  Pusher may have pushed another one meanwhile, and a rejected first version
  may leave nothing (it was never stable).
  """
  served = model_config.versions_on_disk(base)
  if version is None:
    if len(served) < 2:
      raise SystemExit(f'rollback needs at least two versions under {base}; '
                       f'found {served}')
    version = served[-1]
  elif version not in served:
    raise SystemExit(f'version {version} is not under {base} (there: {served})')
  left = [v for v in served if v != version]
  os.makedirs(os.path.join(base, ROLLED_BACK_DIR), exist_ok=True)
  os.rename(os.path.join(base, str(version)),
            os.path.join(base, ROLLED_BACK_DIR, str(version)))
  now_serving = left[-1] if left else None
  _log_action(base, 'rollback', rolled_back=version, now_serving=now_serving)
  return now_serving


def promote(config_file: str, model_name: str, version: int,
            label: str) -> None:
  """Points `label` at `version` in a TF Serving model config file.

  The version must exist under the model's base path; with a `specific`
  policy it is added to the served versions. The file is replaced
  atomically, so a server re-reading it never sees half a config.
  """
  from google.protobuf import text_format  # pylint: disable=g-import-not-at-top
  from tensorflow_serving.config import model_server_config_pb2  # pylint: disable=g-import-not-at-top
  with open(config_file) as f:
    proto = text_format.Parse(f.read(),
                              model_server_config_pb2.ModelServerConfig())
  entry = next((c for c in proto.model_config_list.config
                if c.name == model_name), None)
  if entry is None:
    raise SystemExit(f'model {model_name!r} is not in {config_file}')
  base = model_config.find(model_config.load(config_file), model_name).base_path
  on_disk = model_config.versions_on_disk(base)
  if version not in on_disk:
    raise SystemExit(f'version {version} is not under {base} (there: {on_disk})')
  previous = entry.version_labels.get(label)
  entry.version_labels[label] = version
  specific = entry.model_version_policy.specific
  if (entry.model_version_policy.WhichOneof('policy_choice') == 'specific' and
      version not in specific.versions):
    specific.versions.append(version)
  tmp = f'{config_file}.tmp{os.getpid()}'
  with open(tmp, 'w') as f:
    f.write(text_format.MessageToString(proto))
  os.replace(tmp, config_file)
  _log_action(base, 'promote', model=model_name, label=label, version=version,
              previous=previous, config=config_file)


def main(argv=None) -> int:
  defaults = configs.PipelineConfig()
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('command', choices=['list', 'rollback', 'promote'])
  parser.add_argument('version', nargs='?', type=int,
                      help='promote: the version to label')
  parser.add_argument('--label', default='stable', help='promote: label name')
  parser.add_argument('--model-config-file', default=None,
                      help='promote: TF Serving model config file to edit')
  parser.add_argument('--model-name', default=defaults.model_name)
  parser.add_argument('--model-base-path', default=defaults.serving_model_dir,
                      help='TF Serving model base path (default: %(default)s)')
  # Lineage comes from the store the pipeline wrote: the runners' flags.
  configs.add_flags(parser, configs.METADATA_FIELDS)
  args = parser.parse_args(argv)
  base = args.model_base_path
  if args.command == 'promote':
    if args.version is None or not args.model_config_file:
      parser.error('promote needs VERSION and --model-config-file')
    promote(args.model_config_file, args.model_name, args.version, args.label)
    return 0
  if args.command == 'rollback':
    rollback(base)
    return 0
  connection = metadata_store.store_config(configs.from_flags(args))
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
    print(f'{info.version}  {state:<16} run={info.run or "?"}  '
          f'blessed={info.blessed}  code={info.code_version}  '
          f'hparams={json.dumps(info.hparams) if info.hparams else None}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
