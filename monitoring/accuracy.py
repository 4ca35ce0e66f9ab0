"""Live accuracy: logged predictions joined to labels that arrive later.

The data has no instance id, so a logged instance is matched to a labelled
CSV row by a fingerprint of its raw feature values, in the form the
`serving_raw` signature receives them (serving/client.py: '' for a missing
string, NaN for a missing float, 0 for a missing integer; floats rounded to
float32 as they travel). Instances with identical features but different
labels cannot be told apart: such fingerprints are counted as `ambiguous`
and left out. The label is the problem's one rule (Problem.label_of); a row
missing a column it needs has none. Right or wrong is the task's
(models/tasks.py: the predicted class is the label).
"""

import csv
import dataclasses
import hashlib
import math
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from models import problem as problems
from models import tasks
from monitoring.prediction_logs import ServedRow


def fingerprint(problem: problems.Problem,
                values: Mapping[str, object]) -> str:
  """A stable id of one instance's raw feature values (None/'' = missing)."""
  parts = []
  for key, kind in sorted(problem.raw_types.items()):
    value = values.get(key)
    missing = value is None or value == '' or (
        isinstance(value, float) and math.isnan(value))
    if kind == 'string':
      text = '' if missing else str(value)
    elif kind == 'float':
      text = 'nan' if missing else repr(float(np.float32(float(value))))
    else:
      text = '0' if missing else str(int(float(value)))
    parts.append(f'{key}={text}')
  return hashlib.sha1('\x1f'.join(parts).encode('utf-8')).hexdigest()


def read_labels(problem: problems.Problem,
                paths: Sequence[str]) -> Dict[str, Optional[int]]:
  """Fingerprint -> label from CSV files of instances (a span's data.csv).

  A fingerprint seen with two different labels maps to None (ambiguous).
  """
  labels: Dict[str, Optional[int]] = {}
  for path in paths:
    with open(path, newline='') as f:
      for row in csv.DictReader(f):
        label = problem.label_of(row)
        if label is None:
          continue
        key = fingerprint(problem, row)
        labels[key] = label if labels.get(key, label) == label else None
  return labels


@dataclasses.dataclass
class LiveAccuracy:
  labelled: int  # predictions joined to exactly one label
  ambiguous: int  # matched a fingerprint with conflicting labels
  accuracy: Optional[float]
  auc: Optional[float]


def auc(labels: Sequence[int], scores: Sequence[float]) -> Optional[float]:
  """ROC AUC (Mann-Whitney U, ties counted half); None without both classes."""
  labels = np.asarray(labels)
  scores = np.asarray(scores, dtype=np.float64)
  positives, negatives = int(labels.sum()), int(len(labels) - labels.sum())
  if not positives or not negatives:
    return None
  order = np.argsort(scores, kind='mergesort')
  ranks = np.empty(len(scores))
  sorted_scores = scores[order]
  i = 0
  while i < len(scores):  # average ranks over ties
    j = i
    while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
      j += 1
    ranks[order[i:j + 1]] = (i + j) / 2 + 1
    i = j + 1
  u = ranks[labels == 1].sum() - positives * (positives + 1) / 2
  return float(u / (positives * negatives))


def measure(problem: problems.Problem, rows: Sequence[ServedRow],
            labels: Mapping[str, Optional[int]]) -> LiveAccuracy:
  """Accuracy (the predicted class is the label) of the joined rows, and,
  for a binary task, the AUC of its score."""
  y: List[int] = []
  p: List[List[float]] = []
  ambiguous = 0
  for row in rows:
    key = fingerprint(problem, row.features)
    if key not in labels:
      continue
    if labels[key] is None:
      ambiguous += 1
      continue
    y.append(labels[key])
    p.append(row.prediction)
  if not y:
    return LiveAccuracy(0, ambiguous, None, None)
  task, n = problem.task, len(problem.label.classes)
  live_auc = (auc(y, [task.score(pi, n) for pi in p])
              if task is tasks.BINARY else None)
  return LiveAccuracy(len(y), ambiguous, task.accuracy(p, y, n), live_auc)
