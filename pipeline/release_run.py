"""Runs a pipeline release: its own code, in a process of its own.

Continuous training (continuous_training/controller.py, and so the replay)
calls `run` when a release is current (pipeline/release.py): the run is
`run_pipeline` with LocalDagRunner, as `make run`, but in a child process
whose working directory and import path are the release's `code/`, so every
module TFX imports by path (`models.<problem>.preprocessing`, the custom
components, the resolver strategies) is the released one, whatever the
checkout holds now. Paths of the configuration that point into the checkout
at a released file (the curated schema) are pointed at the release's copy;
data, outputs and the store stay where they are.

The child records the release on its `pipeline_run` context (and its git
commit, from the release's record: lineage/readers.py) and writes what the
parent needs to read the outcome back from ML Metadata. A release that
fails at run time (an import error in its code, a crash) is an outcome with
`ok=False` naming the release, so the CT decision that started it says so.
"""

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Optional

from pipeline import configs
from pipeline import release as release_lib
from pipeline import summary
from project import cli
from project import paths


def in_release(cfg: configs.PipelineConfig,
               release: release_lib.Release) -> configs.PipelineConfig:
  """`cfg` with paths to released files of the checkout pointed into the
  release (the schema); everything else as it is."""
  changes = {}
  for f in dataclasses.fields(cfg):
    value = getattr(cfg, f.name)
    if isinstance(value, str) and value.startswith(paths.REPO_ROOT + os.sep):
      copy = os.path.join(release.code_dir,
                          os.path.relpath(value, paths.REPO_ROOT))
      if os.path.exists(copy):
        changes[f.name] = copy
  return dataclasses.replace(cfg, **changes)


def run(release: release_lib.Release, cfg: configs.PipelineConfig,
        started_at: Optional[float] = None) -> summary.RunOutcome:
  """Runs `release` on `cfg`'s data and root; the run's outcome."""
  from lineage import metadata_store  # pylint: disable=g-import-not-at-top
  from pipeline import run_pipeline  # pylint: disable=g-import-not-at-top
  start = started_at or time.time()
  cfg = in_release(cfg, release)
  print(f'Running release {release.version} (git '
        f'{release.git_commit[:12]}), not the working tree', flush=True)
  with tempfile.TemporaryDirectory() as tmp:
    config_path = os.path.join(tmp, 'config.json')
    result_path = os.path.join(tmp, 'result.json')
    with open(config_path, 'w') as f:
      json.dump(dataclasses.asdict(cfg), f)
    env = dict(os.environ, PYTHONPATH=release.code_dir, PYTHONHASHSEED='0')
    done = subprocess.run(
        [sys.executable, '-m', 'pipeline.release_run', '--config',
         config_path, '--result', result_path, '--release', release.version,
         '--started-at', str(start)],
        cwd=release.code_dir, env=env, check=False)
    try:
      with open(result_path) as f:
        result = json.load(f)
    except (OSError, ValueError):
      result = {'ok': False, 'run_id': None, 'window': [],
                'error': f'release {release.version} failed at run time '
                         f'(exit {done.returncode}): see the log above'}
  if not result['ok'] and result.get('error'):
    result['error'] = f'release {release.version}: {result["error"]}'
  connection = metadata_store.store_config(cfg)
  if result['run_id'] is None:
    return summary.RunOutcome(
        ok=result['ok'], error=result['error'], span=None,
        window=result['window'], nodes={}, blessed=None, pushed_version=None,
        pushed_path=None, already_pushed_version=None, metrics={},
        baseline_metrics={}, seconds=time.time() - start,
        target_span=cfg.span)
  return run_pipeline.read_outcome(
      cfg, connection, result['ok'], result['error'], result['window'],
      time.time() - start, run_id=result['run_id'])


def main(argv=None) -> int:
  """The child: runs the pipeline from this process's code (the release's)."""
  parser = cli.ArgumentParser(prog='python -m pipeline.release_run',
                              description='(run by pipeline/release_run.py)')
  parser.add_argument('--config', required=True)
  parser.add_argument('--result', required=True)
  parser.add_argument('--release', required=True)
  parser.add_argument('--started-at', type=float, default=None)
  args = parser.parse_args(argv)
  with open(args.config) as f:
    cfg = configs.PipelineConfig(**json.load(f))
  from ops import console  # pylint: disable=g-import-not-at-top
  console.quiet_imports()
  from lineage import graph  # pylint: disable=g-import-not-at-top
  from lineage import metadata_store  # pylint: disable=g-import-not-at-top
  from pipeline.run_pipeline import run_pipeline  # pylint: disable=g-import-not-at-top
  from tfx.orchestration.local.local_dag_runner import LocalDagRunner  # pylint: disable=g-import-not-at-top
  started = time.time()
  outcome = run_pipeline(cfg, LocalDagRunner, started_at=args.started_at)
  store = metadata_store.open_store(metadata_store.store_config(cfg))
  graph.record_release(store, cfg.pipeline_name, args.release, started)
  with open(args.result, 'w') as f:
    json.dump({'ok': outcome.ok, 'error': outcome.error,
               'run_id': outcome.run_id, 'window': outcome.window}, f)
  return 0


if __name__ == '__main__':
  from ops import reproducible  # pylint: disable=g-import-not-at-top
  reproducible.fix_hash_seed()
  sys.exit(main())
