"""Do two samples of raw feature values differ? The one rule of drift and skew.

Drift (continuous_training/drift.py: a new span vs the previous one) and skew
(monitoring/skew.py: served traffic vs the served version's training data)
are the same question asked of different samples, so both call `compare`.

Why not TFDV's comparators, which both used before: TFDV's Jensen-Shannon
divergence is computed on its *equal-width* histograms, so one long trip
stretches a heavy-tailed feature's range and puts nearly all the mass into
one bucket (fares x3 measured 0.24-0.48, unshifted traffic up to 0.8), and
both TFDV distances are plug-in estimates with no notion of sample size: the
same L-infinity means something else at 200 rows than at 20,000. The rule
here, per feature:

  bins      numeric: the *reference's* quantiles (deciles; edges that
            coincide, e.g. the many 0-mile trips, are merged so an atom is a
            bin of its own); categorical (strings and integer categories such
            as the hour): one bin per category. Missing values are a bin of
            their own on every kind. Bins whose expected count in the smaller
            sample is below `min_expected` are pooled (with categories never
            seen in the reference) so the chi-square approximation holds.
            The bins depend on the reference and the two sizes only, never on
            the current sample, so the test below is valid.
  test      Pearson's chi-square test of homogeneity of the two samples'
            bin counts: it accounts for both sample sizes, so 200 served
            requests are not judged like 20,000. Bonferroni-corrected over the
            compared features, so `alpha` bounds the chance that a sample
            from the reference's own distribution raises any alarm.
  effect    numeric: Jensen-Shannon divergence (base 2, 0..1) of the two bin
            distributions; categorical: L-infinity distance of the bin shares
            (the largest change in any category's share, TFDV's measure).
  alarm     significant *and* effect above the floor: with thousands of rows
            a trivial shift is significant, the floor says "and it matters".

Pure NumPy/SciPy (the test is scipy.stats.chi2_contingency, the divergence
scipy.spatial.distance.jensenshannon), deterministic (same inputs, same verdict), no TensorFlow.
monitoring/feature_values.py turns span CSV files, serialized tf.Examples
(ExampleGen's GZIP TFRecords) and served rows (monitoring/prediction_logs.py)
into the same raw values, with one notion of "missing": an empty CSV cell,
an empty tf.Example feature, a '' string or NaN float from `serving_raw` are
all None there, and all land in the missing bin here. Which bin a value
falls in depends on how it was read (a numeric value rounded to float32, so
that a CSV cell and the same row's tf.Example land on the same side of a
decile edge), so a change to the readers is a change to the rule: the
tests of both are tests/monitoring/test_distribution.py.
"""

import dataclasses
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from scipy import stats
from scipy.spatial import distance

from models import problem as problems

NUMERIC = 'numeric'
CATEGORICAL = 'categorical'  # integer categories (a string that is no
                             # number is taken as it is)
TEXT = 'text'  # string categories, compared as categorical ones
MEASURES = {NUMERIC: 'JSD', CATEGORICAL: 'L-inf', TEXT: 'L-inf'}
MISSING = '(missing)'  # bin label of missing values
POOLED = '(pooled)'  # bin label of rare and unseen categories / bins

