"""Run the TFX pipeline of a problem (--problem, default taxi) locally with
LocalDagRunner.

Components run one at a time in this process; Beam-based components use
Beam's in-process DirectRunner. Every flag overrides one field of
pipeline/configs.py. Exit status: 0 when the pipeline completed (pushed or
not blessed), 1 when it stopped (data anomalies, a failed component) or
the served model did not answer. After a completed run, the pushed model is
served (python -m serving) and asked about the problem's sample instance over REST and gRPC.

Beam flags go after `--`, as for beam_runner.py (pipeline/beam_args.py):
everything there goes to each Beam-based component's Beam pipeline, e.g.
the local Flink cluster's (python -m cluster up; docs/scale.md):

  local_runner.py -- $(.venv/bin/python -m cluster flags)
"""

import argparse
import subprocess
import sys
import time
from typing import Any

from pipeline import beam_args as beam_flags
from pipeline import configs
from ops import console
from ops import reproducible
from project import cli

START = time.time()  # only light modules above: the summary counts the rest


def main(argv=None) -> int:
  ours, beam_args = beam_flags.split_beam_args(
      sys.argv[1:] if argv is None else argv)
  parser = cli.ArgumentParser(
      usage='%(prog)s [pipeline flags] [-- beam flags]',
      description=__doc__.split('\n\n')[0],
      epilog=__doc__.split('\n\n', 1)[1],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  configs.add_flags(parser)
  add_served_prediction_flag(parser)
  args = parser.parse_args(ours)
  cfg = configs.from_flags(args)
  pipeline_args = beam_flags.local_run_args(beam_args)

  # Heavy imports (TensorFlow, TFX) only after --help had its chance.
  print(console.LOADING, flush=True)
  console.quiet_imports()
  from pipeline.run_pipeline import run_pipeline  # pylint: disable=g-import-not-at-top
  from tfx.orchestration.local.local_dag_runner import LocalDagRunner  # pylint: disable=g-import-not-at-top
  outcome = run_pipeline(cfg, LocalDagRunner, pipeline_args,
                         started_at=START)
  return exit_status(cfg, outcome, args.skip_served_prediction)


# --- How a runner's console ends: also beam_runner.py's ---------------------


def add_served_prediction_flag(parser: argparse.ArgumentParser) -> None:
  parser.add_argument('--skip-served-prediction', action='store_true',
                      help='do not start the model server for a sample '
                      'prediction at the end')


def exit_status(cfg: configs.PipelineConfig, outcome: Any,
                skip_served_prediction: bool) -> int:
  """1 when the run (a summary.RunOutcome) stopped; after a completed
  run, the served prediction's status unless it is skipped."""
  if not outcome.ok:
    return 1
  if skip_served_prediction:
    return 0
  return served_prediction(cfg)


def served_prediction(cfg: configs.PipelineConfig) -> int:
  """Serves the pushed versions and asks them about the problem's sample.

  A separate process, as a deployment would run it: the runner never
  imports serving/. Its errors go to this process's sys.stderr, the
  console even where fd 2 goes to a log (beam_flags.send_worker_stderr_to).
  """
  print(flush=True)
  return subprocess.call([
      sys.executable, '-m', 'serving.demo', '--problem', cfg.problem,
      '--model_name', cfg.model_name,
      '--model_base_path', cfg.serving_model_dir], stderr=sys.stderr)


if __name__ == '__main__':
  reproducible.fix_hash_seed()  # before anything runs TFX
  sys.exit(main())
