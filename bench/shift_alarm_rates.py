"""False-alarm and detection rates of the drift/skew rule, on the bundled data.

    .venv/bin/python bench/shift_alarm_rates.py              # ~5 min, 2 cores
    .venv/bin/python bench/shift_alarm_rates.py --trials 50  # quicker, coarser
    .venv/bin/python bench/shift_alarm_rates.py --json /tmp/rates.json
    .venv/bin/python bench/shift_alarm_rates.py --problem penguin

The rule is monitoring/distribution.py with its thresholds (DRIFT_*), the
one both continuous_training/drift.py and
monitoring/skew.py use; the flags override them, to see what a change would
do. The data, the compared features (distribution.kinds_of) and the known
shifts are the --problem's (default taxi; models/<problem>/problem.py).
Each cell is the share of `--trials` seeded random samples on which the
rule raised any alarm:

  (a) in-distribution: samples of one real span compared with a training
      window that contains it: the 16-span window (all bundled spans) and
      the 4-span window ending at that span (fewer for spans 1-3). A sample
      is drawn without replacement while the span has enough rows; a
      sample larger than its span (taxi: spans 13-16 have ~200 rows, so
      their larger samples and every span's 2000) is drawn *with*
      replacement (marked `r`): it then repeats that span's rows, i.e.
      tests that span's empirical distribution;
  (b) in-distribution: samples (without replacement) of the 16-span
      window's own rows against the window (the sample is part of the
      reference), and held out: a sample against all the window's *other*
      rows, re-drawn each trial (the test's null hypothesis exactly: two
      independent samples of one distribution);
  (c) detection: samples of the 16-span window's rows with a known shift
      applied (the problem's traffic_shifts, their one definition; all of
      them unless --shifts names some).
  (d) the drift trigger's own question on the real data, once per span:
      whole span N against whole span N-1 (deterministic, no sampling).

The reference is the window's rows as CSV (all of them; the pipeline's
train split is a hash-chosen 2/3 of the same rows). Prints tables; never
fails on time. Exit status 0 always, unless the data cannot be read.
"""

import argparse
import json
import os
import sys
import time
import zlib
from typing import Dict, List, Sequence

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from project import cli  # pylint: disable=wrong-import-position
from project import paths  # pylint: disable=wrong-import-position
from data import spans as span_rules  # pylint: disable=wrong-import-position
from models import problem as problems  # pylint: disable=wrong-import-position
from monitoring import distribution  # pylint: disable=wrong-import-position
from monitoring import feature_values  # pylint: disable=wrong-import-position
from monitoring import replay_traffic  # pylint: disable=wrong-import-position


def read_spans(problem: problems.Problem, data_root: str
              ) -> Dict[int, List[Dict[str, str]]]:
  """Span number -> its instances (raw features as CSV text, label
  dropped)."""
  found = {}
  for span in span_rules.spans_on_disk(data_root):
    found[span] = [row for path in span_rules.span_files(data_root, span)
                   for row in replay_traffic.read_instances(problem, path)]
  if not found:
    raise SystemExit(f'no span-N/ directory under {data_root}')
  return found


def _columns(values: distribution.Values) -> Dict[str, np.ndarray]:
  """Values as object arrays, so a sample is one fancy index per feature."""
  return {name: np.array(v, dtype=object) for name, v in values.items()}


def _take(columns: Dict[str, np.ndarray], index: np.ndarray
         ) -> distribution.Values:
  return {name: column[index] for name, column in columns.items()}


def _rng(seed: int, *key: object) -> np.random.Generator:
  """One generator per table cell: a cell's samples do not depend on which
  other cells were run."""
  return np.random.default_rng([seed, zlib.crc32(repr(key).encode())])


def alarm_rate(reference: distribution.Reference,
               columns: Dict[str, np.ndarray], rows: int, size: int,
               trials: int, rule: distribution.Rule, rng: np.random.Generator,
               counts: Dict[str, int]) -> float:
  """Share of `trials` samples of `size` rows (of `rows`) that alarm;
  `counts` gathers which features raised the alarms."""
  alarms = 0
  replace = size > rows
  for _ in range(trials):
    index = rng.choice(rows, size=size, replace=replace)
    found = distribution.compare(reference, _take(columns, index), rule)
    alarms += found.alarm
    for f in found.alarms:
      counts[f.feature] = counts.get(f.feature, 0) + 1
  return alarms / trials


