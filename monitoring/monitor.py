"""Monitor the served model: skew of served traffic and live accuracy.

    python -m monitoring                                  # defaults below
    python -m monitoring --labels data/taxi/span-16/data.csv
    python -m monitoring --logs /srv/logs/taxi --training-stats stats.pb \\
        --baseline-accuracy 0.79 --report /srv/monitoring/report.json

Reads the PredictionLogs the server wrote (a model's TF Serving
`logging_config`, serving/deploy/models-logging.config), keeps those of one
model version (default: the newest logged), and
  1. computes TFDV statistics of the served instances and compares them
     with the training statistics of that version (found in ML Metadata, or
     --training-stats): L-infinity for categorical, Jensen-Shannon for
     numeric features (monitoring/skew.py);
  2. with --labels (CSV files of the same trips, tips included, e.g. the
     span the traffic came from), joins labels to predictions by a
     fingerprint of the raw features and measures live accuracy and AUC
     (monitoring/accuracy.py), compared with the Evaluator's accuracy for
     that version (ML Metadata, or --baseline-accuracy);
  3. prints a report and writes it as JSON, atomically, for the CT
     controller: {"model_version", "live_accuracy", "baseline_accuracy",
     "degraded", "reason", "skew": {feature: {"distance", "threshold",
     "anomalous"}}, "requests", "labelled", "created", ...}.
`degraded` is about accuracy only (live below the baseline by more than
--max-accuracy-drop, on at least --min-labelled labels); skew is reported
per feature and summed up in `skew_detected`.
"""

import argparse
import dataclasses
import datetime
import json
import os
import sys
import tempfile
from typing import Any, Dict, List, Optional, Tuple

from monitoring import config as monitor_config
from pipeline import configs


def _metadata_store(cfg: configs.PipelineConfig):
  """The pipeline's ML Metadata store, or None if there is none yet.

  A missing SQLite file is not created (opening one would create it).
  """
  from pipeline import metadata_store  # pylint: disable=g-import-not-at-top
  connection = metadata_store.store_config(cfg)
  if connection.HasField('sqlite') and not os.path.exists(
      connection.sqlite.filename_uri):
    return None
  return metadata_store.open_store(connection)


def evaluation_accuracy(store, version: str) -> Tuple[Optional[float], str]:
  """The Evaluator's overall binary accuracy for the model pushed as
  `version`: Pusher -> its model_blessing -> the Evaluator that made it
  -> that execution's `evaluation` output (TFMA metrics)."""
  from monitoring import skew  # pylint: disable=g-import-not-at-top
  inputs = skew.pusher_inputs(store, version)
  if not inputs or 'model_blessing' not in inputs:
    return None, f'no Pusher of version {version} in ML Metadata'
  evaluator = skew._producer(store, inputs['model_blessing'][0])  # pylint: disable=protected-access
  evaluation = None
  for e in store.get_events_by_execution_ids([evaluator]):
    if e.type == e.OUTPUT and e.path.steps and \
        e.path.steps[0].key == 'evaluation':
      (evaluation,) = store.get_artifacts_by_id([e.artifact_id])
  if evaluation is None:
    return None, 'no Evaluator output for it in ML Metadata'
  import tensorflow_model_analysis as tfma  # pylint: disable=g-import-not-at-top
  for metrics in tfma.load_metrics(evaluation.uri):
    if metrics.slice_key.single_slice_keys:
      continue  # a per-payment_type slice
    for kv in metrics.metric_keys_and_values:
      if (kv.key.name == 'binary_accuracy' and not kv.key.is_diff and
          kv.key.model_name != 'baseline'):
        return (kv.value.double_value.value,
                f'Evaluator metrics {evaluation.uri}')
  return None, f'no binary_accuracy in {evaluation.uri}'


