"""Charts as inline SVG, drawn on the server: no script, no CDN, no library.

Two kinds cover what the pages and the replay report show: `line_chart`
(a metric or a distance over spans or versions, with threshold lines drawn
dashed) and `bar_chart` (a histogram or a category's frequencies). Both
return one `<svg>` string, deterministic for the same input (tests compare
them), every text escaped. Points carry a `<title>`, so hovering shows the
exact value. Inline SVG for HTML pages (no xmlns: an HTML parser puts
<svg> in the SVG namespace itself, and the replay report stays free of any
URL). Standard library only (and project/display.py's number rule).
"""

import dataclasses
import datetime
import html
import math
from typing import Dict, List, Optional, Sequence, Tuple

from project import display

WIDTH, HEIGHT = 560, 240
_LEFT, _RIGHT, _TOP, _BOTTOM = 56, 16, 24, 40
_LEGEND_COLUMNS, _LEGEND_ROW = 4, 16
# Colour-blind-safe (Okabe-Ito), in the order series are given.
PALETTE = ('#0072b2', '#e69f00', '#009e73', '#cc79a7', '#56b4e9', '#d55e00',
           '#f0e442', '#000000')


@dataclasses.dataclass
class Series:
  name: str
  points: List[Tuple[float, Optional[float]]]  # (x, y); y None: no value


@dataclasses.dataclass
class Threshold:
  name: str
  value: float


def _fmt(value: float) -> str:
  """Tick and tooltip text: project/display.figure's rule (a count whole,
  else 4 significant digits)."""
  return display.figure(float(value))


def _ticks(low: float, high: float, count: int = 5) -> List[float]:
  """Round tick values covering [low, high]."""
  if high <= low:
    return [low]
  step = 10 ** math.floor(math.log10((high - low) / count))
  for factor in (1, 2, 5, 10):
    if (high - low) / (step * factor) <= count:
      step *= factor
      break
  first = math.ceil(low / step) * step
  ticks, value = [], first
  while value <= high + step * 1e-9:
    ticks.append(round(value, 12))
    value += step
  return ticks


def _range(values: Sequence[float]) -> Tuple[float, float]:
  low, high = min(values), max(values)
  if low == high:
    pad = abs(low) * 0.1 or 1.0
    return low - pad, high + pad
  pad = (high - low) * 0.08
  return low - pad, high + pad


def _drawable(y) -> bool:
  """None, NaN and infinities (a metric TFMA could not compute) are not."""
  return y is not None and math.isfinite(y)


def _e(text) -> str:
  return html.escape(str(text), quote=True)


def _frame(title: str, label: str, height: int = HEIGHT) -> List[str]:
  return [f'<svg class="chart" '
          f'viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" '
          f'role="img" aria-label="{_e(label or title)}">',
          f'<title>{_e(title)}</title>',
          f'<text x="{_LEFT}" y="15" font-size="13" font-weight="bold">'
          f'{_e(title)}</text>']


def _y_axis(parts: List[str], ticks: List[float], y_of) -> None:
  for tick in ticks:
    y = y_of(tick)
    parts.append(f'<line x1="{_LEFT}" x2="{WIDTH - _RIGHT}" y1="{y:.1f}" '
                 f'y2="{y:.1f}" stroke="#e5e5e5"/>')
    parts.append(f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" font-size="11" '
                 f'text-anchor="end">{_e(_fmt(tick))}</text>')


