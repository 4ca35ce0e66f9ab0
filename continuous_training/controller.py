"""Continuous-training controller: decide whether to run the pipeline, and why.

MLOps level 1 retrains automatically, but only for a reason. Each call looks
at the data on disk, ML Metadata, the monitor's report and the clock, and
runs the pipeline (latest span, rolling window of `--window-spans` valid
spans) when at least one trigger fires:

  new_span   a span-N/ directory on disk that ExampleGen has not ingested
  schedule   `--schedule-days` of (logical) time since the last training run
             recorded in ML Metadata (by the controller or by hand)
  drift      the newest new span drifted from the span before it
             (continuous_training/drift.py: the drift/skew rule of
             monitoring/distribution.py, thresholds DRIFT_* there)
  degraded   the monitor's report says live performance of the served
             version degraded (a report is acted on once)
  on_demand  `--force` / `--reason TEXT`

Every decision, "no run" included, is printed, appended to
<pipeline-root>/ct/decisions.jsonl, and recorded in ML Metadata as a
`CTDecision` execution (properties trigger, reason, span, logical_date,
drift, monitor report, outcome), associated with a `ct_controller` context
and, when it started a run, with that run's `pipeline_run` context.

The clock is injectable (`--now`) so that a replay
(continuous_training/replay.py) or a test can run history: each span's
logical date is the day its quarter ends (span 1 = 2013-Q1 arrives
2013-04-01), see data/spans.py `logical_date`.

This module runs one decision (`run_once`) and is the command; the parts:
continuous_training/triggers.py decides (reads, writes nothing),
continuous_training/decisions.py records in ML Metadata,
continuous_training/config.py holds the knobs.
"""

import argparse
import dataclasses
import datetime
import os
import sys
import time
from typing import Any, Callable, List, Optional

from continuous_training import config as ct_config
from continuous_training import decisions
from continuous_training import triggers
from lineage import metadata_store
from pipeline import configs
from ops import console
from ops import reproducible
from project import cli

START = time.time()


@dataclasses.dataclass
class Result:
  decision: decisions.Decision
  outcome: Any = None  # summary.RunOutcome when a run was started


def format_decision(decision: decisions.Decision) -> str:
  head = (f'CT decision at {decision.now.date()}: '
          + (f'RUN on span {decision.span} (trigger {decision.trigger})'
             if decision.run else 'no run'))
  return '\n'.join([head] + [f'  - {note}' for note in decision.notes])


def run_once(cfg: configs.PipelineConfig, ct: ct_config.CTConfig,
             make_runner: Callable[[], Any],
             now: Optional[datetime.datetime] = None,
             force_reason: Optional[str] = None,
             dry_run: bool = False,
             started_at: Optional[float] = None) -> Result:
  """Decides, records the decision, runs the pipeline if it said so."""
  now = now or datetime.datetime.now(datetime.timezone.utc)
  connection = metadata_store.store_config(cfg)
  store = metadata_store.open_store(connection)
  decision = triggers.decide(cfg, ct, store, now, force_reason)
  if not dry_run:
    decision.execution_id = decisions.record(store, cfg.pipeline_name,
                                             decision)
    decisions.log_decision(cfg.pipeline_root, decision)
  print(format_decision(decision)
        + (f'\n  recorded in ML Metadata: {decisions.EXECUTION_TYPE} '
           f'execution {decision.execution_id}' if decision.execution_id else
           '\n  (dry run: nothing recorded)'), flush=True)
  if not decision.run or dry_run:
    return Result(decision)
  from pipeline import release  # pylint: disable=g-import-not-at-top
  from pipeline import release_run  # pylint: disable=g-import-not-at-top
  from pipeline.run_pipeline import run_pipeline  # pylint: disable=g-import-not-at-top
  released = release.current(cfg.pipeline_root)
  if released is not None:
    decisions.set_release(store, decision.execution_id, released.version)
  else:
    print('  no pipeline release yet: running the working tree (python -m '
          'pipeline.release create freezes it)', flush=True)
  try:
    run_cfg = dataclasses.replace(cfg, span=decision.span)
    outcome = (release_run.run(released, run_cfg, started_at=started_at)
               if released is not None else
               run_pipeline(run_cfg, make_runner, started_at=started_at))
  except SystemExit as e:  # refused (another run holds the root) or bad input
    decisions.attach_run(metadata_store.open_store(connection),
                         cfg.pipeline_name, decision.execution_id,
                         decisions.Refused(str(e)))
    raise
  run_name = decisions.attach_run(metadata_store.open_store(connection),
                                  cfg.pipeline_name, decision.execution_id,
                                  outcome)
  print(f'  CT decision {decision.execution_id} attached to pipeline_run '
        f'{run_name}' if run_name else f'  CT decision {decision.execution_id}'
        ' recorded as failed: the run stopped before TFX started it',
        flush=True)
  return Result(decision, outcome)


def main(argv: Optional[List[str]] = None) -> int:
  parser = cli.ArgumentParser(
      prog='python -m continuous_training.controller',
      description=__doc__.split('\n\n')[0],
      epilog=__doc__.split('\n\n', 1)[1],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--force', action='store_true',
                      help='run whatever the triggers say (on demand)')
  parser.add_argument('--reason', default=None,
                      help='why you want a run (implies --force; recorded)')
  parser.add_argument('--now', type=decisions.parse_time, default=None,
                      help='the controller\'s clock, ISO date/time (default: '
                      'now); a replay passes each span\'s logical date')
  parser.add_argument('--dry-run', action='store_true',
                      help='decide and print; record and run nothing')
  ct_config.add_flags(parser)
  configs.add_flags(parser)
  args = parser.parse_args(argv)
  cfg = configs.from_flags(args)
  ct = ct_config.from_flags(args)
  force = args.reason if args.reason is not None else (
      '--force' if args.force else None)
  console.quiet_logging(os.path.join(
      cfg.pipeline_root, 'logs', time.strftime('ct-%Y%m%d-%H%M%S.log')))
  from tfx.orchestration.local.local_dag_runner import LocalDagRunner  # pylint: disable=g-import-not-at-top
  result = run_once(cfg, ct, LocalDagRunner, now=args.now,
                    force_reason=force, dry_run=args.dry_run,
                    started_at=START)
  return 0 if result.outcome is None or result.outcome.ok else 1


if __name__ == '__main__':
  reproducible.fix_hash_seed()  # before anything runs TFX
  sys.exit(main())
