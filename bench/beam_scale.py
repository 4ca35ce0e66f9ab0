"""How the Beam components scale with rows and DirectRunner workers.

    .venv/bin/python bench/beam_scale.py                      # everything below
    .venv/bin/python bench/beam_scale.py --rows 100000 --skip-pipeline

Prints figures, never passes or fails. Sections, lightest first (the machine
may be shared: `uptime` load averages are printed next to every figure):
  sdist     - what TFX's "infer TFX Python dependency for beam" costs per Beam
              component (tfx.utils.dependency_utils), and what it costs when
              a dependency flag (--setup_file) is given, as beam_runner.py does
  pipeline  - the whole pipeline, cold, on the bundled data: local_runner.py
              (LocalDagRunner) against beam_runner.py (BeamDagRunner) in each
              --pipeline-modes DirectRunner mode
  scale     - ExampleGen, StatisticsGen and Transform (the pipeline's own
              configuration: analyze only, no materialization) on one
              generated span of each --rows size, in each --configs
              DirectRunner mode; rows/s per component
Every run is a fresh process (imports included); wall time, CPU time of the
process tree (user+sys, a fairer comparison when the cores are shared) and
peak RSS of the process tree (this process's children and theirs, polled).
"""

import argparse
import contextlib
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from typing import Dict, List, Optional, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from project import cli  # pylint: disable=wrong-import-position
LINE = re.compile(r'^\s+(\S+)\s+(ran|cached|FAILED)\s+([\d.]+) s$', re.M)
CONFIGS = {
    'in_memory': ['--direct_running_mode=in_memory', '--direct_num_workers=1'],
    'multi_threading-2': ['--direct_running_mode=multi_threading',
                          '--direct_num_workers=2'],
    'multi_processing-1': ['--direct_running_mode=multi_processing',
                           '--direct_num_workers=1'],
    'multi_processing-2': ['--direct_running_mode=multi_processing',
                           '--direct_num_workers=2'],
}
# A local Flink cluster (cluster/) with N TaskManagers, started per run.
# flink-N: a cluster of N TaskManagers (`cluster up`'s defaults);
# flink-N-full: the same with the JVMs' default compilers (`up --jit full`).
FLINK_CONFIGS = ('flink-1', 'flink-2', 'flink-1-full', 'flink-2-full')
SCALE_COMPONENTS = ('CsvExampleGen', 'StatisticsGen', 'Transform')


def load() -> str:
  one, five, fifteen = os.getloadavg()
  return f'{one:.2f} {five:.2f} {fifteen:.2f}'


class Measured:
  """Wall time, tree CPU time and peak tree RSS of one child command."""

  def __init__(self, cmd: List[str], watch: Optional[Dict[str, int]] = None,
               **kwargs):
    """`watch`: name -> pid of other processes (a Flink cluster's) whose
    peak RSS (with their children) and CPU time are measured alongside."""
    import psutil  # pylint: disable=g-import-not-at-top
    watch = watch or {}
    self.peaks: Dict[str, int] = {name: 0 for name in watch}
    watched = {name: psutil.Process(pid) for name, pid in watch.items()}

    def cpu_of(process) -> float:
      try:
        t = process.cpu_times()
        return t.user + t.system + t.children_user + t.children_system
      except psutil.Error:
        return 0.0

    watched_cpu = {name: cpu_of(p) for name, p in watched.items()}
    self.load_before = load()
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)
    self.peak_rss = 0
    done = threading.Event()

    def tree_rss(process) -> int:
      """RSS of a process and its children (0 once it is gone)."""
      try:
        tree = [process] + process.children(recursive=True)
      except psutil.Error:
        return 0
      rss = 0
      for p in tree:
        try:
          rss += p.memory_info().rss
        except psutil.Error:
          pass
      return rss

    def poll():
      root = psutil.Process(proc.pid)
      while not done.is_set():
        self.peak_rss = max(self.peak_rss, tree_rss(root))
        for name, process in watched.items():
          self.peaks[name] = max(self.peaks[name], tree_rss(process))
        done.wait(0.25)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    self.stdout, self.stderr = proc.communicate()
    done.set()
    poller.join()
    self.seconds = time.time() - start
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    self.cpu = ((cpu_after.ru_utime - cpu_before.ru_utime) +
                (cpu_after.ru_stime - cpu_before.ru_stime))
    # The harnesses have exited and been reaped by now: children_* has them.
    self.cluster_cpu = sum(cpu_of(p) - watched_cpu[name]
                           for name, p in watched.items())
    self.returncode = proc.returncode
    self.load_after = load()
    self.components: Dict[str, float] = {}
    for node, _, secs in LINE.findall(self.stdout):
      self.components[node] = self.components.get(node, 0.0) + float(secs)

  def check(self, what: str) -> 'Measured':
    if self.returncode != 0:
      sys.exit(f'{what} failed ({self.returncode}):\n{self.stdout[-3000:]}\n'
               f'{self.stderr[-3000:]}')
    return self


