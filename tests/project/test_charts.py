"""project/charts.py's SVG, and what ui/pages.py feeds it.

Every chart is parsed as XML (xml.etree): well-formed, its points carry the
exact input values, thresholds sit where the axis puts their value, text is
escaped. The blessing rule's bounds are read from the lines
pipeline/blessing.describe writes for the EvalConfig the pipeline builds.
"""

import math
import xml.etree.ElementTree as ET

import pytest

from project import charts
from tests import helpers
from ui import pages

# Inline SVG for HTML pages: no xmlns (project/charts.py), so ElementTree's
# tags carry no namespace.
SVG = ''
NAN, INF = float('nan'), float('inf')


def _parse(svg: str) -> ET.Element:
  root = ET.fromstring(svg)  # raises unless well-formed
  assert root.tag == SVG + 'svg'
  return root


def _points(root):
  return [e for e in root.iter(SVG + 'circle') if e.get('class') == 'point']


def _thresholds(root):
  return [e for e in root.iter(SVG + 'line') if e.get('class') == 'threshold']


def _title(root) -> str:
  return root.find(SVG + 'title').text


def _line(**overrides) -> str:
  kwargs = dict(
      title='AUC of each model',
      series=[charts.Series('candidate', [(0, 0.71), (1, None), (2, 0.7),
                                          (3, 0.30000000000000004), (4, 1)]),
              charts.Series('baseline', [(0, None), (2, 0.69), (3, 0.75)])],
      thresholds=[charts.Threshold('bound', 0.7)],
      x_labels={0: '#3', 2: 'v17'}, x_title='model', y_title='AUC')
  kwargs.update(overrides)
  return charts.line_chart(**kwargs)


def _bars(**overrides) -> str:
  kwargs = dict(title='company', bars=[('Flash Cab', 120), ('Taxi Affiliation',
                                                            60.5), ('x', 0)],
                y_title='examples')
  kwargs.update(overrides)
  return charts.bar_chart(**kwargs)


def _timeline(**overrides) -> str:
  kwargs = dict(title='runs', events=[
      charts.Event('runs', 1_700_000_000_000, 95.5, 'run a: ran 12',
                   '#009e73', '/runs/a'),
      charts.Event('CT decisions', 1_700_000_050_000, 0, 'decision 4',
                   '#0072b2', '/executions/4'),
      charts.Event('runs', 1_700_000_200_000, 30, 'run b: failed 1',
                   '#d55e00')])
  kwargs.update(overrides)
  return charts.timeline(**kwargs)


# --- Determinism, well-formedness ---------------------------------------------


@pytest.mark.parametrize('draw', [_line, _bars, _timeline],
                         ids=['line', 'bar', 'timeline'])
def test_the_same_input_draws_the_same_svg(draw):
  first = draw()
  assert draw() == first
  _parse(first)


def test_a_changed_value_changes_the_svg():
  assert _line() != _line(thresholds=[charts.Threshold('bound', 0.71)])
  assert _bars() != _bars(bars=[('Flash Cab', 121), ('x', 0)])


# --- line_chart ---------------------------------------------------------------


def test_every_point_is_a_circle_with_the_exact_value():
  series = [charts.Series('candidate', [(0, 0.71), (1, None), (2, 0.7),
                                        (3, 0.30000000000000004), (4, 1)]),
            charts.Series('baseline', [(0, None), (2, 0.69), (3, 0.75)])]
  root = _parse(_line(series=series))
  drawn = [(p.get('data-series'), p.get('data-x'), p.get('data-y'))
           for p in _points(root)]
  assert drawn == [(s.name, str(x), repr(float(y))) for s in series
                   for x, y in s.points if y is not None]
  assert ('candidate', '3', '0.30000000000000004') in drawn
  assert ('candidate', '4', '1.0') in drawn


def test_none_values_are_skipped():
  root = _parse(charts.line_chart('t', [
      charts.Series('a', [(1, 0.5), (2, None), (3, 0.6)])]))
  assert [p.get('data-x') for p in _points(root)] == ['1', '3']
  polyline = root.find(SVG + 'polyline')
  assert len(polyline.get('points').split()) == 2
  # x 2 has no value in any series: no tick for it (the x ticks are the
  # only centred texts of a chart without axis titles).
  ticks = [t.text for t in root.iter(SVG + 'text')
           if t.get('text-anchor') == 'middle']
  assert ticks == ['1', '3']


