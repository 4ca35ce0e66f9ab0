"""Beam pipeline options the Python SDK does not know, declared so they pass.

A portable runner sends a Java job server only the options the Python side
knows: its own, and those the job server lists when asked
(DescribePipelineOptions); anything else is dropped with "Discarding
unparseable args". Declaring an option here, Beam's documented way to add
options (a PipelineOptions subclass), makes every pipeline this process
builds carry it. Imported by pipeline/pipeline.py, so every component's
Beam job sees these.

--pipeline_resources_detector_factory_class: Java's
PipelineResourcesOptions, which Beam's Flink job server reads per job but
does not list. The local Flink cluster (cluster/flink.py) passes its
NoStagingDetectorFactory there, so a job ships no jars.
"""

from apache_beam.options import pipeline_options


class JobServerOptions(pipeline_options.PipelineOptions):

  @classmethod
  def _add_argparse_args(cls, parser):
    parser.add_argument(
        '--pipeline_resources_detector_factory_class', default=None,
        help='Java class (a PipelineResourcesDetector.Factory with a static '
        'create()) that picks the jars a Java job server stages per job')
