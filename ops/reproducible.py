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
A fixed PYTHONHASHSEED removes that one; it must be set before the
interpreter starts, so a command run without one starts itself again with it.

The other is how Beam batches records for tf.Transform, TFDV and TFMA: by
default tfx_bsl lets `beam.BatchElements` tune batch sizes from how long
each batch took, with a random jitter (unseeded `random`), so the batch
boundaries, and with them the order partial sums are added in, change with
machine load. Two processes on the same span (hash seed fixed) gave a
transform constant of 2251589.75 and 2251589.5; with tfx_bsl's byte-size
batching (fixed batches of at most 8192 records) the constants were equal.
`fix_batching()` turns that on in the process that builds the Beam
pipelines (the batch sizes are fixed there, then shipped to the workers).
"""

import os
import sys

from ops import tfx_private

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
  # sys.orig_argv is the command as typed (`python -m continuous_training.replay ...`).
  os.execv(sys.executable, sys.orig_argv)


def fix_batching() -> None:
  """Batches records by size, not by timing: the same batches on any load.

  Sets tfx_bsl's `--tfxio_use_byte_size_batching` (read when a TFXIO source
  is built, i.e. while a component constructs its Beam pipeline). TFX's
  executors take no batch size for tf.Examples, so the flag is the only
  switch (an experimental one: ops/tfx_private.py).
  """
  tfx_private.use_byte_size_batching()