def test_a_threshold_is_drawn_at_the_axis_y_of_its_value():
  root = _parse(_line())
  [threshold] = _thresholds(root)
  assert threshold.get('y1') == threshold.get('y2')
  at_bound = [p for p in _points(root) if p.get('data-y') == '0.7']
  assert at_bound and all(p.get('cy') == threshold.get('y1') for p in at_bound)
  by_value = sorted(_points(root), key=lambda p: float(p.get('data-y')))
  cys = [float(p.get('cy')) for p in by_value]
  assert cys == sorted(cys, reverse=True)  # higher value, higher on the plot


def test_thresholds_outside_the_data_are_still_on_the_plot():
  root = _parse(charts.line_chart(
      'calibration', [charts.Series('candidate', [(0, 0.95), (1, 1.05)])],
      [charts.Threshold('bound', 0.8), charts.Threshold('bound', 1.25)]))
  low, high = [float(t.get('y1')) for t in _thresholds(root)]
  assert 0 < high < low < charts.HEIGHT
  cys = [float(p.get('cy')) for p in _points(root)]
  assert all(high < cy < low for cy in cys)


def test_text_is_escaped_and_the_svg_still_parses():
  name, title = '<b>fare</b>', 'a & b <i>"x"</i>'
  svg = _line(title=title, series=[charts.Series(name, [(1, 0.5), (2, 0.6)])],
              thresholds=[charts.Threshold("<t> 'floor'", 0.55)],
              x_labels={1: '<x1>'}, x_title='<xt>', y_title='<yt>')
  root = _parse(svg)
  for raw in (name, '<i>', '<t>', '<x1>', '<xt>', '<yt>'):
    assert raw not in svg
  assert '&lt;b&gt;fare&lt;/b&gt;' in svg
  assert _title(root) == title
  assert {p.get('data-series') for p in _points(root)} == {name}
  assert root.get('aria-label') == f'{title}: {name}'
  bars = _bars(title=title, bars=[(name, 3)])
  assert name not in bars and '&lt;b&gt;' in bars
  [bar] = [r for r in _parse(bars).iter(SVG + 'rect') if r.get('class') == 'bar']
  assert bar.get('data-label') == name
  href = '/runs/a"b<c>'
  timeline = _timeline(events=[charts.Event(name, 1_700_000_000_000, 5, title,
                                            href=href)])
  assert name not in timeline
  [link] = _parse(timeline).iter(SVG + 'a')
  assert link.get('href') == href


def test_empty_input_says_no_data():
  for svg in (charts.line_chart('t', []),
              charts.line_chart('t', [charts.Series('a', [(1, None)])],
                                [charts.Threshold('bound', 0.7)]),
              charts.bar_chart('t', [])):
    root = _parse(svg)
    assert 'no data' in [t.text for t in root.iter(SVG + 'text')]
    assert not _points(root) and not _thresholds(root)
  assert 'no runs yet' in [t.text for t in
                           _parse(charts.timeline('t', [])).iter(SVG + 'text')]


@pytest.mark.parametrize('bad', [NAN, INF, -INF], ids=['nan', 'inf', '-inf'])
@pytest.mark.parametrize('where', [0, 1], ids=['first', 'second'])
def test_a_non_finite_value_is_skipped_like_none(bad, where):
  """A metric the Evaluator could not compute (calibration of a slice with
  no positive label) reads back as NaN or infinity."""
  values = [0.5, 0.6]
  with_bad = list(values)
  with_bad.insert(where, bad)
  with_none = list(values)
  with_none.insert(where, None)
  draw = lambda ys: charts.line_chart(  # pylint: disable=g-long-lambda
      't', [charts.Series('a', list(enumerate(ys)))])
  assert draw(with_bad) == draw(with_none)


@pytest.mark.parametrize('bad', [NAN, INF], ids=['nan', 'inf'])
def test_a_non_finite_bar_draws_no_bad_coordinates(bad):
  root = _parse(charts.bar_chart('skew', [('a', 0.2), ('b', bad)]))
  for e in root.iter():
    for attribute in ('x', 'y', 'width', 'height', 'y1', 'y2'):
      if e.get(attribute) is not None:
        assert math.isfinite(float(e.get(attribute))), (e.tag, e.attrib)