# THE drift and skew rule's thresholds, defined here only.
# Drift (a new span vs the previous one, the CT trigger) and skew (served
# traffic vs the served version's training data, monitoring/) are the same
# comparison, monitoring/distribution.py, with this one rule: per feature, a
# chi-square test of homogeneity of the two samples' counts in bins made
# from the reference (numeric: its deciles; categorical, integer categories
# included: one bin per category, rare ones pooled; missing: a bin), and an
# effect size on those bins. Alarm iff p < DRIFT_ALPHA / (features compared)
# AND the effect is above the floor. Measured false-alarm and detection
# rates: docs/continuous-training.md (bench/shift_alarm_rates.py).
# Which features are compared is the problem's: every model feature but the
# ones its problem.py excludes, with why (kinds_of below); for taxi, the
# month (a span is a quarter: it moves by design). Never compared: columns
# the model does not read, and the label (its own check is the label's).
# Family-wise: the chance that a sample from the reference's own
# distribution alarms on any feature (Bonferroni over the features).
DRIFT_ALPHA = 0.01
# Effect floors. L-infinity (largest change in any category's share): the
# bundled quarters' shares move up to 0.14 against the 16-span window
# (payment_type drifts towards card over 2013-2016; company 0.13 in span 16)
# and that is in-distribution; 0.2 sits above it and below the payment-mix
# shift (half of Cash to card: 0.33). Jensen-Shannon divergence (base 2) of
# the decile bins: real spans measure up to 0.043 (trip_miles) against the
# window; trip length x2 measures 0.15 (trip_seconds), fares x3 0.48.
DRIFT_LINF_THRESHOLD = 0.2
DRIFT_JSD_THRESHOLD = 0.1
# Numeric bins: the reference's deciles (edges that coincide merge).
DRIFT_NUMERIC_BINS = 10
# A bin expected to hold fewer values than this in the smaller sample is
# pooled (the chi-square approximation needs about 5).
DRIFT_MIN_EXPECTED = 5.0



def kinds_of(problem: problems.Problem) -> Dict[str, str]:
  """Feature -> kind, for every feature drift and skew compare: numbers
  (z-scored or bucketized) NUMERIC, string categories TEXT, integer
  categories CATEGORICAL; the problem's drift_excluded left out."""
  kinds = {}
  for feature in problem.features:
    if feature.name in problem.drift_excluded:
      continue
    kinds[feature.name] = (NUMERIC if feature.numeric else
                           TEXT if feature.dtype == 'string' else CATEGORICAL)
  return kinds


Values = Dict[str, List[object]]  # feature -> raw values, None = missing


@dataclasses.dataclass(frozen=True)
class Rule:
  """When a difference is an alarm (defaults: DRIFT_* above)."""
  alpha: float = DRIFT_ALPHA  # family-wise, over the features
  categorical_floor: float = DRIFT_LINF_THRESHOLD  # L-infinity
  numeric_floor: float = DRIFT_JSD_THRESHOLD  # Jensen-Shannon
  bins: int = DRIFT_NUMERIC_BINS  # reference quantile bins
  min_expected: float = DRIFT_MIN_EXPECTED  # per bin, smaller sample

  def floor(self, kind: str) -> float:
    return self.numeric_floor if kind == NUMERIC else self.categorical_floor


@dataclasses.dataclass
class FeatureResult:
  """One feature's comparison: test, effect size, verdict."""
  feature: str
  kind: str  # NUMERIC | CATEGORICAL
  measure: str  # the effect size: 'JSD' | 'L-inf'
  effect: float
  threshold: float  # the effect floor
  statistic: float  # chi-square
  df: int
  p_value: float
  alpha: float  # per feature (Bonferroni)
  bins: int  # after pooling
  reference_count: int
  current_count: int

  @property
  def significant(self) -> bool:
    return self.p_value < self.alpha

  @property
  def alarm(self) -> bool:
    return self.significant and self.effect > self.threshold


@dataclasses.dataclass
class Comparison:
  """Every compared feature, and the overall verdict."""
  features: List[FeatureResult]
  rule: Rule

  @property
  def alarms(self) -> List[FeatureResult]:
    return [f for f in self.features if f.alarm]

  @property
  def alarm(self) -> bool:
    return bool(self.alarms)

  def by_name(self) -> Dict[str, FeatureResult]:
    return {f.feature: f for f in self.features}


# --- The rule ---------------------------------------------------------------


def _labels(values: Sequence[object]) -> List[str]:
  return [MISSING if v is None else str(v) for v in values]