def gib(n: int) -> str:
  return f'{n / 2**30:.2f} GiB'


def sdist_section() -> None:
  """Times make_beam_dependency_flags as each Beam executor calls it."""
  code = r'''
import glob, os, shutil, tempfile, time, warnings
warnings.filterwarnings('ignore')
from tfx.utils import dependency_utils
args = ['--direct_running_mode=multi_processing', '--direct_num_workers=2']
for label, extra in (('inferred (no dependency flag)', []),
                     ('--setup_file given', ['--setup_file=setup.py'])):
  times = []
  for _ in range(3):
    before = set(glob.glob(os.path.join(tempfile.gettempdir(), 'tmp*')))
    start = time.time()
    dependency_utils.make_beam_dependency_flags(args + extra)
    times.append(time.time() - start)
    made = set(glob.glob(os.path.join(tempfile.gettempdir(), 'tmp*'))) - before
    size = sum(os.path.getsize(os.path.join(d, f)) for m in made
               for d, _, fs in os.walk(m) for f in fs)
    for m in made:
      shutil.rmtree(m, ignore_errors=True)
  print(f'SDIST|{label}|{min(times):.2f}|{max(times):.2f}|{size / 2**20:.0f}')
'''
  run = Measured([sys.executable, '-c', code], cwd=REPO,
                 env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')).check('sdist')
  print(f'\n## TFX sdist per Beam component (load {run.load_before})\n')
  print('| beam args | seconds per component (min / max of 3) | left in /tmp |')
  print('|---|---|---|')
  for line in run.stdout.splitlines():
    if line.startswith('SDIST|'):
      _, label, low, high, mib = line.split('|')
      print(f'| {label} | {low} / {high} | {mib} MiB |')


def pipeline_section(modes: List[str]) -> None:
  """Whole pipeline, cold, bundled data: LocalDagRunner vs BeamDagRunner."""
  print('\n## Whole pipeline, cold, bundled data (15,002 rows, 1000/150 steps)'
        '\n')
  print('| runner | wall | CPU (tree) | peak RSS (tree) | Beam components | '
        'load before / after |')
  print('|---|---:|---:|---:|---:|---|')
  runs: List[Tuple[str, List[str]]] = [('local_runner.py (LocalDagRunner)',
                                        ['local_runner.py'])]
  for mode in modes:
    extra = CONFIGS[mode]
    flags = ['--direct-running-mode', extra[0].split('=')[1],
             '--direct-num-workers', extra[1].split('=')[1]]
    runs.append((f'beam_runner.py (BeamDagRunner), {mode}',
                 ['beam_runner.py'] + flags))
  for label, cmd in runs:
    root = tempfile.mkdtemp(prefix='bench-pipeline-')
    try:
      full = [sys.executable] + cmd + [
          '--pipeline-root', os.path.join(root, 'pipeline'),
          '--serving-dir', os.path.join(root, 'serving')]
      print(f'# {" ".join(full[1:])}', file=sys.stderr, flush=True)
      run = Measured(full, cwd=REPO).check(label)
    finally:
      shutil.rmtree(root, ignore_errors=True)
    beam = sum(v for k, v in run.components.items()
               if k in ('CsvExampleGen', 'StatisticsGen', 'Transform',
                        'Evaluator'))
    print(f'| {label} | {run.seconds:.1f} s | {run.cpu:.1f} s | '
          f'{gib(run.peak_rss)} | {beam:.1f} s | {run.load_before} / '
          f'{run.load_after} |', flush=True)


def scale_section(sizes: List[int], configs: List[str], seed: int) -> None:
  """ExampleGen, StatisticsGen, Transform on one generated span per size."""
  print('\n## ExampleGen, StatisticsGen, Transform on generated rows\n')
  print('| rows | DirectRunner | ' + ' | '.join(
      f'{c} s (rows/s)' for c in SCALE_COMPONENTS) +
        ' | wall | CPU (tree) | peak RSS (tree) | load before / after |')
  print('|---:|---|' + '---:|' * (len(SCALE_COMPONENTS) + 3) + '---|')
  for rows in sizes:
    root = tempfile.mkdtemp(prefix=f'bench-scale-{rows}-')
    try:
      data = os.path.join(root, 'data')
      gen = [sys.executable, os.path.join(REPO, 'data', 'generate_spans.py'),
             '--out', data, '--rows', str(rows), '--seed', str(seed)]
      print(f'# {" ".join(gen[1:])}', file=sys.stderr, flush=True)
      made = Measured(gen).check('generate_spans')
      size = os.path.getsize(os.path.join(data, 'span-1', 'data.csv'))
      print(f'| {rows:,} | (generate_spans.py: {made.seconds:.1f} s, '
            f'{size / 2**20:.0f} MiB CSV, peak {gib(made.peak_rss)}) |',
            flush=True)
      for config in configs:
        with _runner(config, root) as (beam_flags, watch):
          cmd = [sys.executable, os.path.abspath(__file__), '--child',
                 '--data-root', data,
                 '--pipeline-root', os.path.join(root, config)] + [
                     f'--beam-arg={a}' for a in beam_flags]
          print(f'# {" ".join(cmd[1:])}', file=sys.stderr, flush=True)
          run = Measured(cmd, watch=watch, cwd=REPO).check(
              f'{rows} rows, {config}')
        cells = []
        for component in SCALE_COMPONENTS:
          secs = run.components.get(component)
          cells.append(f'{secs:.1f} ({rows / secs:,.0f})' if secs else '-')
        cpu = f'{run.cpu:.1f} s' + (
            f' + {run.cluster_cpu:.1f} s cluster' if watch else '')
        peaks = f'launcher {gib(run.peak_rss)}' + ''.join(
            f'; {name} {gib(peak)}' for name, peak in run.peaks.items())
        print(f'| {rows:,} | {config} | ' + ' | '.join(cells) +
              f' | {run.seconds:.1f} s | {cpu} | {peaks} | '
              f'{run.load_before} / {run.load_after} |', flush=True)
    finally:
      shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def _runner(config: str, root: str):
  """(Beam flags, processes to watch) for a config; a flink-N config
  starts a local Flink cluster with N TaskManagers for the run."""
  if config not in FLINK_CONFIGS:
    yield CONFIGS[config], {}
    return
  from cluster import flink  # pylint: disable=g-import-not-at-top
  settings = flink.on_free_ports(os.path.join(root, f'{config}-cluster'),
                                 int(config.split('-')[1]))
  if config.endswith('-full'):
    settings.jit = 'full'
  state = flink.up(settings)
  try:
    names = {'worker-pool': 'worker pool + harnesses'}
    yield flink.beam_flags(settings), {
        names.get(p['name'], p['name']): p['pid']
        for p in state['processes']}
  finally:
    flink.down(settings.state_dir)


def child(data_root: str, pipeline_root: str, beam_args: List[str]) -> None:
  """ExampleGen -> StatisticsGen, ImportSchemaGen -> Transform, as the
  pipeline configures them (pipeline/pipeline.py), on LocalDagRunner so the
  components run one after the other and each is timed alone."""
  from pipeline import configs  # pylint: disable=g-import-not-at-top
  from ops import console  # pylint: disable=g-import-not-at-top
  from lineage import metadata_store  # pylint: disable=g-import-not-at-top
  console.quiet_logging(os.path.join(pipeline_root, 'logs', 'run.log'))
  from pipeline import cache_keys  # pylint: disable=g-import-not-at-top
  from pipeline import pipeline as taxi_pipeline  # pylint: disable=g-import-not-at-top
  from tfx.components import StatisticsGen  # pylint: disable=g-import-not-at-top
  from tfx.components import Transform  # pylint: disable=g-import-not-at-top
  from tfx.components.schema_gen.import_schema_gen.component import ImportSchemaGen  # pylint: disable=g-import-not-at-top
  from tfx.orchestration import pipeline as tfx_pipeline  # pylint: disable=g-import-not-at-top
  from tfx.orchestration.local.local_dag_runner import LocalDagRunner  # pylint: disable=g-import-not-at-top
  cfg = configs.PipelineConfig(data_root=data_root,
                               pipeline_root=pipeline_root)
  ingest = taxi_pipeline.example_gen(cfg)
  statistics_gen = StatisticsGen(examples=ingest.outputs['examples'])
  schema_gen = ImportSchemaGen(
      schema_file=cache_keys.schema_snapshot(cfg))
  transform = Transform(  # as in create_pipeline
      examples=ingest.outputs['examples'],
      schema=schema_gen.outputs['schema'],
      preprocessing_fn=configs.PREPROCESSING_FN,
      disable_statistics=True, materialize=False, disable_analyzer_cache=True)
  LocalDagRunner().run(tfx_pipeline.Pipeline(
      pipeline_name='beam_scale', pipeline_root=pipeline_root,
      components=[ingest, statistics_gen, schema_gen, transform],
      enable_cache=False,
      metadata_connection_config=metadata_store.sqlite_config(
          os.path.join(pipeline_root, 'metadata.sqlite')),
      beam_pipeline_args=beam_args + [
          f'--setup_file={os.path.join(REPO, "setup.py")}']))


def main(argv: Optional[List[str]] = None) -> None:
  parser = cli.ArgumentParser(
      description=__doc__.split('\n\n')[0],
      epilog=__doc__.split('\n\n', 1)[1],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--rows', default='100000,1000000',
                      help='generated span sizes (default: %(default)s)')
  parser.add_argument('--configs', default='in_memory,multi_processing-1,'
                      'multi_processing-2',
                      help=f'runners for the scale section: DirectRunner '
                      f'modes ({", ".join(CONFIGS)}) or a local Flink '
                      f'cluster ({", ".join(FLINK_CONFIGS)}: N TaskManagers; '
                      "-full: the JVMs' default compilers) "
                      '(default: %(default)s)')
  parser.add_argument('--pipeline-modes', default='in_memory',
                      help='beam_runner.py modes for the pipeline section '
                      '(default: %(default)s)')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--skip-sdist', action='store_true')
  parser.add_argument('--skip-pipeline', action='store_true')
  parser.add_argument('--skip-scale', action='store_true')
  parser.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
  parser.add_argument('--data-root', help=argparse.SUPPRESS)
  parser.add_argument('--pipeline-root', help=argparse.SUPPRESS)
  parser.add_argument('--beam-arg', action='append', default=[],
                      help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.child:
    child(args.data_root, args.pipeline_root, args.beam_arg)
    return
  split = lambda text: [x for x in text.split(',') if x]
  for config in split(args.configs):
    if config not in CONFIGS and config not in FLINK_CONFIGS:
      parser.error(f'unknown runner {config!r}; one of '
                   f'{", ".join(list(CONFIGS) + list(FLINK_CONFIGS))}')
  for mode in split(args.pipeline_modes):
    if mode not in CONFIGS:
      parser.error(f'unknown DirectRunner mode {mode!r}; one of '
                   f'{", ".join(CONFIGS)}')
  print('$ ' + ' '.join([os.path.relpath(sys.argv[0], REPO)] +
                        (argv if argv is not None else sys.argv[1:])))
  print(f'{os.cpu_count()} CPUs; load average at start {load()}', flush=True)
  if not args.skip_sdist:
    sdist_section()
  if not args.skip_pipeline:
    pipeline_section(split(args.pipeline_modes))
  if not args.skip_scale:
    scale_section([int(r) for r in split(args.rows)], split(args.configs),
                  args.seed)


if __name__ == '__main__':
  main()
