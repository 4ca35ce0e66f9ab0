"""Compiles a release's pipeline to TFX IR (run by pipeline/release.py in a
process whose imports come from the release's code).

    python -m pipeline.release_ir --problem taxi --out pipeline_ir.json

The IR is of `local_pipeline` (the DAG the local runners and the CT
controller run) for the latest bundled span, in TFX's own compiler, as JSON:
what the release runs, node by node, kept beside its code.
"""

import dataclasses
import sys

from pipeline import configs
from project import cli


def main(argv=None) -> int:
  parser = cli.ArgumentParser(prog='python -m pipeline.release_ir',
                              description=__doc__.split('\n\n')[0])
  parser.add_argument('--out', required=True, help='where to write the IR')
  configs.add_flags(parser)
  args = parser.parse_args(argv)
  cfg = configs.from_flags(args)
  from ops import console  # pylint: disable=g-import-not-at-top
  console.quiet_imports()
  from google.protobuf import json_format  # pylint: disable=g-import-not-at-top
  from tfx.dsl.compiler import compiler  # pylint: disable=g-import-not-at-top
  from data import spans  # pylint: disable=g-import-not-at-top
  from pipeline import run_pipeline  # pylint: disable=g-import-not-at-top
  available = spans.spans_on_disk(cfg.data_root)
  cfg = dataclasses.replace(cfg, span=cfg.span or max(available or [1]))
  ir = compiler.Compiler().compile(run_pipeline.local_pipeline(cfg))
  with open(args.out, 'w') as f:
    f.write(json_format.MessageToJson(ir, sort_keys=True))
  return 0


if __name__ == '__main__':
  sys.exit(main())
