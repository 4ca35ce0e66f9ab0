"""Live accuracy: logged predictions joined to labels that arrive later.

The data has no trip id, so a logged instance is matched to a labelled CSV
row by a fingerprint of its raw feature values, in the form the
`serving_raw` signature receives them (serving/client.py: '' for a missing
string, NaN for a missing float, 0 for a missing integer; floats rounded to
float32 as they travel). Trips with identical features but different labels
cannot be told apart: such fingerprints are counted as `ambiguous` and left
out. The label is the model's: tips > TIP_FRACTION * fare
(models/features.py); rows without tips or fare have none.
"""

import csv
import dataclasses
import hashlib
import math
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from models import features
from monitoring.prediction_logs import ServedRow


def fingerprint(values: Mapping[str, object]) -> str:
  """A stable id of one trip's raw feature values (None/'' = missing)."""
  parts = []
  for key, kind in sorted(features.RAW_FEATURE_TYPES.items()):
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


label_of = features.label_of  # the one label rule (None: no label)


def read_labels(paths: Sequence[str]) -> Dict[str, Optional[int]]:
  """Fingerprint -> label from CSV files of trips (a span's data.csv).

  A fingerprint seen with two different labels maps to None (ambiguous).
  """
  labels: Dict[str, Optional[int]] = {}
  for path in paths:
    with open(path, newline='') as f:
      for row in csv.DictReader(f):
        label = label_of(row)
        if label is None:
          continue
        key = fingerprint(row)
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


def measure(rows: Sequence[ServedRow], labels: Mapping[str, Optional[int]],
            threshold: float = 0.5) -> LiveAccuracy:
  """Accuracy (prediction > threshold vs label) and AUC of the joined rows."""
  y: List[int] = []
  p: List[float] = []
  ambiguous = 0
  for row in rows:
    key = fingerprint(row.features)
    if key not in labels:
      continue
    if labels[key] is None:
      ambiguous += 1
      continue
    y.append(labels[key])
    p.append(row.prediction)
  if not y:
    return LiveAccuracy(0, ambiguous, None, None)
  correct = sum(int(pi > threshold) == yi for yi, pi in zip(y, p))
  return LiveAccuracy(len(y), ambiguous, correct / len(y), auc(y, p))
