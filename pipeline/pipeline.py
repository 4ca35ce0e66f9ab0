"""The taxi TFX pipeline: `create_pipeline` reads top to bottom like the DAG.

  CsvExampleGen (one span per run)
    -> StatisticsGen -> ExampleValidator (vs. the curated, imported schema)
    -> DataValidationGate (stops the run on any anomaly)
  span window Resolver (latest N valid spans of this run's data) -> Transform
    -> Trainer
  served model Resolver (baseline: the model users are served, never the
    candidate) -> Evaluator (blessing rule: `eval_config`) -> Pusher

The same pipeline compiles for Vertex AI Pipelines (`vertex=True`, used by
vertex_runner.py). It differs from a local run in four places, and only
there (each is marked "Vertex:"):
  1. Span, train and eval steps are RuntimeParameters of the compiled job
     (settable per run), not constants.
  2. The schema is imported from a content-addressed copy inside the container
     image (the Dockerfile makes it), not one written under the pipeline root
     at compile time: the compiling machine need not reach GCS.
  3. The training window is the span this run ingested and validated, as a
     local run with `--window-spans 1`: KubeflowV2 compiles only
     LatestArtifactStrategy and LatestBlessedModelStrategy resolvers, not
     ValidSpanWindowStrategy, and a Vertex task cannot read ML Metadata.
  4. For the same reason the baseline is TFX's latest blessed model, not the
     served one (pipeline/baseline.py).
The DataValidationGate runs on both: a failed gate task fails the Vertex job
before Transform, as it stops a local run.

Imports name TFX modules directly rather than `tfx.v1`: `tfx.v1` pulls in
google-cloud-aiplatform (~10 s per process here) that local runs never use.
"""

import hashlib
import json
import os
import posixpath
from typing import Dict, List, Optional, Union

import tensorflow_model_analysis as tfma
from tfx.components import CsvExampleGen
from tfx.components import Evaluator
from tfx.components import ExampleValidator
from tfx.components.schema_gen.import_schema_gen.component import ImportSchemaGen
from tfx.components import Pusher
from tfx.components import StatisticsGen
from tfx.components import Trainer
from tfx.components import Transform
from tfx.dsl.components.base import executor_spec
from tfx.dsl.components.common.resolver import Resolver
from tfx.dsl.input_resolution.strategies.latest_blessed_model_strategy import LatestBlessedModelStrategy
from tfx.orchestration import data_types
from tfx.orchestration import pipeline as tfx_pipeline
from tfx.proto import example_gen_pb2
from tfx.proto import pusher_pb2
from tfx.proto import range_config_pb2
from tfx.proto import trainer_pb2
from tfx.types import Channel
from tfx.types import standard_artifacts
from tfx.utils import proto_utils

from google.protobuf import message
from ml_metadata.proto import metadata_store_pb2
from models import features
from pipeline import baseline
from pipeline import configs
from lineage import graph
from pipeline import pusher
from pipeline.span_window import ValidSpanWindowStrategy
from pipeline.validation_gate import DataValidationGate


def code_version(*modules: str) -> str:
  """Fingerprint of model code files (`models/<module>.py`).

  TFX loads `preprocessing_fn` / `run_fn` by module path, and a module path
  alone would let the cache reuse a Transform or Trainer run made with older
  code. Passing this fingerprint in their custom_config makes a change to the
  code they run a cache miss, and records which code made each artifact in
  ML Metadata.
  """
  digest = hashlib.sha256()
  for module in sorted(modules):
    with open(os.path.join(configs.MODELS_DIR, module + '.py'), 'rb') as f:
      digest.update(module.encode() + b'\0' + f.read())
  return digest.hexdigest()[:16]


# The schema's content address (the Dockerfile computes the same one); defined
# in the TFX-free lineage module, which reports it for every model.
schema_digest = graph.schema_digest


