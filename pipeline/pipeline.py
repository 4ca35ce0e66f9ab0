"""The TFX pipeline: `create_pipeline` reads top to bottom like the DAG.

  CsvExampleGen (one span per run)
    -> StatisticsGen -> ExampleValidator (vs. the curated, imported schema)
    -> DataValidationGate (stops the run on any anomaly)
  span window Resolver (latest N valid spans of this run's data) -> Transform
    -> [Tuner, with --tune] -> Trainer
       (without --tune: the latest tuned hyperparameters Resolver, if any)
  baseline Resolver (the model users are served, never the candidate)
    -> Evaluator (the blessing rule: pipeline/blessing.py)
    -> InfraValidator (the candidate loaded in `python -m serving`)
    -> ModelCardGenerator -> Pusher (blessed and infra-blessed only)

What differs between orchestrators is an argument the runner passes (as in
TFX's templates), never a test of which runner this is:
  schema_file     run_pipeline and the Airflow DAG: the curated schema's
                  content-addressed copy under the pipeline root
                  (cache_keys.schema_snapshot); vertex_runner: its copy in
                  the container image (cache_keys.image_schema_file), so the
                  compiling machine need not reach GCS.
  knobs           span, train and eval steps: constants (`fixed_knobs`), or
                  RuntimeParameters of a compiled Vertex job, settable per
                  run (`runtime_parameters`).
  window_spans    the span window Resolver's size (components/span_window.py);
                  None trains on the span this run ingested and validated
                  (Vertex: KubeflowV2 compiles only LatestArtifactStrategy
                  and LatestBlessedModelStrategy resolvers, and a Vertex task
                  cannot read ML Metadata).
  baseline_model  SERVED_MODEL (components/baseline.py), or, for the same
                  reason on Vertex, LATEST_BLESSED_MODEL: TFX's latest
                  blessed model.
  tuned_hparams   without --tune, train with the latest tuned
                  hyperparameters (a Resolver), or (False: Vertex, same
                  reason) with the configured ones (pipeline/hyperparameters.py).
The DataValidationGate runs on every orchestrator: a failed gate task fails
a Vertex job before Transform, as it stops a local run.

Imports name TFX modules directly rather than `tfx.v1`: `tfx.v1` pulls in
google-cloud-aiplatform (~10 s per process here) that local runs never use.
"""

import dataclasses
import json
from typing import List, Optional, Union

from tfx.components import CsvExampleGen
from tfx.components import Evaluator
from tfx.components import ExampleValidator
from tfx.components.schema_gen.import_schema_gen.component import ImportSchemaGen
from tfx.components import StatisticsGen
from tfx.components import Trainer
from tfx.components import Transform
from tfx.dsl.components.common.resolver import Resolver
from tfx.dsl.input_resolution.strategies.latest_blessed_model_strategy import LatestBlessedModelStrategy
from tfx.orchestration import data_types
from tfx.orchestration import pipeline as tfx_pipeline
from tfx.proto import example_gen_pb2
from tfx.proto import infra_validator_pb2
from tfx.proto import pusher_pb2
from tfx.proto import range_config_pb2
from tfx.proto import trainer_pb2
from tfx.types import Channel
from tfx.types import standard_artifacts
from tfx.utils import proto_utils

from data import spans
from google.protobuf import message
from ml_metadata.proto import metadata_store_pb2
from components import baseline
from pipeline import blessing
from pipeline import cache_keys
from pipeline import configs
from pipeline import hyperparameters
from pipeline import job_server_options  # pylint: disable=unused-import
from components import pusher
from components.infra_validator import InfraValidator
from components.model_card import ModelCardGenerator
from components.span_window import ValidSpanWindowStrategy
from components.validation_gate import DataValidationGate

# baseline_model: which model the candidate must not fall behind.
SERVED_MODEL = 'served_model'
LATEST_BLESSED_MODEL = 'latest_blessed_model'
Knob = Union[message.Message, data_types.RuntimeParameter, None]


@dataclasses.dataclass(frozen=True)
class Knobs:
  """The per-run knobs, as the execution properties that take them."""
  range_config: Knob  # CsvExampleGen's span (None: the latest on disk)
  train_args: Knob
  eval_args: Knob


def span_range(span: Optional[int]) -> Optional[range_config_pb2.RangeConfig]:
  """RangeConfig that pins ExampleGen to `span` (None: the latest span)."""
  if span is None:
    return None
  return range_config_pb2.RangeConfig(
      static_range=range_config_pb2.StaticRange(
          start_span_number=span, end_span_number=span))


