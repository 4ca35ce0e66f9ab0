"""Same inputs, same model: what a process must fix before it runs TFX.

Training is seeded and TensorFlow runs deterministic kernels
(models/model.py:make_deterministic), but one source of run-to-run
difference is outside TensorFlow: Python randomizes `hash()` of strings and
bytes per process, and Beam's runners group and combine through hashed
keys, so the order in which tf.Transform's analyzers add up partial sums
changes from one process to the next. Float addition is not associative:
the variance of a z-scored feature came out one float32 ULP apart
(2.6997943 vs 2.6997945) between two processes on the same span, and 300
training steps amplified that into a visibly different model (AUC 0.9080 vs
0.9070, balanced accuracy 0.7941 vs 0.7983) and could flip a blessing.
A fixed PYTHONHASHSEED removes it; it must be set before the interpreter
starts, so a command run without one starts itself again with it.
"""

import os
import sys

HASH_SEED = '0'


def fix_hash_seed() -> None:
  """Re-executes this command with PYTHONHASHSEED set, unless it is set.

  Call first thing under `if __name__ == '__main__':`, never from code a
  test imports (the re-exec would replace the test process). A value the
  user set is kept: the same value gives the same results.
  """
  if 'PYTHONHASHSEED' in os.environ:
    return
  os.environ['PYTHONHASHSEED'] = HASH_SEED
  sys.stdout.flush()
  sys.stderr.flush()
  # sys.orig_argv is the command as typed (`python -m pipeline.replay ...`).
  os.execv(sys.executable, sys.orig_argv)
