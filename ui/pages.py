"""The UI's pages: a route table from URL paths to HTML (Jinja2 templates in
ui/templates/, escaped by project/web.py's rule for every HTML template), the
data from ui/views.py, the charts from project/charts.py. `render(sources,
path)` is everything the server (ui/server.py) and the static export call;
it never writes.

A link to a run is `run_url(name)` everywhere (the templates' `run_url`
filter too): the name quoted whole, `/` included, so a run named `a/b` is
one path segment the `/runs/<name>` route decodes, not a 404.
"""

import dataclasses
import os
import re
import urllib.parse
from typing import Callable, Dict, List, Optional, Tuple

import jinja2

from data import spans as span_rules
from lineage import report as lineage_report
from lineage import secrets
from models import problem as problems
from models import tasks
from project import charts
from project import web
from ui import lineage_svg
from ui import lineage_view
from ui import serving_view
from ui import views

NAV = (('/', 'Overview'), ('/runs', 'Runs'), ('/data', 'Data'),
       ('/models', 'Models'), ('/serving', 'Serving'))



def run_url(name: str) -> str:
  """The path of run `name`'s page (run_page decodes it)."""
  return '/runs/' + urllib.parse.quote(name, safe='')


_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(
        os.path.join(os.path.dirname(__file__), 'templates')),
    autoescape=web.autoescape, undefined=jinja2.StrictUndefined)
_ENV.filters['run_url'] = run_url


class NotFound(Exception):
  """The path names nothing (404)."""


@dataclasses.dataclass
class Page:
  status: int
  body: bytes
  content_type: str = 'text/html; charset=utf-8'


def _number(value) -> str:
  if value is None:
    return '-'
  if isinstance(value, int) or float(value).is_integer():
    return str(int(value))
  return f'{value:.4f}'


def _seconds(value) -> str:
  return '-' if value is None else f'{value:.1f} s'


def _quarter(span) -> str:
  try:
    return span_rules.quarter(int(span))
  except (TypeError, ValueError):
    return '-'


def _html(template: str, sources: views.Sources, section: str,
          title: str, **context) -> Page:
  from lineage import metadata_store  # pylint: disable=g-import-not-at-top
  text = _ENV.get_template(template).render(
      nav=NAV, section=section, title=title,
      store_description=metadata_store.describe(sources.connection),
      number=_number, seconds=_seconds, quarter=_quarter,
      span_ranges=lineage_report.span_ranges, **context)
  return Page(200, secrets.redact(text).encode('utf-8'))


# --- Pages --------------------------------------------------------------------


def _run_events(runs, decisions) -> List[charts.Event]:
  events = []
  for r in runs:
    if not r['started_ms']:
      continue
    color = ('#d55e00' if r['failed'] else '#009e73' if r['pushed']
             else '#999999')
    events.append(charts.Event(
        'runs', r['started_ms'], r['seconds'] or 0,
        f'{r["name"]}: {", ".join(f"{k} {v}" for k, v in r["states"].items())}'
        + (f'; pushed {", ".join(r["pushed"])}' if r['pushed'] else ''),
        color, run_url(r['name'])))
  for d in decisions:
    events.append(charts.Event(
        'CT decisions', d['time_ms'], 0,
        f'decision {d["id"]}: {d["trigger"]} ({d["reason"]})',
        '#0072b2' if d['ran'] else '#cccccc', f'/executions/{d["id"]}'))
  return events


def _timeline(runs, decisions) -> str:
  return charts.timeline(
      'Runs and CT decisions (green: pushed, grey: not, red: failed)',
      _run_events(runs, decisions))