def write_json_atomically(path: str, report: Dict[str, Any]) -> None:
  """Readers (the CT controller) see the old report or the new, never half."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix='.report-', suffix='.tmp')
  try:
    with os.fdopen(fd, 'w') as f:
      json.dump(report, f, indent=2)
      f.write('\n')
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def verdict(live: Optional[float], baseline: Optional[float], labelled: int,
            thresholds: monitor_config.Thresholds) -> Tuple[bool, str]:
  """(degraded, why) from live vs baseline accuracy."""
  if live is None:
    return False, 'no accuracy: no logged prediction was joined to a label'
  if labelled < thresholds.min_labelled:
    return False, (f'no accuracy verdict: {labelled} labelled predictions, '
                   f'fewer than {thresholds.min_labelled}')
  if baseline is None:
    return False, (f'live accuracy {live:.4f}; no baseline accuracy to '
                   'compare with')
  drop = baseline - live
  if drop > thresholds.max_accuracy_drop:
    return True, (f'live accuracy {live:.4f} is {drop:.4f} below the '
                  f'evaluation accuracy {baseline:.4f} (allowed drop '
                  f'{thresholds.max_accuracy_drop})')
  return False, (f'live accuracy {live:.4f} vs evaluation {baseline:.4f}: '
                 f'within the allowed drop of {thresholds.max_accuracy_drop}')


def run(log_prefix: str, thresholds: monitor_config.Thresholds,
        model_version: Optional[str] = None,
        label_files: Optional[List[str]] = None,
        training_stats: Optional[str] = None,
        baseline_accuracy: Optional[float] = None,
        store=None) -> Dict[str, Any]:
  """The monitoring report (a JSON-able dict) of one model version."""
  from monitoring import accuracy  # pylint: disable=g-import-not-at-top
  from monitoring import prediction_logs  # pylint: disable=g-import-not-at-top
  from monitoring import skew  # pylint: disable=g-import-not-at-top
  rows = prediction_logs.read(log_prefix)
  versions = prediction_logs.versions(rows)
  if model_version is None and versions:
    model_version = max(versions, key=int)
  rows = [r for r in rows if r.model_version == str(model_version)]
  report: Dict[str, Any] = {
      'model_version': str(model_version) if model_version else None,
      'live_accuracy': None, 'live_auc': None,
      'baseline_accuracy': baseline_accuracy,
      'baseline_source': 'given' if baseline_accuracy is not None else None,
      'degraded': False, 'reason': '', 'skew': {}, 'skew_detected': False,
      'skew_anomalies': [], 'training_statistics': None,
      'requests': len(rows), 'labelled': 0, 'ambiguous': 0,
      'log_prefix': log_prefix, 'logged_versions': versions,
      'thresholds': dataclasses.asdict(thresholds),
      'created': datetime.datetime.now(datetime.timezone.utc).isoformat(),
  }
  if not rows:
    report['reason'] = (f'no logged predictions under {log_prefix}'
                        + (f' for version {model_version}'
                           if model_version else ''))
    return report

  training = None
  if training_stats:
    training = skew.TrainingData(skew.load_statistics(training_stats),
                                 f'file {training_stats}')
  elif store is not None:
    training = skew.training_statistics(store, str(model_version))
  notes = []
  if training is None:
    notes.append('no training statistics (none in ML Metadata for version '
                 f'{model_version}; give --training-stats): skew not checked')
  else:
    report['training_statistics'] = training.source
    found, messages = skew.detect(training.statistics,
                                  skew.served_statistics(rows), thresholds)
    report['skew'] = {k: {'distance': v.distance, 'threshold': v.threshold,
                          'anomalous': v.anomalous, 'measure': v.measure}
                      for k, v in found.items()}
    report['skew_anomalies'] = messages
    skewed = [k for k, v in found.items() if v.anomalous]
    report['skew_detected'] = bool(skewed)
    notes.append(f'skew in {", ".join(skewed)}' if skewed else
                 'no training/serving skew above the thresholds')

  if baseline_accuracy is None and store is not None:
    baseline_accuracy, source = evaluation_accuracy(store, str(model_version))
    report['baseline_accuracy'] = baseline_accuracy
    report['baseline_source'] = source
  if label_files:
    live = accuracy.measure(rows, accuracy.read_labels(label_files),
                            thresholds.decision_threshold)
    report.update(live_accuracy=live.accuracy, live_auc=live.auc,
                  labelled=live.labelled, ambiguous=live.ambiguous)
    degraded, why = verdict(live.accuracy, baseline_accuracy, live.labelled,
                            thresholds)
  else:
    degraded, why = False, 'no labels given (--labels): accuracy not measured'
  report['degraded'] = degraded
  report['reason'] = '; '.join([why] + notes)
  return report


def format_report(report: Dict[str, Any]) -> str:
  """The report for humans: what was served, skew per feature, accuracy."""
  fmt = lambda v: '-' if v is None else f'{v:.4f}'  # pylint: disable=unnecessary-lambda-assignment
  lines = [
      f'Model version      {report["model_version"] or "-"}',
      f'Logged instances   {report["requests"]} (all versions: '
      f'{report["logged_versions"] or "none"})',
      f'Training stats     {report["training_statistics"] or "-"}',
  ]
  if report['skew']:
    lines.append('')
    lines.append(f'  {"feature":<24} {"measure":<28} {"distance":>9} '
                 f'{"threshold":>9}')
    for name, s in report['skew'].items():
      lines.append(f'  {name:<24} {s["measure"]:<28} {s["distance"]:>9.4f} '
                   f'{s["threshold"]:>9.4f}'
                   + ('  SKEW' if s['anomalous'] else ''))
    lines.append('')
  lines += [
      f'Live accuracy      {fmt(report["live_accuracy"])} (AUC '
      f'{fmt(report["live_auc"])}) on {report["labelled"]} labelled, '
      f'{report["ambiguous"]} ambiguous',
      f'Baseline accuracy  {fmt(report["baseline_accuracy"])} '
      f'({report["baseline_source"] or "none"})',
      f'Skew detected      {"yes" if report["skew_detected"] else "no"}',
      f'Degraded           {"YES" if report["degraded"] else "no"}',
      f'Reason             {report["reason"]}',
  ]
  return '\n'.join(lines)


def parse_args(argv=None) -> argparse.Namespace:
  t = monitor_config.THRESHOLDS
  parser = argparse.ArgumentParser(
      prog='python -m monitoring', description=__doc__.split('\n\n')[0],
      formatter_class=argparse.RawDescriptionHelpFormatter,
      epilog=__doc__.split('\n\n', 1)[1])
  parser.add_argument('--logs', default=monitor_config.LOG_PREFIX,
                      help='the logging_config filename_prefix (or a '
                      'directory of log files) (default: %(default)s)')
  parser.add_argument('--model-version', default=None,
                      help='model version to report on (default: the newest '
                      'one in the logs)')
  parser.add_argument('--labels', nargs='+', default=None, metavar='CSV',
                      help='CSV files of the served trips with their tips '
                      '(e.g. data/taxi/span-16/data.csv)')
  parser.add_argument('--training-stats', default=None,
                      help='training DatasetFeatureStatisticsList (binary, '
                      'or text if *.pbtxt) instead of ML Metadata\'s')
  parser.add_argument('--baseline-accuracy', type=float, default=None,
                      help='evaluation accuracy to compare with instead of '
                      'the Evaluator\'s in ML Metadata')
  parser.add_argument('--report', default=monitor_config.REPORT_PATH,
                      help='JSON report path (default: %(default)s)')
  parser.add_argument('--categorical-threshold', type=float,
                      default=t.categorical_linf,
                      help='L-infinity skew threshold (default: %(default)s)')
  parser.add_argument('--numeric-threshold', type=float, default=t.numeric_js,
                      help='Jensen-Shannon skew threshold (default: '
                      '%(default)s)')
  parser.add_argument('--max-accuracy-drop', type=float,
                      default=t.max_accuracy_drop,
                      help='degraded when live accuracy is below the '
                      'baseline by more than this (default: %(default)s)')
  parser.add_argument('--min-labelled', type=int, default=t.min_labelled,
                      help='fewer labelled predictions: no verdict '
                      '(default: %(default)s)')
  configs.add_flags(parser, configs.METADATA_FIELDS)
  return parser.parse_args(argv)


def main(argv=None) -> int:
  args = parse_args(argv)
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
  thresholds = monitor_config.Thresholds(
      categorical_linf=args.categorical_threshold,
      numeric_js=args.numeric_threshold,
      max_accuracy_drop=args.max_accuracy_drop,
      min_labelled=args.min_labelled)
  store = None
  if not (args.training_stats and args.baseline_accuracy is not None):
    store = _metadata_store(configs.from_flags(args))
  report = run(args.logs, thresholds, args.model_version, args.labels,
               args.training_stats, args.baseline_accuracy, store)
  write_json_atomically(args.report, report)
  print(format_report(report))
  print(f'Report             {args.report}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
