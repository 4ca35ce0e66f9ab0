"""A command's console holds what its user needs: no library noise.

project/display.py quiet_imports is the rule (TF's C++ banners, gRPC core's
notices, library warnings a user cannot act on); every command a user runs
(Makefile, README) is started here as a user starts it, in a fresh process
whose environment has none of the variables this test process sets
(TF_USE_LEGACY_KERAS, TF_CPP_MIN_LOG_LEVEL from tests/helpers.py), and what
it prints is read for the known noise. `display.figure` is how a summary
prints its numbers.
"""

import math
import os
import re
import subprocess
import sys
import time
import warnings

import pytest

from project import display
from tests import helpers

# What the libraries print on import or first use, as users reported it.
NOISE = [
    'FutureWarning', 'DeprecationWarning', 'UserWarning', 'RuntimeWarning',
    'non-supported Python version',  # google-api-core on Python 3.10
    'oneDNN custom operations', 'cpu_feature_guard', 'Could not find cuda',
    'Unable to register cuDNN factory', 'Unable to register cuFFT factory',
    'Unable to register cuBLAS factory', 'TF-TRT Warning',
    'computation placer', 'absl::InitializeLog()', 'fork_posix',
    'No module named', 'Traceback',
]
# C++ log lines: TF's `2026-12-02 13:03:59.044508: I external/...` and
# absl's / gRPC core's `I1202 13:19:08.764200 1155 fork_posix.cc:71]`.
CPP_LOG_LINE = re.compile(r'^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] |'
                          r'[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ )', re.M)
# What this process's environment has and a user's shell does not.
NOT_A_USERS = ('TF_USE_LEGACY_KERAS', 'PYTHONWARNINGS',
               *display.QUIET_ENVIRONMENT)


def _noise(output: str):
  return ([n for n in NOISE if n in output] +
          [m.group(0) for m in CPP_LOG_LINE.finditer(output)])


def test_noise_is_recognised():
  """The check can fail: what an unquieted `import tensorflow` printed."""
  printed = (
      '2026-12-02 13:03:59.129575: E external/local_xla/xla/stream_executor/'
      'cuda/cuda_fft.cc:479] Unable to register cuFFT factory: Attempting to '
      'register factory for plugin cuFFT when one has already been '
      'registered\n.../google/api_core/_python_version_support.py:246: '
      'FutureWarning: You are using a non-supported Python version (3.10.13)'
      '\nI1202 13:19:08.764200    1155 fork_posix.cc:71] Other threads are '
      'currently calling into gRPC, skipping fork() handlers\n')
  assert set(_noise(printed)) >= {'FutureWarning', 'fork_posix',
                                  'Unable to register cuFFT factory'}
  assert len(CPP_LOG_LINE.findall(printed)) == 2
  assert _noise('Summary (109.0 s wall time)\n  span ingested      16\n') == []


# --- The rule ----------------------------------------------------------------


def test_library_warnings_are_hidden_and_the_projects_are_not(monkeypatch):
  for name in display.QUIET_ENVIRONMENT:
    monkeypatch.delenv(name, raising=False)
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    display.quiet_imports()
    for category, module in (
        (FutureWarning, 'google.api_core._python_version_support'),
        (FutureWarning, 'pyarrow.filesystem'),
        (UserWarning, 'tensorflow.python.trackable.autotrackable'),
        (DeprecationWarning, 'tensorflow_model_analysis.metrics.metric_util'),
        # The project's own, and another library's user warning: shown.
        (FutureWarning, 'pipeline.configs'),
        (DeprecationWarning, 'models.model'),
        (UserWarning, 'apache_beam.io.filesystem')):
      warnings.warn_explicit(f'{category.__name__} of {module}', category,
                             module.replace('.', '/') + '.py', 1,
                             module=module)
  assert [str(w.message) for w in caught] == [
      'FutureWarning of pipeline.configs',
      'DeprecationWarning of models.model',
      'UserWarning of apache_beam.io.filesystem']
  assert os.environ['TF_CPP_MIN_LOG_LEVEL'] == '3'
  assert os.environ['GRPC_VERBOSITY'] == 'ERROR'


def test_a_log_level_the_user_set_wins(monkeypatch):
  monkeypatch.setenv('TF_CPP_MIN_LOG_LEVEL', '0')  # to see TF's banners again
  with warnings.catch_warnings():
    display.quiet_imports()
  assert os.environ['TF_CPP_MIN_LOG_LEVEL'] == '0'


def test_a_runs_warnings_go_to_its_log_not_the_console(tmp_path):
  log = tmp_path / 'logs' / 'run.log'
  code = ('import warnings\n'
          'from ops import console\n'
          f'console.quiet_logging({str(log)!r})\n'
          "warnings.warn('the pipeline warns', UserWarning)\n")
  result = subprocess.run([sys.executable, '-c', code], cwd=helpers.REPO,
                          env=_users_environment(), capture_output=True,
                          text=True, timeout=120, check=True)
  assert result.stdout + result.stderr == ''
  assert 'UserWarning: the pipeline warns' in log.read_text()


# --- How a summary prints a number -------------------------------------------