@dataclasses.dataclass
class _FeatureReference:
  """One feature of the reference, binned once: the bins (from the reference
  alone) and the reference's counts in them, before pooling."""
  kind: str
  size: int
  edges: Optional[np.ndarray]  # numeric: interior edges; else None
  index: Optional[Dict[str, int]]  # categorical: label -> bin
  labels: List[str]
  counts: np.ndarray

  @classmethod
  def build(cls, values: Sequence[object], kind: str, bins: int
           ) -> '_FeatureReference':
    if kind == NUMERIC:
      numbers = np.array(values, dtype=np.float64)  # None -> NaN
      edges, labels = _numeric_bins(numbers, bins)
      labels = labels + [MISSING]
      return cls(kind, len(values), edges, None, labels,
                 _numeric_counts(numbers, edges, len(labels) - 1))
    labels = _labels(values)
    known = sorted(set(labels) | {MISSING})
    index = {label: i for i, label in enumerate(known)}
    counts = np.bincount([index[v] for v in labels],
                         minlength=len(known) + 1)
    # The last bin holds categories the reference never saw (count 0 here).
    return cls(kind, len(values), None, index, known + [POOLED], counts)

  def counts_of(self, values: Sequence[object]) -> np.ndarray:
    """Another sample's counts in the same bins."""
    if self.kind == NUMERIC:
      return _numeric_counts(np.array(values, dtype=np.float64), self.edges,
                             len(self.labels) - 1)
    unseen = len(self.labels) - 1
    return np.bincount([self.index.get(v, unseen) for v in _labels(values)],
                       minlength=len(self.labels))


class Reference:
  """A reference sample prepared for many comparisons (bins computed once).

  Skew compares every batch of served traffic with the same training data,
  and the bench compares thousands of samples with one window.
  """

  def __init__(self, values: Mapping[str, Sequence[object]],
               kinds: Mapping[str, str], bins: int = DRIFT_NUMERIC_BINS):
    self.bins = bins
    self.features = {name: _FeatureReference.build(values[name], kind, bins)
                     for name, kind in sorted(kinds.items())
                     if name in values}

  @property
  def size(self) -> int:
    return max((f.size for f in self.features.values()), default=0)


def _numeric_bins(reference: np.ndarray, bins: int
                 ) -> Tuple[np.ndarray, List[str]]:
  """Interior edges at the reference's quantiles, and the bin labels.

  `inverted_cdf` quantiles are values of the data, and a value equal to an
  edge falls into the bin below it (side='left'), so an atom that covers
  several quantiles (0 miles, fare 0) is one bin holding just that value.
  """
  present = reference[~np.isnan(reference)]
  if present.size == 0 or bins < 2:
    return np.array([]), ['all']
  edges = np.unique(np.quantile(present, np.arange(1, bins) / bins,
                                method='inverted_cdf'))
  labels = [f'<= {edges[0]:g}'] + [
      f'({lo:g}, {hi:g}]' for lo, hi in zip(edges[:-1], edges[1:])
  ] + [f'> {edges[-1]:g}']
  return edges, labels


def _numeric_counts(values: np.ndarray, edges: np.ndarray, size: int
                   ) -> np.ndarray:
  """Counts per bin; the last one counts the missing values."""
  missing = np.isnan(values)
  index = np.searchsorted(edges, values[~missing], side='left')
  return np.append(np.bincount(index, minlength=size), missing.sum())


def _pool(ref: np.ndarray, cur: np.ndarray, labels: List[str],
          smaller: int, min_expected: float
         ) -> Tuple[np.ndarray, np.ndarray, List[str]]:
  """Pools the bins expected to hold fewer than `min_expected` values of the
  smaller sample, judged by the reference's shares (so independently of the
  current sample). Categories the reference never saw have share 0 and are
  always pooled. A pool that is itself that small joins the smallest kept
  bin; if every bin is rare there is one bin and nothing to test."""
  share = ref / max(ref.sum(), 1)
  rare = share * smaller < min_expected
  if not rare.any():
    return ref, cur, labels
  if rare.all():
    return ref.sum(keepdims=True), cur.sum(keepdims=True), [POOLED]
  kept = np.flatnonzero(~rare)
  ref_out, cur_out = ref[kept].copy(), cur[kept].copy()
  names = [labels[i] for i in kept]
  pooled = (ref[rare].sum(), cur[rare].sum())
  if share[rare].sum() * smaller >= min_expected:
    return (np.append(ref_out, pooled[0]), np.append(cur_out, pooled[1]),
            names + [POOLED])
  smallest = int(np.argmin(ref_out))  # the first of equals: deterministic
  ref_out[smallest] += pooled[0]
  cur_out[smallest] += pooled[1]
  names[smallest] += ' + ' + POOLED
  return ref_out, cur_out, names


