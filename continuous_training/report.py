"""What a replay shows: the table it prints and the HTML report it writes.

One `Row` per replayed span (the controller's decision and, when it ran, the
run's outcome); the table (`format_table`) is what the replay prints, the
report (`write_report`, <out>/report.html) adds the data statistics and
anomalies of each ingested span, drift distances, evaluation metrics, push
decisions and the lineage of every pushed version, read from the run's
artifacts and ML Metadata. Self-contained HTML: no scripts, no external
files.
"""

import dataclasses
import html
import os
from typing import Any, Dict, List, Optional

from continuous_training import config as ct_config
from continuous_training import decisions
from data import spans
from lineage import graph
from lineage import provenance
from lineage import metadata_store
from lineage import readers
from models import problem as problems
from models import tasks
from pipeline import configs
from project import charts


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


def statistics_keys(problem: problems.Problem) -> List[str]:
  """The figures span_statistics gives for a problem: examples, the mean
  of its first two z-scored features, the share of the most common value
  of its first string feature."""
  numeric = [f.name for f in problem.features
             if f.encoding == problems.Z_SCORE][:2]
  text = [f.name for f in problem.features if f.dtype == 'string'][:1]
  return (['examples'] + [f'mean {n}' for n in numeric] +
          [f'top {n}' for n in text])


def span_statistics(outcome, problem: problems.Problem
                    ) -> Optional[Dict[str, Any]]:
  """A few figures of the span the run ingested, from StatisticsGen
  (statistics_keys)."""
  from tensorflow_metadata.proto.v0 import statistics_pb2  # pylint: disable=g-import-not-at-top
  node = outcome.nodes.get('StatisticsGen')
  if not node or not node.outputs.get('statistics'):
    return None
  wanted = set(statistics_keys(problem))
  figures: Dict[str, Any] = {'examples': 0}
  protos = readers.split_protos(node.outputs['statistics'][0], 'FeatureStats.pb',
                         statistics_pb2.DatasetFeatureStatisticsList)
  for split, stats in protos.items():
    for dataset in stats.datasets:
      figures['examples'] += dataset.num_examples
      if split != 'train':
        continue
      for feature in dataset.features:
        name = feature.path.step[0] if feature.path.step else feature.name
        if f'mean {name}' in wanted and feature.HasField('num_stats'):
          figures[f'mean {name}'] = feature.num_stats.mean
        if f'top {name}' in wanted and feature.HasField('string_stats'):
          top = feature.string_stats.top_values
          common = feature.string_stats.common_stats
          if top:
            figures[f'top {name}'] = (
                f'{top[0].value} {top[0].frequency / max(common.num_non_missing, 1):.0%}')
  return figures


def span_anomalies(outcome) -> List[str]:
  """ExampleValidator's anomalies of the ingested span (schema skew)."""
  from tensorflow_metadata.proto.v0 import anomalies_pb2  # pylint: disable=g-import-not-at-top
  node = outcome.nodes.get('ExampleValidator')
  if not node or not node.outputs.get('anomalies'):
    return []
  lines = []
  for split, proto in readers.split_protos(node.outputs['anomalies'][0],
                                    'SchemaDiff.pb',
                                    anomalies_pb2.Anomalies).items():
    for feature, info in sorted(proto.anomaly_info.items()):
      lines.append(f'{split}: {feature}: {info.short_description}')
  return lines


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


def table_columns(task: tasks.Task) -> List[str]:
  """The printed table's columns: the task's first headline metric, its
  balanced accuracy, the baseline's first headline metric (for taxi: AUC,
  bal. acc., baseline AUC)."""
  first = task.labels[task.headline[0]]
  return ['span', 'quarter', 'trigger', 'drift found', 'window', first,
          'bal. acc.', f'baseline {first}', 'blessed', 'pushed', 'time']


BLESSED_COLUMN = 8  # table_columns' 'blessed'


def _metric(metrics: Optional[Dict[str, float]], key: str) -> str:
  return f'{metrics[key]:.3f}' if metrics and key in metrics else '-'


def table_rows(rows: List[Row], task: tasks.Task) -> List[List[str]]:
  first = task.headline[0]
  return [[str(r.span), spans.quarter(r.span), r.trigger, _drift_cell(r),
           _window(r), _metric(r.metrics, first),
           _metric(r.metrics, task.balanced_metric),
           _metric(r.baseline, first),
           _result(r)['blessed'], _result(r)['pushed'],
           f'{r.seconds:.0f} s']
          for r in rows]


