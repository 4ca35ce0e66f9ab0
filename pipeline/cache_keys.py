"""Content addresses that make a change of code or schema a cache miss.

TFX's cache key of a component is its inputs and execution properties. Two
of the pipeline's inputs are named by a *path* whose content can change
under it: the model code TFX loads by module path, and the curated schema
ImportSchemaGen imports. Here each gets a fingerprint of its content, so an
edit is a cache miss, and ML Metadata records which version made an
artifact.
"""

import hashlib
import os
import posixpath
from typing import Tuple

from lineage import readers
from models import problem as problems
from pipeline import configs

# The generic model code every problem's Transform, Trainer and Tuner run
# (models/<module>.py), beside the problem's own folder.
TRANSFORM_CODE = ('features', 'problem', 'tasks', 'transform')
TRAINER_CODE = TRANSFORM_CODE + ('model',)
TUNER_CODE = TRAINER_CODE + ('tuning',)


def code_version(problem: str, modules: Tuple[str, ...]) -> str:
  """Fingerprint of the model code a component runs: every .py file of the
  problem's folder (models/<problem>/) and the generic `modules`.

  TFX loads `preprocessing_fn` / `run_fn` by module path, and a module path
  alone would let the cache reuse a Transform or Trainer run made with older
  code. Passing this fingerprint in their custom_config makes a change to the
  code they run a cache miss, and records which code made each artifact in
  ML Metadata.
  """
  folder = os.path.join(problems.MODELS_DIR, problem)
  files = [os.path.join(problems.MODELS_DIR, m + '.py') for m in modules]
  files += [os.path.join(folder, name) for name in os.listdir(folder)
            if name.endswith('.py')]
  digest = hashlib.sha256()
  for path in sorted(files):
    with open(path, 'rb') as f:
      name = os.path.relpath(path, problems.MODELS_DIR)
      digest.update(name.encode() + b'\0' + f.read())
  return digest.hexdigest()[:16]


def schema_snapshot(cfg: configs.PipelineConfig) -> str:
  """Content-addressed copy of the curated schema under the pipeline root.

  ImportSchemaGen's cache key is the schema *path*, not its content, so an
  edited schema.pbtxt would silently reuse the old Schema artifact. Importing
  `<pipeline_root>/schema/<sha256>/schema.pbtxt` instead makes every schema
  edit a cache miss and records the exact schema version in ML Metadata.
  """
  with open(cfg.schema_path, 'rb') as f:
    content = f.read()
  # The same address the Dockerfile computes, and lineage reports per model.
  digest = readers.schema_digest(content)
  path = os.path.join(cfg.pipeline_root, 'schema', digest, 'schema.pbtxt')
  if not os.path.exists(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f'{path}.tmp{os.getpid()}'
    with open(tmp, 'wb') as f:
      f.write(content)
    os.replace(tmp, path)  # atomic: a reader never sees half a schema
  return path


def image_schema_file(cfg: configs.PipelineConfig) -> str:
  """Vertex: the path of the curated schema's copy inside the container image.

  Same content address as schema_snapshot, computed from the local file at
  compile time; the Dockerfile copies schema.pbtxt to the same path at build
  time. An image built from another schema has no file there, so the job
  fails at ImportSchemaGen instead of importing a schema the compiled
  pipeline never saw (and Vertex's cache, keyed on the path, is not fooled).
  """
  with open(cfg.schema_path, 'rb') as f:
    digest = readers.schema_digest(f.read())
  return posixpath.join(configs.IMAGE_SCHEMA_DIR, digest, 'schema.pbtxt')