def line_chart(title: str, series: Sequence[Series],
               thresholds: Sequence[Threshold] = (),
               x_labels: Optional[dict] = None, x_title: str = '',
               y_title: str = '') -> str:
  """Lines over a shared x axis; thresholds as dashed horizontal lines.

  `x_labels` maps x values to their tick text (default: the x values);
  every x that a series has gets a tick.
  """
  xs = sorted({x for s in series for x, y in s.points if _drawable(y)})
  ys = ([y for s in series for _, y in s.points if _drawable(y)]
        + [t.value for t in thresholds if _drawable(t.value)])
  columns = _LEGEND_COLUMNS if max(
      (len(s.name) for s in series), default=0) <= 16 else 2
  legend_rows = math.ceil(len(series) / columns)
  parts = _frame(title, f'{title}: {", ".join(s.name for s in series)}',
                 HEIGHT + _LEGEND_ROW * legend_rows)
  if not xs:
    parts.append(f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle"'
                 ' font-size="12">no data</text></svg>')
    return '\n'.join(parts)
  x_low, x_high = (xs[0] - 0.5, xs[-1] + 0.5)
  y_low, y_high = _range(ys)
  plot_w = WIDTH - _LEFT - _RIGHT
  plot_h = HEIGHT - _TOP - _BOTTOM
  x_of = lambda x: _LEFT + (x - x_low) / (x_high - x_low) * plot_w  # pylint: disable=unnecessary-lambda-assignment
  y_of = lambda y: _TOP + (y_high - y) / (y_high - y_low) * plot_h  # pylint: disable=unnecessary-lambda-assignment
  _y_axis(parts, _ticks(y_low, y_high), y_of)
  labels = x_labels or {}
  for x in xs:
    parts.append(f'<text x="{x_of(x):.1f}" y="{HEIGHT - _BOTTOM + 14}" '
                 f'font-size="11" text-anchor="middle">'
                 f'{_e(labels.get(x, _fmt(x)))}</text>')
  if x_title:
    parts.append(f'<text x="{_LEFT + plot_w / 2}" y="{HEIGHT - 6}" '
                 f'font-size="11" text-anchor="middle">{_e(x_title)}</text>')
  if y_title:
    parts.append(f'<text x="12" y="{_TOP + plot_h / 2}" font-size="11" '
                 f'text-anchor="middle" transform="rotate(-90 12 '
                 f'{_TOP + plot_h / 2})">{_e(y_title)}</text>')
  for i, threshold in enumerate(thresholds):
    y = y_of(threshold.value)
    parts.append(f'<line class="threshold" x1="{_LEFT}" x2="{WIDTH - _RIGHT}"'
                 f' y1="{y:.1f}" y2="{y:.1f}" stroke="#d55e00" '
                 f'stroke-dasharray="6 4"><title>{_e(threshold.name)} '
                 f'{_e(_fmt(threshold.value))}</title></line>')
    parts.append(f'<text x="{WIDTH - _RIGHT - 4}" y="{y - 4 - 12 * i:.1f}" '
                 f'font-size="11" text-anchor="end" fill="#d55e00">'
                 f'{_e(threshold.name)} {_e(_fmt(threshold.value))}</text>')
  for i, s in enumerate(series):
    color = PALETTE[i % len(PALETTE)]
    points = [(x, y) for x, y in s.points if _drawable(y)]
    if len(points) > 1:
      path = ' '.join(f'{x_of(x):.1f},{y_of(y):.1f}' for x, y in points)
      parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" '
                   f'points="{path}"/>')
    for x, y in points:
      parts.append(f'<circle class="point" cx="{x_of(x):.1f}" '
                   f'cy="{y_of(y):.1f}" r="4" fill="{color}" '
                   f'data-series="{_e(s.name)}" data-x="{_e(_fmt(x))}" '
                   f'data-y="{_e(repr(float(y)))}"><title>{_e(s.name)} '
                   f'{_e(labels.get(x, _fmt(x)))}: {_e(_fmt(y))}</title>'
                   '</circle>')
    # Legend, under the plot: 4 entries a row (2 for long names).
    lx = _LEFT + (i % columns) * (WIDTH - _LEFT) // columns
    ly = HEIGHT + _LEGEND_ROW * (i // columns) + 4
    parts.append(f'<rect x="{lx}" y="{ly - 8}" width="10" height="10" '
                 f'fill="{color}"/><text x="{lx + 14}" y="{ly + 1}" '
                 f'font-size="11">{_e(s.name)}</text>')
  parts.append('</svg>')
  return '\n'.join(parts)


def bar_chart(title: str, bars: Sequence[Tuple[str, float]],
              y_title: str = '') -> str:
  """One bar per (label, value), in the order given."""
  parts = _frame(title, title)
  if not bars:
    parts.append(f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle"'
                 ' font-size="12">no data</text></svg>')
    return '\n'.join(parts)
  high = max([v for _, v in bars if _drawable(v)] + [0]) or 1.0
  plot_w = WIDTH - _LEFT - _RIGHT
  plot_h = HEIGHT - _TOP - _BOTTOM
  y_of = lambda y: _TOP + (high - y) / high * plot_h  # pylint: disable=unnecessary-lambda-assignment
  _y_axis(parts, _ticks(0, high), y_of)
  width = plot_w / len(bars)
  every = max(1, math.ceil(len(bars) / 12))  # at most ~12 labels fit
  for i, (label, value) in enumerate(bars):
    x = _LEFT + i * width
    drawn = value if _drawable(value) else 0  # its title still says
    parts.append(f'<rect class="bar" x="{x + 1:.1f}" y="{y_of(drawn):.1f}" '
                 f'width="{max(width - 2, 1):.1f}" '
                 f'height="{y_of(0) - y_of(drawn):.1f}" fill="{PALETTE[0]}" '
                 f'data-label="{_e(label)}" data-value="{_e(repr(float(value)))}">'
                 f'<title>{_e(label)}: {_e(_fmt(value))}</title></rect>')
    if i % every == 0:
      parts.append(f'<text x="{x + width / 2:.1f}" y="{HEIGHT - _BOTTOM + 14}"'
                   f' font-size="10" text-anchor="middle">'
                   f'{_e(label[:14])}</text>')
  if y_title:
    parts.append(f'<text x="12" y="{_TOP + plot_h / 2}" font-size="11" '
                 f'text-anchor="middle" transform="rotate(-90 12 '
                 f'{_TOP + plot_h / 2})">{_e(y_title)}</text>')
  parts.append('</svg>')
  return '\n'.join(parts)


@dataclasses.dataclass
class Event:
  """One item on a timeline: a bar (seconds > 0) or a mark."""
  lane: str
  start_ms: int
  seconds: float
  label: str
  color: str = PALETTE[0]
  href: Optional[str] = None


def timeline(title: str, events: Sequence[Event]) -> str:
  """Events on a wall-clock axis, one lane per `lane` (in first-seen order);
  each links to `href` when given."""
  parts = _frame(title, title)
  if not events:
    parts.append(f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle"'
                 ' font-size="12">no runs yet</text></svg>')
    return '\n'.join(parts)
  lanes = list(dict.fromkeys(e.lane for e in events))
  start = min(e.start_ms for e in events)
  end = max(e.start_ms + e.seconds * 1000 for e in events)
  span_ms = max(end - start, 1000.0)
  left = _LEFT + 60
  plot_w = WIDTH - left - _RIGHT
  lane_h = (HEIGHT - _TOP - _BOTTOM) / len(lanes)
  x_of = lambda ms: left + (ms - start) / span_ms * plot_w  # pylint: disable=unnecessary-lambda-assignment
  for i, lane in enumerate(lanes):
    y = _TOP + i * lane_h + lane_h / 2
    parts.append(f'<text x="{left - 8}" y="{y + 4:.1f}" font-size="11" '
                 f'text-anchor="end">{_e(lane)}</text>')
    parts.append(f'<line x1="{left}" x2="{WIDTH - _RIGHT}" y1="{y:.1f}" '
                 f'y2="{y:.1f}" stroke="#e5e5e5"/>')
  minutes = span_ms / 60000
  parts.append(f'<text x="{left}" y="{HEIGHT - _BOTTOM + 14}" font-size="11">'
               f'{_e(_clock(start))}</text>')
  parts.append(f'<text x="{WIDTH - _RIGHT}" y="{HEIGHT - _BOTTOM + 14}" '
               f'font-size="11" text-anchor="end">{_e(_clock(end))} '
               f'({_e(f"{minutes:.1f}")} min)</text>')
  for e in events:
    y = _TOP + lanes.index(e.lane) * lane_h + lane_h / 2
    x = x_of(e.start_ms)
    width = max(e.seconds * 1000 / span_ms * plot_w, 4)
    shape = (f'<rect class="event" x="{x:.1f}" y="{y - 8:.1f}" '
             f'width="{width:.1f}" height="16" fill="{e.color}">'
             f'<title>{_e(e.label)}</title></rect>')
    if e.href:
      shape = f'<a href="{_e(e.href)}">{shape}</a>'
    parts.append(shape)
  parts.append('</svg>')
  return '\n'.join(parts)


def _clock(ms: float) -> str:
  return datetime.datetime.fromtimestamp(
      ms / 1000, datetime.timezone.utc).strftime('%Y-%m-%d %H:%M:%S UTC')


def drift_charts(drift: Dict[str, dict]) -> List[str]:
  """One chart per effect size and floor (L-inf for categories, JSD for
  numbers): every feature's distance over spans, the floor dashed.

  `drift`: feature -> {'comparator', 'threshold', 'points': [(span,
  distance, drifted, p_value)]} (ui/views.drift_over_spans; the replay
  report builds the same from its rows).
  """
  groups: dict = {}
  for feature, entry in drift.items():
    groups.setdefault((entry['comparator'], entry['threshold']),
                      []).append(feature)
  out = []
  for (comparator, floor), features in sorted(groups.items()):
    series = [Series(f, [(s, d) for s, d, _, _ in
                                drift[f]['points']]) for f in features]
    drifted = sorted({f'{f} at span {s}' for f in features
                      for s, _, flag, _ in drift[f]['points'] if flag})
    out.append(line_chart(
        f'{comparator} distance to the previous span'
        + (f' (drifted: {", ".join(drifted)})' if drifted else ''),
        series, [Threshold('floor', floor)], x_title='span',
        y_title=comparator))
  return out
