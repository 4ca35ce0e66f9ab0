"""The CD gate's checks of the version itself and of its answers.

Step 1 (infra): the model config names the model with a policy that can
serve `stable` and `canary` side by side; the SavedModel is complete, has
the signatures clients call with the inputs and dtypes of
models/features.py, and loads in-process. Step 3 (predictions): the
canary's answers are probabilities, the same over REST, gRPC and
in-process, and not worse than stable's on the same rows (canary_stats).
"""

import argparse
import math
import os
from typing import Dict, List, Optional, Tuple

from delivery import canary_stats
from delivery import cd_infra
from delivery import cd_run
from delivery import config_file
from models import features
from serving import client
from serving import model_config

CANARY, STABLE = cd_run.CANARY, cd_run.STABLE
InfraError = cd_run.InfraError
REQUIRED_SIGNATURES = ('serving_default', features.RAW_SIGNATURE)
CHUNK_ROWS = 100  # rows per predict request: under any request limit
DEFAULT_TOLERANCE = 1e-4  # |REST - gRPC|, |served - in-process|


# --- step 1: infra compatibility -------------------------------------------
def check_config(path: str, model_name: str,
                 base: Optional[str]) -> model_config.ModelConfig:
  """The model config parses, names the model, agrees on the base path and
  has a version policy that can serve `stable` and `canary` side by side."""
  config = config_file.load(path, model_name)  # config_file.Error: exit 2
  if base and os.path.realpath(base) != os.path.realpath(config.base_path):
    raise InfraError(f'--model_base_path {base} is not the base_path of '
                     f'{model_name!r} in {path} ({config.base_path})')
  if config.policy == 'latest' and config.num_versions < 2:
    raise InfraError(
        f'{path}: model_version_policy latest {{num_versions: 1}} '
        'serves only the newest version, so `stable` and `canary` cannot be served '
        'side by side; use `specific { versions: <stable> }` (CD adds the '
        'canary) or latest { num_versions: 2 }')
  return config


def _signature_problems(version_dir: str) -> List[str]:
  """What keeps clients from calling this SavedModel, read from the proto."""
  from tensorflow.core.framework import types_pb2  # pylint: disable=g-import-not-at-top
  from tensorflow.core.protobuf import saved_model_pb2  # pylint: disable=g-import-not-at-top
  pb = os.path.join(version_dir, 'saved_model.pb')
  if not os.path.exists(pb):
    return [f'{pb} is missing (incomplete push?)']
  if not os.path.exists(os.path.join(version_dir, 'variables',
                                     'variables.index')):
    return [f'{version_dir}/variables/variables.index is missing']
  try:
    with open(pb, 'rb') as f:
      saved = saved_model_pb2.SavedModel.FromString(f.read())
    signatures = saved.meta_graphs[0].signature_def
  except Exception as e:  # pylint: disable=broad-except
    return [f'{pb} does not parse: {e}']
  problems = [f'no {name!r} signature (has {sorted(signatures)})'
              for name in REQUIRED_SIGNATURES if name not in signatures]
  for name in REQUIRED_SIGNATURES:
    if name in signatures and 'outputs' not in signatures[name].outputs:
      problems.append(f'signature {name!r} has no "outputs" output')
  if 'serving_default' in signatures:
    examples = signatures['serving_default'].inputs.get('examples')
    if examples is None or examples.dtype != types_pb2.DT_STRING:
      problems.append('serving_default does not take serialized tf.Examples '
                      'as a string input "examples"')
  if features.RAW_SIGNATURE in signatures:
    inputs = signatures[features.RAW_SIGNATURE].inputs
    for key, kind in features.RAW_FEATURE_TYPES.items():
      if key not in inputs:
        problems.append(f'{features.RAW_SIGNATURE} lacks input {key!r}')
      elif (types_pb2.DataType.Name(inputs[key].dtype) !=
            features.DATATYPE_NAMES[kind]):
        problems.append(
            f'{features.RAW_SIGNATURE} input {key!r} is '
            f'{types_pb2.DataType.Name(inputs[key].dtype)}, models/features.py '
            f'says {features.DATATYPE_NAMES[kind]}')
    extra = sorted(set(inputs) - set(features.RAW_FEATURE_TYPES))
    if extra:
      problems.append(f'{features.RAW_SIGNATURE} has inputs clients do not '
                      f'send: {extra}')
  return problems


def check_version(version_dir: str) -> Tuple[cd_run.Check, Optional[object]]:
  """Step 1 for the version itself; returns the loaded SavedModel too."""
  problems = _signature_problems(version_dir)
  loaded = None
  if not problems:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    try:
      loaded = tf.saved_model.load(version_dir)
    except Exception as e:  # pylint: disable=broad-except
      problems.append(f'does not load: {type(e).__name__}: '
                      f'{str(e).splitlines()[0][:200]}')
  summary = '; '.join(problems) or (
      f'SavedModel complete; signatures {", ".join(REQUIRED_SIGNATURES)}; '
      f'{len(features.RAW_FEATURE_TYPES)} raw inputs as in models/features.py; '
      'loads in-process')
  return cd_run.Check('infra', not problems, summary, problems), loaded


