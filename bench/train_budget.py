"""Model quality against training budget, and whether the blessing rule passes it.

    .venv/bin/python bench/train_budget.py                # the docs table (~10 min)
    .venv/bin/python bench/train_budget.py --steps 1,300 --learning-rates 0.01

Runs the real pipeline (LocalDagRunner) on the bundled spans for each
budget: the `make run` window (16 spans) at several train steps and
learning rates, the replay's (4 spans ending at span 16, 300 steps) and the
tests' short budget (tests/helpers.py FAST_PIPELINE on its 3 x 300 rows).
Every run pushes to a serving directory of its own, so none has a baseline
and "blessed" is the default rule's absolute thresholds alone
(pipeline.blessing.eval_config). One pipeline root is shared, so Transform runs once
per window. Prints a Markdown table: AUC, balanced accuracy, accuracy next
to the majority class's, calibration overall and on card trips (the
guarded slice), blessed, and the thresholds that failed. Deterministic
(seeded): the same command prints the same table.
"""

import argparse
import dataclasses
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from continuous_training import config as ct_config  # pylint: disable=wrong-import-position
from project import cli
from pipeline import configs  # pylint: disable=wrong-import-position
from ops import reproducible  # pylint: disable=wrong-import-position
from ops import console  # pylint: disable=wrong-import-position


def _slice_calibration(uri: str) -> float:
  import tensorflow_model_analysis as tfma  # pylint: disable=g-import-not-at-top
  (key, [value]), = configs.GUARDED_SLICES.items()
  for metrics in tfma.load_metrics(uri):
    keys = metrics.slice_key.single_slice_keys
    if len(keys) == 1 and keys[0].column == key and (
        keys[0].bytes_value.decode() == value):
      for kv in metrics.metric_keys_and_values:
        if kv.key.name == 'calibration' and not kv.key.model_name:
          return kv.value.double_value.value
  return float('nan')


def _short(failure: str) -> str:
  """'calibration 0.3343 not in [0.7, 1.43] (payment_type=Credit Card)' ->
  '... on card trips'; '(overall)' dropped."""
  (key, [value]), = configs.GUARDED_SLICES.items()
  return failure.replace(' (overall)', '').replace(
      f' ({key}={value})', ' on card trips')


def main(argv=None) -> int:
  parser = cli.ArgumentParser(description=__doc__.split('\n\n')[0],
                                   epilog=__doc__.split('\n\n', 1)[1],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--steps', default='1,100,300,1000',
                      help='train steps for the 16-span window (default: %(default)s)')
  parser.add_argument('--learning-rates', default='0.001,0.01',
                      help='for the 16-span window (default: %(default)s)')
  parser.add_argument('--out', default=None,
                      help='work directory (default: a new temporary one)')
  args = parser.parse_args(argv)
  console.quiet_imports()
  from pipeline.run_pipeline import run_pipeline  # pylint: disable=g-import-not-at-top
  from tfx.orchestration.local.local_dag_runner import LocalDagRunner  # pylint: disable=g-import-not-at-top
  from tests import helpers  # pylint: disable=g-import-not-at-top

  out = args.out or tempfile.mkdtemp(prefix='train-budget-')
  bundled = configs.PipelineConfig(pipeline_root=os.path.join(out, 'pipeline'))
  budgets = []  # (label, config)
  for lr in [float(x) for x in args.learning_rates.split(',')]:
    for steps in [int(x) for x in args.steps.split(',')]:
      budgets.append((f'make run window (16 spans), lr {lr:g}, {steps} steps',
                      dataclasses.replace(bundled, learning_rate=lr,
                                          train_steps=steps)))
  replay = ct_config.REPLAY_DEFAULTS
  budgets.append((f'replay window ({replay["window_spans"]} spans to 16), '
                  f'{replay["train_steps"]} steps',
                  dataclasses.replace(bundled, **replay)))
  small = os.path.join(out, 'small-data')
  helpers.small_spans(small)
  fast = {k: v for k, v in helpers.FAST_PIPELINE.items()
          if k != 'max_auc_drop'}  # no baseline here anyway
  budgets.append((f'tests\' budget ({fast["train_steps"]} steps, lr '
                  f'{fast["learning_rate"]:g}, 3 x 300 rows)',
                  configs.PipelineConfig(
                      data_root=small,
                      pipeline_root=os.path.join(out, 'small-pipeline'),
                      **fast)))

  rows = []
  for index, (label, cfg) in enumerate(budgets):
    cfg = dataclasses.replace(
        cfg, serving_dir=os.path.join(out, f'serving-{index}'))
    print(f'\n[{index + 1}/{len(budgets)}] {label}', flush=True)
    start = time.time()
    outcome = run_pipeline(cfg, LocalDagRunner)
    m = outcome.metrics
    evaluation = outcome.nodes['Evaluator'].outputs['evaluation'][0].uri
    rows.append((label, m, _slice_calibration(evaluation), outcome,
                 time.time() - start))

  print('\n| budget | AUC | balanced accuracy | accuracy (majority class) | '
        'calibration | card-trip calibration | blessed |')
  print('|---|---:|---:|---:|---:|---:|---|')
  for label, m, card, outcome, _ in rows:
    blessed = 'yes' if outcome.blessed else (
        'no: ' + '; '.join(_short(f) for f in outcome.blessing_failures))
    print(f'| {label} | {m["auc"]:.3f} | {m["balanced_accuracy"]:.3f} | '
          f'{m["binary_accuracy"]:.3f} ({1 - m["mean_label"]:.3f}) | '
          f'{m["calibration"]:.3f} | {card:.3f} | {blessed} |')
  print(f'\nwork directory: {out}')
  return 0


if __name__ == '__main__':
  reproducible.fix_hash_seed()  # before anything runs TFX
  sys.exit(main())