def held_out_rate(columns: Dict[str, np.ndarray], kinds: Dict[str, str],
                  rows: int, size: int, trials: int, rule: distribution.Rule,
                  rng: np.random.Generator, counts: Dict[str, int]) -> float:
  """Like alarm_rate, but each trial compares `size` random rows with all
  the *other* rows: two independent samples of one distribution (the null
  hypothesis of the test exactly), re-drawn every trial."""
  alarms = 0
  for _ in range(trials):
    order = rng.permutation(rows)
    reference = distribution.Reference(_take(columns, order[size:]), kinds,
                                       bins=rule.bins)
    found = distribution.compare(reference, _take(columns, order[:size]),
                                 rule)
    alarms += found.alarm
    for f in found.alarms:
      counts[f.feature] = counts.get(f.feature, 0) + 1
  return alarms / trials


def _pct(rate: float) -> str:
  return f'{100 * rate:.1f}'


def _table(header: Sequence[str], rows: List[Sequence[str]]) -> str:
  widths = [max(len(str(x)) for x in column)
            for column in zip(header, *rows)]
  def line(cells):
    return '  '.join(str(c).rjust(w) for c, w in zip(cells, widths))
  return '\n'.join([line(header), line(['-' * w for w in widths])]
                   + [line(r) for r in rows])


def _top(counts: Dict[str, int]) -> str:
  return ', '.join(f'{k} {v}' for k, v in sorted(
      counts.items(), key=lambda kv: (-kv[1], kv[0]))[:4]) or '-'