# --- step 3: prediction checks ---------------------------------------------
def in_process(loaded, trips: List[Dict]) -> List[float]:
  """The SavedModel's own answers: what the server must reproduce."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorflow.core.framework import types_pb2  # pylint: disable=g-import-not-at-top
  instances = [client.raw_instance(t) for t in trips]
  dtypes = {kind: tf.as_dtype(types_pb2.DataType.Value(name))
            for kind, name in features.DATATYPE_NAMES.items()}
  inputs = {k: tf.constant([i[k] for i in instances], dtype=dtypes[kind])
            for k, kind in features.RAW_FEATURE_TYPES.items()}
  outputs = loaded.signatures[features.RAW_SIGNATURE](**inputs)['outputs']
  return [float(p[0]) for p in outputs.numpy()]


def check_predictions(run: cd_run.Delivery, loaded, trips: List[Dict],
                      labels: List[int], stable: Optional[int],
                      args: argparse.Namespace) -> cd_run.Check:
  """Canary answers: sane, the same over both APIs and in-process, and not
  worse than `stable` on the same rows (canary_stats)."""
  failures, figures = [], {'rows': len(trips), 'positives': sum(labels)}
  rest = client.RestClient(run.rest_url, run.model_name, label=CANARY)
  grpc_client = client.GrpcClient(run.grpc_address, run.model_name,
                                  label=CANARY)
  try:
    by_rest, error = cd_infra.ask(f'labels/{CANARY} over REST', rest.predict,
                                  trips, CHUNK_ROWS)
    by_grpc, error = (None, error) if error else cd_infra.ask(
        f'labels/{CANARY} over gRPC', grpc_client.predict, trips, CHUNK_ROWS)
  finally:
    grpc_client.close()
  if error:
    return cd_run.Check('predictions', False,
                        f'canary answered an error: {error}',
                        [f'canary answered an error: {error}'], figures)
  expected = in_process(loaded, trips)
  bad = [p for p in by_rest + by_grpc if not (math.isfinite(p) and
                                              0.0 <= p <= 1.0)]
  if bad or len(by_rest) != len(trips) or len(by_grpc) != len(trips):
    failures.append(f'{len(bad)} answers are not probabilities in [0, 1] '
                    f'(e.g. {bad[:3]}), or rows are missing')
    return cd_run.Check('predictions', False, failures[0], failures, figures)
  figures['max_rest_grpc_diff'] = max(abs(a - b) for a, b in
                                      zip(by_rest, by_grpc))
  figures['max_served_in_process_diff'] = max(
      abs(a - b) for a, b in zip(by_rest, expected))
  if figures['max_rest_grpc_diff'] > args.tolerance:
    failures.append(f'REST and gRPC differ by up to '
                    f'{figures["max_rest_grpc_diff"]:.2g} (> {args.tolerance})')
  if figures['max_served_in_process_diff'] > args.tolerance:
    failures.append('served answers differ from the SavedModel in-process by '
                    f'up to {figures["max_served_in_process_diff"]:.2g} '
                    f'(> {args.tolerance})')
  max_diff = max(figures['max_rest_grpc_diff'],
                 figures['max_served_in_process_diff'])
  summary = (f'{len(trips)} rows ({sum(labels)} positive): probabilities in '
             f'[0, 1]; REST = gRPC = in-process (max diff {max_diff:.1g})')
  undecided = []
  if stable is None:
    summary += '; no stable version to compare with'
  else:
    by_stable, error = cd_infra.ask(
        f'labels/{STABLE} over REST', client.RestClient(
            run.rest_url, run.model_name, label=STABLE).predict,
        trips, CHUNK_ROWS)
    if error:
      raise InfraError(f'stable (version {stable}) answered an error, so '
                       f'there is nothing to compare with: {error}')
    comparisons = canary_stats.compare(
        by_rest, by_stable, labels,
        {m: getattr(args, f'{m}_margin') for m in canary_stats.METRICS})
    figures.update(
        stable_version=stable,
        disagreement=round(canary_stats.disagreement(by_rest, by_stable), 4),
        mean_shift=round((sum(by_rest) - sum(by_stable)) / len(trips), 4),
        **{c.metric: c.figures() for c in comparisons})
    failures += [c.describe() for c in comparisons
                 if c.verdict == canary_stats.FAIL]
    undecided = [c.describe() for c in comparisons
                 if c.verdict == canary_stats.INCONCLUSIVE]
    summary += (f'; vs stable {stable}: ' +
                '; '.join(c.describe() for c in comparisons) +
                f'; reported: disagreement {figures["disagreement"]:.1%}, '
                f'mean shift {figures["mean_shift"]:+.3f}')
  return cd_run.Check('predictions', not failures,
                      '; '.join(failures) if failures else summary, failures,
                      figures, undecided)
