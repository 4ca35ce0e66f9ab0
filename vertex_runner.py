"""Compile a problem's TFX pipeline for Vertex AI Pipelines; --submit starts it.

KubeflowV2DagRunner compiles the same create_pipeline that local_runner.py
runs, with Vertex's choices (`vertex_pipeline`), into a Vertex AI PipelineJob
JSON (--pipeline-spec, default outputs/<problem>/vertex/pipeline.json). Every task
runs in --image, built from ./Dockerfile (by default tagged src-DIGEST, a
digest of the files the Dockerfile copies: `image_tag`, printed with the
docker commands that build it); artifacts, data and pushed models live in
--bucket (gs://BUCKET/<problem>/pipeline, gs://BUCKET/data/<problem>,
gs://BUCKET/serving)
unless --pipeline-root, --data-root or --serving-dir say otherwise. Span,
train and eval steps are runtime parameters of the job (range_config,
train_args, eval_args): the flags set their defaults, and each run may
override them.

Compiling needs no network and no credentials. --submit calls
google-cloud-aiplatform's PipelineJob.submit(), which needs both (e.g.
`gcloud auth application-default login`), an existing bucket holding the
data, and the image pushed to a registry the project can pull from. What
differs from a local run (training window, ML Metadata, schema): README,
"Vertex AI Pipelines".
"""

import argparse
import dataclasses
import hashlib
import os
import re
import shlex
import stat
import sys
from typing import Any, Dict, Iterator, List, Optional, Pattern, Tuple

from pipeline import configs
from ops import console
from project import cli
from project import paths

PIPELINE_FIELDS = [f.name for f in dataclasses.fields(configs.PipelineConfig)
                   if f.name not in configs.NOT_ON_VERTEX]

# --- The image's default tag -------------------------------------------------
# Vertex's cache keys on the image name, not its digest: a reused tag such as
# `latest` can serve the cached results of older code. The default tag is
# derived from what the image is built from, the files the Dockerfile's
# `COPY . .` takes from the build context (all but .dockerignore's): the
# same files give the same tag (cache hits stay), a changed file a new one.
# It needs no git: an uncommitted change counts, as it does in `docker build`.
# One image for every problem: it holds the whole project.
IMAGE_REPOSITORY = '{region}-docker.pkg.dev/{project}/tfx-reference/pipeline'
IMAGE_TAG_PREFIX = 'src-'
IMAGE_TAG_HEX_DIGITS = 16


def _ignore_pattern(pattern: str) -> Pattern[str]:
  """A .dockerignore pattern as a regex over a slash-separated relative path
  (Docker's rules: `*` and `?` stay within a path element, `**` spans any
  number of them)."""
  out, i = '', 0
  while i < len(pattern):
    if pattern.startswith('**/', i):
      out, i = out + '(?:.*/)?', i + 3
    elif pattern.startswith('**', i):
      out, i = out + '.*', i + 2
    elif pattern[i] == '*':
      out, i = out + '[^/]*', i + 1
    elif pattern[i] == '?':
      out, i = out + '[^/]', i + 1
    elif pattern[i] == '[' and ']' in pattern[i + 1:]:
      end = pattern.index(']', i + 1)
      body = pattern[i + 1:end]
      out += '[' + ('^' + body[1:] if body.startswith('!') else body) + ']'
      i = end + 1
    else:
      out, i = out + re.escape(pattern[i]), i + 1
  return re.compile(out + r'\Z')


def dockerignore(context: str) -> List[Tuple[bool, Pattern[str]]]:
  """(is an exception `!...`, pattern) of the context's .dockerignore."""
  path = os.path.join(context, '.dockerignore')
  if not os.path.exists(path):
    return []
  rules = []
  with open(path) as f:
    for line in f:
      line = line.strip()
      if not line or line.startswith('#'):
        continue
      exception = line.startswith('!')
      pattern = os.path.normpath(line.lstrip('!').strip()).lstrip('/')
      rules.append((exception, _ignore_pattern(pattern)))
  return rules


def _ignored(relative: str, rules: List[Tuple[bool, Pattern[str]]]) -> bool:
  """Docker's rule: the last pattern matching the path or a parent wins."""
  parts = relative.split('/')
  prefixes = ['/'.join(parts[:n]) for n in range(1, len(parts) + 1)]
  ignored = False
  for exception, pattern in rules:
    if any(pattern.match(p) for p in prefixes):
      ignored = not exception
  return ignored