def fixed_knobs(cfg: configs.PipelineConfig) -> Knobs:
  """The knobs as constants: a pipeline built for each run."""
  return Knobs(range_config=span_range(cfg.span),
               train_args=trainer_pb2.TrainArgs(num_steps=cfg.train_steps),
               eval_args=trainer_pb2.EvalArgs(num_steps=cfg.eval_steps))


def runtime_parameters(cfg: configs.PipelineConfig) -> Knobs:
  """The knobs a compiled job takes per run (Vertex), defaults from `cfg`.

  KubeflowV2 binds a RuntimeParameter to a whole execution property only, so
  each knob is the JSON text of the proto TFX hands its executor anyway:
  `train_args` / `eval_args` ('{"num_steps": N}'), and `range_config` for the
  span ('{"static_range": {"start_span_number": S, "end_span_number": S}}';
  '' ingests the latest span). Names equal the execution properties they set.
  """
  def parameter(name: str, proto: Optional[message.Message]):
    default = '' if proto is None else json.dumps(
        proto_utils.proto_to_dict(proto))
    return data_types.RuntimeParameter(name=name, ptype=str, default=default)

  fixed = fixed_knobs(cfg)
  return Knobs(**{field.name: parameter(field.name, getattr(fixed, field.name))
                  for field in dataclasses.fields(Knobs)})


def example_gen(cfg: configs.PipelineConfig, span: Optional[int] = None,
                range_config: Knob = None) -> CsvExampleGen:
  """ExampleGen for one span of `cfg.data_root` (latest span if None).

  `range_config`, if given, replaces `span` (Vertex: a RuntimeParameter).
  """
  if range_config is None:
    range_config = span_range(span)
  return CsvExampleGen(
      input_base=cfg.data_root,
      input_config=example_gen_pb2.Input(splits=[
          example_gen_pb2.Input.Split(name='single_split',
                                      pattern=spans.SPAN_PATTERN)
      ]),
      range_config=range_config)


def span_window(cfg: configs.PipelineConfig, num_spans: Optional[int],
                ingest: CsvExampleGen,
                validation_gate: DataValidationGate) -> Optional[Resolver]:
  """The latest `num_spans` valid spans of this run's data root, ending at
  this run's span (components/span_window.py); None when `num_spans` is None.

  It resolves only after this run's span is ingested and has passed the
  gate.
  """
  if num_spans is None:
    return None
  window = Resolver(
      strategy_class=ValidSpanWindowStrategy,
      config={
          'num_spans': num_spans,
          'gate_context': f'{cfg.pipeline_name}.{validation_gate.id}',
          'data_root': cfg.data_root,
          'last_span': cfg.span,
      },
      examples=Channel(
          type=standard_artifacts.Examples,
          producer_component_id=ingest.id,
          output_key='examples')).with_id('span_window_resolver')
  window.add_upstream_node(validation_gate)
  return window


def baseline_resolver(cfg: configs.PipelineConfig, baseline_model: str,
                      trainer: Trainer) -> Resolver:
  """The Resolver of the model the candidate must not fall behind."""
  if baseline_model == SERVED_MODEL:  # never the candidate itself
    return Resolver(
        strategy_class=baseline.ServedModelStrategy,
        config={'base_path': cfg.serving_model_dir,
                'model_config_file': cfg.model_config_file or '',
                'model_name': cfg.model_name},
        model=Channel(type=standard_artifacts.Model),
        candidate=trainer.outputs['model']).with_id('served_model_resolver')
  if baseline_model == LATEST_BLESSED_MODEL:
    return Resolver(
        strategy_class=LatestBlessedModelStrategy,
        model=Channel(type=standard_artifacts.Model),
        model_blessing=Channel(type=standard_artifacts.ModelBlessing)
    ).with_id('latest_blessed_model_resolver')
  raise ValueError(f'baseline_model must be {SERVED_MODEL!r} or '
                   f'{LATEST_BLESSED_MODEL!r}, not {baseline_model!r}')