# --- bar_chart, timeline ------------------------------------------------------


def test_bars_are_in_order_with_heights_proportional_to_values():
  bars = [('Flash Cab', 120), ('Taxi Affiliation', 60), ('x', 0)]
  rects = [r for r in _parse(_bars(bars=bars)).iter(SVG + 'rect')
           if r.get('class') == 'bar']
  assert [(r.get('data-label'), r.get('data-value')) for r in rects] == [
      (label, repr(float(v))) for label, v in bars]
  heights = [float(r.get('height')) for r in rects]
  assert heights[0] == pytest.approx(2 * heights[1], abs=0.2)
  assert heights[2] == 0
  bottoms = {round(float(r.get('y')) + float(r.get('height')), 1)
             for r in rects}
  assert len(bottoms) == 1  # one baseline


def test_timeline_events_are_placed_in_time_and_link():
  root = _parse(_timeline())
  lanes = [t.text for t in root.iter(SVG + 'text')
           if t.get('text-anchor') == 'end' and t.text in ('runs',
                                                           'CT decisions')]
  assert lanes == ['runs', 'CT decisions']  # first-seen order
  events = [r for r in root.iter(SVG + 'rect') if r.get('class') == 'event']
  xs = [float(r.get('x')) for r in events]
  assert xs == sorted(xs) and len(set(xs)) == 3
  assert float(events[1].get('width')) == 4  # a mark: 0 seconds
  assert [a.get('href') for a in root.iter(SVG + 'a')] == ['/runs/a',
                                                           '/executions/4']
  assert [r.find(SVG + 'title').text for r in events] == [
      'run a: ran 12', 'decision 4', 'run b: failed 1']


# --- pages.rule_bounds on the pipeline's rule ---------------------------------


def _rule(**knobs):
  from pipeline import blessing  # pylint: disable=g-import-not-at-top
  from pipeline import configs  # pylint: disable=g-import-not-at-top
  cfg = configs.PipelineConfig(**knobs)
  return cfg, blessing.describe(blessing.eval_config(cfg))


@pytest.fixture(scope='module')
def default_rule():
  return _rule()


def test_rule_bounds_are_the_bounds_describe_states(default_rule):
  cfg, rule = default_rule
  assert 'AUC >= 0.7 (overall)' in rule
  assert 'BalancedAccuracy >= 0.7 (overall)' in rule
  assert 'Calibration in [0.8, 1.25] (overall)' in rule
  assert 'Calibration in [0.7, 1.43] (payment_type=Credit Card)' in rule
  assert any('baseline AUC' in line for line in rule)  # not a bound
  bounds = pages.rule_bounds(rule)
  assert bounds == {'auc': [0.7], 'balanced_accuracy': [0.7],
                    'calibration': [0.8, 1.25]}
  assert bounds == {
      'auc': [cfg.min_auc], 'balanced_accuracy': [cfg.min_balanced_accuracy],
      'calibration': [cfg.min_calibration, cfg.max_calibration]}
  assert set(bounds) <= set(pages.metric_labels(helpers.TAXI))
  assert pages.sliced_rule_bounds(rule) == {
      ('auc', 'overall'): [0.7], ('balanced_accuracy', 'overall'): [0.7],
      ('calibration', 'overall'): [0.8, 1.25],
      ('calibration', 'payment_type=Credit Card'): [
          cfg.min_slice_calibration, cfg.max_slice_calibration]}


def test_rule_bounds_follow_the_knobs():
  _, rule = _rule(min_auc=0.65, min_calibration=0.9, max_calibration=1.5,
                  max_auc_drop=0.02, max_slice_calibration=1.6)
  assert pages.rule_bounds(rule) == {'auc': [0.65], 'balanced_accuracy': [0.7],
                                     'calibration': [0.9, 1.5]}
  assert pages.sliced_rule_bounds(rule)[
      ('calibration', 'payment_type=Credit Card')] == [0.7, 1.6]


def _model(version, model_id, overall, slices):
  """Shaped like an entry of ui.views.models (the keys charts read)."""
  return {'pushed_version': version, 'model_id': model_id,
          'overall': overall, 'slices': slices}


