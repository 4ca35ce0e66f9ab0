"""The lineage CLI: what made a served version, what used a span, a run's nodes.

    python -m lineage version 1795693904     # executions, spans, schema, hparams, metrics, code
    python -m lineage span 4                  # the models trained on span 4, and their versions
    python -m lineage diff 1795690717 1795693904 --json
    python -m lineage run                     # the newest run: every node, its state, its artifacts
    python -m lineage scores 4                # which model scored span 4; its predictions and CSV
    MLMD_MYSQL_PASSWORD=... python -m lineage run --mysql-host db --mysql-user tfx

Reads ML Metadata directly and never imports TFX, TensorFlow or TFMA's
package, so it answers in about a second (lineage/graph.py walks the store,
lineage/readers.py reads the artifacts' files). Takes the runners' ML
Metadata flags and variables, so it reads the store a run wrote.
"""

import argparse
import dataclasses
import json
import os
import sys

from lineage import batch_scoring
from lineage import provenance
from lineage import metadata_store
from lineage import report
from project import cli
from serving import base_path


def _version_or_exit(store, version: int,
                     model_base_path: str) -> provenance.VersionLineage:
  """From ML Metadata; else from the push record in the version directory
  (served or rolled back), for a run killed before it recorded the push."""
  found = provenance.version_lineage(store, version)
  for where in ('', base_path.ROLLED_BACK_DIR):
    if found is None:
      found = provenance.version_lineage_from_record(
          store, os.path.join(model_base_path, where, str(version)))
  if found is None:
    raise SystemExit(f'No Pusher recorded version {version} in this ML '
                     f'Metadata store, and {model_base_path}/{version} holds '
                     'no push record (see `python -m delivery.versions list`).')
  return found


def parse_args(argv=None) -> argparse.Namespace:
  parser = cli.ArgumentParser(prog='python -m lineage',
                              description=__doc__.split('\n\n')[0])
  # Every command reads the store the runners wrote, and where they pushed:
  # their flags (--problem picks the defaults), their variables.
  store = argparse.ArgumentParser(add_help=False)
  metadata_store.add_flags(store, metadata_store.ServedConfig)
  served = argparse.ArgumentParser(add_help=False)
  served.add_argument('--json', action='store_true',
                      help='print JSON instead of text')
  commands = parser.add_subparsers(dest='command', required=True)
  version = commands.add_parser(
      'version', parents=[served, store],
      help='executions, spans, schema, transform graph, hparams, metrics and '
      'code version of a pushed model version')
  version.add_argument('version', type=int,
                       help='a version number under the model base path')
  span = commands.add_parser('span', parents=[served, store],
                             help='the models trained on a span')
  span.add_argument('span', type=int, help='a span number (span-N/)')
  compare = commands.add_parser(
      'diff', parents=[served, store],
      help="what changed between two versions' lineage")
  compare.add_argument('version_a', type=int, metavar='V1',
                       help='the older version')
  compare.add_argument('version_b', type=int, metavar='V2',
                       help='the newer version')
  commands.add_parser(
      'run', parents=[store],
      help="the newest run's nodes, their states and output artifacts")
  scores = commands.add_parser(
      'scores', parents=[store],
      help='which model and version scored a span (score_runner.py), its '
      'Examples, PredictionLogs and CSV')
  scores.add_argument('span', type=int, nargs='?',
                      help='a span number (default: the newest scoring)')
  scores.add_argument('--all', action='store_true',
                      help='every scoring of the span, newest first')
  scores.add_argument('--json', action='store_true',
                      help='print JSON instead of text')
  return parser.parse_args(argv)


def format_scoring(s: batch_scoring.Scoring) -> str:
  """Which model scored a span, and where its rows and predictions are."""
  model = f'Model #{s.model.id}' if s.model else 'Model not recorded'
  lines = [f'Span {s.span} scored by version {s.served_version} ({model}), '
           f'run {s.last_run}:']
  add = lambda k, v: lines.append(f'  {k:<16} {v}')
  if s.model:
    add('model', f'{model}: {s.model.uri}')
    trainer = (f'; trained by Trainer execution {s.trainer.id} (run '
               f'{s.trainer.run})' if s.trainer else '')
    add('', f'pushed as version {", ".join(s.versions) or "none"}{trainer}')
  if s.blessing:
    add('blessing', f'ModelBlessing #{s.blessing.id} (BulkInferrer checked '
        'it)')
  if s.examples:
    add('examples', f'Examples #{s.examples.id}: {s.examples.uri}')
  if s.predictions:
    add('PredictionLogs', f'{s.predictions.type} #{s.predictions.id}: '
        f'{s.predictions.uri}')
  mean = ('' if s.mean_prediction is None else
          f', mean prediction {s.mean_prediction:.4f}')
  add('CSV', f'{s.csv.type} #{s.csv.id}: {s.csv_path} ({s.rows} rows{mean})')
  bulk = (f'BulkInferrer execution {s.bulk_inferrer.id}, '
          if s.bulk_inferrer else '')
  add('scored by', f'{bulk}{s.scorer.node} execution {s.scorer.id} (run '
      f'{s.scorer.run})')
  return '\n'.join(lines)


def main(argv=None) -> int:
  args = parse_args(argv)
  cfg = cli.from_flags(args, metadata_store.ServedConfig)
  connection = metadata_store.store_config(cfg)
  if (connection.HasField('sqlite') and
      not os.path.exists(connection.sqlite.filename_uri)):
    raise SystemExit(f'No ML Metadata store at {connection.sqlite.filename_uri}'
                     ' (run the pipeline first, or pass --metadata-path)')
  store = metadata_store.open_store(connection)
  if args.command == 'run':
    print(report.format_run(store, cfg.pipeline_name))
    return 0
  if args.command == 'scores':
    found = batch_scoring.scorings(store, cfg.pipeline_name, args.span)
    if not found:
      what = 'any span' if args.span is None else f'span {args.span}'
      raise SystemExit(f'No scoring of {what} in this ML Metadata store '
                       '(`make score ARGS="--span N"` scores one).')
    found = found if args.all else found[:1]
    print(json.dumps([dataclasses.asdict(s) for s in found], indent=2,
                     sort_keys=True) if args.json else
          '\n\n'.join(format_scoring(s) for s in found))
    return 0
  model_base_path = cfg.serving_model_dir
  if args.command == 'version':
    found = _version_or_exit(store, args.version, model_base_path)
    data, text = dataclasses.asdict(found), report.format_version(found)
  elif args.command == 'span':
    uses = provenance.span_models(store, args.span)
    data = {'span': args.span, 'models': [dataclasses.asdict(u) for u in uses]}
    text = report.format_span(args.span, uses)
  else:
    data = provenance.diff(
        _version_or_exit(store, args.version_a, model_base_path),
        _version_or_exit(store, args.version_b, model_base_path))
    text = report.format_diff(data)
  print(json.dumps(data, indent=2, sort_keys=True) if args.json else text)
  return 0


if __name__ == '__main__':
  sys.exit(main())
