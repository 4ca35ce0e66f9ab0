"""Replay the quarterly spans in time order through the CT controller.

One command shows continuous training on history: spans arrive one at a time
(a symlink per span under <out>/data), and at each span's logical date (the
day its quarter ends) the controller decides whether to run and why, then
the pipeline ingests, validates, trains on the rolling window, evaluates
against the served model and pushes if blessed. Everything goes to its own
outputs directory (default outputs/replay: pipeline root, ML Metadata,
serving dir), restarted from empty on each replay unless --resume.

    python -m continuous_training.replay                       # all bundled spans
    python -m continuous_training.replay --spans 1-4           # a short range
    python -m continuous_training.replay --data-root /tmp/ct   # generated spans
        (python data/generate_spans.py --out /tmp/ct --rows 1000 --spans 8 \\
             --drift payment_type=0.6 --drift-spans 6)

Prints one table row per span (trigger, drift found, candidate AUC vs the
baseline's, blessed, pushed) and writes <out>/report.html: data statistics
and anomalies per span, drift distances, evaluation metrics, push
decisions, and the lineage of every pushed version, read from ML Metadata.
Train steps and window are smaller than `make run`'s so the 16 runs fit in
a learner's wait (configs.REPLAY_DEFAULTS); every one is a flag.
"""

import argparse
import dataclasses
import html
import json
import os
import shutil
import sys
import time
from typing import Any, Dict, List, Optional

from pipeline import configs
from pipeline import console
from continuous_training import controller
from lineage import graph
from lineage import metadata_store
from pipeline import reproducible

START = time.time()
MARKER = '.replay'  # only a directory holding it is ever wiped
PipelineDefaults = configs.PipelineConfig()
# The Evaluator's thresholds (pipeline.eval_config), each a replay flag.
BLESSING_FIELDS = ('min_auc', 'min_balanced_accuracy', 'min_calibration',
                   'max_calibration', 'min_slice_calibration',
                   'max_slice_calibration', 'max_auc_drop')


@dataclasses.dataclass
class Row:
  """One span of the replay, as the table and the report show it."""
  span: int
  date: str
  trigger: str
  ran: bool
  drift: Optional[Any]  # drift.DriftReport
  decision_id: Optional[int]
  ok: Optional[bool] = None
  error: Optional[str] = None
  window: Optional[List[int]] = None
  metrics: Optional[Dict[str, float]] = None
  baseline: Optional[Dict[str, float]] = None
  blessed: Optional[bool] = None
  pushed: Optional[str] = None
  seconds: float = 0.0
  statistics: Optional[Dict[str, Any]] = None
  anomalies: Optional[List[str]] = None
  failures: Optional[List[str]] = None  # why not blessed
  baseline_versions: Optional[List[str]] = None


def quarter(span: int) -> str:
  """Span 1 -> '2013-Q1' (data/README.md)."""
  q = controller.FIRST_QUARTER[0] * 4 + controller.FIRST_QUARTER[1] - 2 + span
  return f'{q // 4}-Q{q % 4 + 1}'


def parse_spans(text: Optional[str], available: List[int]) -> List[int]:
  """'1-4', '1,3,5', '2-3,7' or None (all available), checked against disk."""
  if not text:
    return available
  spans = []
  for part in text.split(','):
    first, _, last = part.strip().partition('-')
    try:
      spans += list(range(int(first), int(last or first) + 1))
    except ValueError:
      raise SystemExit(f'--spans {text!r}: expected e.g. 1-4 or 1,3,5') from None
  missing = sorted(set(spans) - set(available))
  if missing:
    raise SystemExit(f'--spans {text!r}: span(s) {missing} not on disk '
                     f'(available: {available})')
  return sorted(set(spans))


def prepare_out(out: str, resume: bool) -> None:
  """Empties <out> (a directory this command made) unless resuming."""
  if os.path.isdir(out) and not resume and os.listdir(out):
    if not os.path.exists(os.path.join(out, MARKER)):
      raise SystemExit(f'{out} exists and was not made by a replay; choose '
                       'another --out')
    for name in ('pipeline', 'serving', 'data', 'report.html'):
      path = os.path.join(out, name)
      if os.path.isdir(path):
        shutil.rmtree(path)
      elif os.path.exists(path):
        os.remove(path)
  os.makedirs(os.path.join(out, 'data'), exist_ok=True)
  open(os.path.join(out, MARKER), 'w').close()


