"""A local, read-only web UI over ML Metadata, the served versions and the
monitoring report: runs and CT decisions, data, models, serving, lineage.

    python -m ui                          # http://127.0.0.1:8080/
    python -m ui --replay outputs/taxi/replay  # what `make replay` left
    python -m ui --port 0                 # any free port (printed)

Pages: / (overview, the runs' timeline), /runs (every pipeline run and CT
decision; /runs/<run>: its components, states, times, artifacts), /data
(per span: rows, anomalies, the gate's verdict; drift over spans with the
floors drawn; /data/spans/<N>: feature distributions from TFDV's
statistics), /models (metrics over versions and per slice, blessed or not
and why, the rule, the baseline), /serving (versions, labels, the
.versions.log history, the monitor's skew and live accuracy),
/versions/<V> (its lineage, drawn; every node links to its page).

It reads the same store as python -m lineage (the same flags) and never
writes. It binds 127.0.0.1 unless --host says otherwise; it has no login,
so do not expose it beyond a machine you trust. The MySQL password is never
shown (it is not a flag; see below). The full request log goes to
--log-file, not the console.
"""

import argparse
import logging
import os
import sys

from lineage import metadata_store
from lineage import secrets
from monitoring import config as monitor_config
from project import cli
from project import paths


def parse_args(argv=None) -> argparse.Namespace:
  parser = cli.ArgumentParser(
      prog='python -m ui', description=__doc__.split('\n\n')[0],
      epilog=__doc__.split('\n\n', 1)[1],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--host', default='127.0.0.1',
                      help='address to listen on (default: %(default)s, '
                      'this machine only)')
  parser.add_argument('--port', type=int, default=8080,
                      help='port (default: %(default)s; 0: any free port)')
  parser.add_argument('--replay', default=None, metavar='DIR',
                      help='show a replay directory (make replay --out DIR):'
                      ' its metadata, serving dir and monitoring report')
  parser.add_argument('--model-config-file', default=None,
                      help='TF Serving model config file whose version '
                      'labels (stable, canary) to show (default: '
                      f'{paths.MODEL_CONFIG_FILE}, which python -m '
                      'delivery.versions write-config writes, if it exists; '
                      'none with --replay)')
  parser.add_argument('--monitoring-report', default=None,
                      help='the monitor\'s report.json (default: '
                      f'{monitor_config.default_report("<problem>")})')
  parser.add_argument('--log-file', default=None,
                      help='request log (default: <outputs>/logs/ui.log)')
  # The store, the problem and where it pushes: the lineage tools' flags.
  metadata_store.add_flags(parser, metadata_store.ServedConfig)
  args = parser.parse_args(argv)
  if args.replay:
    replay = os.path.abspath(args.replay)
    if not os.path.isdir(replay):
      parser.error(f'--replay {args.replay}: no such directory')
    args.metadata_path = paths.metadata_path(os.path.join(replay, 'pipeline'))
    args.serving_dir = os.path.join(replay, 'serving')
    args.monitoring_report = (args.monitoring_report or
                              monitor_config.report_path(replay))
  if (args.model_config_file is None and not args.replay and
      os.path.exists(paths.MODEL_CONFIG_FILE)):
    args.model_config_file = paths.MODEL_CONFIG_FILE
  if not 0 <= args.port <= 65535:
    parser.error(f'--port {args.port}: not a port number')
  return args


def sources_from_args(args: argparse.Namespace):
  from ui import views  # pylint: disable=g-import-not-at-top
  cfg = cli.from_flags(args, metadata_store.ServedConfig)
  return views.Sources(
      connection=metadata_store.store_config(cfg),
      pipeline_name=cfg.pipeline_name,
      model_base_path=cfg.serving_model_dir,
      monitoring_report=(args.monitoring_report or
                         monitor_config.default_report(cfg.problem)),
      model_config_file=args.model_config_file, problem=cfg.problem)


def main(argv=None) -> int:
  args = parse_args(argv)
  log_file = args.log_file or os.path.join(paths.OUTPUT_DIR, 'logs', 'ui.log')
  os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
  logging.basicConfig(filename=log_file, level=logging.INFO,
                      format='%(asctime)s %(levelname)s %(name)s %(message)s')
  from ui import server  # pylint: disable=g-import-not-at-top
  sources = sources_from_args(args)
  try:
    httpd = server.Server((args.host, args.port), sources)
  except OSError as e:
    print(f'python -m ui: error: cannot listen on {args.host}:{args.port}: '
          f'{e.strerror or e}', file=sys.stderr)
    return 1
  host, port = httpd.server_address[:2]
  shown = f'[{host}]' if ':' in host else host
  print(f'tfx-reference UI on http://{shown}:{port}/  (read-only; Ctrl-C stops)')
  print(f'  metadata    {secrets.redact(metadata_store.describe(sources.connection))}')
  print(f'  serving     {sources.model_base_path}')
  print(f'  monitoring  {sources.monitoring_report}')
  print(f'  log         {log_file}')
  if not server.is_loopback(host):
    print(f'  WARNING: listening on {host}: anyone who reaches it can read '
          'the pages (there is no login)')
  sys.stdout.flush()
  try:
    httpd.serve_forever()
  except KeyboardInterrupt:
    pass
  finally:
    httpd.server_close()
  return 0


if __name__ == '__main__':
  sys.exit(main())