def format_table(rows: List[Row], task: tasks.Task) -> str:
  columns = table_columns(task)
  cells = [columns] + table_rows(rows, task)
  widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
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

  The one lineage walk (lineage/graph.py: PushedModel <- Pusher <- Model
  <- Trainer <- Examples, cached executions handled); the run's CTDecision
  says why the run happened.
  """
  store = metadata_store.open_store(metadata_store.store_config(cfg))
  found = []
  for pushed in store.get_artifacts_by_type('PushedModel'):
    if metadata_store.custom_property(pushed, 'pushed') != 1:
      continue
    version = str(metadata_store.custom_property(pushed, 'pushed_version'))
    made = provenance.version_lineage(store, version, read_files=False)
    if made is None or made.pusher is None:
      continue
    decision = ''
    run = made.pusher.run
    for e in graph.run_executions(store, run) if run else []:
      if e.type == decisions.EXECUTION_TYPE:
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


def _drift_points(rows: List[Row]) -> Dict[str, Dict[str, Any]]:
  """The drift of every compared span, in the shape charts.drift_charts
  draws (the UI's data page draws the same from ML Metadata)."""
  out: Dict[str, Dict[str, Any]] = {}
  for r in rows:
    for f in (r.drift.features if r.drift else []):
      entry = out.setdefault(f.feature, {'comparator': f.comparator,
                                         'threshold': f.threshold,
                                         'points': []})
      entry['points'].append((r.drift.span, f.distance, f.drifted,
                              f.p_value))
  return dict(sorted(out.items()))


def _metric_charts(cfg: configs.PipelineConfig, rows: List[Row]) -> List[str]:
  """The task's first headline metric and its balanced accuracy per span
  (for taxi: AUC and balanced accuracy), candidate and baseline, with the
  blessing's overall lower bounds dashed."""
  task, rule = cfg.problem_spec.task, cfg.rule
  lower = {task.metric_keys[c.metric]: rule[c.lower] for c in task.checks
           if c.where == 'overall' and c.lower}
  out = []
  for key in (task.headline[0], task.balanced_metric):
    label = task.labels[key]
    bound = lower.get(key)
    series = [charts.Series(name, [(r.span, (metrics or {}).get(key))
                                   for r, metrics in pairs])
              for name, pairs in (
                  ('candidate', [(r, r.metrics) for r in rows]),
                  ('baseline', [(r, r.baseline) for r in rows]))]
    out.append(charts.line_chart(
        f'{label} per span: the candidate and the served baseline', series,
        [charts.Threshold('bound', bound)] if bound is not None else [],
        x_title='span'))
  return out


def write_report(path: str, cfg: configs.PipelineConfig,
                 ct: ct_config.CTConfig, rows: List[Row],
                 lineage: List[PushedLineage], command: str,
                 seconds: float, source: str) -> None:
  """Self-contained HTML: no scripts, no external files."""
  # TFMA (and with it Beam and TensorFlow) only when a report is written:
  # the replay's --help stays fast and quiet.
  from pipeline import blessing  # pylint: disable=g-import-not-at-top
  parts = [f'<!doctype html><html><head><meta charset="utf-8">'
           f'<title>CT replay</title><style>{_CSS}</style></head><body>',
           '<h1>Continuous-training replay</h1>',
           f'<p>Command: <code>{html.escape(command)}</code><br>'
           f'Data: <code>{html.escape(os.path.abspath(source))}</code> '
           f'spans {rows[0].span if rows else ""}-{rows[-1].span if rows else ""}; '
           f'window {cfg.window_spans} spans, {cfg.train_steps} train steps; '
           f'drift thresholds L-inf {ct.drift_linf_threshold:g} '
           f'(categorical features), JSD {ct.drift_jsd_threshold:g} '
           f'(numeric); blessing: '
           + html.escape('; '.join(blessing.describe(blessing.eval_config(
               cfg)))) + f'. Wall time {seconds:.0f} s.</p>']

  parts.append('<h2>Per span</h2>')
  summary = []
  task = cfg.problem_spec.task
  for r, cells in zip(rows, table_rows(rows, task)):
    styled = list(cells)
    if r.drift is not None and r.drift.drifted:
      styled[3] = (cells[3], 'bad')
    blessed = cells[BLESSED_COLUMN]
    if blessed in ('NO', 'STOPPED'):
      styled[BLESSED_COLUMN] = (blessed, 'bad')
    elif blessed == 'yes':
      styled[BLESSED_COLUMN] = (blessed, 'good')
    summary.append(styled)
  parts.append(_html_table(table_columns(task), summary))

  parts.append('<h2>Data statistics and anomalies</h2><p>From the '
               'StatisticsGen and ExampleValidator artifacts of each run '
               '(train split for means and shares).</p>')
  stat_keys = statistics_keys(cfg.problem_spec)
  stat_rows = []
  for r in rows:
    s = r.statistics or {}
    values = []
    for k in stat_keys:
      v = s.get(k, '-')
      values.append(f'{v:.2f}' if isinstance(v, float) else v)
    problems = r.anomalies or ([r.error] if r.ran and not r.ok else [])
    stat_rows.append([r.span, spans.quarter(r.span)] + values + [
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
  parts.extend(charts.drift_charts(_drift_points(rows)))

  parts.append('<h2>Evaluation and push decisions</h2>')
  headline = list(task.headline)
  first = headline[0]
  eval_rows = []
  for r in rows:
    m, b = r.metrics or {}, r.baseline or {}
    fmt = lambda d, k: f'{d[k]:.4f}' if k in d else '-'
    # What always saying the majority class scores (a binary task's mean
    # label gives it).
    majority = (f'{max(m["mean_label"], 1 - m["mean_label"]):.4f}'
                if 'mean_label' in m else '-')
    blessed = _result(r)['blessed']
    if r.failures:
      blessed = (f'{blessed}: ' + '; '.join(r.failures), 'bad')
    eval_rows.append([r.span, r.trigger, _window(r)] +
                     [fmt(m, k) for k in headline] +
                     [fmt(b, first), majority,
                      int(m['example_count']) if 'example_count' in m else '-',
                      ', '.join(r.baseline_versions or []) or '-', blessed,
                      _result(r)['pushed'], r.decision_id or '-'])
  parts.append('<p>The baseline is the version being served '
               '(components/baseline.py). Accuracy is shown next to the '
               'majority class\'s (saying the most common class every '
               'time): it has no threshold, balanced accuracy has.</p>')
  parts.append(_html_table(
      ['span', 'trigger', 'window'] + [task.labels[k] for k in headline] +
      [f'baseline {task.labels[first]}', 'majority class', 'eval examples',
       'baseline version', 'blessed', 'pushed', 'CTDecision execution'],
      eval_rows))

  parts.extend(_metric_charts(cfg, rows))

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
