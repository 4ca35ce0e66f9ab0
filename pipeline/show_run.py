"""Show what a pipeline run recorded in ML Metadata: nodes, states, artifacts.

    python -m pipeline.show_run                    # newest run, default store
    python -m pipeline.show_run --metadata-path outputs/pipeline/metadata.sqlite

Reads ML Metadata directly (no TFX import, so it answers in about a second).
"""

import argparse
import sys

from pipeline import configs
from pipeline import metadata_store

_PROPERTIES = ('span', 'blessed', 'pushed', 'pushed_version',
               'already_pushed_version')


def describe(store, pipeline_name: str) -> str:
  run = metadata_store.latest_run(store, pipeline_name)
  if run is None:
    return f'No runs of pipeline {pipeline_name!r} in this store.'
  lines = [f'Pipeline {pipeline_name!r}, run {run.name}:']
  for node_id, node in metadata_store.run_nodes(store, run,
                                                pipeline_name).items():
    lines.append(f'  {node_id:<30} {node.state}')
    for key, artifacts in sorted(node.outputs.items()):
      for artifact in artifacts:
        props = ', '.join(
            f'{p}={metadata_store.custom_property(artifact, p)}'
            for p in _PROPERTIES
            if metadata_store.custom_property(artifact, p) is not None)
        lines.append(f'      {key} #{artifact.id}: {artifact.uri}'
                     + (f'  [{props}]' if props else ''))
  return '\n'.join(lines)


def main(argv=None) -> int:
  defaults = configs.PipelineConfig()
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--metadata-path', default=defaults.metadata_path,
                      help=f'SQLite ML Metadata file (default: {defaults.metadata_path})')
  parser.add_argument('--pipeline-name', default=defaults.pipeline_name,
                      help=f'pipeline name (default: {defaults.pipeline_name})')
  parser.add_argument('--metadata-config', default=None,
                      help='text-format ml_metadata ConnectionConfig file '
                      '(e.g. MySQL); overrides --metadata-path')
  args = parser.parse_args(argv)
  store = metadata_store.open_store(metadata_store.connection_config(
      args.metadata_path, args.metadata_config))
  print(describe(store, args.pipeline_name))
  return 0


if __name__ == '__main__':
  sys.exit(main())
