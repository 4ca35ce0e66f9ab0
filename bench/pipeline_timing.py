"""Wall time of the main job, cold and cached, per component.

    .venv/bin/python bench/pipeline_timing.py            # ours: cold, rerun, rerun
    .venv/bin/python bench/pipeline_timing.py --stock    # + TFX's stock example

Each run is a fresh process, timed from launch to exit (imports included),
with 1000 train / 150 eval steps on the bundled 15,002 rows. Runs:
  cold     - empty pipeline root and metadata
  rerun 1  - same inputs, right after the cold run pushed: fully cached (the
             model just pushed is the candidate, never its own baseline)
  rerun 2  - the same again
`--stock` also runs tfx/examples/chicago_taxi_pipeline/taxi_pipeline_native_keras.py
(BeamDagRunner, multi-processing DirectRunner) the same way, cold then
cached, in a scratch HOME with the wheel's data and module file.
Prints a Markdown table; nothing here passes or fails on time.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from project import cli  # pylint: disable=wrong-import-position

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINE = re.compile(r'^\s+(\S+)\s+(ran|cached|FAILED)\s+([\d.]+) s$', re.M)


def timed(cmd, **kwargs):
  start = time.time()
  result = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
  elapsed = time.time() - start
  if result.returncode != 0:
    sys.exit(f'{cmd} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}')
  return elapsed, result.stdout


def ours(root):
  cmd = [sys.executable, os.path.join(REPO, 'local_runner.py'),
         '--pipeline-root', os.path.join(root, 'pipeline'),
         '--serving-dir', os.path.join(root, 'serving')]
  runs = []
  for name in ('cold', 'rerun 1', 'rerun 2'):
    seconds, out = timed(cmd, cwd=REPO)
    backfill, _, main_run = out.rpartition('Running pipeline')
    components = {}
    spans = LINE.findall(backfill)
    if spans or name == 'cold':
      components['CsvExampleGen, earlier spans'] = (
          f'{len(spans)} ran', sum(float(secs) for _, _, secs in spans))
    for node, state, secs in LINE.findall(main_run):
      components[node] = (state, float(secs))
    runs.append((name, seconds, components))
    print(f'ours {name}: {seconds:.1f} s', file=sys.stderr, flush=True)
  return runs


def stock(root):
  import tfx  # pylint: disable=g-import-not-at-top
  example = os.path.join(os.path.dirname(tfx.__file__), 'examples',
                         'chicago_taxi_pipeline')
  taxi = os.path.join(root, 'taxi')
  shutil.copytree(os.path.join(example, 'data'), os.path.join(taxi, 'data'))
  shutil.copy(os.path.join(example, 'taxi_utils_native_keras.py'), taxi)
  env = dict(os.environ, HOME=root)
  cmd = [sys.executable, os.path.join(example, 'taxi_pipeline_native_keras.py')]
  results = []
  for name in ('cold', 'cached'):
    seconds, _ = timed(cmd, env=env, cwd=root)
    results.append((name, seconds))
    print(f'stock {name}: {seconds:.1f} s', file=sys.stderr, flush=True)
  return results


def main():
  parser = cli.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--stock', action='store_true',
                      help="also time TFX's stock taxi_pipeline_native_keras.py")
  args = parser.parse_args()
  root = tempfile.mkdtemp(prefix='bench-')
  try:
    runs = ours(root)
    print('\n| component | ' + ' | '.join(name for name, _, _ in runs) + ' |')
    print('|---|' + '---|' * len(runs))
    nodes = list(runs[0][2])
    for node in nodes:
      cells = []
      for _, _, components in runs:
        state, secs = components.get(node, ('-', 0.0))
        cells.append(f'{secs:.1f} s ({state})')
      print(f'| {node} | ' + ' | '.join(cells) + ' |')
    print('| **wall time, process start to exit** | ' + ' | '.join(
        f'**{seconds:.1f} s**' for _, seconds, _ in runs) + ' |')
    if args.stock:
      print('\nTFX stock taxi_pipeline_native_keras.py: ' + ', '.join(
          f'{name} {seconds:.1f} s' for name, seconds in stock(root)))
  finally:
    shutil.rmtree(root, ignore_errors=True)


if __name__ == '__main__':
  main()
