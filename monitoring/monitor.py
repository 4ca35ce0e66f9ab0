"""Monitor the served model: skew of served traffic and live accuracy.

    python -m monitoring                                  # defaults below
    python -m monitoring --labels data/taxi/span-16/data.csv
    python -m monitoring --problem penguin --labels data/penguin/span-4/data.csv
    python -m monitoring --logs /srv/logs/taxi --training-data train.csv \\
        --baseline-accuracy 0.79 --report /srv/monitoring/report.json

Reads the PredictionLogs the server wrote (a model's TF Serving
`logging_config`, serving/deploy/models-logging.config), keeps those of one
model version (default: the newest logged), and
  1. compares the served instances' raw values with the training data of
     that version (its Examples, found in ML Metadata, or --training-data),
     feature by feature, with the drift check's rule (monitoring/skew.py,
     monitoring/distribution.py): a chi-square test on bins made from the
     training data, significant at --alpha over all features, and an effect
     above --categorical-threshold (L-infinity) / --numeric-threshold
     (Jensen-Shannon);
  2. with --labels (CSV files of the same instances, the label's columns
     included, e.g. the span the traffic came from), joins labels to
     predictions by a fingerprint of the raw features and measures live
     accuracy (and, for a binary task, AUC: monitoring/accuracy.py),
     compared with the Evaluator's accuracy for that version (ML Metadata,
     or --baseline-accuracy);
  3. prints a report and writes it as JSON, atomically, for the CT
     controller: {"model_version", "live_accuracy", "baseline_accuracy",
     "degraded", "reason", "skew": {feature: {"distance", "threshold",
     "p_value", "alpha", "anomalous", "measure"}}, "requests", "labelled",
     "created", ...}.
`degraded` is about accuracy only (live below the baseline by more than
--max-accuracy-drop, on at least --min-labelled labels); skew is reported
per feature and summed up in `skew_detected`.
"""

import argparse
import dataclasses
import datetime
import json
import math
import os
import statistics
import sys
import tempfile
from typing import Any, Dict, List, Optional, Sequence, Tuple

from lineage import metadata_store
from models import problem as problems
from monitoring import config as monitor_config
from monitoring import distribution
from project import cli
from project import display


def _metadata_store(cfg: metadata_store.StoreConfig):
  """The pipeline's ML Metadata store, or None if there is none yet.

  A missing SQLite file is not created (opening one would create it).
  """
  connection = metadata_store.store_config(cfg)
  if connection.HasField('sqlite') and not os.path.exists(
      connection.sqlite.filename_uri):
    return None
  return metadata_store.open_store(connection)


def evaluation_accuracy(store, version: str,
                        metric: str) -> Tuple[Optional[float], str]:
  """The Evaluator's overall accuracy (`metric`: the task's accuracy
  metric) for the model pushed as `version`: its lineage (lineage/provenance.py:
  Pusher -> model_blessing -> the Evaluator that made it -> its
  `evaluation` output) and that output's metrics, read without TFMA's
  Python package."""
  from lineage import provenance  # pylint: disable=g-import-not-at-top
  from lineage import readers  # pylint: disable=g-import-not-at-top
  found = provenance.version_lineage(store, version, read_files=False)
  if found is None or found.pusher is None:
    return None, f'no Pusher of version {version} in ML Metadata'
  if found.evaluation is None:
    return None, 'no Evaluator output for it in ML Metadata'
  uri = found.evaluation.uri
  accuracy = readers.evaluation_metrics(uri).get('candidate', {}).get(metric)
  if accuracy is None:
    return None, f'no {metric} in {uri}'
  return accuracy, f'Evaluator metrics {uri}'


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


def accuracy_upper_bound(accuracy: float, n: int, confidence: float) -> float:
  """One-sided upper confidence bound of an accuracy measured on n labels
  (Wilson score interval: sound near 0 and 1, unlike the normal one)."""
  z = statistics.NormalDist().inv_cdf(confidence)
  centre = accuracy + z * z / (2 * n)
  spread = z * math.sqrt(accuracy * (1 - accuracy) / n + z * z / (4 * n * n))
  return min(1.0, (centre + spread) / (1 + z * z / n))