def overview(sources, store, _match) -> Page:
  served = serving_view.serving(sources, store)  # the base path: with or without
  newest = next((v['version'] for v in served['versions']
                 if not v['rolled_back']), None)
  if store is None:
    return _html('overview.html.j2', sources, '/', 'Overview', has_store=False,
                 runs=[], decision_count=0, span_count=0, model_count=0,
                 served=newest, monitoring=served['monitoring'], timeline='',
                 model_config_problem=served['model_config_problem'])
  runs = views.runs(store, sources.pipeline_name)
  decisions = views.decisions(store, sources.pipeline_name)
  return _html(
      'overview.html.j2', sources, '/', 'Overview', has_store=True,
      runs=runs, decision_count=len(decisions),
      span_count=len(views.spans(store, sources.pipeline_name)),
      model_count=len(views.models(store, sources.pipeline_name)),
      served=newest, monitoring=served['monitoring'],
      timeline=_timeline(runs, decisions),
      model_config_problem=served['model_config_problem'])


def runs_page(sources, store, _match) -> Page:
  runs = views.runs(store, sources.pipeline_name)
  decisions = views.decisions(store, sources.pipeline_name)
  return _html('runs.html.j2', sources, '/runs', 'Runs', runs=runs,
               decisions=decisions, timeline=_timeline(runs, decisions))


def run_page(sources, store, match) -> Page:
  name = urllib.parse.unquote(match.group(1))
  run = views.run_detail(store, name, sources.pipeline_name)
  if run is None:
    raise NotFound(f'no pipeline run {name!r} in ML Metadata')
  return _html('run.html.j2', sources, '/runs', f'Run {name}', run=run)


def data_page(sources, store, _match) -> Page:
  skipped: List[str] = []
  drift = views.drift_over_spans(store, sources.pipeline_name, skipped)
  return _html('data.html.j2', sources, '/data', 'Data',
               spans=views.spans(store, sources.pipeline_name),
               drift_charts=charts.drift_charts(drift), skipped=skipped)


def span_page(sources, store, match) -> Page:
  span = int(match.group(1))
  found = [s for s in views.spans(store, sources.pipeline_name)
           if s['span'] == span and s['statistics_id']]
  if not found:
    raise NotFound(f'span {span} has no statistics in ML Metadata')
  statistics_id = found[-1]['statistics_id']
  features = views.feature_distributions(store, statistics_id)
  return _html(
      'span.html.j2', sources, '/data', f'Span {span} ({_quarter(span)})',
      split=views.STATISTICS_SPLIT, statistics_id=statistics_id,
      features=features,
      charts=[charts.bar_chart(f'{f["name"]} ({f["kind"]})', f['bars'],
                               y_title='examples') for f in features])


def _model_labels(models: List[Dict]) -> Dict[int, str]:
  return {i: (f'v{m["pushed_version"]}' if m['pushed_version']
              else f'#{m["model_id"]}') for i, m in enumerate(models)}


def _metric_series(models: List[Dict], where: str, key: str
                  ) -> List[charts.Series]:
  """The candidate's `key` on slice `where` per model, and the baseline's
  when any model had one."""
  def values(who: str):
    return [(i, (m['overall'] if where == 'overall' else
                 m['slices'].get(where, {})).get(who, {}).get(key))
            for i, m in enumerate(models)]
  series = [charts.Series('candidate', values('candidate'))]
  if any(y is not None for _, y in values('baseline')):
    series.append(charts.Series('baseline', values('baseline')))
  return series


def metric_labels(problem: problems.Problem) -> Dict[str, str]:
  """The metrics the models page shows (the task's headline), and how
  people read them."""
  return {k: problem.task.labels[k] for k in problem.task.headline}


