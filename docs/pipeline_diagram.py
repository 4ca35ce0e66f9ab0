"""Draws the pipeline diagram from `create_pipeline` itself, not by hand.

    .venv/bin/python docs/pipeline_diagram.py          # docs/pipeline.dot + .svg
    .venv/bin/python docs/pipeline_diagram.py --check  # exit 1 if out of date

Builds the real TFX pipeline object, walks its components, their input
channels (an edge per artifact a component consumes, labelled with the
artifact type) and their ordering-only dependencies (dotted), and writes
Graphviz DOT. Rendering needs Graphviz's `dot` (Debian: `apt-get install
graphviz`); `--check` needs only Python, so the test suite can tell when the
committed diagram no longer matches the pipeline.
"""

import os
import subprocess
import sys
import tempfile
from typing import List

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from project import cli  # pylint: disable=wrong-import-position
from project import display  # pylint: disable=wrong-import-position

DOT_PATH = os.path.join(REPO, 'docs', 'pipeline.dot')
SVG_PATH = os.path.join(REPO, 'docs', 'pipeline.svg')

# Fill colour per stage, so the picture reads as the article's stages.
_STAGE = {
    'CsvExampleGen': ('#dbe9f6', 'data extraction'),
    'StatisticsGen': ('#dbe9f6', 'data validation'),
    'ImportSchemaGen': ('#dbe9f6', 'data validation'),
    'ExampleValidator': ('#dbe9f6', 'data validation'),
    'DataValidationGate': ('#f9d6d5', 'stops the run on anomalies'),
    'Transform': ('#dcefdc', 'data preparation'),
    'Trainer': ('#dcefdc', 'model training'),
    'Tuner': ('#dcefdc', 'hyperparameter tuning, --tune'),
    'Evaluator': ('#fdebd0', 'model evaluation and validation'),
    'InfraValidator': ('#fdebd0', 'loads and asks it in python -m serving'),
    'ModelCardGenerator': ('#fdebd0', 'model card, from ML Metadata'),
    'Pusher': ('#fdebd0', 'model push, blessed and infra-blessed only'),
}
_RESOLVER_COLOUR = "#eeeeee"


def _quote(text: str) -> str:
  """A DOT string; newlines become DOT's centred line breaks."""
  return '"' + text.replace('"', '\\"').replace('\n', '\\n') + '"'


def pipeline_dot(components, serving_dir: str) -> str:
  """DOT text for the components of a TFX pipeline."""
  lines: List[str] = [
      'digraph taxi_pipeline {',
      '  rankdir=TB; nodesep=0.35; ranksep=0.45;',
      '  node [shape=box, style="rounded,filled", fontname="Helvetica", '
      'fontsize=11];',
      '  edge [fontname="Helvetica", fontsize=9, color="#555555"];',
      '  mlmd [label="ML Metadata\\n(artifacts of earlier runs)", '
      'shape=cylinder, fillcolor="#ffffff"];',
  ]
  for component in components:
    kind = type(component).__name__
    if kind == 'Resolver':
      strategy = component.exec_properties['resolver_class'].__name__
      colour, stage = _RESOLVER_COLOUR, strategy
    else:
      colour, stage = _STAGE.get(kind, ('#ffffff', kind))
    title = component.id if component.id == kind else f'{component.id}\n{kind}'
    label = _quote(f'{title}\n({stage})')
    lines.append(f'  {_quote(component.id)} [label={label}, '
                 f'fillcolor="{colour}"];')
  from components import baseline  # pylint: disable=g-import-not-at-top
  from tfx.types.channel import OutputChannel  # pylint: disable=g-import-not-at-top
  reads_base_path = []
  for component in components:
    fed_by = set()
    resolver = type(component).__name__ == 'Resolver'
    # A Resolver's own inputs: a query over ML Metadata (earlier runs), or an
    # output of this run (OutputChannel), e.g. the candidate model.
    channels = component.raw_inputs if resolver else component.inputs
    for channel in channels.values():
      producer = getattr(channel, 'producer_component_id', None)
      if resolver and not isinstance(channel, OutputChannel):
        producer = None
      source = producer or 'mlmd'
      style = '' if producer else ', style=dashed'
      fed_by.add(source)
      lines.append(f'  {_quote(source)} -> {_quote(component.id)} '
                   f'[label={_quote(channel.type_name)}{style}];')
    if resolver and issubclass(component.exec_properties['resolver_class'],
                               baseline.ServedModelStrategy):
      reads_base_path.append(component.id)
    for upstream in sorted(u.id for u in component.upstream_nodes):
      if upstream not in fed_by:
        lines.append(f'  {_quote(upstream)} -> {_quote(component.id)} '
                     '[label="after", style=dotted];')
  lines += [
      '  base_path [label=' + _quote(
          f'TF Serving model base path\n{serving_dir}/<version>/') +
      ', shape=folder, fillcolor="#ffffff"];',
      '  server [label="python -m serving / tensorflow_model_server\\n'
      'REST :8501, gRPC :8500", shape=component, fillcolor="#ffffff"];',
      '  Pusher -> base_path [label="SavedModel", style=dashed];',
      '  base_path -> server [label="polls", style=dashed];',
  ] + [f'  base_path -> {_quote(node)} [label="served version", '
       'style=dashed];' for node in reads_base_path] + ['}']
  return '\n'.join(lines) + '\n'


def current_dot() -> str:
  """DOT of the pipeline a local run builds with the default config."""
  display.quiet_imports()
  from pipeline import configs  # pylint: disable=g-import-not-at-top
  from ops import console  # pylint: disable=g-import-not-at-top
  console.quiet_imports()
  from pipeline import run_pipeline  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory() as root:
    # pipeline_root only receives the schema snapshot; the diagram shows the
    # default serving path relative to the repo, the same on every machine.
    cfg = configs.PipelineConfig(pipeline_root=root)
    components = run_pipeline.local_pipeline(cfg).components
  return pipeline_dot(components, os.path.relpath(cfg.serving_model_dir, REPO))


def main(argv=None) -> int:
  parser = cli.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--check', action='store_true',
                      help='only compare docs/pipeline.dot with the pipeline')
  args = parser.parse_args(argv)
  dot = current_dot()
  if args.check:
    with open(DOT_PATH) as f:
      if f.read() != dot:
        print(f'{DOT_PATH} is out of date: run docs/pipeline_diagram.py')
        return 1
    print(f'{DOT_PATH} matches create_pipeline')
    return 0
  with open(DOT_PATH, 'w') as f:
    f.write(dot)
  subprocess.run(['dot', '-Tsvg', DOT_PATH, '-o', SVG_PATH], check=True)
  print(f'wrote {DOT_PATH} and {SVG_PATH}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
