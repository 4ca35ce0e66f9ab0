"""Where the Trainer's hyperparameters come from: a Tuner, the last tuning, or
the configuration.

  --tune          TFX's Tuner searches them on this run's data
                  (models/tuning.py: the search space and budget) and the
                  Trainer takes its `best_hyperparameters`;
  otherwise       a Resolver finds the latest HyperParameters a Tuner of this
                  pipeline wrote, and the Trainer takes those; before any
                  tuning it finds none, and the Trainer uses the configured
                  values (pipeline/configs.py). TFX's penguin example imports
                  a tuned file with an Importer instead; a Resolver keeps the
                  lineage from a model to the tuning run that set its
                  hyperparameters (`python -m lineage version V`).
  from_tuning     False (Vertex): no Resolver, the configured values unless
                  --tune. KubeflowV2 compiles only TFX's own
                  LatestArtifactStrategy, which fails the run when there is
                  no artifact yet (it returns None below its min count), and
                  a Vertex task cannot query ML Metadata to do otherwise.

Which values win when both exist, and how a tuned value is parsed, is
models/model.py's rule (run_fn): tuned values replace the configured ones
for the searched keys; the seed is always the configured one.
"""

from typing import Any, Dict, List, Optional, Union

import ml_metadata as mlmd
from tfx import types
from tfx.components import Transform
from tfx.components import Tuner
from tfx.dsl.components.common.resolver import Resolver
from tfx.dsl.input_resolution.strategies.latest_artifact_strategy import LatestArtifactStrategy
from tfx.types import Channel
from tfx.types import standard_artifacts

from pipeline import cache_keys
from pipeline import configs

RESOLVER_ID = 'latest_tuning_resolver'


class LatestTunedStrategy(LatestArtifactStrategy):
  """TFX's LatestArtifactStrategy, but nothing (not a failed run) when no
  Tuner has run yet: the Trainer's `hyperparameters` input is optional."""

  def resolve_artifacts(
      self, store: mlmd.MetadataStore,
      input_dict: Dict[str, List[types.Artifact]]
  ) -> Optional[Dict[str, List[types.Artifact]]]:
    return self._resolve(input_dict)


def source(cfg: configs.PipelineConfig, examples: Channel,
           transform: Transform, schema: Channel, train_args: Any,
           eval_args: Any, from_tuning: bool = True
           ) -> Optional[Union[Tuner, Resolver]]:
  """The node the Trainer's hyperparameters come from (module docstring);
  None: the configured values.

  Each trial trains with the Trainer's own `train_args` / `eval_args`: with
  the steps fixed, a bigger batch sees more examples, so trials are only
  comparable with the budget the chosen values will be trained with.
  """
  if cfg.tune:
    return Tuner(
        tuner_fn=configs.TUNER_FN,
        examples=examples,
        transform_graph=transform.outputs['transform_graph'],
        schema=schema,
        train_args=train_args,
        eval_args=eval_args,
        custom_config={
            'problem': cfg.problem,
            'hparams': cfg.hparams,
            'tuner': {'max_trials': cfg.tuner_trials},
            'code_version': cache_keys.code_version(cfg.problem,
                                                    cache_keys.TUNER_CODE),
        })
  if not from_tuning:
    return None
  return Resolver(
      strategy_class=LatestTunedStrategy,
      hyperparameters=Channel(
          type=standard_artifacts.HyperParameters,
          producer_component_id='Tuner',
          output_key='best_hyperparameters')).with_id(RESOLVER_ID)


def channel(node: Optional[Union[Tuner, Resolver]]) -> Optional[Channel]:
  """The hyperparameters channel of `source`'s node (None: none)."""
  if node is None:
    return None
  return node.outputs['best_hyperparameters' if isinstance(node, Tuner)
                      else 'hyperparameters']
