"""The canary gate's statistics: is the canary no worse than `stable`?

delivery.cd sends the same labelled rows (read_rows: by default the newest
spans' DEFAULT_ROWS) to both versions; this module compares their answers
row by row (paired) on three metrics, each with a non-inferiority margin,
and says per metric:

  pass          the canary is shown to be worse than stable by at most the
                margin: the one-sided 95% upper bound of its shortfall
                (stable's metric minus the canary's, the other way round for
                an error) is <= the margin;
  fail          the canary is shown to be worse by more than the margin: the
                one-sided 95% lower bound of its shortfall is > the margin;
  inconclusive  neither: too few rows for how much the two versions differ.

Being better, or different, never fails a metric: only a shortfall does.
The bounds are percentiles of a paired bootstrap over rows (rows resampled
with replacement, both versions' answers kept together), seeded, so the
same inputs always give the same verdict. A bootstrap of two versions that
agree on every row it saw says "no difference" however few rows it saw, so
a check set too small to bound the accuracy shortfall by the margin even
with no disagreement at all (fewer than 3 / margin rows, the rule of three)
or with too few rows of either class for an AUC is inconclusive outright.

Metrics: accuracy for every task (models/tasks.py: the predicted class is
the label); a binary task adds the two that read its probability:
  accuracy           share of right decisions; higher is better.
  auc                ROC AUC, ties counted half; higher is better.
  calibration_error  |sum(p) / sum(label) - 1|: how far the Evaluator's TFMA
                     `Calibration` figure (mean prediction / mean label) is
                     from 1; lower is better. Chosen over a binned
                     calibration error because it is the figure the
                     pipeline's Evaluator already reports, it has no bin
                     widths to argue about, and it is what consumers of the
                     probabilities (expected counts of big tips) depend on;
                     ~10 bins of ~80 rows would be noise at this size. Being
                     an absolute value, its bootstrap is lopsided when a
                     version is near 1.0; the 0.1 margin is wide next to it.

No TensorFlow (NumPy, and the problem for the label rule and the task), so
it is cheap to import and to test.
"""

import csv
import dataclasses
import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from data import spans as spans_lib
from models import problem as problems
from models import tasks

ACCURACY, AUC, CALIBRATION = 'accuracy', 'auc', 'calibration_error'
METRICS = (ACCURACY, AUC, CALIBRATION)  # every metric a margin is a flag of
LOWER_IS_BETTER = frozenset({CALIBRATION})
DEFINITIONS = {ACCURACY: 'share of right decisions (the predicted class is '
                         'the label)',
               AUC: 'ROC AUC', CALIBRATION: '|sum(p) / sum(label) - 1|'}


def metrics_of(task: tasks.Task) -> Tuple[str, ...]:
  """The metrics the gate judges for a task: AUC and calibration read one
  probability, which only a binary task's answer is."""
  return METRICS if task is tasks.BINARY else (ACCURACY,)
PASS, FAIL, INCONCLUSIVE = 'pass', 'fail', 'inconclusive'

# Non-inferiority margins: how much worse than stable a canary may be.
# accuracy 0.05: the gate's old point-estimate bound, now a 95% bound. To
#   pass two equally accurate versions 4 times in 5 it needs about
#   (1.645 + 0.84)^2 * q / margin^2 = 6.2 * q / margin^2 rows, q being the
#   share of decisions they disagree on: ~200 rows at q = 8%, ~470 at the
#   19% of the case that motivated this gate, ~800 at 32%; and at least
#   3 / margin = 60 rows whatever q is (module docstring).
# auc 0.05: as for accuracy. The Evaluator already blessed the canary with
#   at most a 0.01 AUC drop on thousands of eval rows; this gate catches a
#   version that is much worse on the newest data as served. Two models
#   trained as the test fixture is, seeds apart, differ by ~0.01 AUC on the
#   newest 800 rows, 95% bound 0.014 (0.03 on 60 rows).
# calibration_error 0.1: the canary may be at most 10 points further from
#   calibration (1.0) than stable. The same two models differ by ~0.06
#   on the newest 800 rows (0.07 bound), and the mean label of 800 rows with
#   ~22% positives moves by ~7% of itself; both versions share it, so the
#   paired bound is much narrower than that.
DEFAULT_MARGINS: Dict[str, float] = {ACCURACY: 0.05, AUC: 0.05,
                                     CALIBRATION: 0.1}