def main(argv=None) -> int:
  parser = cli.ArgumentParser(
      prog='bench/shift_alarm_rates.py', description=__doc__.split('\n\n')[0],
      formatter_class=argparse.RawDescriptionHelpFormatter,
      epilog=__doc__.split('\n\n', 1)[1])
  problems.add_flag(parser, 'whose data, features and shifts')
  parser.add_argument('--data-root', default=None,
                      help='directory of span-N/ (default: data/<problem>)')
  parser.add_argument('--shifts', default=None,
                      help="comma-separated known shifts to measure (default: "
                      "all of the problem's traffic_shifts)")
  parser.add_argument('--trials', type=int, default=200,
                      help='samples per cell (default: %(default)s)')
  parser.add_argument('--seed', type=int, default=0,
                      help='sampling seed (default: %(default)s)')
  parser.add_argument('--sizes', default='200,500,1000,2000',
                      help='in-distribution sample sizes (default: '
                      '%(default)s)')
  parser.add_argument('--shift-sizes', default='100,200,300,500',
                      help='shifted sample sizes (default: %(default)s)')
  d = distribution.Rule()
  parser.add_argument('--alpha', type=float, default=d.alpha,
                      help='family-wise significance (default: %(default)s)')
  parser.add_argument('--categorical-floor', type=float,
                      default=d.categorical_floor,
                      help='L-infinity floor (default: %(default)s)')
  parser.add_argument('--numeric-floor', type=float, default=d.numeric_floor,
                      help='Jensen-Shannon floor (default: %(default)s)')
  parser.add_argument('--bins', type=int, default=d.bins,
                      help='numeric quantile bins (default: %(default)s)')
  parser.add_argument('--min-expected', type=float, default=d.min_expected,
                      help='pool bins expected below this (default: '
                      '%(default)s)')
  parser.add_argument('--json', default=None,
                      help='also write every rate to this JSON file')
  args = parser.parse_args(argv)
  problem = problems.load(args.problem)
  data_root = args.data_root or paths.data_root(problem.name)
  kinds = distribution.kinds_of(problem)
  shifts = (args.shifts.split(',') if args.shifts
            else sorted(problem.traffic_shifts))
  unknown = sorted(set(shifts) - set(problem.traffic_shifts))
  if unknown:
    parser.error(f'--shifts {",".join(unknown)}: the {problem.name} problem '
                 f'knows {sorted(problem.traffic_shifts) or "no shifts"}')
  rule = distribution.Rule(alpha=args.alpha,
                           categorical_floor=args.categorical_floor,
                           numeric_floor=args.numeric_floor, bins=args.bins,
                           min_expected=args.min_expected)
  sizes = [int(s) for s in args.sizes.split(',')]
  shift_sizes = [int(s) for s in args.shift_sizes.split(',')]
  started = time.time()

  rows_of = read_spans(problem, data_root)
  spans = sorted(rows_of)
  values = {s: feature_values.values_from_rows(r, kinds)
            for s, r in rows_of.items()}
  columns = {s: _columns(v) for s, v in values.items()}
  every = feature_values.concatenate([values[s] for s in spans])
  print(f'Rule: chi-square test of homogeneity, alpha {rule.alpha:g} '
        f'family-wise (Bonferroni over {len(kinds)} '
        f'features), AND effect > floor (L-inf {rule.categorical_floor:g} '
        f'categorical, JSD {rule.numeric_floor:g} numeric); {rule.bins} '
        f'quantile bins, pool below {rule.min_expected:g} expected. '
        f'{args.trials} trials per cell, seed {args.seed}.')
  print(f'Data: {problem.name}, {data_root}, spans {spans[0]}-{spans[-1]}, '
        f'{feature_values.size(every)} rows. Cells: % of trials with any '
        'alarm; r = drawn with replacement (sample larger than the span).\n')
  results: Dict[str, object] = {'problem': problem.name,
                                'rule': rule.__dict__, 'trials': args.trials,
                                'seed': args.seed}

  # (a) each real span against windows that contain it.
  windows = {'W16': lambda s: spans,
             'W4': lambda s: [x for x in spans if s - 3 <= x <= s]}
  header = ['span', 'rows'] + [f'{name}:{n}' for name in windows
                               for n in sizes]
  table, worst, blame = [], 0.0, {}
  cache: Dict[tuple, distribution.Reference] = {}
  for s in spans:
    cells = [str(s), str(len(rows_of[s]))]
    for name, members in windows.items():
      key = tuple(members(s))
      if key not in cache:
        cache[key] = distribution.Reference(feature_values.concatenate(
            [values[x] for x in key]), kinds, bins=rule.bins)
      for n in sizes:
        rate = alarm_rate(cache[key], columns[s], len(rows_of[s]), n,
                          args.trials, rule, _rng(args.seed, 'a', name, s, n),
                          blame)
        worst = max(worst, rate)
        results[f'a/{name}/span {s}/{n}'] = rate
        cells.append(_pct(rate) + ('r' if n > len(rows_of[s]) else ''))
    table.append(cells)
  print('(a) In-distribution: a real span against a training window that '
        'contains it.\n    W16 = all 16 spans, W4 = the 4 spans ending at it; '
        ':n = requests per sample')
  print(_table(header, table))
  print(f'    worst cell {_pct(worst)}%; alarms by feature: {_top(blame)}\n')
  results['a/worst'] = worst

  # (b) resamples of the training data itself, and held-out samples.
  all_columns = _columns(every)
  total = feature_values.size(every)
  whole = distribution.Reference(every, kinds, bins=rule.bins)
  table, blame = [], {}
  cells = ['resample of the 16-span window vs itself']
  for n in sizes:
    rate = alarm_rate(whole, all_columns, total, n, args.trials, rule,
                      _rng(args.seed, 'b', 'resample', n), blame)
    results[f'b/resample/{n}'] = rate
    cells.append(_pct(rate))
  table.append(cells)
  cells = ['held out: n rows vs the window\'s other rows']
  for n in sizes:
    rate = held_out_rate(all_columns, kinds, total, n, args.trials, rule,
                         _rng(args.seed, 'b', 'held-out', n), blame)
    results[f'b/held-out/{n}'] = rate
    cells.append(_pct(rate))
  table.append(cells)
  print('(b) In-distribution: samples of the training data (no replacement)')
  print(_table(['sample'] + [str(n) for n in sizes], table))
  print(f'    alarms by feature: {_top(blame)}\n')

  # (c) known shifts.
  table = []
  for shift in shifts:
    shifted = _columns(feature_values.values_from_rows(
        [problem.traffic_shifts[shift](r) for s in spans for r in rows_of[s]],
        kinds))
    cells, blame = [shift], {}
    for n in shift_sizes:
      rate = alarm_rate(whole, shifted, total, n, args.trials, rule,
                        _rng(args.seed, 'c', shift, n), blame)
      results[f'c/{shift}/{n}'] = rate
      cells.append(_pct(rate))
    table.append(cells + [_top(blame)])
  print('(c) Detection: samples of the 16-span window with a known shift, '
        'against the window')
  print(_table(['shift'] + [str(n) for n in shift_sizes]
               + ['alarms by feature (all sizes)'], table))
  print()

  # (d) the drift trigger on the real data.
  table = []
  for previous, s in zip(spans, spans[1:]):
    found = distribution.compare(values[previous], values[s], rule, kinds)
    worst_feature = max(found.features,
                        key=lambda f: f.effect / max(f.threshold, 1e-12))
    results[f'd/{s}'] = [f.feature for f in found.alarms]
    table.append([
        f'{s} vs {previous}',
        ', '.join(f.feature for f in found.alarms) or 'no',
        f'{worst_feature.feature} {worst_feature.measure} '
        f'{worst_feature.effect:.3f} (p {worst_feature.p_value:.2g})'])
  print('(d) Drift trigger: whole span against the previous whole span')
  print(_table(['spans', 'drift', 'closest to its floor'], table))
  print(f'\n{time.time() - started:.0f} s')
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(results, f, indent=2, sort_keys=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
