"""vertex_runner.py: the real KubeflowV2 compile of create_pipeline, offline.

Vertex AI itself cannot be reached from here (no network, no credentials), so
these tests stop right before PipelineJob.submit(): they compile the pipeline
with TFX's KubeflowV2DagRunner, read the PipelineJob JSON it writes, and load
that JSON into google-cloud-aiplatform's own PipelineJob. Expected tasks and
edges come from the pipeline object itself, plus concrete known ones.
"""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from pipeline import configs
from tests import helpers


IMAGE = 'europe-west4-docker.pkg.dev/test-project/tfx-reference/taxi:abc123'
BLESSED_MODEL_TASK = 'latest_blessed_model_resolver-model-resolver'


@pytest.fixture(scope='module')
def vertex_cfg(tmp_path_factory):
  return configs.VertexConfig(
      project='test-project', region='europe-west4', bucket='test-bucket',
      image=IMAGE, pipeline_spec=str(
          tmp_path_factory.mktemp('vertex') / 'taxi_pipeline.json'))


@pytest.fixture(scope='module')
def cfg(vertex_cfg):
  return vertex_cfg.pipeline_config(span=5, train_steps=321, eval_steps=12)


@pytest.fixture(scope='module')
def job(cfg, vertex_cfg):
  """The compiled PipelineJob JSON, as written to disk."""
  import vertex_runner  # pylint: disable=g-import-not-at-top
  returned = vertex_runner.compile_pipeline(cfg, vertex_cfg)
  with open(vertex_cfg.pipeline_spec) as f:
    written = json.load(f)
  assert written == returned
  return written


@pytest.fixture(scope='module')
def vertex_pipeline(cfg):
  import vertex_runner  # pylint: disable=g-import-not-at-top
  return vertex_runner.vertex_pipeline(cfg)


def _tasks(job):
  return job['pipelineSpec']['root']['dag']['tasks']


def _input_artifact(job, task, key):
  source = _tasks(job)[task]['inputs']['artifacts'][key]['taskOutputArtifact']
  return source['producerTask'], source['outputArtifactKey']


def _executor(job, task):
  label = job['pipelineSpec']['components'][task]['executorLabel']
  return job['pipelineSpec']['deploymentSpec']['executors'][label]


@pytest.mark.integration
def test_every_component_is_a_task(job, vertex_pipeline, tmp_path):
  tasks = set(_tasks(job))
  for component in vertex_pipeline.components:
    if component.id == 'latest_blessed_model_resolver':
      # KubeflowV2 splits it into a blessing query and a model query.
      assert {component.id + '-model-blessing-resolver',
              BLESSED_MODEL_TASK} <= tasks
    else:
      assert component.id in tasks
  # Against the local pipeline: the span window resolver is missing, the
  # baseline comes from TFX's latest-blessed-model resolver instead of the
  # served-model one (the only resolvers KubeflowV2 compiles), and without
  # --tune the hyperparameters are the configured ones, not the latest
  # tuned (pipeline/hyperparameters.py).
  from pipeline import run_pipeline  # pylint: disable=g-import-not-at-top
  local = run_pipeline.local_pipeline(configs.PipelineConfig(
      pipeline_root=str(tmp_path / 'pipeline')))
  local_ids = {c.id for c in local.components}
  vertex_ids = {c.id for c in vertex_pipeline.components}
  assert local_ids - vertex_ids == {'span_window_resolver',
                                    'served_model_resolver',
                                    'latest_tuning_resolver'}
  assert vertex_ids - local_ids == {'latest_blessed_model_resolver'}


@pytest.mark.integration
def test_every_input_channel_is_an_edge(job, vertex_pipeline):
  for component in vertex_pipeline.components:
    if component.id == 'latest_blessed_model_resolver':
      continue
    task = _tasks(job)[component.id]
    assert set(task.get('inputs', {}).get('artifacts', {})) == set(
        component.inputs)
    for key, channel in component.inputs.items():
      producer = channel.producer_component_id
      if producer == 'latest_blessed_model_resolver':
        producer = BLESSED_MODEL_TASK
      assert _input_artifact(job, component.id, key) == (
          producer, channel.output_key), (component.id, key)
      assert producer in task['dependentTasks']


@pytest.mark.integration
def test_known_edges(job):
  assert _input_artifact(job, 'Trainer', 'transform_graph') == (
      'Transform', 'transform_graph')
  assert _input_artifact(job, 'Trainer', 'examples') == (
      'CsvExampleGen', 'examples')
  assert _input_artifact(job, 'Evaluator', 'model') == ('Trainer', 'model')
  assert _input_artifact(job, 'Evaluator', 'baseline_model') == (
      BLESSED_MODEL_TASK, 'model')
  assert _input_artifact(job, 'Pusher', 'model_blessing') == (
      'Evaluator', 'blessing')
  assert _input_artifact(job, 'DataValidationGate', 'anomalies') == (
      'ExampleValidator', 'anomalies')
  # Nothing trains on a span before the gate passed it.
  assert 'DataValidationGate' in _tasks(job)['Transform']['dependentTasks']