def arrive(source: str, data_dir: str, span: int) -> None:
  """Span `span` lands on disk (a symlink to the source span directory)."""
  link = os.path.join(data_dir, f'span-{span}')
  if not os.path.lexists(link):
    os.symlink(os.path.abspath(os.path.join(source, f'span-{span}')), link)


def _split_protos(artifact, file_name: str, proto_class) -> Dict[str, Any]:
  """split -> proto TFX wrote for an MLMD artifact with split_names."""
  names = json.loads(artifact.properties['split_names'].string_value or '[]')
  protos = {}
  for split in names:
    path = os.path.join(artifact.uri, f'Split-{split}', file_name)
    if os.path.exists(path):
      with open(path, 'rb') as f:
        protos[split] = proto_class.FromString(f.read())
  return protos


def span_statistics(outcome) -> Optional[Dict[str, Any]]:
  """A few figures of the span the run ingested, from StatisticsGen."""
  from tensorflow_metadata.proto.v0 import statistics_pb2  # pylint: disable=g-import-not-at-top
  node = outcome.nodes.get('StatisticsGen')
  if not node or not node.outputs.get('statistics'):
    return None
  figures: Dict[str, Any] = {'examples': 0}
  protos = _split_protos(node.outputs['statistics'][0], 'FeatureStats.pb',
                         statistics_pb2.DatasetFeatureStatisticsList)
  for split, stats in protos.items():
    for dataset in stats.datasets:
      figures['examples'] += dataset.num_examples
      if split != 'train':
        continue
      for feature in dataset.features:
        name = feature.path.step[0] if feature.path.step else feature.name
        if name in ('fare', 'trip_miles') and feature.HasField('num_stats'):
          figures[f'mean {name}'] = feature.num_stats.mean
        if name == 'company' and feature.HasField('string_stats'):
          # An empty CSV cell is an empty list, not a missing feature.
          values = feature.string_stats.common_stats.tot_num_values
          figures['company missing'] = 1 - values / max(dataset.num_examples, 1)
        if name == 'payment_type' and feature.HasField('string_stats'):
          top = feature.string_stats.top_values
          common = feature.string_stats.common_stats
          if top:
            figures['top payment'] = (
                f'{top[0].value} {top[0].frequency / max(common.num_non_missing, 1):.0%}')
  return figures


def span_anomalies(outcome) -> List[str]:
  """ExampleValidator's anomalies of the ingested span (schema skew)."""
  from tensorflow_metadata.proto.v0 import anomalies_pb2  # pylint: disable=g-import-not-at-top
  node = outcome.nodes.get('ExampleValidator')
  if not node or not node.outputs.get('anomalies'):
    return []
  lines = []
  for split, proto in _split_protos(node.outputs['anomalies'][0],
                                    'SchemaDiff.pb',
                                    anomalies_pb2.Anomalies).items():
    for feature, info in sorted(proto.anomaly_info.items()):
      lines.append(f'{split}: {feature}: {info.short_description}')
  return lines


def replay_span(cfg: configs.PipelineConfig, ct: controller.CTConfig,
                source: str, span: int, make_runner) -> Row:
  """Span arrives, the controller decides at its logical date, maybe runs."""
  arrive(source, cfg.data_root, span)
  now = controller.logical_date(span)
  print(f'\n=== span {span} ({quarter(span)}) arrives; controller clock '
        f'{now.date()} ===', flush=True)
  start = time.time()
  result = controller.run_once(cfg, ct, make_runner, now=now)
  d = result.decision
  row = Row(span=span, date=str(now.date()), trigger=d.trigger, ran=d.run,
            drift=d.drift, decision_id=d.execution_id)
  outcome = result.outcome
  if outcome is not None:
    row.ok, row.error, row.window = outcome.ok, outcome.error, outcome.window
    row.metrics, row.baseline = outcome.metrics, outcome.baseline_metrics
    row.blessed, row.pushed = outcome.blessed, outcome.pushed_version
    row.failures = outcome.blessing_failures
    row.baseline_versions = outcome.baseline_versions
    row.statistics = span_statistics(outcome)
    row.anomalies = span_anomalies(outcome)
  row.seconds = time.time() - start
  return row


