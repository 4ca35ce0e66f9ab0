"""The gate before a pipeline release: CI for the pipeline itself.

    python -m pipeline.release gate      # check the working tree, release it if it passes

A candidate (the working tree frozen as a release directory that is not
current) is released only if three checks pass, each written to
`<root>/releases/gates/<candidate>/report.json` and printed:

1. **unit tests of the changed code**: the files that differ from the
   current release (all, before the first), mapped to the tests that mirror
   them (`pkg/mod.py` -> `tests/pkg/test_mod.py`; a problem's
   `models/<p>/mod.py` -> `tests/models/test_mod.py`), run without the
   integration and end-to-end tiers;
2. **a short run on a sample**: the candidate's pipeline on the newest span
   alone with a short training, in a scratch root, must complete;
3. **an experiment**: the candidate's pipeline trained on production's
   current window (the data, span and knobs CT would use) in a scratch
   root whose baseline is a copy of the version production serves, judged
   by the same blessing rule (pipeline/blessing.py) as any run: blessed,
   or the gate fails naming each threshold missed and by how much.

Production is never touched: scratch roots have their own store, serving
directory and pushes. What CT then runs is the released candidate.
"""

import dataclasses
import filecmp
import json
import os
import shutil
import subprocess
import sys
import time
from typing import Dict, List, Optional

from pipeline import configs
from pipeline import release as release_lib
from pipeline import release_run

GATES_DIR = 'gates'
REPORT_FILE = 'report.json'
SAMPLE_STEPS = 40  # the short run's train steps (and eval steps: a fifth)


@dataclasses.dataclass
class Check:
  name: str
  passed: bool
  detail: str
  seconds: float = 0.0


@dataclasses.dataclass
class GateReport:
  candidate: str
  current: Optional[str]  # the release it would replace
  checks: List[Check]

  @property
  def passed(self) -> bool:
    return bool(self.checks) and all(c.passed for c in self.checks)

  def text(self) -> str:
    lines = [f'Gate for release {self.candidate} (current: '
             f'{self.current or "none"}): '
             + ('PASSED' if self.passed else 'FAILED')]
    lines += [f'  {"ok  " if c.passed else "FAIL"} {c.name} ({c.seconds:.0f} s)'
              f': {c.detail}' for c in self.checks]
    return '\n'.join(lines)


def changed_files(pipeline_root: str, source: str) -> List[str]:
  """Released files of `source` that differ from the current release."""
  now = release_lib.current(pipeline_root)
  files = release_lib.source_files(source)
  if now is None:
    return files
  return [name for name in files
          if not os.path.exists(os.path.join(now.code_dir, name)) or
          not filecmp.cmp(os.path.join(source, name),
                          os.path.join(now.code_dir, name), shallow=False)]


def tests_for(source: str, changed: List[str]) -> List[str]:
  """The unit test files that mirror `changed` (the layout tests/README.md
  describes), those that exist."""
  found = set()
  for name in changed:
    parts = name.split('/')
    if len(parts) < 2 or not name.endswith('.py'):
      continue
    test = f'test_{os.path.splitext(parts[-1])[0]}.py'
    # models/taxi/preprocessing.py: tests/models/taxi/test_preprocessing.py,
    # else the generic tests/models/test_preprocessing.py.
    for folder in (parts[:-1], parts[:1]):
      candidate = os.path.join('tests', *folder, test)
      if os.path.exists(os.path.join(source, candidate)):
        found.add(candidate)
        break
  return sorted(found)


def _unit_tests(source: str, changed: List[str]) -> Check:
  tests = tests_for(source, changed)
  if not tests:
    return Check('unit tests of the changed code', True,
                 f'{len(changed)} changed file(s), no unit test mirrors them')
  done = subprocess.run(
      [sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', '-m',
       'not integration and not e2e', *tests], cwd=source,
      env=dict(os.environ, PYTHONHASHSEED='0'), capture_output=True,
      text=True, check=False)
  last = (done.stdout.strip().splitlines() or ['no output'])[-1]
  return Check('unit tests of the changed code', done.returncode in (0, 5),
               f'{" ".join(tests)}: {last}')