def context_files(context: str) -> Iterator[str]:
  """Relative paths of the files `COPY . .` copies from `context`."""
  rules = dockerignore(context)
  may_reinclude = any(exception for exception, _ in rules)
  for root, dirs, files in os.walk(context):
    relative_root = os.path.relpath(root, context)
    relative = lambda name, r=relative_root: (
        name if r == '.' else f'{r}/{name}').replace(os.sep, '/')
    if not may_reinclude:  # an ignored directory holds nothing copied
      dirs[:] = [d for d in dirs if not _ignored(relative(d), rules)]
    # A symbolic link to a directory is copied as the link (not walked).
    links = [d for d in dirs if os.path.islink(os.path.join(root, d))]
    for name in files + links:
      if not _ignored(relative(name), rules):
        yield relative(name)


def image_tag(context: str = paths.REPO_ROOT) -> str:
  """src-<sha256 of every copied file's path, executable bit and content>."""
  digest = hashlib.sha256()
  for relative in sorted(context_files(context)):
    path = os.path.join(context, relative)
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
      content = os.readlink(path).encode()
    else:
      with open(path, 'rb') as f:
        content = f.read()
    executable = 'x' if info.st_mode & 0o111 else '-'
    digest.update(f'{relative}\0{executable}\0{len(content)}\0'.encode())
    digest.update(content)
  return IMAGE_TAG_PREFIX + digest.hexdigest()[:IMAGE_TAG_HEX_DIGITS]


def with_image(vertex_cfg: configs.VertexConfig,
               context: str = paths.REPO_ROOT) -> configs.VertexConfig:
  """vertex_cfg, with the default image unless --image named one."""
  if vertex_cfg.image:
    return vertex_cfg
  repository = IMAGE_REPOSITORY.format(region=vertex_cfg.region,
                                       project=vertex_cfg.project)
  return dataclasses.replace(vertex_cfg,
                             image=f'{repository}:{image_tag(context)}')