def schema_snapshot(cfg: configs.PipelineConfig) -> str:
  """Content-addressed copy of the curated schema under the pipeline root.

  ImportSchemaGen's cache key is the schema *path*, not its content, so an
  edited schema.pbtxt would silently reuse the old Schema artifact. Importing
  `<pipeline_root>/schema/<sha256>/schema.pbtxt` instead makes every schema
  edit a cache miss and records the exact schema version in ML Metadata.
  """
  with open(cfg.schema_path, 'rb') as f:
    content = f.read()
  digest = schema_digest(content)
  path = os.path.join(cfg.pipeline_root, 'schema', digest, 'schema.pbtxt')
  if not os.path.exists(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f'{path}.tmp{os.getpid()}'
    with open(tmp, 'wb') as f:
      f.write(content)
    os.replace(tmp, path)  # atomic: a reader never sees half a schema
  return path


def image_schema_file(cfg: configs.PipelineConfig) -> str:
  """Vertex: the path of the curated schema's copy inside the container image.

  Same content address as schema_snapshot, computed from the local file at
  compile time; the Dockerfile copies schema.pbtxt to the same path at build
  time. An image built from another schema has no file there, so the job
  fails at ImportSchemaGen instead of importing a schema the compiled
  pipeline never saw (and Vertex's cache, keyed on the path, is not fooled).
  """
  with open(cfg.schema_path, 'rb') as f:
    digest = schema_digest(f.read())
  return posixpath.join(configs.IMAGE_SCHEMA_DIR, digest, 'schema.pbtxt')


def span_range(span: Optional[int]) -> Optional[range_config_pb2.RangeConfig]:
  """RangeConfig that pins ExampleGen to `span` (None: the latest span)."""
  if span is None:
    return None
  return range_config_pb2.RangeConfig(
      static_range=range_config_pb2.StaticRange(
          start_span_number=span, end_span_number=span))


def runtime_parameters(
    cfg: configs.PipelineConfig) -> Dict[str, data_types.RuntimeParameter]:
  """Vertex: the knobs a compiled job takes per run, defaults from `cfg`.

  KubeflowV2 binds a RuntimeParameter to a whole execution property only, so
  each knob is the JSON text of the proto TFX hands its executor anyway:
  `train_args` / `eval_args` ('{"num_steps": N}'), and `range_config` for the
  span ('{"static_range": {"start_span_number": S, "end_span_number": S}}';
  '' ingests the latest span). Names equal the execution properties they set.
  """
  def as_json(proto: Optional[message.Message]) -> str:
    return '' if proto is None else json.dumps(proto_utils.proto_to_dict(proto))

  defaults = {
      'range_config': as_json(span_range(cfg.span)),
      'train_args': as_json(trainer_pb2.TrainArgs(num_steps=cfg.train_steps)),
      'eval_args': as_json(trainer_pb2.EvalArgs(num_steps=cfg.eval_steps)),
  }
  return {name: data_types.RuntimeParameter(name=name, ptype=str,
                                            default=default)
          for name, default in defaults.items()}


def example_gen(
    cfg: configs.PipelineConfig,
    span: Optional[int] = None,
    range_config: Union[range_config_pb2.RangeConfig,
                        data_types.RuntimeParameter, None] = None
) -> CsvExampleGen:
  """ExampleGen for one span of `cfg.data_root` (latest span if None).

  `range_config`, if given, replaces `span` (Vertex: a RuntimeParameter).
  """
  if range_config is None:
    range_config = span_range(span)
  return CsvExampleGen(
      input_base=cfg.data_root,
      input_config=example_gen_pb2.Input(splits=[
          example_gen_pb2.Input.Split(name='single_split',
                                      pattern=configs.SPAN_PATTERN)
      ]),
      range_config=range_config)


def eval_config(cfg: configs.PipelineConfig) -> tfma.EvalConfig:
  """TFMA config: metrics, slices, and the thresholds that decide blessing.

  A model is blessed when all of these hold (docs/decisions.md says why
  each threshold is what it is):
    overall slice   AUC >= min_auc, balanced accuracy >= min_balanced_accuracy,
                    min_calibration <= calibration <= max_calibration,
                    AUC >= baseline AUC - max_auc_drop (once there is one);
    guarded slices  min/max_slice_calibration (configs.GUARDED_SLICES).
  Plain accuracy is reported but no threshold: it rewards the majority
  class (78% of trips have no big tip), so a model that never says "big
  tip" scores 0.78 with no skill at all.
  """
  overall = [tfma.SlicingSpec()]
  guarded = [tfma.SlicingSpec(feature_values={key: value})
             for key, values in configs.GUARDED_SLICES.items()
             for value in values]

  def threshold(slices, lower=None, upper=None, max_drop=None):
    bounds = {}
    if lower is not None:
      bounds['lower_bound'] = {'value': lower}
    if upper is not None:
      bounds['upper_bound'] = {'value': upper}
    change = None
    if max_drop is not None:  # skipped by TFMA when there is no baseline
      change = tfma.GenericChangeThreshold(
          direction=tfma.MetricDirection.HIGHER_IS_BETTER,
          absolute={'value': -max_drop})
    return [tfma.PerSliceMetricThreshold(
        slicing_specs=slices, threshold=tfma.MetricThreshold(
            value_threshold=tfma.GenericValueThreshold(**bounds),
            change_threshold=change))]

  return tfma.EvalConfig(
      model_specs=[
          tfma.ModelSpec(
              signature_name='serving_default',
              label_key=features.LABEL_XF,
              preprocessing_function_names=['transform_features'])
      ],
      slicing_specs=overall + [
          tfma.SlicingSpec(feature_keys=[key]) for key in configs.SLICE_FEATURES
      ],
      metrics_specs=[
          tfma.MetricsSpec(metrics=[
              tfma.MetricConfig(class_name='ExampleCount'),
              tfma.MetricConfig(
                  class_name='AUC', per_slice_thresholds=threshold(
                      overall, lower=cfg.min_auc,
                      max_drop=cfg.max_auc_drop)),
              tfma.MetricConfig(
                  class_name='BalancedAccuracy',
                  per_slice_thresholds=threshold(
                      overall, lower=cfg.min_balanced_accuracy)),
              tfma.MetricConfig(
                  class_name='Calibration',
                  per_slice_thresholds=threshold(
                      overall, cfg.min_calibration, cfg.max_calibration)
                  + threshold(guarded, cfg.min_slice_calibration,
                              cfg.max_slice_calibration)),
              tfma.MetricConfig(class_name='BinaryAccuracy'),
              tfma.MetricConfig(class_name='Precision'),
              tfma.MetricConfig(class_name='Recall'),
              tfma.MetricConfig(class_name='MeanLabel'),
              tfma.MetricConfig(class_name='MeanPrediction'),
          ])
      ])


def create_pipeline(
    cfg: configs.PipelineConfig,
    metadata_connection_config: Optional[
        metadata_store_pb2.ConnectionConfig] = None,
    beam_pipeline_args: Optional[List[str]] = None,
    vertex: bool = False,
) -> tfx_pipeline.Pipeline:
  """The full pipeline: ingest and validate one span, train on the window.

  `vertex=True` compiles for Vertex AI Pipelines; what that changes, and why,
  is listed in the module docstring and marked "Vertex:" below.
  """
  # Vertex: per-run knobs are RuntimeParameters of the compiled job.
  knobs: Dict[str, Union[data_types.RuntimeParameter, None, message.Message]]
  if vertex:
    knobs = runtime_parameters(cfg)
  else:
    knobs = {'range_config': span_range(cfg.span),
             'train_args': trainer_pb2.TrainArgs(num_steps=cfg.train_steps),
             'eval_args': trainer_pb2.EvalArgs(num_steps=cfg.eval_steps)}

  ingest = example_gen(cfg, range_config=knobs['range_config'])

  statistics_gen = StatisticsGen(examples=ingest.outputs['examples'])

  # The schema is curated and version-controlled (schema/schema.pbtxt).
  # Vertex: imported from its copy in the container image.
  schema_gen = ImportSchemaGen(
      schema_file=image_schema_file(cfg) if vertex else schema_snapshot(cfg))

  example_validator = ExampleValidator(
      statistics=statistics_gen.outputs['statistics'],
      schema=schema_gen.outputs['schema'])

  validation_gate = DataValidationGate(
      anomalies=example_validator.outputs['anomalies'],
      statistics=statistics_gen.outputs['statistics'],
      examples=ingest.outputs['examples'],
      data_root=cfg.data_root,
      span_pattern=configs.SPAN_PATTERN)

  # The latest N valid spans of this run's data root, ending at this run's
  # span (pipeline/span_window.py). Vertex: no such resolver compiles; the
  # window is this run's span.
  window_nodes = []
  training_examples = ingest.outputs['examples']
  if not vertex:
    span_window = Resolver(
        strategy_class=ValidSpanWindowStrategy,
        config={
            'num_spans': cfg.window_spans,
            'gate_context': f'{cfg.pipeline_name}.{validation_gate.id}',
            'data_root': cfg.data_root,
            'last_span': cfg.span,
        },
        examples=Channel(
            type=standard_artifacts.Examples,
            producer_component_id=ingest.id,
            output_key='examples')).with_id('span_window_resolver')
    # Resolve only after this run's span is ingested and has passed the gate.
    span_window.add_upstream_node(validation_gate)
    window_nodes = [span_window]
    training_examples = span_window.outputs['examples']

  transform = Transform(
      examples=training_examples,
      schema=schema_gen.outputs['schema'],
      preprocessing_fn=configs.PREPROCESSING_FN,
      disable_statistics=True,
      materialize=False,
      disable_analyzer_cache=True,
      custom_config={
          'code_version': code_version('features', 'preprocessing')
      })
  if vertex:  # Vertex: the gate orders Transform itself (no resolver between)
    transform.add_upstream_node(validation_gate)

  trainer = Trainer(
      run_fn=configs.RUN_FN,
      examples=training_examples,
      transform_graph=transform.outputs['transform_graph'],
      schema=schema_gen.outputs['schema'],
      train_args=knobs['train_args'],
      eval_args=knobs['eval_args'],
      custom_config={
          'hparams': cfg.hparams,
          'code_version': code_version('features', 'preprocessing', 'model'),
      })

  # The baseline the candidate must not fall behind: the served model
  # (pipeline/baseline.py), never the candidate itself. Vertex: only the
  # stock latest-blessed-model resolver compiles.
  if vertex:
    model_resolver = Resolver(
        strategy_class=LatestBlessedModelStrategy,
        model=Channel(type=standard_artifacts.Model),
        model_blessing=Channel(type=standard_artifacts.ModelBlessing)
    ).with_id('latest_blessed_model_resolver')
  else:
    model_resolver = Resolver(
        strategy_class=baseline.ServedModelStrategy,
        config={'base_path': cfg.serving_model_dir,
                'model_config_file': cfg.model_config_file or '',
                'model_name': cfg.model_name},
        model=Channel(type=standard_artifacts.Model),
        candidate=trainer.outputs['model']).with_id('served_model_resolver')

  evaluator = Evaluator(
      examples=training_examples,
      model=trainer.outputs['model'],
      baseline_model=model_resolver.outputs['model'],
      eval_config=eval_config(cfg))

  # Pushes only if the Evaluator blessed the model, to <base>/<version>/;
  # never the same model twice, never a half-copied version (pipeline/pusher.py).
  model_pusher = Pusher(
      custom_executor_spec=executor_spec.ExecutorClassSpec(pusher.Executor),
      model=trainer.outputs['model'],
      model_blessing=evaluator.outputs['blessing'],
      push_destination=pusher_pb2.PushDestination(
          filesystem=pusher_pb2.PushDestination.Filesystem(
              base_directory=cfg.serving_model_dir)))

  return tfx_pipeline.Pipeline(
      pipeline_name=cfg.pipeline_name,
      pipeline_root=cfg.pipeline_root,
      components=[
          ingest, statistics_gen, schema_gen, example_validator,
          validation_gate, *window_nodes, transform, trainer, model_resolver,
          evaluator, model_pusher
      ],
      enable_cache=cfg.enable_cache,
      metadata_connection_config=metadata_connection_config,
      beam_pipeline_args=beam_pipeline_args)


def create_ingest_pipeline(
    cfg: configs.PipelineConfig,
    span: int,
    metadata_connection_config: Optional[
        metadata_store_pb2.ConnectionConfig] = None,
    beam_pipeline_args: Optional[List[str]] = None,
) -> tfx_pipeline.Pipeline:
  """ExampleGen alone for one earlier span, to fill the training window.

  Same pipeline name and node id as the full pipeline, so its Examples land in
  the same ML Metadata contexts and the span window Resolver finds them.
  """
  return tfx_pipeline.Pipeline(
      pipeline_name=cfg.pipeline_name,
      pipeline_root=cfg.pipeline_root,
      components=[example_gen(cfg, span)],
      enable_cache=cfg.enable_cache,
      metadata_connection_config=metadata_connection_config,
      beam_pipeline_args=beam_pipeline_args)