def _auc(metrics: Optional[Dict[str, float]]) -> str:
  return f'{metrics["auc"]:.3f}' if metrics and 'auc' in metrics else '-'


def _drift_cell(row: Row) -> str:
  if row.drift is None:
    return '-'
  drifted = row.drift.drifted
  return ', '.join(f.feature for f in drifted) if drifted else 'no'


def _window(row: Row) -> str:
  if not row.window:
    return '-'
  return (f'{row.window[0]}-{row.window[-1]}' if len(row.window) > 1
          else str(row.window[0]))


def _result(row: Row) -> Dict[str, str]:
  if not row.ran:
    return {'blessed': '-', 'pushed': '-'}
  if not row.ok:
    return {'blessed': 'STOPPED', 'pushed': '-'}
  return {'blessed': {True: 'yes', False: 'NO', None: '-'}[row.blessed],
          'pushed': row.pushed or 'no'}


TABLE_COLUMNS = ('span', 'quarter', 'trigger', 'drift found', 'window',
                 'AUC', 'bal. acc.', 'baseline AUC', 'blessed', 'pushed',
                 'time')
BLESSED_COLUMN = TABLE_COLUMNS.index('blessed')


def _metric(metrics: Optional[Dict[str, float]], key: str) -> str:
  return f'{metrics[key]:.3f}' if metrics and key in metrics else '-'


def table_rows(rows: List[Row]) -> List[List[str]]:
  return [[str(r.span), quarter(r.span), r.trigger, _drift_cell(r),
           _window(r), _auc(r.metrics),
           _metric(r.metrics, 'balanced_accuracy'), _auc(r.baseline), _result(r)['blessed'], _result(r)['pushed'],
           f'{r.seconds:.0f} s']
          for r in rows]


def format_table(rows: List[Row]) -> str:
  cells = [list(TABLE_COLUMNS)] + table_rows(rows)
  widths = [max(len(c[i]) for c in cells) for i in range(len(TABLE_COLUMNS))]
  lines = ['  '.join(c.ljust(w) for c, w in zip(line, widths)).rstrip()
           for line in cells]
  lines.insert(1, '  '.join('-' * w for w in widths))
  return '\n'.join(lines)


@dataclasses.dataclass
class PushedLineage:
  version: str
  spans: List[int]
  trainer_execution: int
  pipeline_run: str
  decision: str  # the CT decision that started the run


