"""Run the taxi TFX pipeline locally with LocalDagRunner.

Components run one at a time in this process; Beam-based components use
Beam's in-process DirectRunner. Every flag overrides one field of
pipeline/configs.py. Exit status: 0 when the pipeline completed (pushed or
not blessed), 1 when it stopped (data anomalies, a failed component).
"""

import argparse
import sys
import time

from pipeline import configs
from pipeline import console

START = time.time()  # only light modules above: the summary counts the rest


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      description=__doc__.split('\n\n')[0],
      epilog=__doc__.split('\n\n', 1)[1])
  configs.add_flags(parser)
  cfg = configs.from_flags(parser.parse_args(argv))

  # Heavy imports (TensorFlow, TFX) only after --help had its chance.
  print('Loading TensorFlow and TFX (~15 s) ...', flush=True)
  console.quiet_imports()
  from pipeline.run_pipeline import run_pipeline  # pylint: disable=g-import-not-at-top
  from tfx.orchestration.local.local_dag_runner import LocalDagRunner  # pylint: disable=g-import-not-at-top
  outcome = run_pipeline(cfg, LocalDagRunner, started_at=START)
  return 0 if outcome.ok else 1


if __name__ == '__main__':
  sys.exit(main())