@pytest.mark.parametrize('value, shown', [
    (33180.0, '33180'),  # an example count, not 3.318e+04
    (147.0, '147'),
    (5029, '5029'),
    (0.8407960199004975, '0.8408'),  # a metric: 4 significant digits
    (1.0016, '1.002'),
    (0.5, '0.5'),
    (1.0, '1'),
    (12345.678, '12346'),  # never an exponent
    (float('nan'), 'nan'),
])
def test_figure(value, shown):
  assert display.figure(value) == shown
  assert 'e+' not in display.figure(value)


def test_figure_leaves_what_is_not_a_number():
  assert display.figure(True) == 'True'
  assert display.figure(None) == 'None'
  assert display.figure('-') == '-'
  assert math.isinf(float(display.figure(float('inf'))))


# --- Every command a user runs -----------------------------------------------


def _users_environment():
  return {k: v for k, v in os.environ.items() if k not in NOT_A_USERS}


def _commands(tmp):
  """name -> (argv after the interpreter, what its output must contain)."""
  empty = os.path.join(tmp, 'empty')
  os.makedirs(os.path.join(empty, 'taxi'))
  store = os.path.join(tmp, 'none.sqlite')
  help_of = {
      'local_runner': ['local_runner.py'],
      'beam_runner': ['beam_runner.py'],
      'score_runner': ['score_runner.py'],
      'vertex_runner': ['vertex_runner.py'],
      'lineage': ['-m', 'lineage'],
      'delivery.versions': ['-m', 'delivery.versions'],
      'monitoring': ['-m', 'monitoring'],
      'serving': ['-m', 'serving'],
      'continuous_training.controller': ['-m',
                                         'continuous_training.controller'],
      'continuous_training.replay': ['-m', 'continuous_training.replay'],
      'cluster': ['-m', 'cluster'],
  }
  commands = {f'{name} --help': (argv + ['--help'], 'usage:')
              for name, argv in help_of.items()}
  commands.update({
      # TensorFlow and TFX loaded, the run's log set up, then a usage stop.
      'local_runner.py --span 999': (
          ['local_runner.py', '--span', '999', '--pipeline-root',
           os.path.join(tmp, 'root')], 'Span 999 not found'),
      # The real KubeflowV2 compile (TF, TFX, kfp, Google's libraries).
      'vertex_runner.py --project p': (
          ['vertex_runner.py', '--project', 'p', '--pipeline-spec',
           os.path.join(tmp, 'vertex', 'taxi_pipeline.json')],
          'Compiled pipeline'),
      'python -m monitoring': (
          ['-m', 'monitoring', '--logs', os.path.join(empty, 'logs'),
           '--report', os.path.join(tmp, 'report.json'), '--metadata-path',
           store], 'no logged predictions'),
      'python -m lineage run': (['-m', 'lineage', 'run', '--metadata-path',
                                 store], 'No ML Metadata store'),
      'python -m delivery.versions list': (
          ['-m', 'delivery.versions', 'list', '--model_base_path',
           os.path.join(empty, 'taxi'), '--metadata_path', store],
          'No versions under'),
      'python -m cluster status': (
          ['-m', 'cluster', '--state-dir', os.path.join(tmp, 'flink'),
           'status'], 'no cluster started'),
  })
  return commands


def _start(argv, out_path) -> subprocess.Popen:
  with open(out_path, 'w') as out:
    return subprocess.Popen([sys.executable] + argv, cwd=helpers.REPO,
                            env=_users_environment(), stdout=out,
                            stderr=subprocess.STDOUT)


@pytest.mark.integration
def test_every_command_prints_no_library_noise(tmp_path):
  """All at once (each loading TensorFlow takes ~10 s of a core)."""
  commands = _commands(str(tmp_path))
  out_dir = tmp_path / 'out'
  out_dir.mkdir()
  processes = {name: (_start(argv, out_dir / f'{i}.txt'), out_dir / f'{i}.txt')
               for i, (name, (argv, _)) in enumerate(commands.items())}
  # The model server, until it says where it listens.
  served = out_dir / 'serving.txt'
  server = _start(['-m', 'serving', '--model_name', 'taxi', '--model_base_path',
                   str(tmp_path / 'empty' / 'taxi'), '--port', '0',
                   '--rest_api_port', '0'], served)
  try:
    deadline = time.time() + 300
    while 'REST_API_PORT=' not in served.read_text():
      assert server.poll() is None and time.time() < deadline, (
          served.read_text())
      time.sleep(0.5)
  finally:
    server.terminate()
    server.wait(timeout=60)
  outputs = {'python -m serving': (served.read_text(), 'REST API at')}
  for name, (process, path) in processes.items():
    process.wait(timeout=600)
    outputs[name] = (path.read_text(), commands[name][1])

  noisy = {name: _noise(text) for name, (text, _) in outputs.items()
           if _noise(text)}
  assert noisy == {}, '\n\n'.join(f'{name}:\n{outputs[name][0]}'
                                  for name in noisy)
  missing = [name for name, (text, expected) in outputs.items()
             if expected not in text]
  assert missing == [], '\n\n'.join(f'{name}:\n{outputs[name][0]}'
                                    for name in missing)
  vertex = outputs['vertex_runner.py --project p'][0]
  assert re.search(r'image\s+\S+/pipeline:src-[0-9a-f]{16}\n', vertex)
  assert ':latest' not in vertex