def chi_square(ref: np.ndarray, cur: np.ndarray) -> Tuple[float, int, float]:
  """Pearson's chi-square test of homogeneity of two count vectors.

  (statistic, degrees of freedom, p-value); bins empty in both are dropped.
  scipy.stats.chi2_contingency does the test, without Yates' correction
  (which it would apply at 1 degree of freedom): the plain Pearson
  statistic is the rule's.
  """
  table = np.vstack([ref, cur]).astype(np.float64)
  table = table[:, table.sum(axis=0) > 0]
  df = table.shape[1] - 1
  if df < 1 or table[0].sum() == 0 or table[1].sum() == 0:
    return 0.0, max(df, 0), 1.0
  statistic, p_value, dof, _ = stats.chi2_contingency(table, correction=False)
  return float(statistic), int(dof), float(p_value)


def jensen_shannon(p: np.ndarray, q: np.ndarray) -> float:
  """Jensen-Shannon divergence, base 2 (0 = same, 1 = disjoint).

  scipy.spatial.distance.jensenshannon (which normalizes p and q) returns
  the Jensen-Shannon *distance*, the divergence's square root: squared
  here, so the figure, and DRIFT_JSD_THRESHOLD's meaning, stay the
  divergence's.
  """
  with np.errstate(invalid='ignore'):  # a sum of -1e-17: sqrt -> nan
    divergence = float(distance.jensenshannon(p, q, base=2)) ** 2
  return divergence if divergence > 0 else 0.0


def linf(p: np.ndarray, q: np.ndarray) -> float:
  """Largest difference in any bin's share."""
  return float(np.abs(p / p.sum() - q / q.sum()).max())


def compare_feature(feature: str, reference: _FeatureReference,
                    current: Sequence[object], rule: Rule, alpha: float
                   ) -> FeatureResult:
  """One feature: bins, pooling, chi-square test, effect size."""
  ref, cur = reference.counts, reference.counts_of(current)
  ref, cur, labels = _pool(ref, cur, reference.labels,
                           min(reference.size, len(current)),
                           rule.min_expected)
  statistic, df, p_value = chi_square(ref, cur)
  kind = reference.kind
  if ref.sum() == 0 or cur.sum() == 0:
    effect = 0.0
  else:
    effect = jensen_shannon(ref, cur) if kind == NUMERIC else linf(ref, cur)
  return FeatureResult(
      feature=feature, kind=kind, measure=MEASURES[kind], effect=effect,
      threshold=rule.floor(kind), statistic=statistic, df=df,
      p_value=p_value, alpha=alpha, bins=len(labels),
      reference_count=reference.size, current_count=len(current))


def compare(reference: Union[Reference, Mapping[str, Sequence[object]]],
            current: Mapping[str, Sequence[object]],
            rule: Optional[Rule] = None,
            kinds: Optional[Mapping[str, str]] = None) -> Comparison:
  """Every feature of `kinds` on both sides (every feature of `reference`
  when it is a Reference and `kinds` is None).

  `reference`: raw values (feature -> values, None = missing, as the readers
  below return them) or a `Reference` made from them; `current`: raw values.
  """
  rule = rule or Rule()
  if not isinstance(reference, Reference):
    if kinds is None:
      raise ValueError('compare raw values: which kinds? (kinds_of)')
    reference = Reference(reference, kinds, rule.bins)
  elif reference.bins != rule.bins:
    raise ValueError(f'reference binned in {reference.bins} quantiles, the '
                     f'rule asks for {rule.bins}')
  names = [n for n in reference.features if n in current and (
      kinds is None or n in kinds)]
  alpha = rule.alpha / max(len(names), 1)
  return Comparison([compare_feature(n, reference.features[n], current[n],
                                     rule, alpha) for n in names], rule)
