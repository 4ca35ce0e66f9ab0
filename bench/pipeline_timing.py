"""Wall time of the main job, cold and cached, per component.

    .venv/bin/python bench/pipeline_timing.py            # ours: cold, rerun, rerun
    .venv/bin/python bench/pipeline_timing.py --stock    # + TFX's stock example

Each run is a fresh process, timed from launch to exit (imports included),
with 1000 train / 150 eval steps on the bundled 15,002 rows, and no served
prediction at the end (the stock example serves nothing). Runs:
  cold     - empty pipeline root and metadata
  rerun 1  - same inputs, right after the cold run pushed: fully cached (the
             model just pushed is the candidate, never its own baseline)
  rerun 2  - the same again
`--stock` also runs tfx/examples/chicago_taxi_pipeline/taxi_pipeline_native_keras.py
(BeamDagRunner, multi-processing DirectRunner) the same way, cold then
cached, in a scratch HOME with the wheel's data and module file, each of its
runs right after ours of the same kind (cold after cold, cached after rerun
1), so that both see the same load. Prints Markdown tables and the ratios;
nothing here passes or fails on time.
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
CANDIDATE = re.compile(r'^\s+candidate\s+(.*)$', re.M)


def timed(cmd, **kwargs):
  start = time.time()
  result = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
  elapsed = time.time() - start
  if result.returncode != 0:
    sys.exit(f'{cmd} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}')
  return elapsed, result.stdout


def ours_command(root):
  return [sys.executable, os.path.join(REPO, 'local_runner.py'),
          '--pipeline-root', os.path.join(root, 'pipeline'),
          '--serving-dir', os.path.join(root, 'serving'),
          '--skip-served-prediction']


def components_of(name, out):
  """{component: (state, seconds)} from a run's console output."""
  backfill, _, main_run = out.rpartition('Running pipeline')
  components = {}
  spans = LINE.findall(backfill)
  if spans or name == 'cold':
    components['CsvExampleGen, earlier spans'] = (
        f'{len(spans)} ran', sum(float(secs) for _, _, secs in spans))
  for node, state, secs in LINE.findall(main_run):
    components[node] = (state, float(secs))
  return components


def stock_command(root):
  """TFX's stock example, set up in a scratch HOME under `root`."""
  import tfx  # pylint: disable=g-import-not-at-top
  example = os.path.join(os.path.dirname(tfx.__file__), 'examples',
                         'chicago_taxi_pipeline')
  taxi = os.path.join(root, 'taxi')
  shutil.copytree(os.path.join(example, 'data'), os.path.join(taxi, 'data'))
  shutil.copy(os.path.join(example, 'taxi_utils_native_keras.py'), taxi)
  cmd = [sys.executable, os.path.join(example, 'taxi_pipeline_native_keras.py')]
  return cmd, dict(os.environ, HOME=root)


def main():
  parser = cli.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--stock', action='store_true',
                      help="also time TFX's stock taxi_pipeline_native_keras.py")
  args = parser.parse_args()
  root = tempfile.mkdtemp(prefix='bench-')
  print(f'load average {" ".join(f"{x:.2f}" for x in os.getloadavg())} '
        f'({os.cpu_count()} CPUs)', flush=True)
  try:
    runs, stock = [], {}
    stock_cmd = stock_command(root) if args.stock else None
    for name, stock_run in (('cold', 'cold'), ('rerun 1', 'cached'),
                            ('rerun 2', None)):
      seconds, out = timed(ours_command(root), cwd=REPO)
      runs.append((name, seconds, components_of(name, out)))
      if name == 'cold':  # the model the timing is for: same quality?
        quality = CANDIDATE.search(out)
      print(f'ours {name}: {seconds:.1f} s', file=sys.stderr, flush=True)
      if stock_cmd and stock_run:
        stock[stock_run], _ = timed(stock_cmd[0], env=stock_cmd[1], cwd=root)
        print(f'stock {stock_run}: {stock[stock_run]:.1f} s', file=sys.stderr,
              flush=True)
    print('\n| component | ' + ' | '.join(name for name, _, _ in runs) + ' |')
    print('|---|' + '---|' * len(runs))
    for node in runs[0][2]:
      cells = []
      for _, _, components in runs:
        state, secs = components.get(node, ('-', 0.0))
        cells.append(f'{secs:.1f} s ({state})')
      print(f'| {node} | ' + ' | '.join(cells) + ' |')
    print('| **wall time, process start to exit** | ' + ' | '.join(
        f'**{seconds:.1f} s**' for _, seconds, _ in runs) + ' |')
    if stock:
      cold, cached = runs[0][1], runs[1][1]
      print('\n| | cold | fully cached |\n|---|---:|---:|')
      print(f"| TFX's stock taxi_pipeline_native_keras.py | "
            f"{stock['cold']:.1f} s | {stock['cached']:.1f} s |")
      print(f'| this pipeline (`local_runner.py`) | {cold:.1f} s '
            f"({cold / stock['cold']:.2f}x) | {cached:.1f} s "
            f"({cached / stock['cached']:.2f}x) |")
    print(f'\ncold run\'s model: {quality[1] if quality else "no metrics"}')
    print(f'load average {" ".join(f"{x:.2f}" for x in os.getloadavg())}')
  finally:
    shutil.rmtree(root, ignore_errors=True)


if __name__ == '__main__':
  main()