def test_the_models_page_draws_the_rule_on_its_metric_charts(default_rule):
  _, rule = default_rule
  card, cash = 'payment_type=Credit Card', 'payment_type=Cash'
  models = [
      _model('17', 3, {'candidate': {'auc': 0.7, 'calibration': 1.02,
                                     'balanced_accuracy': 0.72,
                                     'binary_accuracy': 0.8}},
             {card: {'candidate': {'calibration': 1.43, 'example_count': 50}},
              cash: {'candidate': {'auc': 0.6, 'example_count': 80}}}),
      _model(None, 9, {'candidate': {'auc': 0.74, 'calibration': 0.97},
                       'baseline': {'auc': 0.7}},
             {card: {'candidate': {'calibration': 1.1, 'auc': 0.8,
                                   'example_count': 40}}}),
  ]
  roots = {_title(r): r for r in map(_parse,
                                     pages.metric_charts(models, rule,
                                                        helpers.TAXI))}
  drawn = {title: [t.find(SVG + 'title').text for t in _thresholds(r)]
           for title, r in roots.items()}
  assert drawn == {
      'AUC of each evaluated model (overall)': ['bound 0.7'],
      'balanced accuracy of each evaluated model (overall)': ['bound 0.7'],
      'accuracy of each evaluated model (overall)': [],
      'calibration of each evaluated model (overall)': ['bound 0.8',
                                                        'bound 1.25'],
      f'calibration on {card}': ['bound 0.7', 'bound 1.43'],
      "AUC per slice (the newest model's 4 biggest)": [],
  }
  for title, value in (('AUC of each evaluated model (overall)', '0.7'),
                       (f'calibration on {card}', '1.43')):
    root = roots[title]
    lines = {t.find(SVG + 'title').text.split()[-1]: t.get('y1')
             for t in _thresholds(root)}
    at_bound = [p for p in _points(root) if p.get('data-y') == value]
    assert at_bound and all(p.get('cy') == lines[value] for p in at_bound)
  # AUC: v17's and #9's baseline both 0.7, on the bound.
  assert len([p for p in _points(roots['AUC of each evaluated model '
                                       '(overall)'])
              if p.get('data-y') == '0.7']) == 2


# --- charts.drift_charts -------------------------------------------------------


def _drift():
  """Shaped like ui.views.drift_over_spans: feature (sorted) -> points
  (span, distance, drifted, p-value), the floor, the comparator."""
  return {
      'company': {'points': [(3, 0.05, False, 0.2), (4, 0.31, True, 1e-6),
                             (5, 0.2, False, 0.001)],
                  'threshold': 0.2, 'comparator': 'L-inf'},
      'fare': {'points': [(4, 0.01, False, 0.9)], 'threshold': 0.1,
               'comparator': 'JSD'},
      'payment_type': {'points': [(3, 0.02, False, 0.5), (5, 0.1, False, 0.4)],
                       'threshold': 0.2, 'comparator': 'L-inf'},
      'trip_miles': {'points': [(4, 0.04, False, 0.1), (5, 0.12, True, 1e-9)],
                     'threshold': 0.1, 'comparator': 'JSD'},
  }


def test_drift_charts_one_per_effect_size_and_floor():
  drift = _drift()
  roots = [_parse(svg) for svg in charts.drift_charts(drift)]
  assert [_title(r) for r in roots] == [
      'JSD distance to the previous span (drifted: trip_miles at span 5)',
      'L-inf distance to the previous span (drifted: company at span 4)']
  jsd, linf = roots
  for root, features in ((jsd, ('fare', 'trip_miles')),
                         (linf, ('company', 'payment_type'))):
    drawn = [(p.get('data-series'), int(p.get('data-x')), p.get('data-y'))
             for p in _points(root)]
    assert drawn == [(f, s, repr(float(d))) for f in features
                     for s, d, _, _ in drift[f]['points']]
    [floor] = _thresholds(root)
    assert floor.find(SVG + 'title').text.startswith('floor ')
  # company at span 5 sits exactly on its floor (0.2): not drifted, on the line.
  [on_floor] = [p for p in _points(linf) if p.get('data-y') == '0.2']
  assert on_floor.get('cy') == _thresholds(linf)[0].get('y1')


def test_drift_without_a_drifted_feature_says_none_and_empty_draws_nothing():
  drift = {'fare': _drift()['fare']}
  [svg] = charts.drift_charts(drift)
  assert _title(_parse(svg)) == 'JSD distance to the previous span'
  assert charts.drift_charts({}) == []