def _scratch(cfg: configs.PipelineConfig, root: str,
             **changes) -> configs.PipelineConfig:
  """`cfg` in a scratch root: its own store, artifacts and serving dir."""
  return dataclasses.replace(
      cfg, pipeline_root=os.path.join(root, 'pipeline'),
      serving_dir=os.path.join(root, 'serving'),
      metadata_path=os.path.join(root, 'pipeline', 'metadata.sqlite'),
      metadata_config=None, mysql_host=None, model_config_file=None,
      **changes)


def _sample_run(candidate, cfg, root: str, span: int) -> Check:
  scratch = _scratch(cfg, root, span=span, window_spans=1,
                     train_steps=SAMPLE_STEPS,
                     eval_steps=max(1, SAMPLE_STEPS // 5), tune=False)
  outcome = release_run.run(candidate, scratch)
  return Check('a short run on a sample', outcome.ok,
               f'span {span}, {SAMPLE_STEPS} steps: ' + (
                   'completed' if outcome.ok else str(outcome.error)),
               outcome.seconds)


def _served_copy(cfg: configs.PipelineConfig, root: str) -> Optional[str]:
  """The newest version production serves, copied into the scratch serving
  dir as the experiment's baseline; its version."""
  from serving import model_config  # pylint: disable=g-import-not-at-top
  versions = model_config.versions_on_disk(cfg.serving_model_dir)
  if not versions:
    return None
  version = str(max(versions))
  shutil.copytree(os.path.join(cfg.serving_model_dir, version),
                  os.path.join(root, 'serving', cfg.model_name, version))
  return version


def _experiment(candidate, cfg, root: str, span: int) -> Check:
  baseline = _served_copy(cfg, root)
  outcome = release_run.run(candidate, _scratch(cfg, root, span=span))
  metrics = ', '.join(f'{k} {outcome.metrics[k]:.4f}' + (
      f' (served {outcome.baseline_metrics[k]:.4f})'
      if k in outcome.baseline_metrics else '')
                      for k in sorted(outcome.metrics))
  if not outcome.ok:
    detail = f'the run failed: {outcome.error}'
  elif outcome.blessed:
    detail = f'blessed against served version {baseline}: {metrics}'
  else:
    detail = ('not blessed against served version '
              f'{baseline or "none"}: ' + '; '.join(
                  outcome.blessing_failures or ['(no reason recorded)'])
              + f' [{metrics}]')
  return Check(f'experiment on production\'s window (span {span})',
               bool(outcome.ok and outcome.blessed), detail, outcome.seconds)


def gate(source: str, cfg: configs.PipelineConfig,
         span: Optional[int] = None) -> GateReport:
  """Runs the gate on the tree at `source`; releases it if it passes."""
  from data import spans as span_rules  # pylint: disable=g-import-not-at-top
  root = cfg.pipeline_root
  now = release_lib.current(root)
  changed = changed_files(root, source)
  candidate = release_lib.create(source, root, cfg.problem,
                                 activate=False)
  report = GateReport(candidate.version, now.version if now else None, [])
  if now is not None and now.version == candidate.version:
    report.checks.append(Check('a change to release', False,
                               'the working tree is the current release'))
    return report
  span = span or max(span_rules.spans_on_disk(cfg.data_root))
  gate_root = os.path.join(release_lib.releases_dir(root), GATES_DIR,
                           candidate.version)
  shutil.rmtree(gate_root, ignore_errors=True)
  steps = [lambda: _unit_tests(source, changed),
           lambda: _sample_run(candidate, cfg, os.path.join(gate_root,
                                                            'sample'), span),
           lambda: _experiment(candidate, cfg,
                               os.path.join(gate_root, 'experiment'), span)]
  for step in steps:
    started = time.time()
    check = step()
    check.seconds = check.seconds or time.time() - started
    report.checks.append(check)
    print(f'  {"ok  " if check.passed else "FAIL"} {check.name}', flush=True)
    if not check.passed:
      break  # a later check would measure a broken candidate
  os.makedirs(gate_root, exist_ok=True)
  with open(os.path.join(gate_root, REPORT_FILE), 'w') as f:
    json.dump({'candidate': report.candidate, 'current': report.current,
               'passed': report.passed,
               'checks': [dataclasses.asdict(c) for c in report.checks]},
              f, indent=2)
  if report.passed:
    release_lib.make_current(root, candidate, action='gate')
  return report


def read_report(pipeline_root: str, version: str) -> Optional[Dict]:
  try:
    with open(os.path.join(release_lib.releases_dir(pipeline_root), GATES_DIR,
                           version, REPORT_FILE)) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None

