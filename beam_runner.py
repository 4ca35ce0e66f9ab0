"""Run the TFX pipeline of a problem (--problem, default taxi) with
BeamDagRunner, on any Beam runner.

The same pipeline as local_runner.py (pipeline/pipeline.py), orchestrated by
TFX's BeamDagRunner; the Beam-based components (ExampleGen, StatisticsGen,
Transform, Evaluator) run their Beam jobs on Beam's DirectRunner (in this
process by default; --direct-running-mode multi_processing for local worker
processes), or on Flink, Spark or Dataflow. Every pipeline
flag overrides one field of pipeline/configs.py. Exit status: 0 when the
pipeline completed (pushed or not blessed), 1 when it stopped or the served
model did not answer. After a completed run, the pushed model is served
(python -m serving) and asked about the problem's sample instance over REST and gRPC, as
local_runner.py does (--skip-served-prediction leaves it out).

Beam flags go after `--`; everything there is passed to each component's
Beam pipeline unchanged (flags before `--` that this command does not know
are an error, so a mistyped pipeline flag is never silently handed to Beam):

  beam_runner.py --train-steps 200                  # DirectRunner, in process
  beam_runner.py --direct-running-mode multi_processing --direct-num-workers 2
  beam_runner.py -- $(.venv/bin/python -m cluster flags)  # local Flink cluster:
      # --runner=PortableRunner --job_endpoint=localhost:8099
      # --environment_type=EXTERNAL --environment_config=localhost:50000
      # and two more (python -m cluster up starts it; docs/scale.md)
  beam_runner.py -- --runner=SparkRunner --spark_master_url=spark://host:7077
  beam_runner.py --data-root gs://b/taxi --pipeline-root gs://b/root \\
      --serving-dir gs://b/serving -- --runner=DataflowRunner \\
      --project=P --region=us-central1 --temp_location=gs://b/tmp

With a runner other than DirectRunner, --direct-* flags are not sent, and
`--setup_file=<repo>/setup.py` is added unless a dependency flag is given
(--setup_file, --extra_package(s), --requirements_file, --sdk_container_image):
remote workers then install this project (models/, pipeline/) and its pinned
dependencies. Data, pipeline root and serving dir must be reachable by the
workers (e.g. gs:// for Dataflow). The DirectRunner's workers are processes
of this venv, where `make venv` installed the project, so nothing is staged;
the flag is still added because it also stops TFX from building an sdist of
the whole tfx package for every Beam component (2-8 s and a 38 MiB copy left
in /tmp each, docs/scale.md). In multi_processing mode the workers' stderr
(each re-imports TensorFlow) goes to <pipeline-root>/logs/workers-*.log.
"""

import argparse
import os
import sys
import time
from typing import List, Optional

import local_runner  # how a run's console ends: the served prediction
from pipeline import beam_args as beam_flags
from pipeline import configs
from ops import console
from ops import reproducible
from project import cli

START = time.time()  # only light modules above: the summary counts the rest


def main(argv: Optional[List[str]] = None) -> int:
  ours, beam_args = beam_flags.split_beam_args(
      sys.argv[1:] if argv is None else argv)
  parser = cli.ArgumentParser(
      usage='%(prog)s [pipeline flags] [-- beam flags]',
      description=__doc__.split('\n\n')[0],
      epilog=__doc__.split('\n\n', 1)[1],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  configs.add_flags(parser)
  parser.add_argument(
      '--direct-running-mode', default=beam_flags.DEFAULT_RUNNING_MODE,
      choices=['in_memory', 'multi_threading', 'multi_processing'],
      help='DirectRunner mode (default: %(default)s)')
  parser.add_argument(
      '--direct-num-workers', type=int, default=beam_flags.DEFAULT_NUM_WORKERS,
      metavar='N', help='DirectRunner workers; 0 = one per CPU '
      '(default: %(default)s)')
  local_runner.add_served_prediction_flag(parser)
  args = parser.parse_args(ours)
  cfg = configs.from_flags(args)
  pipeline_args = beam_flags.beam_pipeline_args(
      beam_args, args.direct_running_mode, args.direct_num_workers)

  # Heavy imports (TensorFlow, TFX, Beam) only after --help had its chance.
  print(console.LOADING, flush=True)
  console.quiet_imports()
  from pipeline.run_pipeline import run_pipeline  # pylint: disable=g-import-not-at-top
  from tfx.orchestration.beam.beam_dag_runner import BeamDagRunner  # pylint: disable=g-import-not-at-top
  print('Beam args: ' + ' '.join(pipeline_args), flush=True)
  if (beam_flags.uses_worker_processes(pipeline_args) and
      '://' not in cfg.pipeline_root):
    beam_flags.send_worker_stderr_to(os.path.join(
        cfg.pipeline_root, 'logs',
        time.strftime('workers-%Y%m%d-%H%M%S.log')))
  outcome = run_pipeline(cfg, BeamDagRunner, pipeline_args, started_at=START)
  return local_runner.exit_status(cfg, outcome, args.skip_served_prediction)


if __name__ == '__main__':
  reproducible.fix_hash_seed()  # before anything runs TFX
  sys.exit(main())