@pytest.mark.integration
def test_runtime_parameters_with_defaults(job):
  root = job['pipelineSpec']['root']['inputDefinitions']['parameters']
  assert {name: p['parameterType'] for name, p in root.items()} == {
      'train_args': 'STRING', 'eval_args': 'STRING', 'range_config': 'STRING'}
  defaults = {name: json.loads(value) for name, value in
              job['runtimeConfig']['parameterValues'].items()}
  assert defaults == {
      'train_args': {'num_steps': 321},
      'eval_args': {'num_steps': 12},
      'range_config': {'static_range': {'start_span_number': 5,
                                        'end_span_number': 5}},
  }
  bound = {
      ('Trainer', 'train_args'), ('Trainer', 'eval_args'),
      ('CsvExampleGen', 'range_config')}
  for task, name in bound:
    assert _tasks(job)[task]['inputs']['parameters'][name] == {
        'componentInputParameter': name}


def test_latest_span_by_default(tmp_path):
  from pipeline import pipeline as taxi_pipeline  # pylint: disable=g-import-not-at-top
  knobs = taxi_pipeline.runtime_parameters(configs.PipelineConfig(
      pipeline_root=str(tmp_path)))
  assert knobs.range_config.default == ''  # the driver's "latest span"
  assert json.loads(knobs.train_args.default) == {'num_steps': 1000}


@pytest.mark.integration
def test_image_and_importable_executor_on_every_container(job):
  from tfx.utils import import_utils  # pylint: disable=g-import-not-at-top
  executors = job['pipelineSpec']['deploymentSpec']['executors']
  containers = {label: e['container'] for label, e in executors.items()
                if 'container' in e}
  resolvers = {label for label, e in executors.items() if 'resolver' in e}
  # + InfraValidator and ModelCardGenerator (issue 14)
  assert len(containers) == 11 and len(resolvers) == 2
  for label, container in containers.items():
    assert container['image'] == IMAGE, label
    args = container['args']
    path = args[args.index('--executor_class_path') + 1]
    # What the container's entry point does with it; ours must load too.
    assert import_utils.import_class_by_path(path), label
  assert re.search(r'components\.validation_gate\.',
                   json.dumps(_executor(job, 'DataValidationGate')))
  assert 'components.pusher.Executor' in _executor(job, 'Pusher')['container'][
      'args']


@pytest.mark.integration
def test_paths_on_gcs_and_schema_from_the_image(job):
  assert job['runtimeConfig']['gcsOutputDirectory'] == (
      'gs://test-bucket/taxi/pipeline')
  params = _tasks(job)
  input_base = params['CsvExampleGen']['inputs']['parameters']['input_base']
  assert input_base['runtimeValue']['constant'] == 'gs://test-bucket/data/taxi'
  push = json.loads(params['Pusher']['inputs']['parameters'][
      'push_destination']['runtimeValue']['constant'])
  assert push['filesystem']['base_directory'] == 'gs://test-bucket/serving/taxi'
  with open(helpers.SCHEMA_PATH, 'rb') as f:
    digest = hashlib.sha256(f.read()).hexdigest()[:16]
  schema_file = params['ImportSchemaGen']['inputs']['parameters'][
      'schema_file']['runtimeValue']['constant']
  assert schema_file == (
      f'{configs.IMAGE_SCHEMA_DIR}/{digest}/schema.pbtxt')


@pytest.mark.integration
def test_aiplatform_accepts_the_spec_and_overrides(job, cfg, vertex_cfg):
  """Everything up to the network call: aiplatform's own PipelineJob."""
  from google.auth import credentials  # pylint: disable=g-import-not-at-top
  import vertex_runner  # pylint: disable=g-import-not-at-top
  del job  # compiled to vertex_cfg.pipeline_spec
  submitted = vertex_runner.pipeline_job(
      vertex_cfg.pipeline_spec, vertex_cfg, cfg,
      parameter_values={'train_args': '{"num_steps": 2000}'},
      credentials=credentials.AnonymousCredentials())
  resource = submitted._gca_resource  # pylint: disable=protected-access
  values = dict(resource.runtime_config.parameter_values)  # proto-plus: str
  assert values['train_args'] == '{"num_steps": 2000}'  # overridden
  assert json.loads(values['eval_args']) == {'num_steps': 12}  # default
  assert resource.runtime_config.gcs_output_directory == cfg.pipeline_root
  with pytest.raises(ValueError, match='train_steps'):  # not a parameter
    vertex_runner.pipeline_job(
        vertex_cfg.pipeline_spec, vertex_cfg, cfg,
        parameter_values={'train_steps': '2000'},
        credentials=credentials.AnonymousCredentials())