def pushed_lineage(cfg: configs.PipelineConfig) -> List[PushedLineage]:
  """Every pushed version -> the spans its model was trained on (MLMD).

  The one lineage walk (pipeline/graph.py: PushedModel <- Pusher <- Model
  <- Trainer <- Examples, cached executions handled); the run's CTDecision
  says why the run happened.
  """
  store = metadata_store.open_store(metadata_store.store_config(cfg))
  found = []
  for pushed in store.get_artifacts_by_type('PushedModel'):
    if metadata_store.custom_property(pushed, 'pushed') != 1:
      continue
    version = str(metadata_store.custom_property(pushed, 'pushed_version'))
    made = graph.version_lineage(store, version, read_files=False)
    if made is None or made.pusher is None:
      continue
    decision = ''
    run = made.pusher.run and store.get_context_by_type_and_name(
        'pipeline_run', made.pusher.run)
    if run:
      for e in store.get_executions_by_context(run.id):
        if e.type == controller.EXECUTION_TYPE:
          decision = (f'{e.type} {e.id}: '
                      f'{e.properties["trigger"].string_value}')
    found.append(PushedLineage(
        version=version, spans=[s.span for s in made.spans],
        trainer_execution=made.trainer.id if made.trainer else 0,
        pipeline_run=made.pusher.run or '', decision=decision))
  return sorted(found, key=lambda p: p.version)


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f2f2f2} .bad{background:#fdd} .good{background:#dfd}
.muted{color:#888} code{background:#f6f6f6;padding:1px 3px}
"""


def _html_table(header: List[str], rows: List[List[Any]]) -> str:
  def cell(value: Any, tag: str = 'td') -> str:
    css = ''
    if isinstance(value, tuple):
      value, css = value
    return f'<{tag}{f" class={css!r}" if css else ""}>{html.escape(str(value))}</{tag}>'
  head = ''.join(cell(h, 'th') for h in header)
  body = ''.join('<tr>' + ''.join(cell(v) for v in row) + '</tr>'
                 for row in rows)
  return f'<table><tr>{head}</tr>{body}</table>'


def write_report(path: str, cfg: configs.PipelineConfig,
                 ct: controller.CTConfig, rows: List[Row],
                 lineage: List[PushedLineage], command: str,
                 seconds: float, source: str) -> None:
  """Self-contained HTML: no scripts, no external files."""
  parts = [f'<!doctype html><html><head><meta charset="utf-8">'
           f'<title>CT replay</title><style>{_CSS}</style></head><body>',
           '<h1>Continuous-training replay</h1>',
           f'<p>Command: <code>{html.escape(command)}</code><br>'
           f'Data: <code>{html.escape(os.path.abspath(source))}</code> '
           f'spans {rows[0].span if rows else ""}-{rows[-1].span if rows else ""}; '
           f'window {cfg.window_spans} spans, {cfg.train_steps} train steps; '
           f'drift thresholds L-inf {ct.drift_linf_threshold:g} (string '
           f'features), JSD {ct.drift_jsd_threshold:g} (numeric); blessing: '
           f'AUC &ge; {cfg.min_auc:g}, balanced accuracy &ge; '
           f'{cfg.min_balanced_accuracy:g}, calibration in '
           f'[{cfg.min_calibration:g}, {cfg.max_calibration:g}] (card trips '
           f'[{cfg.min_slice_calibration:g}, {cfg.max_slice_calibration:g}]), '
           f'AUC &ge; baseline &minus; {cfg.max_auc_drop:g}. '
           f'Wall time {seconds:.0f} s.</p>']

  parts.append('<h2>Per span</h2>')
  summary = []
  for r, cells in zip(rows, table_rows(rows)):
    styled = list(cells)
    if r.drift is not None and r.drift.drifted:
      styled[3] = (cells[3], 'bad')
    blessed = cells[BLESSED_COLUMN]
    if blessed in ('NO', 'STOPPED'):
      styled[BLESSED_COLUMN] = (blessed, 'bad')
    elif blessed == 'yes':
      styled[BLESSED_COLUMN] = (blessed, 'good')
    summary.append(styled)
  parts.append(_html_table(list(TABLE_COLUMNS), summary))

  parts.append('<h2>Data statistics and anomalies</h2><p>From the '
               'StatisticsGen and ExampleValidator artifacts of each run '
               '(train split for means and shares).</p>')
  stat_keys = ['examples', 'mean fare', 'mean trip_miles', 'company missing',
               'top payment']
  stat_rows = []
  for r in rows:
    s = r.statistics or {}
    values = []
    for k in stat_keys:
      v = s.get(k, '-')
      values.append(f'{v:.1%}' if k == 'company missing' and v != '-' else
                    f'{v:.2f}' if isinstance(v, float) else v)
    problems = r.anomalies or ([r.error] if r.ran and not r.ok else [])
    stat_rows.append([r.span, quarter(r.span)] + values + [
        ('; '.join(problems), 'bad') if problems else 'none'])
  parts.append(_html_table(['span', 'quarter'] + stat_keys + ['anomalies'],
                           stat_rows))

  parts.append('<h2>Drift against the previous span</h2><p>The drift rule '
               '(monitoring/distribution.py): per feature a chi-square test '
               'of homogeneity on bins made from the previous span (numeric: '
               'its deciles; categorical: its categories, rare ones pooled) '
               'and an effect size, L-infinity of category shares or '
               'Jensen-Shannon divergence of the bins. A cell is the effect '
               'and the p-value; red = drifted (significant at '
               f'{ct.drift_alpha:g} over all features, Bonferroni, and the '
               f'effect above its floor, L-inf {ct.drift_linf_threshold:g} / '
               f'JSD {ct.drift_jsd_threshold:g}). The previous span\'s values '
               'come from the Examples ExampleGen made of it when ML '
               'Metadata has them.</p>')
  features = sorted({f.feature for r in rows if r.drift
                     for f in r.drift.features})
  measures = {f.feature: f.comparator for r in rows if r.drift
              for f in r.drift.features}
  drift_rows = []
  for r in rows:
    if r.drift is None:
      continue
    by_name = {f.feature: f for f in r.drift.features}
    drift_rows.append([f'{r.drift.span} vs {r.drift.previous_span}'] + [
        (f'{by_name[n].distance:.3f} (p {by_name[n].p_value:.1g})',
         'bad' if by_name[n].drifted else '')
        if n in by_name else '-' for n in features])
  header = ['span'] + [f'{n} ({measures[n]})' for n in features]
  parts.append(_html_table(header, drift_rows) if drift_rows else
               '<p class="muted">No span was compared.</p>')

  parts.append('<h2>Evaluation and push decisions</h2>')
  eval_rows = []
  for r in rows:
    m, b = r.metrics or {}, r.baseline or {}
    fmt = lambda d, k: f'{d[k]:.4f}' if k in d else '-'
    majority = (f'{1 - m["mean_label"]:.4f}' if 'mean_label' in m else '-')
    blessed = _result(r)['blessed']
    if r.failures:
      blessed = (f'{blessed}: ' + '; '.join(r.failures), 'bad')
    eval_rows.append([r.span, r.trigger, _window(r), fmt(m, 'auc'),
                      fmt(b, 'auc'), fmt(m, 'balanced_accuracy'),
                      fmt(b, 'balanced_accuracy'), fmt(m, 'binary_accuracy'),
                      majority, fmt(m, 'calibration'),
                      int(m['example_count']) if 'example_count' in m else '-',
                      ', '.join(r.baseline_versions or []) or '-', blessed,
                      _result(r)['pushed'], r.decision_id or '-'])
  parts.append('<p>The baseline is the version being served '
               '(pipeline/baseline.py). Accuracy is shown next to the '
               'majority class\'s (saying "no big tip" to every trip): it '
               'has no threshold, balanced accuracy has.</p>')
  parts.append(_html_table(
      ['span', 'trigger', 'window', 'AUC', 'baseline AUC',
       'balanced accuracy', 'baseline balanced accuracy', 'accuracy',
       'majority class', 'calibration', 'eval examples', 'baseline version',
       'blessed', 'pushed', 'CTDecision execution'], eval_rows))

  parts.append('<h2>Lineage of pushed versions</h2><p>Read from ML Metadata: '
               'PushedModel &larr; Pusher &larr; Model &larr; Trainer '
               '&larr; Examples (one per span).</p>')
  parts.append(_html_table(
      ['version', 'trained on spans', 'Trainer execution', 'pipeline_run',
       'started by'],
      [[p.version, ', '.join(map(str, p.spans)), p.trainer_execution,
        p.pipeline_run, p.decision] for p in lineage]) if lineage else
               '<p class="muted">Nothing was pushed.</p>')

  parts.append('<h2>Decisions</h2><ul>')
  for r in rows:
    if r.drift is not None:
      parts.append(f'<li>span {r.span}: {html.escape(r.drift.summary())}</li>')
  parts.append('</ul></body></html>')
  with open(path, 'w') as f:
    f.write('\n'.join(parts))


def main(argv: Optional[List[str]] = None) -> int:
  parser = argparse.ArgumentParser(
      description=__doc__.split('\n\n')[0],
      epilog=__doc__.split('\n\n', 1)[1],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--spans', default=None,
                      help='spans to replay, e.g. 1-4 or 1,3,5 (default: all '
                      'under --data-root)')
  parser.add_argument('--data-root', default=PipelineDefaults.data_root,
                      help='source span-N/ directories (default: %(default)s)')
  parser.add_argument('--out', default=configs.REPLAY_DIR,
                      help='replay outputs: pipeline root, metadata, serving '
                      'dir, report.html (default: %(default)s)')
  parser.add_argument('--resume', action='store_true',
                      help='keep what an earlier replay left in --out')
  helps = {f.name: f.metadata['help']
           for f in dataclasses.fields(configs.PipelineConfig)}
  for name, default in configs.REPLAY_DEFAULTS.items():
    parser.add_argument('--' + name.replace('_', '-'), type=int,
                        default=default,
                        help=f'{helps[name]} (default: %(default)s)')
  parser.add_argument('--no-cache', action='store_true',
                      help='do not reuse cached component executions')
  for name in BLESSING_FIELDS:
    parser.add_argument('--' + name.replace('_', '-'), type=float,
                        default=getattr(PipelineDefaults, name),
                        help=f'{helps[name]} (default: %(default)s)')
  controller.add_ct_flags(parser)
  parser.set_defaults(monitoring_report=None)
  args = parser.parse_args(argv)

  console.quiet_imports()  # before TensorFlow loads (run_pipeline imports it)
  from pipeline.run_pipeline import spans_on_disk  # pylint: disable=g-import-not-at-top
  spans = parse_spans(args.spans, spans_on_disk(args.data_root))
  if not spans:
    raise SystemExit(f'No span-N/ directories under {args.data_root}')
  out = os.path.abspath(args.out)
  prepare_out(out, args.resume)
  cfg = configs.PipelineConfig(
      data_root=os.path.join(out, 'data'),
      pipeline_root=os.path.join(out, 'pipeline'),
      serving_dir=os.path.join(out, 'serving'),
      window_spans=args.window_spans, train_steps=args.train_steps,
      eval_steps=args.eval_steps, enable_cache=not args.no_cache,
      **{name: getattr(args, name) for name in BLESSING_FIELDS})
  if args.monitoring_report is None:  # the replay's own: none unless put there
    args.monitoring_report = os.path.join(out, 'monitoring', 'report.json')
  ct = controller.ct_from_flags(args)
  command = 'python -m continuous_training.replay ' + ' '.join(
      sys.argv[1:] if argv is None else argv)
  print(f'Replaying {len(spans)} span(s) {spans[0]}..{spans[-1]} of '
        f'{args.data_root} through the CT controller -> {out}\n'
        f'Loading TensorFlow and TFX (~15 s) ...', flush=True)
  console.quiet_logging(os.path.join(cfg.pipeline_root, 'logs',
                                     time.strftime('replay-%Y%m%d-%H%M%S.log')))
  from tfx.orchestration.local.local_dag_runner import LocalDagRunner  # pylint: disable=g-import-not-at-top

  rows = []
  for span in spans:
    rows.append(replay_span(cfg, ct, args.data_root, span, LocalDagRunner))
  lineage = pushed_lineage(cfg)
  seconds = time.time() - START
  report = os.path.join(out, 'report.html')
  write_report(report, cfg, ct, rows, lineage, command.strip(), seconds,
               args.data_root)

  print(f'\nReplay of spans {spans[0]}..{spans[-1]} '
        f'({seconds:.0f} s wall time, window {cfg.window_spans}, '
        f'{cfg.train_steps} train steps):\n', flush=True)
  print(format_table(rows))
  drifted = [r.span for r in rows if r.drift is not None and r.drift.drifted]
  not_blessed = [r.span for r in rows if r.ran and r.blessed is False]
  stopped = [r.span for r in rows if r.ran and r.ok is False]
  print(f'\n  drift detected     {", ".join(map(str, drifted)) or "none"}')
  print(f'  not blessed        {", ".join(map(str, not_blessed)) or "none"}')
  for r in rows:
    if r.ran and r.blessed is False and r.failures:
      print(f'    span {r.span}: {"; ".join(r.failures)}')
  if stopped:
    print(f'  stopped (anomalies) {", ".join(map(str, stopped))}')
  for p in lineage:
    print(f'  version {p.version}  trained on spans '
          f'{", ".join(map(str, p.spans))}')
  print(f'  report             {os.path.relpath(report)}')
  print(f'  metadata           {os.path.relpath(cfg.metadata_path)}')
  return 1 if stopped and len(stopped) == len([r for r in rows if r.ran]) else 0


if __name__ == '__main__':
  reproducible.fix_hash_seed()  # before anything runs TFX
  sys.exit(main())
