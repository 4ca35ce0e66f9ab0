"""What the serving page shows: the versions under the model base path, their
labels and history, and the monitor's report on the served version. Read
from the base path (delivery/versions.py, .versions.log), the TF Serving
model config and the monitoring report; nothing here writes anywhere.
"""

import json
import os
from typing import Any, Dict, List, Optional, Tuple

from serving import base_path
from ui import views


def version_log(base: str) -> List[Dict[str, Any]]:
  """<base>/.versions.log, oldest first; unreadable lines are shown as
  such, not dropped."""
  path = os.path.join(base, base_path.ACTION_LOG)
  if not os.path.exists(path):
    return []
  out = []
  with open(path, encoding='utf-8', errors='replace') as f:
    for line in f:
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except ValueError:
        record = {'action': '(unreadable line)', 'line': line.strip()}
      if not isinstance(record, dict):
        record = {'action': '(unreadable line)', 'line': line.strip()}
      out.append(record)
  return out


def labels(path: Optional[str], model_name: str
          ) -> Tuple[Dict[int, List[str]], Optional[str]]:
  """(version -> the labels a TF Serving model config file points at it,
  what is wrong with the file). delivery/config_file.py reads it and
  raises one class for every way the file can be unusable (unreadable, not
  UTF-8, not a config, without the model), its message one line naming
  the file: this is the one place the UI catches it, so the page shows that
  line (None: nothing wrong), never a 500. No file: no labels, no notice."""
  from delivery import config_file  # pylint: disable=g-import-not-at-top
  if not path or not os.path.exists(path):
    return {}, None
  try:
    return config_file.version_labels(path, model_name), None
  except config_file.Error as e:
    return {}, str(e)


def monitoring_report(path: str) -> Optional[Dict[str, Any]]:
  """The monitor's report.json, or None when there is none (or it is not
  a report)."""
  try:
    with open(path) as f:
      report = json.load(f)
  except (OSError, ValueError):
    return None
  return report if _is_report(report) else None


def _is_number(value) -> bool:
  return value is None or (isinstance(value, (int, float)) and
                           not isinstance(value, bool))


def _is_report(report) -> bool:
  """Has the keys and types the pages read (monitoring/monitor.py `run`)."""
  if not isinstance(report, dict):
    return False
  skew = report.get('skew', {})
  return (isinstance(report.get('degraded'), bool) and
          isinstance(report.get('reason'), str) and
          isinstance(skew, dict) and
          all(isinstance(f, dict) and all(_is_number(f.get(k)) for k in
                                          ('distance', 'threshold', 'p_value'))
              for f in skew.values()) and
          all(_is_number(report.get(k)) for k in
              ('live_accuracy', 'baseline_accuracy')))


def serving(sources: views.Sources, store) -> Dict[str, Any]:
  from delivery import version_list  # pylint: disable=g-import-not-at-top
  base = sources.model_base_path
  model_name = os.path.basename(os.path.normpath(base))
  infos = (version_list.list_versions(base, store) if os.path.isdir(base) else [])
  labelled, config_problem = labels(sources.model_config_file, model_name)
  newest_served = next((i.version for i in infos if not i.rolled_back), None)
  return {
      'base': base,
      'versions': [{
          'version': i.version, 'rolled_back': i.rolled_back,
          'state': ('rolled back' if i.rolled_back else 'served (latest)'
                    if i.version == newest_served else 'on disk'),
          'labels': labelled.get(i.version, []), 'run': i.run,
          'blessed': i.blessed, 'hparams': i.hparams,
          'train_steps': i.train_steps, 'tuned': i.tuned,
          'model_card': os.path.exists(
              base_path.model_card_path(i.path)) and not i.rolled_back,
      } for i in infos],
      'log': version_log(base) if os.path.isdir(base) else [],
      'monitoring': monitoring_report(sources.monitoring_report),
      'monitoring_path': sources.monitoring_report,
      'model_config_file': sources.model_config_file,
      'model_config_problem': config_problem,
  }