# Check rows: the newest spans first. 800 is 2016's four quarters (spans
# 13-16, ~830 labelled rows): enough for the margins above to pass two
# equally good versions that disagree on up to ~30% of decisions, where
# span 16 alone (~200 rows) would do only up to ~8%. Older spans would add
# rows, but describe traffic further from what the canary will serve.
DEFAULT_ROWS = 800
CONFIDENCE = 0.95  # one-sided, for each bound
RESAMPLES = 2000  # bootstrap resamples: the 5% tail rests on ~100 of them
SEED = 0
MIN_CLASS_ROWS = 10  # rows of each class an AUC needs to mean anything
_CHUNK = 250  # resamples per NumPy pass (a 250 x rows count matrix)


@dataclasses.dataclass
class Comparison:
  """One metric of canary vs stable on the same rows."""
  metric: str
  canary: float
  stable: float
  shortfall: float  # how much worse the canary is (< 0: better)
  lower: float  # one-sided 95% lower bound of the shortfall
  upper: float  # one-sided 95% upper bound of the shortfall
  margin: float
  verdict: str
  rows_needed: Optional[int] = None  # inconclusive: rows that would decide

  def figures(self) -> Dict:
    return {k: (round(v, 4) if isinstance(v, float) else v)
            for k, v in dataclasses.asdict(self).items() if k != 'metric'}

  def describe(self) -> str:
    where = {PASS: 'within', FAIL: 'beyond',
             INCONCLUSIVE: 'undecided against'}[self.verdict]
    text = (f'{self.metric} {self.canary:.3f} vs stable {self.stable:.3f}: '
            f'shortfall {self.shortfall:+.3f} (95% bounds {self.lower:+.3f}'
            f'..{self.upper:+.3f}) {where} margin {self.margin:g}')
    if self.rows_needed:
      text += f' (~{self.rows_needed} rows would decide it)'
    return text


def check_csvs(data_root: str) -> List[str]:
  """The spans' CSVs under data_root, newest first."""
  spans = sorted(spans_lib.spans_on_disk(data_root), reverse=True)
  if not spans:
    raise ValueError(f'no span-N/ directories under {data_root}')
  return [spans_lib.csv_path(data_root, s) for s in spans]


def read_rows(problem: problems.Problem, paths: List[str],
              limit: int) -> Tuple[List[Dict], List[int]]:
  """Up to `limit` instances (raw features) and their labels (the
  problem's rule) from `paths` in order; rows without a label (a column it
  needs missing) are left out, as the monitor does."""
  rows = []
  for path in paths:
    with open(path, newline='') as f:
      rows += [r for r in csv.DictReader(f)
               if problem.label_of(r) is not None][:limit - len(rows)]
    if len(rows) >= limit:
      break
  if not rows:
    raise ValueError(f'{paths} have no labelled rows')
  missing = sorted(set(problem.raw_types) - set(rows[0]))
  if missing:
    raise ValueError(f'{paths[0]} lacks columns {missing}')
  trips = [{k: r[k] for k in problem.raw_types} for r in rows]
  return trips, [problem.label_of(r) for r in rows]


