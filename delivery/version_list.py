"""What `python -m delivery.versions list` shows: every version under a model
base path (the live ones and those rolled back), each with the run, blessing,
hyperparameters, train steps and code version that made it, from ML
Metadata (lineage/provenance.py) or, when the store does not know the
version, from the Pusher's push record in it; and the table it prints.
"""

import dataclasses
import json
import os
from typing import Dict, List, Optional, Tuple

from lineage import provenance
from serving import base_path
from serving import model_config


@dataclasses.dataclass
class VersionInfo:
  version: int
  path: str
  rolled_back: bool
  run: Optional[str] = None
  blessed: Optional[bool] = None
  hparams: Optional[Dict] = None
  code_version: Optional[str] = None
  release: Optional[str] = None  # the pipeline release that trained it
  # Where run/blessed came from: 'metadata', 'push record' (ML Metadata
  # does not know the version; the Pusher's file in it does), or None.
  lineage_source: Optional[str] = None
  train_steps: Optional[int] = None
  tuned: List[str] = dataclasses.field(default_factory=list)  # hparams keys


def rolled_back_versions(base: str) -> List[int]:
  return model_config.versions_on_disk(os.path.join(base, base_path.ROLLED_BACK_DIR))


def _from_lineage(info: VersionInfo, found: provenance.VersionLineage) -> None:
  info.hparams = found.hparams
  info.code_version = found.trainer_code_version
  info.release = found.trainer.release if found.trainer else None
  info.train_steps = found.train_steps
  info.tuned = list(found.tuned)


def _lineage(store, info: VersionInfo) -> None:
  """Fills run / blessing / Trainer config from ML Metadata, if recorded,
  else from the Pusher's record in the version directory."""
  found = (provenance.version_lineage(store, str(info.version), read_files=False)
           if store is not None else None)
  if found is not None:
    info.run = found.pusher.run if found.pusher else None
    info.blessed = found.blessed
    info.lineage_source = 'metadata'
    _from_lineage(info, found)
    return
  where, record = _push_record(info)
  if record is None:
    return
  info.run = record.get('pipeline_run_id')
  info.blessed = record.get('blessed')
  info.lineage_source = 'push record'
  found = (provenance.version_lineage_from_record(store, where, read_files=False)
           if store is not None else None)
  if found is not None:
    _from_lineage(info, found)


def _push_record(info: VersionInfo) -> Tuple[Optional[str], Optional[Dict]]:
  """(directory, record), wherever the version is now (a rollback may move
  it); (None, None) if it has none."""
  for path in (info.path, os.path.join(os.path.dirname(info.path),
                                       base_path.ROLLED_BACK_DIR, str(info.version))):
    record = base_path.read_push_record(path)
    if record is not None:
      return path, record
  return None, None


def _training(info: VersionInfo) -> None:
  """Steps and hyperparameters as run_fn used them (tuned ones applied),
  from the model card's `training` section (the Trainer's history.json,
  written into the version by the Pusher), when the version has one."""
  try:
    with open(base_path.model_card_path(info.path, 'json')) as f:
      training = json.load(f).get('training')
  except (OSError, ValueError, AttributeError):
    return
  if not isinstance(training, dict):
    return
  if training.get('hparams'):
    info.hparams = training['hparams']
    info.tuned = list(training.get('tuned') or [])
  if training.get('train_steps') is not None:
    info.train_steps = training['train_steps']


def list_versions(base: str, store=None) -> List[VersionInfo]:
  """Served and rolled-back versions, newest first, with lineage if known.

  Takes no lock: a version rolled back while it lists is shown once, as
  rolled back (the served directory is listed first).
  """
  found = {v: VersionInfo(v, os.path.join(base, str(v)), False)
           for v in model_config.versions_on_disk(base)}
  found.update({v: VersionInfo(v, os.path.join(base, base_path.ROLLED_BACK_DIR, str(v)),
                               True)
                for v in rolled_back_versions(base)})
  infos = sorted(found.values(), key=lambda i: i.version, reverse=True)
  for info in infos:
    _lineage(store, info)
    _training(info)
  return infos


def _value(value) -> str:
  if isinstance(value, (list, tuple)):
    return ','.join(map(str, value))
  return str(value)


def _hparams_text(hparams: Optional[Dict], tuned=()) -> str:
  """`batch_size=64 hidden_units=64,32,16 learning_rate=0.003(tuned) ...`"""
  if not hparams:
    return '?'
  return ' '.join(f'{k}={_value(v)}' + ('(tuned)' if k in tuned else '')
                  for k, v in sorted(hparams.items()))


def _row(info: VersionInfo, serving: Optional[int],
         labelled: Optional[Dict[int, List[str]]]) -> List[str]:
  state = ('rolled back' if info.rolled_back else
           'SERVED (latest)' if info.version == serving else 'on disk')
  cells = [str(info.version), state]
  if labelled is not None:
    cells.append('labels=' + (','.join(labelled.get(info.version, [])) or '-'))
  steps = '?' if info.train_steps is None else info.train_steps
  cells += [f'steps={steps}', f'blessed={info.blessed}',
            f'run={info.run or "?"}', f'code={info.code_version}',
            f'release={info.release or "-"}',
            'hparams: ' + _hparams_text(info.hparams, info.tuned)]
  if info.lineage_source == 'push record':
    cells[-1] += '  (lineage from the push record: not in ML Metadata)'
  return cells


def _aligned(rows: List[List[str]]) -> List[str]:
  """Rows of cells as lines, every column but the last padded to its
  widest cell."""
  widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
  return ['  '.join([c.ljust(w) for c, w in zip(row, widths)] + row[-1:])
          for row in rows]


def table(infos: List[VersionInfo],
          labelled: Optional[Dict[int, List[str]]]) -> List[str]:
  """The listing's lines: one per version, the served one (the newest not
  rolled back) marked, the columns aligned."""
  serving = next((i.version for i in infos if not i.rolled_back), None)
  return _aligned([_row(i, serving, labelled) for i in infos])