def metric_charts(models: List[Dict], rule: List[str],
                  problem: problems.Problem) -> List[str]:
  """Per evaluated model (x: evaluation order), candidate and baseline: the
  task's headline metrics overall (for taxi: AUC, balanced accuracy,
  accuracy and calibration), then every metric the rule bounds on a slice
  (for taxi, the card trips' calibration); the rule's bounds dashed. Last,
  the first headline metric per slice."""
  out = []
  labels = _model_labels(models)
  shown = metric_labels(problem)
  for key, label in shown.items():
    out.append(charts.line_chart(
        f'{label} of each evaluated model (overall)',
        _metric_series(models, 'overall', key),
        [charts.Threshold('bound', t)
         for t in rule_bounds(rule).get(key, [])],
        x_labels=labels, x_title='model (version if pushed)'))
  for (key, where), bounds in sorted(sliced_rule_bounds(rule).items()):
    if where == 'overall':
      continue
    out.append(charts.line_chart(
        f'{problem.task.labels.get(key, key)} on {where}',
        _metric_series(models, where, key),
        [charts.Threshold('bound', t) for t in bounds],
        x_labels=labels, x_title='model (version if pushed)'))
  if models and models[-1]['slices']:
    newest = models[-1]['slices']
    biggest = sorted(newest, key=lambda k: -newest[k].get('candidate', {}).get(
        'example_count', 0))[:4]
    first = problem.task.headline[0]
    out.append(charts.line_chart(
        f'{shown[first]} per slice (the newest model\'s 4 biggest)',
        [charts.Series(where, _metric_series(models, where, first)[0].points)
         for where in biggest],
        x_labels=labels, x_title='model (version if pushed)'))
  return out


# A bound as `:g` prints it: 0.7, 1e+06, -inf.
_NUMBER = r'([-+]?(?:[0-9.]+(?:e[-+]?[0-9]+)?|inf))'
_BOUND = re.compile(rf'^(\w+) (?:>=|<=) {_NUMBER} \((.+)\)$')
_RANGE = re.compile(rf'^(\w+) in \[{_NUMBER}, {_NUMBER}\] \((.+)\)$')
# The rule names metrics by their TFMA class; the metrics are keyed by name
# (every task's classes: a store may hold another problem's evaluations).
_CLASS_TO_KEY = {c: k for t in tasks.TASKS.values()
                 for c, k in t.metric_keys.items()}


def sliced_rule_bounds(rule: List[str]) -> Dict[Tuple[str, str], List[float]]:
  """(metric key, slice) -> the bounds the rule's lines state
  (pipeline/blessing.describe: 'Calibration in [0.8, 1.25] (overall)')."""
  out: Dict[Tuple[str, str], List[float]] = {}
  for line in rule:
    m = _RANGE.match(line) or _BOUND.match(line)
    if m and m.group(1) in _CLASS_TO_KEY:
      where = m.groups()[-1]
      out.setdefault((_CLASS_TO_KEY[m.group(1)], where), []).extend(
          float(v) for v in m.groups()[1:-1])
  return out


def rule_bounds(rule: List[str]) -> Dict[str, List[float]]:
  """metric key -> the overall bounds the rule lines state."""
  return {key: bounds for (key, where), bounds in
          sliced_rule_bounds(rule).items() if where == 'overall'}


def models_page(sources, store, _match) -> Page:
  found = views.models(store, sources.pipeline_name)
  rule = next((m['rule'] for m in reversed(found) if m['rule']), [])
  problem = problems.load(sources.problem)
  return _html('models.html.j2', sources, '/models', 'Models', models=found,
               rule=rule, charts=metric_charts(found, rule, problem),
               columns=list(metric_labels(problem).items()),
               baseline_metric=problem.task.headline[0])


def serving_page(sources, store, _match) -> Page:
  s = serving_view.serving(sources, store)
  skew = (s['monitoring'] or {}).get('skew') or {}
  skew_chart = charts.bar_chart(
      'training/serving skew: effect size per feature',
      [(name, f.get('distance') or 0.0) for name, f in skew.items()]
  ) if skew else ''
  return _html('serving.html.j2', sources, '/serving', 'Serving', s=s,
               skew_chart=skew_chart)


def version_page(sources, store, match) -> Page:
  version = match.group(1)
  g = lineage_view.version_graph(store, version)
  if g is None:
    raise NotFound(f'version {version} was never pushed (ML Metadata has no '
                   'PushedModel for it)')
  return _html('version.html.j2', sources, '/serving',
               f'Lineage of version {version}', g=g,
               svg=lineage_svg.draw(g), max_nodes=lineage_view.MAX_GRAPH_NODES,
               model_card=_model_card_file(sources, version) is not None)


def _model_card_file(sources, version: str) -> Optional[str]:
  from serving import base_path  # pylint: disable=g-import-not-at-top
  path = base_path.model_card_path(
      os.path.join(sources.model_base_path, version))
  return path if os.path.isfile(path) else None