def _parser() -> argparse.ArgumentParser:
  parser = cli.ArgumentParser(
      description=__doc__.split('\n\n')[0],
      epilog=__doc__.split('\n\n', 1)[1],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  vertex = parser.add_argument_group('Vertex AI')
  defaults = configs.VertexConfig()
  for field in dataclasses.fields(configs.VertexConfig):
    vertex.add_argument(
        '--' + field.name.replace('_', '-'), dest=field.name, default=None,
        metavar=field.name.upper(),
        help=f'{field.metadata["help"]}'
        + (f' (default: {getattr(defaults, field.name)})'
           if getattr(defaults, field.name) else ''))
  vertex.add_argument(
      '--submit', action='store_true',
      help='after compiling, submit the job (needs network and credentials)')
  configs.add_flags(parser, fields=PIPELINE_FIELDS)
  return parser


def pipeline_job(spec_path: str, vertex_cfg: configs.VertexConfig,
                 cfg: configs.PipelineConfig,
                 parameter_values: Optional[Dict[str, Any]] = None,
                 credentials: Any = None) -> Any:
  """The aiplatform.PipelineJob for a compiled spec, ready to submit().

  Building it loads and checks the spec with Vertex's own client library
  (runtime parameters, pipeline root) without a network call.
  """
  from google.cloud import aiplatform  # pylint: disable=g-import-not-at-top
  return aiplatform.PipelineJob(
      display_name=cfg.pipeline_name,
      template_path=spec_path,
      pipeline_root=cfg.pipeline_root,
      parameter_values=parameter_values,
      enable_caching=cfg.enable_cache,
      project=vertex_cfg.project,
      location=vertex_cfg.region,
      credentials=credentials)


def vertex_pipeline(cfg: configs.PipelineConfig) -> Any:
  """The full pipeline as Vertex AI Pipelines runs it.

  What Vertex chooses (pipeline/pipeline.py lists the choices): a task runs
  in the image, reaches no ML Metadata, and KubeflowV2 compiles no custom
  resolver. So the schema is its copy inside the image, the span and step
  knobs are runtime parameters of the compiled job, the training window is
  the span the run ingested and validated (no window resolver), and the
  baseline is TFX's latest blessed model.
  """
  from pipeline import cache_keys  # pylint: disable=g-import-not-at-top
  from pipeline import pipeline as pipeline_lib  # pylint: disable=g-import-not-at-top
  return pipeline_lib.create_pipeline(
      cfg,
      schema_file=cache_keys.image_schema_file(cfg),
      knobs=pipeline_lib.runtime_parameters(cfg),
      window_spans=None,
      baseline_model=pipeline_lib.LATEST_BLESSED_MODEL,
      tuned_hparams=False)


def compile_pipeline(cfg: configs.PipelineConfig,
                     vertex_cfg: configs.VertexConfig) -> Dict[str, Any]:
  """Writes the PipelineJob JSON to vertex_cfg.pipeline_spec; returns it."""
  from tfx.orchestration.kubeflow.v2 import kubeflow_v2_dag_runner  # pylint: disable=g-import-not-at-top
  runner = kubeflow_v2_dag_runner.KubeflowV2DagRunner(
      config=kubeflow_v2_dag_runner.KubeflowV2DagRunnerConfig(
          # Never TFX's stock image, which has none of this project.
          default_image=with_image(vertex_cfg).image,
          # PipelineSpec schema 2.1: what Vertex and its template gallery use.
          use_pipeline_spec_2_1=True),
      output_dir=os.path.dirname(os.path.abspath(vertex_cfg.pipeline_spec)),
      output_filename=os.path.basename(vertex_cfg.pipeline_spec))
  pipeline = vertex_pipeline(cfg)
  # KubeflowV2 leaves RuntimeParameter defaults out of the PipelineSpec; they
  # reach the job as its runtimeConfig.parameterValues, which aiplatform's
  # PipelineJob(parameter_values=...) overrides per run.
  return runner.run(pipeline, parameter_values=runtime_defaults(pipeline))


def runtime_defaults(pipeline: Any) -> Dict[str, Any]:
  """{name: default} of every RuntimeParameter in the pipeline's components."""
  from tfx.orchestration import data_types  # pylint: disable=g-import-not-at-top
  return {value.name: value.default
          for component in pipeline.components
          for value in component.exec_properties.values()
          if isinstance(value, data_types.RuntimeParameter)}


def _summary(job: Dict[str, Any], cfg: configs.PipelineConfig,
             vertex_cfg: configs.VertexConfig, argv: List[str],
             derived_tag: bool) -> str:
  spec = job['pipelineSpec']
  parameters = job['runtimeConfig'].get('parameterValues', {})
  image = shlex.quote(vertex_cfg.image)
  lines = [
      f'Compiled pipeline {cfg.pipeline_name!r} for Vertex AI Pipelines'
      f' -> {console.display_path(vertex_cfg.pipeline_spec)}',
      f'  tasks              {", ".join(sorted(spec["root"]["dag"]["tasks"]))}',
      f'  image              {vertex_cfg.image}',
      ('                     (tag: digest of the files the Dockerfile copies;'
       ' --image to name another)' if derived_tag else
       '                     (from --image)'),
      f'                     build it: docker build -t {image} . && '
      f'docker push {image}',
      f'  pipeline root      {cfg.pipeline_root}',
      f'  data               {cfg.data_root}',
      f'  pushes to          {cfg.serving_model_dir}',
      '  runtime parameters ' + '\n                     '.join(
          f'{name} = {value!r}' for name, value in sorted(parameters.items())),
      '',
      'Submit it (needs network access and Google Cloud credentials):',
      '  ' + ' '.join(shlex.quote(a) for a in
                      [sys.executable, 'vertex_runner.py', *argv, '--submit']),
      'or override runtime parameters per run from Python:',
      '  aiplatform.PipelineJob(display_name=..., template_path='
      f'{vertex_cfg.pipeline_spec!r}, parameter_values='
      '{"train_args": \'{"num_steps": 2000}\'}).submit()',
  ]
  return '\n'.join(lines)


def main(argv: Optional[List[str]] = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  parser = _parser()
  args = parser.parse_args(argv)
  vertex_cfg = configs.VertexConfig(**{
      f.name: getattr(args, f.name)
      for f in dataclasses.fields(configs.VertexConfig)
      if getattr(args, f.name) is not None})
  if not vertex_cfg.project:
    parser.error('--project is required (the Google Cloud project id)')
  derived_tag = not vertex_cfg.image
  vertex_cfg = with_image(vertex_cfg)
  cfg = vertex_cfg.pipeline_config(**{
      name: getattr(args, name) for name in PIPELINE_FIELDS
      if getattr(args, name) is not None})
  vertex_cfg = dataclasses.replace(
      vertex_cfg, pipeline_spec=vertex_cfg.spec_path(cfg.problem))

  # Heavy imports (TensorFlow, TFX) only after --help had its chance.
  print(console.LOADING, flush=True)
  console.quiet_imports()
  job = compile_pipeline(cfg, vertex_cfg)
  print(_summary(job, cfg, vertex_cfg,
                 [a for a in argv if a != '--submit'], derived_tag), flush=True)
  if args.submit:
    from google.auth import exceptions  # pylint: disable=g-import-not-at-top
    try:
      submitted = pipeline_job(vertex_cfg.pipeline_spec, vertex_cfg, cfg)
      submitted.submit(service_account=vertex_cfg.service_account)
    except exceptions.DefaultCredentialsError as e:
      print(f'Not submitted: no Google Cloud credentials ({e}); run '
            '`gcloud auth application-default login` or set '
            'GOOGLE_APPLICATION_CREDENTIALS.', file=sys.stderr)
      return 1
    print(f'Submitted: {submitted.resource_name}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
