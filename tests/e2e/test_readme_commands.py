"""The README path, as a newcomer runs it: `make run` on the bundled data.

Runs the real Makefile target in a subprocess (fewer training steps, outputs
in a temporary directory) and checks what the README promises: a pushed,
loadable model version, the summary, and where things were written.
"""

import os
import re
import subprocess
import sys

import pytest

from tests import helpers



def _readme():
  with open(os.path.join(helpers.REPO, 'README.md')) as f:
    return f.read()


def test_readme_names_the_two_commands():
  readme = _readme()
  assert 'make run' in readme and 'make test' in readme
  with open(os.path.join(helpers.REPO, '.ci', 'run')) as f:
    assert 'make test' in f.read()


def test_local_runner_help_is_fast_and_complete():
  out = subprocess.run([sys.executable, 'local_runner.py', '--help'],
                       cwd=helpers.REPO, capture_output=True, text=True,
                       timeout=60, check=True).stdout
  for flag in ('--data-root', '--pipeline-root', '--serving-dir',
               '--train-steps', '--eval-steps', '--metadata-path',
               '[-- beam flags]', 'python -m cluster flags'):
    assert flag in out


def test_local_runner_refuses_an_unknown_flag_before_the_beam_flags():
  # Beam's flags go after `--`; one before it is a typo, not Beam's.
  result = subprocess.run(
      [sys.executable, 'local_runner.py', '--runner=PortableRunner', '--',
       '--runner=PortableRunner'], cwd=helpers.REPO, capture_output=True,
      text=True, timeout=60)
  assert result.returncode == 2
  assert 'unrecognized arguments: --runner=PortableRunner (see --help)' in (
      result.stderr)


@pytest.mark.e2e
def test_make_run_pushes_a_model_and_prints_the_summary(tmp_path):
  args = (f'--pipeline-root {tmp_path}/pipeline --serving-dir {tmp_path}/serving'
          ' --train-steps 200 --eval-steps 20')
  result = subprocess.run(['make', '--no-print-directory', 'run', f'ARGS={args}'],
                          cwd=helpers.REPO, capture_output=True, text=True,
                          timeout=1200)
  out = result.stdout
  assert result.returncode == 0, out + result.stderr[-3000:]
  assert 'Ingesting 15 earlier span(s)' in out
  for component in ('CsvExampleGen', 'StatisticsGen', 'ExampleValidator',
                    'Transform', 'Trainer', 'InfraValidator', 'Evaluator',
                    'ModelCardGenerator', 'Pusher'):
    assert re.search(rf'^\s+{component}\s+ran\s', out, re.M), component
  match = re.search(r'pushed\s+version (\d+) -> (\S+)', out)
  assert match, out
  version_dir = os.path.join(tmp_path, 'serving', 'taxi', match.group(1))
  assert os.path.isfile(os.path.join(version_dir, 'saved_model.pb'))
  assert os.path.isfile(os.path.join(tmp_path, 'pipeline', 'metadata.sqlite'))
  assert 'training window    spans 1-16' in out
  assert 'infra validated    yes' in out
  card = os.path.join(version_dir, 'assets.extra', 'model_card.html')
  assert re.search(r'model card\s+\S+model_card\.html', out) and (
      os.path.isfile(card))
  # The run ends with the pushed model served and asked over both APIs.
  served = re.search(rf'Served prediction \(python -m serving, version '
                     rf'{match.group(1)},.*\n.*\n\s+REST\s+:\d+\s+P\(.*\) = '
                     r'([\d.]+)\n\s+gRPC\s+:\d+\s+P\(.*\) = ([\d.]+)', out)
  assert served, out
  probability = float(served.group(1))
  assert 0 < probability < 1 and served.group(1) == served.group(2)

  # `make score` (README): the latest span, scored by the version just pushed.
  scored = subprocess.run(
      ['make', '--no-print-directory', 'score',
       f'ARGS=--pipeline-root {tmp_path}/pipeline --serving-dir '
       f'{tmp_path}/serving --scores-dir {tmp_path}/scores'],
      cwd=helpers.REPO, capture_output=True, text=True, timeout=600)
  assert scored.returncode == 0, scored.stdout + scored.stderr[-3000:]
  assert f'model              version {match.group(1)}' in scored.stdout
  with open(os.path.join(tmp_path, 'scores', 'span-16.csv')) as f:
    rows = f.read().splitlines()
  rows_scored = int(re.search(r'rows scored\s+(\d+)', scored.stdout).group(1))
  assert len(rows) == rows_scored + 1 and rows[1].endswith(match.group(1))
