"""A command fixes Python's hash seed before it runs TFX (pipeline/reproducible.py)."""

import os
import subprocess
import sys

from tests import helpers

PRINT_HASH = ('from pipeline import reproducible\n'
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