def test_main_writes_spec_and_prints_submit_command(tmp_path, capsys):
  import vertex_runner  # pylint: disable=g-import-not-at-top
  spec = tmp_path / 'out' / 'taxi_pipeline.json'
  assert vertex_runner.main(['--project', 'p1', '--pipeline-spec', str(spec),
                             '--train-steps', '77']) == 0
  job = json.loads(spec.read_text())
  assert json.loads(job['runtimeConfig']['parameterValues']['train_args']) == {
      'num_steps': 77}
  assert job['runtimeConfig']['gcsOutputDirectory'] == (
      'gs://p1-tfx-reference/taxi/pipeline')
  out = capsys.readouterr().out
  assert '--submit' in out and str(spec) in out
  # No --image: every task runs in the image tagged with the build context's
  # digest, which the summary names.
  image = ('us-central1-docker.pkg.dev/p1/tfx-reference/pipeline:'
           + vertex_runner.image_tag())
  executors = job['pipelineSpec']['deploymentSpec']['executors'].values()
  assert {e['container']['image'] for e in executors
          if 'container' in e} == {image}
  assert f'image              {image}\n' in out
  assert 'latest' not in image and ':latest' not in out


def test_help_and_flags_need_no_tensorflow():
  code = ('import sys, vertex_runner; '
          'vertex_runner._parser().parse_args(["--project", "p"]); '
          'heavy = {"tensorflow", "tfx", "google.cloud.aiplatform"}; '
          'sys.exit(str(sorted(heavy & set(sys.modules))) '
          'if heavy & set(sys.modules) else 0)')
  result = subprocess.run([sys.executable, '-c', code], cwd=helpers.REPO,
                          capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stderr
  result = subprocess.run([sys.executable, 'vertex_runner.py', '--help'],
                          cwd=helpers.REPO, capture_output=True, text=True,
                          check=True)
  for flag in ('--project', '--region', '--bucket', '--image', '--submit',
               '--train-steps', '--span'):
    assert flag in result.stdout
  for flag in ('--window-spans', '--metadata-path'):  # meaningless on Vertex
    assert flag not in result.stdout


def _dockerfile():
  with open(os.path.join(helpers.REPO, 'Dockerfile')) as f:
    text = f.read().replace('\\\n', ' ')  # join continuation lines
  return [line.strip() for line in text.splitlines()
          if line.strip() and not line.lstrip().startswith('#')]


def test_dockerfile_builds_on_the_configured_image():
  lines = _dockerfile()
  assert lines[0] == f'FROM {configs.TFX_BASE_IMAGE}'
  assert f'WORKDIR {configs.IMAGE_PROJECT_DIR}' in lines
  install = next(l for l in lines if 'pip install' in l)
  assert install.rstrip().endswith('--no-deps .')  # this project, installed
  with open(os.path.join(helpers.REPO, '.dockerignore')) as f:
    ignored = set(f.read().split())
  assert {'outputs', '.venv', '.git'} <= ignored


@pytest.mark.integration
def test_dockerfile_schema_copy_is_where_the_spec_looks(job, tmp_path):
  """Runs the Dockerfile's schema step on a copy of the project dir."""
  step = next(l for l in _dockerfile() if 'sha256sum' in l)
  (tmp_path / 'schema' / 'taxi').mkdir(parents=True)
  with open(helpers.SCHEMA_PATH, 'rb') as f:
    (tmp_path / 'schema' / 'taxi' / 'schema.pbtxt').write_bytes(f.read())
  subprocess.run(['bash', '-euc', step[len('RUN '):]], cwd=tmp_path,
                 check=True)
  schema_file = _tasks(job)['ImportSchemaGen']['inputs']['parameters'][
      'schema_file']['runtimeValue']['constant']
  relative = os.path.relpath(schema_file, configs.IMAGE_PROJECT_DIR)
  assert (tmp_path / relative).is_file()


def test_dockerfile_version_check_passes_on_the_lock():
  """The build's sanity check, run against this venv (same versions)."""
  step = next(l for l in _dockerfile() if 'python -c' in l)
  code = re.search(r'python -c "(.*)"$', step).group(1)
  subprocess.run([sys.executable, '-c', code], cwd=helpers.REPO, check=True,
                 capture_output=True)


# --- The image's default tag: the files the Dockerfile copies ---------------


def _write(path, text='x\n'):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w') as f:
    f.write(text)


@pytest.fixture
def context(tmp_path):
  """A build context: the real Dockerfile and .dockerignore, and a file of
  each kind they copy or leave out."""
  root = tmp_path / 'context'
  for name in ('Dockerfile', '.dockerignore'):
    root.mkdir(exist_ok=True)
    shutil.copy(os.path.join(helpers.REPO, name), root / name)
  for relative in COPIED + IGNORED:
    _write(str(root / relative))
  return root


COPIED = ['models/model.py', 'components/pusher.py', 'data/spans.py',
          'schema/taxi/schema.pbtxt', 'setup.py', 'requirements.lock']
IGNORED = ['data/taxi/span-1/data.csv', 'tests/test_x.py', 'docs/x.md',
           'ui/pages.py',
           'outputs/pipeline/metadata.sqlite', '.git/HEAD',
           'pipeline/__pycache__/pusher.cpython-310.pyc',
           'tfx_reference.egg-info/PKG-INFO', '.venv/bin/python']


@pytest.mark.integration
def test_the_tag_changes_with_a_copied_file_only(context):
  import vertex_runner  # pylint: disable=g-import-not-at-top
  tag = vertex_runner.image_tag(str(context))
  assert re.fullmatch(r'src-[0-9a-f]{16}', tag)
  # .dockerignore names itself (COPY then leaves it out, as Docker does).
  assert sorted(vertex_runner.context_files(str(context))) == sorted(
      COPIED + ['Dockerfile'])
  for relative in IGNORED:  # changed, added or removed: the same image
    _write(str(context / relative), 'changed\n')
    _write(str(context / (relative + '.new')))
  os.remove(context / 'docs' / 'x.md')
  assert vertex_runner.image_tag(str(context)) == tag
  for relative in COPIED + ['Dockerfile']:
    path = context / relative
    before = path.read_bytes()
    path.write_bytes(before + b'# changed\n')
    assert vertex_runner.image_tag(str(context)) != tag, relative
    path.write_bytes(before)
    assert vertex_runner.image_tag(str(context)) == tag, relative
  os.chmod(context / 'setup.py', 0o755)  # COPY keeps the mode
  assert vertex_runner.image_tag(str(context)) != tag
  os.chmod(context / 'setup.py', 0o644)
  _write(str(context / 'models' / 'new.py'))  # a new module is copied too
  assert vertex_runner.image_tag(str(context)) != tag


def test_dockerignore_rules_as_docker_reads_them(tmp_path):
  import vertex_runner  # pylint: disable=g-import-not-at-top
  _write(str(tmp_path / '.dockerignore'),
         '# comment\ntests\n!tests/keep.py\n*.egg-info\n**/__pycache__\n'
         '/outputs\ndata/*.csv\n')
  for relative in ('tests/a.py', 'tests/keep.py', 'x.egg-info/PKG-INFO',
                   'pkg/y.egg-info/PKG-INFO', 'a/b/__pycache__/c.pyc',
                   'outputs/o', 'data/s.csv', 'data/span-1/s.csv'):
    _write(str(tmp_path / relative))
  # `*` stays within a path element (not .gitignore's rules); the last
  # matching pattern wins; a pattern matching a directory covers its files.
  assert sorted(vertex_runner.context_files(str(tmp_path))) == [
      '.dockerignore', 'data/span-1/s.csv', 'pkg/y.egg-info/PKG-INFO',
      'tests/keep.py']


def test_the_repositorys_context_has_what_the_dockerfile_uses():
  import vertex_runner  # pylint: disable=g-import-not-at-top
  files = set(vertex_runner.context_files(helpers.REPO))
  # The Dockerfile's RUN steps read these; the tasks import the packages.
  assert {'Dockerfile', 'requirements.lock', 'setup.py', 'schema/taxi/schema.pbtxt',
          'models/model.py', 'pipeline/pipeline.py', 'data/spans.py'} <= files
  assert not [f for f in files if f.startswith(
      ('.git/', '.venv', 'outputs/', 'tests/', 'data/taxi/'))
              or '__pycache__' in f]


@pytest.mark.integration
def test_an_image_flag_wins_and_the_default_is_never_latest(context):
  import vertex_runner  # pylint: disable=g-import-not-at-top
  given = configs.VertexConfig(project='p', region='europe-west4',
                               image='registry/taxi:v7')
  assert vertex_runner.with_image(given, str(context)).image == (
      'registry/taxi:v7')
  derived = vertex_runner.with_image(
      configs.VertexConfig(project='p', region='europe-west4'), str(context))
  assert derived.image == ('europe-west4-docker.pkg.dev/p/tfx-reference/'
                           'pipeline:' + vertex_runner.image_tag(
                               str(context)))
  assert configs.VertexConfig(project='p').image is None  # never `latest`
