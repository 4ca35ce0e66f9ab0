"""The production manifests agree with the code (Docker/Kubernetes can't run here)."""

import os

import yaml

from pipeline import configs
from project import paths
from serving import __main__ as server_main
from serving import model_config
from tests import helpers

DEPLOY = os.path.join(helpers.REPO, 'serving', 'deploy')


def _flags(args):
  return dict(a.lstrip('-').split('=', 1) for a in args)


def _pipeline_model_name() -> str:
  """The model the pipeline pushes when no flag names another: the default
  problem's (taxi's). The manifests here are that problem's deployment."""
  name = configs.PipelineConfig().model_name
  assert name == paths.DEFAULT_PROBLEM
  return name


def test_model_config_parses_and_names_the_pipeline_model():
  (config,) = model_config.load(os.path.join(DEPLOY, 'models.config'))
  model_name = _pipeline_model_name()
  assert config.name == model_name
  assert config.base_path == f'/models/{model_name}'
  assert (config.policy, config.num_versions) == ('latest', 1)


def test_compose_runs_tf_serving_on_the_pushed_base_path():
  with open(os.path.join(DEPLOY, 'docker-compose.yml')) as f:
    service = yaml.safe_load(f)['services']['tf-serving']
  assert service['image'].startswith('tensorflow/serving:')
  flags = _flags(service['command'])
  assert int(flags['port']) == server_main.DEFAULT_GRPC_PORT
  assert int(flags['rest_api_port']) == server_main.DEFAULT_REST_PORT
  assert flags['model_config_file'] == '/config/models.config'
  volumes = dict(v.rsplit(':', 1)[0].split(':') for v in service['volumes'])
  # ../../outputs/serving (relative to serving/deploy) is the pipeline's serving dir
  assert os.path.normpath(os.path.join(DEPLOY, '../../outputs/serving')) == \
      configs.PipelineConfig().serving_dir
  assert volumes['../../outputs/serving'] == '/models'
  assert volumes['./models.config'] == '/config/models.config'
  assert service['ports'] == ['127.0.0.1:8500:8500', '127.0.0.1:8501:8501']


def test_kubernetes_manifests_agree_with_the_config_and_ports():
  with open(os.path.join(DEPLOY, 'kubernetes.yaml')) as f:
    docs = {d['kind']: d for d in yaml.safe_load_all(f)}
  with open(os.path.join(DEPLOY, 'models.config')) as f:
    local_config = model_config.parse(f.read())
  assert model_config.parse(docs['ConfigMap']['data']['models.config']) == \
      local_config
  container = docs['Deployment']['spec']['template']['spec']['containers'][0]
  flags = _flags(container['args'])
  ports = {p['name']: p['containerPort'] for p in container['ports']}
  assert ports == {'grpc': int(flags['port']), 'http': int(flags['rest_api_port'])}
  assert ports == {'grpc': server_main.DEFAULT_GRPC_PORT,
                   'http': server_main.DEFAULT_REST_PORT}
  assert container['readinessProbe']['httpGet']['path'] == \
      f'/v1/models/{_pipeline_model_name()}'
  service_ports = {p['name']: p['port'] for p in docs['Service']['spec']['ports']}
  assert service_ports == ports
