"""A version's provenance graph (ui/lineage_view.version_graph) drawn as SVG.

Layered left to right by depth: the spans' Examples on the left, the
pushed model on the right, each execution between the artifacts it read and
wrote. Every node links to its artifact's or execution's page. Deterministic
(nodes ordered by depth, then id).
"""

import html
from typing import Any, Dict

_BOX_W, _BOX_H, _GAP_X, _GAP_Y, _PAD = 150, 40, 40, 14, 10
_FILL = {'artifact': '#dbe9f6', 'execution': '#fde6c4'}


def _e(text) -> str:
  return html.escape(str(text), quote=True)


def href(node: Dict[str, Any]) -> str:
  kind = 'artifacts' if node['kind'] == 'artifact' else 'executions'
  return f'/{kind}/{node["id"]}'


def draw(g: Dict[str, Any]) -> str:
  nodes = g['nodes']
  deepest = max(n['depth'] for n in nodes.values())
  columns: Dict[int, list] = {}
  for key, node in sorted(nodes.items(),
                          key=lambda kv: (kv[1]['depth'], kv[1]['kind'],
                                          kv[1]['id'])):
    columns.setdefault(node['depth'], []).append(key)
  at = {}
  for depth, keys in columns.items():
    x = _PAD + (deepest - depth) * (_BOX_W + _GAP_X)
    for row, key in enumerate(keys):
      at[key] = (x, _PAD + row * (_BOX_H + _GAP_Y))
  width = _PAD * 2 + (deepest + 1) * (_BOX_W + _GAP_X) - _GAP_X
  height = _PAD * 2 + max(len(k) for k in columns.values()) * (
      _BOX_H + _GAP_Y) - _GAP_Y
  parts = [f'<svg class="lineage" '
           f'viewBox="0 0 {width} {height}" width="{width}" '
           f'height="{height}" role="img" aria-label="lineage of version '
           f'{_e(g["version"])}">',
           '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" '
           'markerWidth="6" markerHeight="6" orient="auto-start-reverse">'
           '<path d="M 0 0 L 10 5 L 0 10 z" fill="#777"/></marker></defs>']
  for source, target in g['edges']:
    if source not in at or target not in at:
      continue
    (x1, y1), (x2, y2) = at[source], at[target]
    parts.append(f'<line class="edge" x1="{x1 + _BOX_W}" '
                 f'y1="{y1 + _BOX_H / 2}" x2="{x2}" y2="{y2 + _BOX_H / 2}" '
                 'stroke="#777" marker-end="url(#arrow)"/>')
  for key, (x, y) in sorted(at.items()):
    node = nodes[key]
    parts.append(
        f'<a href="{_e(href(node))}" class="node" data-key="{_e(key)}">'
        f'<rect x="{x}" y="{y}" width="{_BOX_W}" height="{_BOX_H}" rx="6" '
        f'fill="{_FILL[node["kind"]]}" stroke="#555"/>'
        f'<text x="{x + _BOX_W / 2}" y="{y + 16}" font-size="11" '
        f'text-anchor="middle">{_e(node["label"][:24])}</text>'
        f'<text x="{x + _BOX_W / 2}" y="{y + 31}" font-size="10" '
        f'text-anchor="middle" fill="#444">{_e(node["detail"])}</text>'
        f'<title>{_e(node["kind"])} {node["id"]}: {_e(node["label"])}'
        '</title></a>')
  parts.append('</svg>')
  return '\n'.join(parts)
