"""Where things are: the defaults every command starts from, defined once.

Standard library only: the model server, the lineage tools and the pipeline
all import it. Each default is a flag of the commands that use it. A
problem (models/<name>/, models/problem.py) has its data, schema and
outputs at the paths below, so two problems never share a store, a
pipeline root or a model base path by accident.
"""

import os

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUTPUT_DIR = os.path.join(REPO_ROOT, 'outputs')

# The problem every command runs when none is named (`--problem NAME`).
DEFAULT_PROBLEM = 'taxi'
# TF Serving model base paths: <SERVING_DIR>/<model name>/<version>/, one
# model per problem (named as the problem by default).
SERVING_DIR = os.path.join(OUTPUT_DIR, 'serving')
# The local TF Serving model config file (version labels, policy) that
# `python -m delivery.versions write-config` writes and `promote` edits:
# under outputs/ (git-ignored), so a run never records a dirty git tree.
MODEL_CONFIG_FILE = os.path.join(SERVING_DIR, 'models.config')


def data_root(problem: str = DEFAULT_PROBLEM) -> str:
  """data/<problem>/: its span-N/ folders."""
  return os.path.join(REPO_ROOT, 'data', problem)


def schema_path(problem: str = DEFAULT_PROBLEM) -> str:
  """schema/<problem>/schema.pbtxt: its curated schema."""
  return os.path.join(REPO_ROOT, 'schema', problem, 'schema.pbtxt')


def problem_outputs(problem: str = DEFAULT_PROBLEM) -> str:
  """outputs/<problem>/: what its runs write (pipeline root, replays,
  scores, monitoring)."""
  return os.path.join(OUTPUT_DIR, problem)


def pipeline_root(problem: str = DEFAULT_PROBLEM) -> str:
  """outputs/<problem>/pipeline/: artifacts, ML Metadata, logs."""
  return os.path.join(problem_outputs(problem), 'pipeline')


def metadata_path(root: str = None) -> str:
  """The SQLite ML Metadata file a run under pipeline root `root` (the
  default problem's by default) writes."""
  return os.path.join(root or pipeline_root(), 'metadata.sqlite')