def verdict(live: Optional[float], baseline: Optional[float], labelled: int,
            thresholds: monitor_config.Thresholds) -> Tuple[bool, str]:
  """(degraded, why) from live vs baseline accuracy.

  Degraded only when the labels show it: even the one-sided upper
  confidence bound of live accuracy (`confidence`, Wilson) is more than
  `max_accuracy_drop` below the evaluation's. 201 labels measure accuracy
  to about +-0.05, so a point estimate 0.06 below would alarm on noise.
  """
  if live is None:
    return False, 'no accuracy: no logged prediction was joined to a label'
  if labelled < thresholds.min_labelled:
    return False, (f'no accuracy verdict: {labelled} labelled predictions, '
                   f'fewer than {thresholds.min_labelled}')
  if baseline is None:
    return False, (f'live accuracy {live:.4f}; no baseline accuracy to '
                   'compare with')
  upper = accuracy_upper_bound(live, labelled, thresholds.confidence)
  floor = baseline - thresholds.max_accuracy_drop
  where = (f'live accuracy {live:.4f} on {labelled} labels (at most '
           f'{upper:.4f} at {thresholds.confidence:.0%} confidence) vs '
           f'evaluation {baseline:.4f}')
  if upper < floor:
    return True, (f'{where}: below it by more than the allowed '
                  f'{thresholds.max_accuracy_drop}')
  return False, (f'{where}: not shown to be more than '
                 f'{thresholds.max_accuracy_drop} below it')


def run(problem: problems.Problem, log_prefix: str,
        thresholds: monitor_config.Thresholds,
        model_version: Optional[str] = None,
        label_files: Optional[List[str]] = None,
        training_data: Optional[Sequence[str]] = None,
        baseline_accuracy: Optional[float] = None,
        store=None) -> Dict[str, Any]:
  """The monitoring report (a JSON-able dict) of one model version of the
  problem's model."""
  from monitoring import accuracy  # pylint: disable=g-import-not-at-top
  from monitoring import prediction_logs  # pylint: disable=g-import-not-at-top
  from monitoring import skew  # pylint: disable=g-import-not-at-top
  kinds = distribution.kinds_of(problem)
  rows = prediction_logs.read(problem, log_prefix)
  versions = prediction_logs.versions(rows)
  if model_version is None and versions:
    model_version = max(versions, key=int)
  rows = [r for r in rows if r.model_version == str(model_version)]
  report: Dict[str, Any] = {
      'problem': problem.name,
      'model_version': str(model_version) if model_version else None,
      'live_accuracy': None, 'live_auc': None,
      'baseline_accuracy': baseline_accuracy,
      'baseline_source': 'given' if baseline_accuracy is not None else None,
      'degraded': False, 'reason': '', 'skew': {}, 'skew_detected': False,
      'skew_anomalies': [], 'training_data': None,
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
  if training_data:
    training = skew.training_data_from_files(training_data, kinds)
  elif store is not None:
    training = skew.training_data(store, str(model_version), kinds)
  notes = []
  if training is None:
    notes.append('no training data (none in ML Metadata for version '
                 f'{model_version}; give --training-data): skew not checked')
  else:
    report['training_data'] = training.source
    found = skew.detect(training, rows, thresholds, kinds)
    report['skew'] = {f.feature: {
        'distance': f.effect, 'threshold': f.threshold,
        'p_value': f.p_value, 'alpha': f.alpha, 'anomalous': f.alarm,
        'measure': f.measure} for f in found.features}
    report['skew_anomalies'] = [skew.describe(f) for f in found.alarms]
    skewed = [f.feature for f in found.alarms]
    report['skew_detected'] = bool(skewed)
    notes.append(f'skew in {", ".join(skewed)}' if skewed else
                 'no training/serving skew (significant and above the '
                 'effect floor)')

  if baseline_accuracy is None and store is not None:
    baseline_accuracy, source = evaluation_accuracy(
        store, str(model_version), problem.task.accuracy_metric)
    report['baseline_accuracy'] = baseline_accuracy
    report['baseline_source'] = source
  if label_files:
    live = accuracy.measure(problem, rows,
                            accuracy.read_labels(problem, label_files))
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
      f'Training data      {report["training_data"] or "-"}',
  ]
  if report['skew']:
    lines.append('')
    lines.append(f'  {"feature":<24} {"measure":<7} {"effect":>7} '
                 f'{"floor":>6} {"p-value":>9} {"alpha":>9}')
    for name, s in report['skew'].items():
      lines.append(f'  {name:<24} {s["measure"]:<7} {s["distance"]:>7.4f} '
                   f'{s["threshold"]:>6.3f} {s["p_value"]:>9.2g} '
                   f'{s["alpha"]:>9.2g}'
                   + ('  SKEW' if s['anomalous'] else ''))
    lines.append('')
  lines += [
      f'Live accuracy      {fmt(report["live_accuracy"])}'
      + (f' (AUC {fmt(report["live_auc"])})' if report['live_auc'] is not None
         else '')
      + f' on {report["labelled"]} labelled, {report["ambiguous"]} ambiguous',
      f'Baseline accuracy  {fmt(report["baseline_accuracy"])} '
      f'({report["baseline_source"] or "none"})',
      f'Skew detected      {"yes" if report["skew_detected"] else "no"}',
      f'Degraded           {"YES" if report["degraded"] else "no"}',
      f'Reason             {report["reason"]}',
  ]
  return '\n'.join(lines)


