"""Run the taxi TFX pipeline with BeamDagRunner, on any Beam runner.

The same pipeline as local_runner.py (pipeline/pipeline.py), orchestrated by
TFX's BeamDagRunner; the Beam-based components (ExampleGen, StatisticsGen,
Transform, Evaluator) run their Beam jobs on Beam's DirectRunner (in this
process by default; --direct-running-mode multi_processing for local worker
processes), or on Flink, Spark or Dataflow. Every pipeline
flag overrides one field of pipeline/configs.py. Exit status: 0 when the
pipeline completed (pushed or not blessed), 1 when it stopped.

Beam flags go after `--`; everything there is passed to each component's
Beam pipeline unchanged (flags before `--` that this command does not know
are an error, so a mistyped pipeline flag is never silently handed to Beam):

  beam_runner.py --train-steps 200                  # DirectRunner, in process
  beam_runner.py --direct-running-mode multi_processing --direct-num-workers 2
  beam_runner.py -- --runner=FlinkRunner --flink_master=localhost:8081 \\
      --environment_type=LOOPBACK
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
from typing import List, Optional, Tuple

from pipeline import configs
from pipeline import console
from pipeline import reproducible
from pipeline import tfx_private
from project import cli

START = time.time()  # only light modules above: the summary counts the rest

SETUP_FILE = os.path.join(configs.REPO_ROOT, 'setup.py')
# Any of these tells TFX the Beam workers already get their Python
# dependencies, so it does not package tfx itself into a temporary sdist for
# each component (a TFX internal: pipeline/tfx_private.py).
DEPENDENCY_FLAGS = tfx_private.BEAM_DEPENDENCY_FLAGS
# Chosen by measurement (docs/scale.md): on 2 cores each worker process
# re-imports TensorFlow/TFX (20-50 s per Beam job), more than 2 workers saved
# on the bundled data and on 100k generated rows.
DEFAULT_RUNNING_MODE = 'in_memory'
DEFAULT_NUM_WORKERS = 1


def split_beam_args(argv: List[str]) -> Tuple[List[str], List[str]]:
  """(our flags, Beam flags): Beam's are everything after the first `--`."""
  if '--' in argv:
    at = argv.index('--')
    return argv[:at], argv[at + 1:]
  return list(argv), []


def _flag_value(beam_args: List[str], name: str) -> Optional[str]:
  """Value of `--name=V` or `--name V` in beam_args (last one wins)."""
  value = None
  for i, arg in enumerate(beam_args):
    if arg.startswith(f'--{name}='):
      value = arg.split('=', 1)[1]
    elif arg == f'--{name}' and i + 1 < len(beam_args):
      value = beam_args[i + 1]
  return value


def _is_direct(runner: Optional[str]) -> bool:
  """Beam accepts 'direct', 'DirectRunner', ... in any case."""
  return (runner or 'DirectRunner').lower() in (
      'direct', 'directrunner', 'switchingdirectrunner')


def _has_flag(beam_args: List[str], name: str) -> bool:
  return any(a == f'--{name}' or a.startswith(f'--{name}=') for a in beam_args)


def beam_pipeline_args(beam_args: List[str], running_mode: str,
                       num_workers: int) -> List[str]:
  """The Beam args every Beam-based component gets.

  The user's flags come last so they win over ours (Beam's parser keeps the
  last occurrence).
  """
  ours = []
  if _is_direct(_flag_value(beam_args, 'runner')):
    ours += [f'--direct_running_mode={running_mode}',
             f'--direct_num_workers={num_workers}']
  if not any(_has_flag(beam_args, flag) for flag in DEPENDENCY_FLAGS):
    ours.append(f'--setup_file={SETUP_FILE}')
  return ours + list(beam_args)


def uses_worker_processes(pipeline_args: List[str]) -> bool:
  """True when Beam will start local SDK worker subprocesses."""
  return (_is_direct(_flag_value(pipeline_args, 'runner')) and
          _flag_value(pipeline_args, 'direct_running_mode')
          == 'multi_processing')


def send_worker_stderr_to(path: str) -> None:
  """Points fd 2 (inherited by Beam's worker subprocesses) at `path`.

  Each multi-processing worker re-imports TensorFlow and prints its warnings
  and shutdown noise straight to the inherited stderr, burying the
  one-line-per-component console. This process keeps the console as its
  Python-level sys.stderr, so its own errors still show.
  """
  os.makedirs(os.path.dirname(path), exist_ok=True)
  console_fd = os.dup(2)
  log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
  os.dup2(log_fd, 2)
  os.close(log_fd)
  sys.stderr = os.fdopen(console_fd, 'w', buffering=1)


def main(argv: Optional[List[str]] = None) -> int:
  ours, beam_args = split_beam_args(sys.argv[1:] if argv is None else argv)
  parser = cli.ArgumentParser(
      usage='%(prog)s [pipeline flags] [-- beam flags]',
      description=__doc__.split('\n\n')[0],
      epilog=__doc__.split('\n\n', 1)[1],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  configs.add_flags(parser)
  parser.add_argument(
      '--direct-running-mode', default=DEFAULT_RUNNING_MODE,
      choices=['in_memory', 'multi_threading', 'multi_processing'],
      help='DirectRunner mode (default: %(default)s)')
  parser.add_argument(
      '--direct-num-workers', type=int, default=DEFAULT_NUM_WORKERS,
      metavar='N', help='DirectRunner workers; 0 = one per CPU '
      '(default: %(default)s)')
  args = parser.parse_args(ours)
  cfg = configs.from_flags(args)
  pipeline_args = beam_pipeline_args(beam_args, args.direct_running_mode,
                                     args.direct_num_workers)

  # Heavy imports (TensorFlow, TFX, Beam) only after --help had its chance.
  print(console.LOADING, flush=True)
  console.quiet_imports()
  from pipeline.run_pipeline import run_pipeline  # pylint: disable=g-import-not-at-top
  from tfx.orchestration.beam.beam_dag_runner import BeamDagRunner  # pylint: disable=g-import-not-at-top
  print('Beam args: ' + ' '.join(pipeline_args), flush=True)
  if uses_worker_processes(pipeline_args) and '://' not in cfg.pipeline_root:
    send_worker_stderr_to(os.path.join(
        cfg.pipeline_root, 'logs',
        time.strftime('workers-%Y%m%d-%H%M%S.log')))
  outcome = run_pipeline(cfg, BeamDagRunner, pipeline_args, started_at=START)
  return 0 if outcome.ok else 1


if __name__ == '__main__':
  reproducible.fix_hash_seed()  # before anything runs TFX
  sys.exit(main())
