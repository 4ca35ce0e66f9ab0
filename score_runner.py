"""Score a span with the served model: TFX's BulkInferrer, locally.

Scores every row of span N of the data root with the model users are
served from the model base path (the `stable` label of --model-config-file
if given, else the newest version: components/baseline.py), with
LocalDagRunner (pipeline/scoring.py). Writes BulkInferrer's PredictionLogs
(TFRecord) and a CSV (span, split, row, identifying features, label,
prediction, version), copies the CSV to <scores dir>/span-N.csv, and
records the lineage in ML Metadata: `python -m lineage scores N` says which
model scored it. Exit status: 0 when scored, 1 when not (nothing served, a
served version this store did not push, a failed component).

Beam flags go after `--`, as for local_runner.py (pipeline/beam_args.py).

  score_runner.py --span 3
  score_runner.py --model-config-file outputs/serving/models.config
  score_runner.py --problem penguin --span 2
"""

import argparse
import os
import sys
import time

from pipeline import beam_args as beam_flags
from pipeline import configs
from ops import console
from ops import reproducible
from project import cli
from project import paths

START = time.time()  # only light modules above: the summary counts the rest

# The PipelineConfig fields scoring reads (training's knobs do not matter).
FIELDS = ('problem', 'span', 'data_root', 'pipeline_root', 'serving_dir', 'model_name',
          'model_config_file', 'pipeline_name', 'enable_cache',
          *configs.METADATA_FIELDS)


def scores_dir_of(problem: str) -> str:
  """outputs/<problem>/scores: the scored spans' CSVs."""
  return os.path.join(paths.problem_outputs(problem), 'scores')


def main(argv=None) -> int:
  ours, beam_args = beam_flags.split_beam_args(
      sys.argv[1:] if argv is None else argv)
  parser = cli.ArgumentParser(
      usage='%(prog)s [flags] [-- beam flags]',
      description=__doc__.split('\n\n')[0],
      epilog=__doc__.split('\n\n', 1)[1],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  configs.add_flags(parser, fields=FIELDS)
  parser.add_argument('--scores-dir',
                      help='where the CSV is copied to, as span-N.csv '
                      '(default: outputs/<problem>/scores)')
  args = parser.parse_args(ours)
  cfg = configs.from_flags(args)
  scores_dir = args.scores_dir or scores_dir_of(cfg.problem)
  pipeline_args = beam_flags.local_run_args(beam_args)

  # Heavy imports (TensorFlow, TFX) only after --help had its chance.
  print(console.LOADING, flush=True)
  console.quiet_imports()
  from pipeline import scoring  # pylint: disable=g-import-not-at-top
  from tfx.orchestration.local.local_dag_runner import LocalDagRunner  # pylint: disable=g-import-not-at-top
  outcome = scoring.run_scoring(cfg, LocalDagRunner, scores_dir,
                                span=cfg.span,
                                beam_pipeline_args=pipeline_args,
                                started_at=START)
  return 0 if outcome.ok else 1


if __name__ == '__main__':
  reproducible.fix_hash_seed()  # before anything runs TFX
  sys.exit(main())