def _weighted_metrics(weights: np.ndarray, right: np.ndarray,
                      scores: Optional[np.ndarray],
                      labels: np.ndarray) -> Dict[str, np.ndarray]:
  """Each metric under each row of `weights` (a count per row: a resample):
  accuracy from `right` (each row's answer right or not), AUC and
  calibration from `scores` (a binary task's probability; None otherwise).

  One pass for all resamples: rows are sorted by score once, and the AUC
  is the weighted count of (positive, negative) pairs in order, ties half.
  """
  total = weights.sum(axis=1)
  with np.errstate(divide='ignore', invalid='ignore'):
    accuracy = (weights * right).sum(axis=1) / total
  if scores is None:
    return {ACCURACY: accuracy}
  positive = labels == 1
  pos = weights[:, positive].sum(axis=1)
  neg = total - pos
  with np.errstate(divide='ignore', invalid='ignore'):
    calibration = np.abs((weights * scores).sum(axis=1) / pos - 1.0)
    order = np.argsort(scores, kind='stable')
    sorted_scores = scores[order]
    starts = np.flatnonzero(
        np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    w = weights[:, order]
    y = positive[order]
    pos_at = np.add.reduceat(w * y, starts, axis=1)
    neg_at = np.add.reduceat(w * ~y, starts, axis=1)
    neg_below = np.cumsum(neg_at, axis=1) - neg_at
    auc = (pos_at * (neg_below + 0.5 * neg_at)).sum(axis=1) / (pos * neg)
  return {ACCURACY: accuracy, AUC: auc, CALIBRATION: calibration}


def _shortfall(metric: str, canary, stable):
  return canary - stable if metric in LOWER_IS_BETTER else stable - canary


def _read(task: tasks.Task, answers: Sequence[Sequence[float]],
          labels: np.ndarray, n_classes: int
          ) -> Tuple[np.ndarray, Optional[np.ndarray]]:
  """(each row right or not, each row's score for a binary task or None)."""
  right = np.array([task.predicted(list(a), n_classes) == y
                    for a, y in zip(answers, labels)], dtype=np.float64)
  scores = (np.array([task.score(list(a), n_classes) for a in answers])
            if task is tasks.BINARY else None)
  return right, scores


def compare(canary: Sequence[Sequence[float]],
            stable: Sequence[Sequence[float]], labels: Sequence[int],
            margins: Optional[Dict[str, float]] = None,
            resamples: int = RESAMPLES, seed: int = SEED,
            task: tasks.Task = tasks.BINARY,
            n_classes: int = 2) -> List[Comparison]:
  """Paired non-inferiority of `canary` vs `stable` answers (each row an
  answer of `task`, serving.client's rows) on `labels`."""
  margins = {**DEFAULT_MARGINS, **(margins or {})}
  labels = np.asarray(labels, dtype=np.int64)
  if not len(canary) == len(stable) == len(labels) > 0:
    raise ValueError('canary, stable and labels need the same rows (>= 1)')
  metrics = metrics_of(task)
  right_c, scores_c = _read(task, canary, labels, n_classes)
  right_s, scores_s = _read(task, stable, labels, n_classes)
  n = len(labels)
  ones = np.ones((1, n))
  point_c = _weighted_metrics(ones, right_c, scores_c, labels)
  point_s = _weighted_metrics(ones, right_s, scores_s, labels)
  # Too small to judge whatever the rows say (module docstring).
  min_rows = math.ceil(3 / margins[ACCURACY])
  too_few = n < min_rows
  if AUC in metrics:
    smaller_class = int(min(labels.sum(), n - labels.sum()))
    if smaller_class:
      min_rows = max(min_rows, math.ceil(n * MIN_CLASS_ROWS / smaller_class))
    too_few = n < min_rows or smaller_class < MIN_CLASS_ROWS
  rng = np.random.default_rng(seed)
  draws = {m: [] for m in metrics}
  for done in range(0, resamples, _CHUNK):
    size = min(_CHUNK, resamples - done)
    weights = rng.multinomial(n, np.full(n, 1.0 / n), size=size)
    by_c = _weighted_metrics(weights, right_c, scores_c, labels)
    by_s = _weighted_metrics(weights, right_s, scores_s, labels)
    with np.errstate(invalid='ignore'):  # inf - inf: NaN, left out below
      for m in metrics:
        draws[m].append(_shortfall(m, by_c[m], by_s[m]))
  results = []
  for m in metrics:
    shortfall = float(_shortfall(m, point_c[m][0], point_s[m][0]))
    # A resample without one class has no AUC / calibration: NaN, left out.
    sample = np.concatenate(draws[m])
    sample = sample[np.isfinite(sample)]
    if len(sample) < resamples / 2 or not math.isfinite(shortfall):
      lower, upper = -math.inf, math.inf
    else:
      lower, upper = (float(x) for x in np.quantile(
          sample, [1 - CONFIDENCE, CONFIDENCE]))
    margin = margins[m]
    if too_few:
      verdict = INCONCLUSIVE
    elif upper <= margin:
      verdict = PASS
    elif lower > margin:
      verdict = FAIL
    else:
      verdict = INCONCLUSIVE
    needed = None
    if verdict == INCONCLUSIVE:
      # The bound narrows as 1 / sqrt(rows): where it would reach the margin
      # if the shortfall stayed where it is (never below the minimum).
      needed = min_rows if too_few else None
      if math.isfinite(upper) and shortfall < margin < upper:
        needed = max(needed or 0, math.ceil(
            n * ((upper - shortfall) / (margin - shortfall)) ** 2))
    results.append(Comparison(
        m, float(point_c[m][0]), float(point_s[m][0]), shortfall, lower, upper,
        margin, verdict, needed))
  return results


def disagreement(canary: Sequence[Sequence[float]],
                 stable: Sequence[Sequence[float]],
                 task: tasks.Task = tasks.BINARY, n_classes: int = 2) -> float:
  """Share of rows whose predicted class differs: reported, not judged."""
  return float(np.mean([task.predicted(list(c), n_classes) !=
                        task.predicted(list(s), n_classes)
                        for c, s in zip(canary, stable)]))