def model_card_page(sources, _store, match) -> Page:
  """The card the ModelCardGenerator wrote inside the served version."""
  path = _model_card_file(sources, match.group(1))
  if path is None:
    raise NotFound(f'version {match.group(1)} has no model card on disk')
  with open(path, 'rb') as f:
    return Page(200, f.read())


def artifact_page(sources, store, match) -> Page:
  a = lineage_view.artifact(store, int(match.group(1)))
  if a is None:
    raise NotFound(f'no artifact {match.group(1)} in ML Metadata')
  made = a['producer']
  summary = [('type', a['type']), ('uri', a['uri']), ('state', a['state']),
             ('created', a['created']),
             ('produced by', _execution_link(made) if made else 'nothing '
              '(imported or external)')]
  return _html('entity.html.j2', sources, '', f'{a["type"]} #{a["id"]}',
               summary=summary, linked={'produced by'} if made else set(),
               io=[], consumers=a['consumers'], properties=a['properties'])


def _execution_link(e) -> str:
  from markupsafe import escape  # pylint: disable=g-import-not-at-top
  run = (f' in run <a href="{escape(run_url(e["run"]))}">'
         f'{escape(e["run"])}</a>' if e['run'] else '')
  return (f'<a href="/executions/{e["id"]}">{escape(e["node"])} #{e["id"]}'
          f'</a> ({escape(e["state"])}){run}')


def execution_page(sources, store, match) -> Page:
  e = lineage_view.execution(store, int(match.group(1)))
  if e is None:
    raise NotFound(f'no execution {match.group(1)} in ML Metadata')
  summary = [('node', e['node']), ('type', e['type']), ('state', e['state']),
             ('started', e['started']), ('time', _seconds(e['seconds'])),
             ('run', _execution_link(e))]
  return _html('entity.html.j2', sources, '', f'{e["node"]} #{e["id"]}',
               summary=summary, linked={'run'},
               io=[('Inputs', e['inputs']), ('Outputs', e['outputs'])],
               properties=e['properties'])


def favicon(_sources, _store, _match) -> Page:
  """No icon (204): pages that name none, the model cards, still ask."""
  return Page(204, b'', 'image/x-icon')


Handler = Callable[[views.Sources, object, re.Match], Page]
# Path -> handler; ids are digits only, bounded, so no path reaches a
# query it was not written for.
ROUTES: Tuple[Tuple[re.Pattern, Handler, bool], ...] = tuple(
    (re.compile(pattern), handler, needs_store) for pattern, handler,
    needs_store in (
        (r'/', overview, False),
        (r'/runs', runs_page, True),
        # A name of up to 300 ASCII characters, quoted (run_url: 3 a byte).
        (r'/runs/([^/]{1,900})', run_page, True),
        (r'/data', data_page, True),
        (r'/data/spans/(\d{1,9})', span_page, True),
        (r'/models', models_page, True),
        (r'/serving', serving_page, False),
        (r'/versions/(\d{1,18})', version_page, True),
        (r'/versions/(\d{1,18})/model_card', model_card_page, False),
        (r'/artifacts/(\d{1,18})', artifact_page, True),
        (r'/executions/(\d{1,18})', execution_page, True),
        (r'/favicon.ico', favicon, False),
    ))


def error_page(sources, status: int, message: str) -> Page:
  page = _html('error.html.j2', sources, '', f'{status}', message=message)
  page.status = status
  return page


def render(sources: views.Sources, path: str) -> Page:
  """The page at `path` (no query string), or an error page."""
  for pattern, handler, needs_store in ROUTES:
    match = pattern.fullmatch(path)
    if match is None:
      continue
    store = sources.open_store()
    if store is None and needs_store:
      return error_page(sources, 404, 'No ML Metadata store yet: run make run '
                        'first.')
    try:
      return handler(sources, store, match)
    except NotFound as e:
      return error_page(sources, 404, str(e))
  return error_page(sources, 404, f'No page at {path}.')
