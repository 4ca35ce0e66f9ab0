"""Show what a pipeline run recorded in ML Metadata: nodes, states, artifacts.

    python -m lineage.show_run                    # newest run, default store
    python -m lineage.show_run --metadata-path outputs/pipeline/metadata.sqlite
    MLMD_MYSQL_PASSWORD=... python -m lineage.show_run --mysql-host db --mysql-user tfx

Reads ML Metadata directly (no TFX import, so it answers in about a second).
Takes the runners' ML Metadata flags and variables, so it reads the store a
run wrote.
"""

import argparse
import sys

from project import paths
from lineage import metadata_store

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
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--pipeline-name', default=paths.PIPELINE_NAME,
                      help='TFX pipeline name (default: %(default)s)')
  metadata_store.add_flags(parser)
  args = parser.parse_args(argv)
  cfg = metadata_store.from_flags(args)
  store = metadata_store.open_store(metadata_store.store_config(cfg))
  print(describe(store, args.pipeline_name))
  return 0


if __name__ == '__main__':
  sys.exit(main())
