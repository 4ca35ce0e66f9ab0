"""A command fixes Python's hash seed before it runs TFX (ops/reproducible.py)."""

import os
import subprocess
import sys

from tests import helpers

PRINT_HASH = ('from ops import reproducible\n'
              'reproducible.fix_hash_seed()\n'
              'import os\n'
              "print(os.environ['PYTHONHASHSEED'], hash('span-16'))\n")


def _run(env):
  return subprocess.run([sys.executable, '-c', PRINT_HASH], cwd=helpers.REPO,
                        env=env, capture_output=True, text=True, timeout=60,
                        check=True).stdout.split()


def test_an_unset_hash_seed_is_fixed_so_processes_agree():
  env = {k: v for k, v in os.environ.items() if k != 'PYTHONHASHSEED'}
  env['PYTHONPATH'] = helpers.REPO
  first, second = _run(env), _run(env)
  assert first == second and first[0] == '0'
  # Without the fix, string hashes differ between processes (the cause).
  unfixed = [subprocess.run(
      [sys.executable, '-c', "print(hash('span-16'))"], env=env,
      capture_output=True, text=True, check=True).stdout for _ in range(3)]
  assert len(set(unfixed)) > 1


def test_a_hash_seed_the_user_set_is_kept():
  env = dict(os.environ, PYTHONHASHSEED='7', PYTHONPATH=helpers.REPO)
  assert _run(env)[0] == '7'


BATCH_KWARGS = ('import json, sys\n'
                'from ops import reproducible\n'
                'from tfx_bsl.coders import batch_util\n'
                'before = batch_util.GetBatchElementsKwargs(None)\n'
                'reproducible.fix_batching()\n'
                'after = batch_util.GetBatchElementsKwargs(None)\n'
                'print(json.dumps([sorted(before), before["min_batch_size"],'
                ' before["max_batch_size"], after["min_batch_size"],'
                ' after["max_batch_size"]]))\n')


def test_batches_are_fixed_by_size_not_tuned_from_timings():
  """tfx_bsl's default lets beam.BatchElements size batches from timings
  (with a random jitter): the partial sums of tf.Transform's analyzers then
  add up in a load-dependent order."""
  import json  # pylint: disable=g-import-not-at-top
  out = subprocess.run([sys.executable, '-c', BATCH_KWARGS], cwd=helpers.REPO,
                       env=dict(os.environ, PYTHONPATH=helpers.REPO),
                       capture_output=True, text=True, timeout=120,
                       check=True).stdout.splitlines()[-1]
  keys, before_min, before_max, after_min, after_max = json.loads(out)
  assert 'target_batch_duration_secs' in keys and before_min != before_max
  assert after_min == after_max  # one fixed batch size, by bytes
