"""Distribution drift between a new span and the previous one.

The curated schema (DataValidationGate) catches *skew*: a missing column, a
wrong type, an unseen category. It cannot see a span whose values are all
legal but distributed differently, e.g. twice as many card payments. That is
*drift*, and it is what should trigger retraining.

Drift is the same comparison as training/serving skew, so both use the one
rule of monitoring/distribution.py (a chi-square test of homogeneity on bins
made from the reference, Bonferroni-corrected, and an effect size above a
floor; thresholds in monitoring/distribution.py DRIFT_* only). TFDV's drift
comparators were used before; their Jensen-Shannon divergence is computed
on equal-width histograms, so ordinary quarters measured up to 0.8 on
trip_miles (one long trip stretches the range) while fares x1.5 measured
0.06, and their distances take no account of how many rows a span has
(docs/continuous-training.md has the measured rates).

Why here and not as a pipeline component: the CT controller must decide
*before* it starts a run whether a span is worth one, so drift is measured
on the CSV of a span that is not ingested yet. TFX 1.16 also ships
`tfx.components.DistributionValidator` (not in `tfx.v1`), which compares
statistics inside a pipeline, but its result exists only after the run it
could have triggered. The previous span's values come from the Examples
ExampleGen made of it when ML Metadata has them (what the pipeline actually
ingested, even if the CSV changed since), else from its CSV. Neither side
needs TensorFlow or TFDV.
"""

import dataclasses
import glob
import json
import os
from typing import Dict, List, Mapping, Optional, Tuple

import ml_metadata as mlmd
from data import spans
from lineage import graph
from monitoring import distribution
from monitoring import feature_values
from pipeline import configs

EXAMPLE_GEN = 'CsvExampleGen'


@dataclasses.dataclass
class FeatureDrift:
  """One feature's comparison of the new span with the previous one."""
  feature: str
  comparator: str  # the effect size: 'L-inf' (categorical) or 'JSD'
  distance: float  # the effect size
  threshold: float  # its floor
  # Chi-square test of homogeneity, and the per-feature (Bonferroni) level.
  # Defaults for records written before the test existed: the distance
  # alone decided then.
  p_value: float = 0.0
  alpha: float = 1.0

  @property
  def drifted(self) -> bool:
    return self.p_value < self.alpha and self.distance > self.threshold


@dataclasses.dataclass
class DriftReport:
  """Every compared feature of `span` against `previous_span`."""
  span: int
  previous_span: int
  features: List[FeatureDrift]
  sources: Dict[str, str]  # 'span' / 'previous_span' -> where values came from

  @property
  def drifted(self) -> List[FeatureDrift]:
    return [f for f in self.features if f.drifted]

  def summary(self) -> str:
    """One line: which features drifted, effect vs floor, and p-value."""
    if not self.drifted:
      worst = max(self.features, key=lambda f: f.distance / f.threshold,
                  default=None)
      closest = (f'; closest {worst.feature} {worst.comparator} '
                 f'{worst.distance:.3f} <= {worst.threshold:g} '
                 f'(p {worst.p_value:.2g})') if worst else ''
      return (f'no drift, span {self.span} vs {self.previous_span}'
              + closest)
    return (f'span {self.span} vs {self.previous_span}: ' + ', '.join(
        f'{f.feature} {f.comparator} {f.distance:.3f} > {f.threshold:g} '
        f'(p {f.p_value:.2g})' for f in self.drifted))

  def to_json(self) -> str:
    return json.dumps({
        'span': self.span, 'previous_span': self.previous_span,
        'sources': self.sources,
        'features': {f.feature: {'comparator': f.comparator,
                                 'distance': round(f.distance, 6),
                                 'threshold': f.threshold,
                                 'p_value': float(f'{f.p_value:.6g}'),
                                 'alpha': f.alpha,
                                 'drifted': f.drifted}
                     for f in self.features}}, sort_keys=True)

  @classmethod
  def from_json(cls, text: str) -> 'DriftReport':
    data = json.loads(text)
    return cls(span=data['span'], previous_span=data['previous_span'],
               sources=data['sources'],
               features=[FeatureDrift(name, f['comparator'], f['distance'],
                                      f['threshold'], f.get('p_value', 0.0),
                                      f.get('alpha', 1.0))
                         for name, f in sorted(data['features'].items())])


def values_from_csv(data_root: str, span: int, kinds: Mapping[str, str]
                   ) -> Tuple[distribution.Values, str]:
  """Raw values of a span's CSV files, and where they came from."""
  pattern = spans.span_glob(data_root, span)
  paths = spans.span_files(data_root, span)
  if not paths:
    raise FileNotFoundError(f'no CSV file matches {pattern}')
  values = feature_values.values_from_csv(paths, kinds)
  return values, f'CSV {pattern} ({feature_values.size(values)} rows)'


def values_from_store(store: mlmd.MetadataStore, pipeline_name: str,
                      span: int, data_root: Optional[str],
                      kinds: Mapping[str, str]
                     ) -> Optional[Tuple[distribution.Values, str]]:
  """Raw values of the newest Examples ExampleGen made of `span` from
  `data_root` (every split: the whole span, as its CSV), or None when ML
  Metadata has none whose files are readable from here."""
  for artifact in graph.ingested_examples(store, pipeline_name, data_root,
                                         span, EXAMPLE_GEN):
    splits = sorted(os.path.basename(p)[len('Split-'):] for p in glob.glob(
        os.path.join(artifact.uri, 'Split-*')))
    if not splits:
      continue
    values = feature_values.concatenate([
        feature_values.values_from_examples_dir(artifact.uri, split, kinds)
        for split in splits])
    return values, (f'Examples artifact {artifact.id} (splits '
                    f'{", ".join(splits)}; {feature_values.size(values)} rows)')
  return None


def compare(current: distribution.Values, previous: distribution.Values,
            thresholds: distribution.Rule,
            kinds: Mapping[str, str]) -> List[FeatureDrift]:
  """The rule on every compared feature, sorted by name; the previous span
  is the reference (its quantiles make the bins)."""
  found = distribution.compare(previous, current, thresholds, kinds)
  return [FeatureDrift(f.feature, f.measure, f.effect, f.threshold,
                       f.p_value, f.alpha) for f in found.features]


def detect(store: Optional[mlmd.MetadataStore], cfg: configs.PipelineConfig,
           span: int, previous_span: int,
           thresholds: Optional[distribution.Rule] = None) -> DriftReport:
  """Drift of `span` (read from its CSV) against `previous_span`.

  The previous span's values are the pipeline's own Examples when ML
  Metadata has them, else read from its CSV like the new span's.
  """
  thresholds = thresholds or distribution.Rule()
  kinds = distribution.kinds_of(cfg.problem_spec)
  current, source = values_from_csv(cfg.data_root, span, kinds)
  sources = {'span': source}
  recorded = values_from_store(store, cfg.pipeline_name, previous_span,
                               cfg.data_root, kinds) if store else None
  previous, sources['previous_span'] = recorded or values_from_csv(
      cfg.data_root, previous_span, kinds)
  return DriftReport(span=span, previous_span=previous_span,
                     features=compare(current, previous, thresholds, kinds),
                     sources=sources)
