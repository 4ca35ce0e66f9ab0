"""Beam flags for the Beam-based components: one owner for both runners.

Everything after a runner's `--` is Beam's, passed unchanged to every
Beam-based component (CsvExampleGen, StatisticsGen, Transform, Evaluator);
`beam_pipeline_args` adds what the project needs around it (the
DirectRunner's mode, and `--setup_file` so TFX builds no sdist of itself).
local_runner.py and beam_runner.py both use it.
"""

import os
import sys
from typing import List, Optional, Tuple

from ops import tfx_private
from project import paths

SETUP_FILE = os.path.join(paths.REPO_ROOT, 'setup.py')
# Any of these tells TFX the Beam workers already get their Python
# dependencies, so it does not package tfx itself into a temporary sdist for
# each component (a TFX internal: ops/tfx_private.py).
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


def local_run_args(beam_args: List[str]) -> Optional[List[str]]:
  """What LocalDagRunner's runners (local_runner.py, score_runner.py) pass:
  None with no Beam flags (TFX's defaults, the in-process DirectRunner),
  else `beam_pipeline_args` with the DirectRunner's defaults."""
  if not beam_args:
    return None
  return beam_pipeline_args(beam_args, DEFAULT_RUNNING_MODE,
                            DEFAULT_NUM_WORKERS)


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
