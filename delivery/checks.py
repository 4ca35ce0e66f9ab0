"""The CD gate's checks of the version itself and of its answers.

Step 1 (infra): the model config names the model with a policy that can
serve `stable` and `canary` side by side; the SavedModel is complete, has
the signatures clients call with the inputs and dtypes of the problem's
raw features (models/<problem>/problem.py), and loads in-process. Step 3
(predictions): the canary's answers are valid answers of the problem's task
(models/tasks.py), the same over REST, gRPC and in-process, and not worse
than stable's on the same rows (canary_stats).
"""

import argparse
import os
from typing import Dict, List, Optional, Tuple

from delivery import canary_stats
from delivery import cd_infra
from delivery import cd_run
from delivery import config_file
from models import features
from models import problem as problems_lib
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


def _signature_problems(version_dir: str,
                        problem: problems_lib.Problem) -> List[str]:
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
    for key, kind in problem.raw_types.items():
      if key not in inputs:
        problems.append(f'{features.RAW_SIGNATURE} lacks input {key!r}')
      elif (types_pb2.DataType.Name(inputs[key].dtype) !=
            features.DATATYPE_NAMES[kind]):
        problems.append(
            f'{features.RAW_SIGNATURE} input {key!r} is '
            f'{types_pb2.DataType.Name(inputs[key].dtype)}, the '
            f'{problem.name} problem says {features.DATATYPE_NAMES[kind]}')
    extra = sorted(set(inputs) - set(problem.raw_types))
    if extra:
      problems.append(f'{features.RAW_SIGNATURE} has inputs clients do not '
                      f'send: {extra}')
  return problems


def check_version(version_dir: str, problem: problems_lib.Problem
                  ) -> Tuple[cd_run.Check, Optional[object]]:
  """Step 1 for the version itself; returns the loaded SavedModel too."""
  problems = _signature_problems(version_dir, problem)
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
      f'{len(problem.raw_types)} raw inputs as the {problem.name} problem '
      'declares; loads in-process')
  return cd_run.Check('infra', not problems, summary, problems), loaded


# --- step 3: prediction checks ---------------------------------------------
def in_process(problem: problems_lib.Problem, loaded,
               trips: List[Dict]) -> List[List[float]]:
  """The SavedModel's own answers: what the server must reproduce."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorflow.core.framework import types_pb2  # pylint: disable=g-import-not-at-top
  instances = [client.raw_instance(problem, t) for t in trips]
  dtypes = {kind: tf.as_dtype(types_pb2.DataType.Value(name))
            for kind, name in features.DATATYPE_NAMES.items()}
  inputs = {k: tf.constant([i[k] for i in instances], dtype=dtypes[kind])
            for k, kind in problem.raw_types.items()}
  outputs = loaded.signatures[features.RAW_SIGNATURE](**inputs)['outputs']
  return [[float(v) for v in p.reshape(-1)] for p in outputs.numpy()]


def _max_diff(a: List[List[float]], b: List[List[float]]) -> float:
  """The largest difference between two lists of answers, value by value."""
  return max(abs(x - y) for p, q in zip(a, b) for x, y in zip(p, q))


def check_predictions(run: cd_run.Delivery, loaded, trips: List[Dict],
                      labels: List[int], stable: Optional[int],
                      args: argparse.Namespace) -> cd_run.Check:
  """Canary answers: sane, the same over both APIs and in-process, and not
  worse than `stable` on the same rows (canary_stats)."""
  problem = run.problem
  task, n_classes = problem.task, len(problem.label.classes)
  failures, figures = [], {'rows': len(trips), 'classes': {
      name: labels.count(i) for i, name in enumerate(problem.label.classes)}}
  rest = client.RestClient(run.rest_url, run.model_name, problem,
                           label=CANARY)
  grpc_client = client.GrpcClient(run.grpc_address, run.model_name, problem,
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
  expected = in_process(problem, loaded, trips)
  bad = [(a, why) for a in by_rest + by_grpc
         for why in [task.fault(a if len(a) > 1 else a[0], n_classes)] if why]
  if bad or len(by_rest) != len(trips) or len(by_grpc) != len(trips):
    failures.append(f'{len(bad)} answers are no valid {task.name} answers '
                    f'(e.g. {bad[:3]}), or rows are missing')
    return cd_run.Check('predictions', False, failures[0], failures, figures)
  figures['max_rest_grpc_diff'] = _max_diff(by_rest, by_grpc)
  figures['max_served_in_process_diff'] = _max_diff(by_rest, expected)
  if figures['max_rest_grpc_diff'] > args.tolerance:
    failures.append(f'REST and gRPC differ by up to '
                    f'{figures["max_rest_grpc_diff"]:.2g} (> {args.tolerance})')
  if figures['max_served_in_process_diff'] > args.tolerance:
    failures.append('served answers differ from the SavedModel in-process by '
                    f'up to {figures["max_served_in_process_diff"]:.2g} '
                    f'(> {args.tolerance})')
  max_diff = max(figures['max_rest_grpc_diff'],
                 figures['max_served_in_process_diff'])
  shares = ', '.join(f'{n} {c}' for c, n in figures['classes'].items())
  summary = (f'{len(trips)} rows ({shares}): valid {task.name} answers; '
             f'REST = gRPC = in-process (max diff {max_diff:.1g})')
  undecided = []
  if stable is None:
    summary += '; no stable version to compare with'
  else:
    by_stable, error = cd_infra.ask(
        f'labels/{STABLE} over REST', client.RestClient(
            run.rest_url, run.model_name, problem, label=STABLE).predict,
        trips, CHUNK_ROWS)
    if error:
      raise InfraError(f'stable (version {stable}) answered an error, so '
                       f'there is nothing to compare with: {error}')
    comparisons = canary_stats.compare(
        by_rest, by_stable, labels,
        {m: getattr(args, f'{m}_margin') for m in canary_stats.METRICS},
        task=task, n_classes=n_classes)
    figures.update(
        stable_version=stable,
        disagreement=round(canary_stats.disagreement(
            by_rest, by_stable, task, n_classes), 4),
        # The mean answer's move: of P(class 1) for a binary task, of the
        # predicted class's probability otherwise.
        mean_shift=round(sum(task.score(a, n_classes) - task.score(
            b, n_classes) for a, b in zip(by_rest, by_stable)) / len(trips),
                         4),
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