def create_pipeline(
    cfg: configs.PipelineConfig,
    *,
    schema_file: str,
    knobs: Knobs,
    window_spans: Optional[int],
    baseline_model: str,
    tuned_hparams: bool = True,
    metadata_connection_config: Optional[
        metadata_store_pb2.ConnectionConfig] = None,
    beam_pipeline_args: Optional[List[str]] = None,
) -> tfx_pipeline.Pipeline:
  """The full pipeline: ingest and validate one span, train on the window.

  The keyword arguments are what the orchestrator decides (module
  docstring): the runner computes them. The problem (cfg.problem) gives
  the preprocessing, the model's head and the blessing rule.
  """
  problem = cfg.problem_spec
  ingest = example_gen(cfg, range_config=knobs.range_config)

  statistics_gen = StatisticsGen(examples=ingest.outputs['examples'])

  # The problem's curated, version-controlled schema
  # (schema/<problem>/schema.pbtxt), imported from a content-addressed copy
  # (pipeline/cache_keys.py).
  schema_gen = ImportSchemaGen(schema_file=schema_file)

  example_validator = ExampleValidator(
      statistics=statistics_gen.outputs['statistics'],
      schema=schema_gen.outputs['schema'])

  validation_gate = DataValidationGate(
      anomalies=example_validator.outputs['anomalies'],
      statistics=statistics_gen.outputs['statistics'],
      examples=ingest.outputs['examples'],
      data_root=cfg.data_root,
      span_pattern=spans.SPAN_PATTERN)

  # What Transform and Trainer learn from: the span window, or this run's
  # span once the gate passed it.
  window = span_window(cfg, window_spans, ingest, validation_gate)
  training_examples = (window.outputs['examples'] if window else
                       ingest.outputs['examples'])

  transform = Transform(
      examples=training_examples,
      schema=schema_gen.outputs['schema'],
      preprocessing_fn=problem.preprocessing_fn,
      disable_statistics=True,
      materialize=False,
      disable_analyzer_cache=True,
      custom_config={
          'code_version': cache_keys.code_version(
              problem.name, cache_keys.TRANSFORM_CODE)
      })
  if window is None:  # no resolver between: the gate orders Transform itself
    transform.add_upstream_node(validation_gate)

  # A Tuner (--tune), the latest tuning's Resolver, or None: the configured
  # hyperparameters (pipeline/hyperparameters.py).
  hparams_source = hyperparameters.source(
      cfg, training_examples, transform, schema_gen.outputs['schema'],
      knobs.train_args, knobs.eval_args, from_tuning=tuned_hparams)

  trainer = Trainer(
      run_fn=configs.RUN_FN,
      examples=training_examples,
      transform_graph=transform.outputs['transform_graph'],
      schema=schema_gen.outputs['schema'],
      hyperparameters=hyperparameters.channel(hparams_source),
      train_args=knobs.train_args,
      eval_args=knobs.eval_args,
      custom_config={
          'problem': problem.name,
          'hparams': cfg.hparams,
          'code_version': cache_keys.code_version(problem.name,
                                                  cache_keys.TRAINER_CODE),
      })

  model_resolver = baseline_resolver(cfg, baseline_model, trainer)

  eval_config = blessing.eval_config(cfg)
  evaluator = Evaluator(
      examples=training_examples,
      model=trainer.outputs['model'],
      baseline_model=model_resolver.outputs['model'],
      eval_config=eval_config)

  # The candidate loaded in a real model server and asked about this run's
  # span: a model that does not load or answer is never pushed.
  infra_validator = InfraValidator(
      model=trainer.outputs['model'],
      examples=ingest.outputs['examples'],
      request_spec=infra_validator_pb2.RequestSpec(
          tensorflow_serving=infra_validator_pb2.TensorFlowServingRequestSpec(
              signature_names=['serving_default']),
          split_name='eval', num_examples=5),
      validation_spec=infra_validator_pb2.ValidationSpec(
          max_loading_time_seconds=120, num_tries=2),
      problem=problem.name, model_name=cfg.model_name)

  card = ModelCardGenerator(
      model=trainer.outputs['model'],
      model_run=trainer.outputs['model_run'],
      evaluation=evaluator.outputs['evaluation'],
      blessing=evaluator.outputs['blessing'],
      infra_blessing=infra_validator.outputs['blessing'],
      examples=training_examples,
      schema=schema_gen.outputs['schema'],
      hyperparameters=hyperparameters.channel(hparams_source),
      problem=problem.name, model_name=cfg.model_name,
      blessing_rule=blessing.describe(eval_config),
      code_version=cache_keys.code_version(problem.name,
                                           cache_keys.TRAINER_CODE))

  # Pushes only if the Evaluator and the InfraValidator blessed the model,
  # to <base>/<version>/ with its model card; never the same model twice,
  # never a half-copied version (components/pusher.py).
  model_pusher = pusher.Pusher(
      model=trainer.outputs['model'],
      model_blessing=evaluator.outputs['blessing'],
      infra_blessing=infra_validator.outputs['blessing'],
      model_card=card.outputs['model_card'],
      push_destination=pusher_pb2.PushDestination(
          filesystem=pusher_pb2.PushDestination.Filesystem(
              base_directory=cfg.serving_model_dir)))

  return tfx_pipeline.Pipeline(
      pipeline_name=cfg.pipeline_name,
      pipeline_root=cfg.pipeline_root,
      components=[
          ingest, statistics_gen, schema_gen, example_validator,
          validation_gate, *([window] if window else []), transform,
          *([hparams_source] if hparams_source else []), trainer,
          model_resolver, evaluator, infra_validator,
          card, model_pusher
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
