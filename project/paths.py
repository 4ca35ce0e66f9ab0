"""Where things are: the defaults every command starts from, defined once.

Standard library only: the model server, the lineage tools and the pipeline
all import it. Each default is a flag of the commands that use it.
"""

import os

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUTPUT_DIR = os.path.join(REPO_ROOT, 'outputs')

PIPELINE_NAME = 'taxi'
MODEL_NAME = 'taxi'
DATA_ROOT = os.path.join(REPO_ROOT, 'data', 'taxi')
SCHEMA_PATH = os.path.join(REPO_ROOT, 'schema', 'schema.pbtxt')
PIPELINE_ROOT = os.path.join(OUTPUT_DIR, 'pipeline')
# TF Serving model base paths: <SERVING_DIR>/<model name>/<version>/.
SERVING_DIR = os.path.join(OUTPUT_DIR, 'serving')
# The local TF Serving model config file (version labels, policy) that
# `python -m delivery.versions write-config` writes and `promote` edits:
# under outputs/ (git-ignored), so a run never records a dirty git tree.
MODEL_CONFIG_FILE = os.path.join(SERVING_DIR, 'models.config')


def metadata_path(pipeline_root: str = PIPELINE_ROOT) -> str:
  """The SQLite ML Metadata file a run under `pipeline_root` writes."""
  return os.path.join(pipeline_root, 'metadata.sqlite')