def parse_args(argv=None) -> argparse.Namespace:
  t = monitor_config.THRESHOLDS
  parser = cli.ArgumentParser(
      prog='python -m monitoring', description=__doc__.split('\n\n')[0],
      formatter_class=argparse.RawDescriptionHelpFormatter,
      epilog=__doc__.split('\n\n', 1)[1])
  parser.add_argument('--logs', default=None,
                      help='the logging_config filename_prefix (or a '
                      'directory of log files) (default: '
                      f'{monitor_config.log_prefix("<problem>")})')
  parser.add_argument('--model-version', default=None,
                      help='model version to report on (default: the newest '
                      'one in the logs)')
  parser.add_argument('--labels', nargs='+', default=None, metavar='CSV',
                      help="CSV files of the served instances with the "
                      "label's columns (e.g. data/<problem>/span-N/data.csv)")
  parser.add_argument('--training-data', nargs='+', default=None,
                      metavar='PATH',
                      help='training data to compare with instead of the '
                      'served version\'s Examples in ML Metadata: CSV files '
                      '(*.csv), Examples artifact directories (their '
                      'Split-train), or GZIP TFRecord files of tf.Examples')
  parser.add_argument('--baseline-accuracy', type=float, default=None,
                      help='evaluation accuracy to compare with instead of '
                      'the Evaluator\'s in ML Metadata')
  parser.add_argument('--report', default=None,
                      help='JSON report path (default: '
                      f'{monitor_config.default_report("<problem>")})')
  parser.add_argument('--alpha', type=float, default=t.alpha,
                      help='skew: chi-square test level over all compared '
                      'features (Bonferroni); a feature is skewed only if '
                      'significant and its effect is above its threshold '
                      '(default: %(default)s)')
  parser.add_argument('--categorical-threshold', type=float,
                      default=t.categorical_linf,
                      help='skew effect floor of categorical features '
                      '(strings, hour, day, community areas): L-infinity '
                      'distance of category shares (default: %(default)s)')
  parser.add_argument('--numeric-threshold', type=float, default=t.numeric_js,
                      help='skew effect floor of numeric features: '
                      'Jensen-Shannon divergence of their bins at the '
                      'training deciles (default: %(default)s)')
  parser.add_argument('--max-accuracy-drop', type=float,
                      default=t.max_accuracy_drop,
                      help='degraded when live accuracy is below the '
                      'baseline by more than this (default: %(default)s)')
  parser.add_argument('--min-labelled', type=int, default=t.min_labelled,
                      help='fewer labelled predictions: no verdict '
                      '(default: %(default)s)')
  metadata_store.add_flags(parser)
  return parser.parse_args(argv)


def main(argv=None) -> int:
  args = parse_args(argv)
  display.quiet_imports()
  thresholds = monitor_config.Thresholds(
      alpha=args.alpha, categorical_linf=args.categorical_threshold,
      numeric_js=args.numeric_threshold,
      max_accuracy_drop=args.max_accuracy_drop,
      min_labelled=args.min_labelled)
  store_cfg = metadata_store.from_flags(args)
  problem = problems.load(store_cfg.problem)
  logs = args.logs or monitor_config.log_prefix(problem.name)
  report_path = args.report or monitor_config.default_report(problem.name)
  store = None
  if not (args.training_data and args.baseline_accuracy is not None):
    store = _metadata_store(store_cfg)
  report = run(problem, logs, thresholds, args.model_version, args.labels,
               args.training_data, args.baseline_accuracy, store)
  write_json_atomically(report_path, report)
  print(format_report(report))
  print(f'Report             {report_path}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
