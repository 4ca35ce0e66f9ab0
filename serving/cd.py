"""Continuous delivery: canary a pushed version, check it, promote or roll back.

    python -m serving.cd --model_config_file models.config [--version V]
        [--server http://127.0.0.1:8501 --grpc 127.0.0.1:8500]

The CD gate of MLOps level 2, for one version V (default: the newest pushed):
  1. infra: V is a complete SavedModel with the signatures clients call
     (serving_default, serving_raw), serving_raw takes the inputs and dtypes
     of models/features.py, it loads in-process, and the config file parses
     with a version policy that can serve `stable` and `canary` side by side.
  2. canary: V is added to a `specific` policy and, once the server reports
     it AVAILABLE, the `canary` label is pointed at it (TF Serving only
     labels available versions); waits until /labels/canary answers V.
  3. predictions: real labelled rows (the newest bundled span) through
     labels/canary over REST and gRPC: finite probabilities in [0, 1], REST =
     gRPC = the SavedModel called in-process; against `stable` (if any): mean
     prediction shift, rate of disagreeing decisions and accuracy drop within
     bounds.
  4. load: concurrent one-trip REST requests to labels/canary for a duration
     or a request count: no errors, p50/p99 within the performance targets.
  5. decision. All pass: `stable` -> V, `canary` removed (a canary label
     means "a version under test"), the old stable version is unloaded from a
     `specific` policy. Any fails: `stable` stays, `canary` removed, V leaves
     the policy and is moved to <base>/.rolled-back/ (serving.versions
     rollback of V itself, not of "the newest": the Pusher may have pushed a
     newer version meanwhile) so no `latest` policy serves it and the Pusher
     never pushes it again. The current stable version is never moved.

Every config change is an atomic file replace a polling server picks up;
requests to `stable` keep being answered throughout. Each step is printed and
appended to <base>/.versions.log (serving.versions' action log). Exit status:
0 promoted (or already stable), 1 rolled back, 2 usage or infrastructure
error (nothing judged; config changes made by this run are undone).
"""

import argparse
import concurrent.futures
import csv
import dataclasses
import http.client
import json
import math
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Callable, Dict, List, Optional, Tuple

from models import features
from pipeline import configs
from serving import client
from serving import demo
from serving import model_config
from serving import versions

EXIT_PROMOTED, EXIT_ROLLED_BACK, EXIT_ERROR = 0, 1, 2
CANARY, STABLE = 'canary', 'stable'
REQUIRED_SIGNATURES = ('serving_default', features.RAW_SIGNATURE)
_DTYPES = {'float': 'DT_FLOAT', 'int': 'DT_INT64', 'string': 'DT_STRING'}

# Gate defaults. Bounds compare the canary with `stable` on the same rows;
# latency targets are for one-trip REST requests at --concurrency on the
# serving host (README: c=8 p99 is ~21 ms on an idle 2-core machine).
DEFAULT_ROWS = 200
DEFAULT_TOLERANCE = 1e-4  # |REST - gRPC|, |served - in-process|
DEFAULT_MAX_MEAN_SHIFT = 0.1  # |mean(canary) - mean(stable)|
DEFAULT_MAX_DISAGREEMENT = 0.15  # share of rows whose 0.5 decision differs
DEFAULT_MAX_ACCURACY_DROP = 0.05
DEFAULT_CONCURRENCY = 4
DEFAULT_LOAD_SECONDS = 5.0
DEFAULT_P50_TARGET_MS = 25.0
DEFAULT_P99_TARGET_MS = 100.0
DEFAULT_WAIT_SECONDS = 60.0


class InfraError(Exception):
  """CD could not judge the version (config, server, data): exit 2."""


@dataclasses.dataclass
class Check:
  """One gate step's verdict; `figures` go to the log and the summary."""
  name: str
  passed: bool
  summary: str
  failures: List[str] = dataclasses.field(default_factory=list)
  figures: Dict = dataclasses.field(default_factory=dict)


class Delivery:
  """One CD run: where the model lives, the server, and the action log."""

  def __init__(self, config_file: str, model_name: str, base: str,
               version: int, rest_url: str, grpc_address: str,
               wait_seconds: float):
    self.config_file, self.model_name, self.base = config_file, model_name, base
    self.version, self.wait_seconds = version, wait_seconds
    self.rest_url, self.grpc_address = rest_url, grpc_address
    self.run_id = f'{int(time.time())}-{os.getpid()}'
    self.added_to_policy = False  # undo on abort / rollback

  def log(self, action: str, **details) -> None:
    """serving.versions' action log: one JSON line per action, printed too."""
    versions._log_action(self.base, action, cd_run=self.run_id,  # pylint: disable=protected-access
                         version=self.version, **details)

  # --- the config file -----------------------------------------------------
  def labels(self) -> Dict[str, int]:
    return dict(_entry(_read_config(self.config_file), self.model_name)
                .version_labels)

  def edit_config(self, edit: Callable[[object], None]) -> None:
    """Applies `edit` to this model's config entry; atomic replace."""
    proto = _read_config(self.config_file)
    edit(_entry(proto, self.model_name))
    _write_config(self.config_file, proto)

  # --- the server ----------------------------------------------------------
  def served_as(self, label: Optional[str] = None,
                version: Optional[int] = None) -> Optional[int]:
    """The version the server answers for a label / version; None if 404."""
    path = (f'/labels/{label}' if label else
            f'/versions/{version}' if version is not None else '')
    url = f'{self.rest_url}/v1/models/{self.model_name}{path}'
    try:
      with urllib.request.urlopen(url, timeout=10) as response:
        body = json.loads(response.read())
    except urllib.error.HTTPError as e:
      if e.code == 404:
        return None
      raise InfraError(f'{url}: HTTP {e.code}') from e
    except OSError as e:
      raise InfraError(f'model server at {self.rest_url} not reachable: '
                       f'{e}') from e
    return int(body['model_version_status'][0]['version'])

  def wait_until(self, what: str, predicate: Callable[[], bool]) -> float:
    """Seconds until `predicate`; InfraError after --wait_seconds."""
    start = time.monotonic()
    while not predicate():
      if time.monotonic() - start > self.wait_seconds:
        raise InfraError(
            f'the server at {self.rest_url} did not {what} within '
            f'{self.wait_seconds:.0f} s: does it read {self.config_file} '
            'with --model_config_file_poll_wait_seconds > 0?')
      time.sleep(0.2)
    return time.monotonic() - start


def _read_config(path: str):
  from google.protobuf import text_format  # pylint: disable=g-import-not-at-top
  from tensorflow_serving.config import model_server_config_pb2  # pylint: disable=g-import-not-at-top
  with open(path) as f:
    return text_format.Parse(f.read(),
                             model_server_config_pb2.ModelServerConfig())


def _entry(proto, model_name: str):
  entry = next((c for c in proto.model_config_list.config
                if c.name == model_name), None)
  if entry is None:
    raise InfraError(f'model {model_name!r} is not in the model config')
  return entry


def _write_config(path: str, proto) -> None:
  """Write-then-rename, as serving.versions.promote: never half a config."""
  from google.protobuf import text_format  # pylint: disable=g-import-not-at-top
  tmp = f'{path}.tmp{os.getpid()}'
  with open(tmp, 'w') as f:
    f.write(text_format.MessageToString(proto))
  os.replace(tmp, path)


def _policy(entry) -> str:
  return entry.model_version_policy.WhichOneof('policy_choice') or 'latest'


# --- step 1: infra compatibility -------------------------------------------
def check_config(config_file: str, model_name: str,
                 base: Optional[str]) -> model_config.ModelConfig:
  """The model config parses, names the model, agrees on the base path and
  has a version policy that can serve `stable` and `canary` side by side."""
  try:
    config = model_config.find(model_config.load(config_file), model_name)
  except (OSError, ValueError) as e:
    raise InfraError(f'model config {config_file}: {e}') from e
  if config is None:
    raise InfraError(f'model {model_name!r} is not in {config_file}')
  if base and os.path.realpath(base) != os.path.realpath(config.base_path):
    raise InfraError(f'--model_base_path {base} is not the base_path of '
                     f'{model_name!r} in {config_file} ({config.base_path})')
  if config.policy == 'latest' and config.num_versions < 2:
    raise InfraError(
        f'{config_file}: model_version_policy latest {{num_versions: 1}} '
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
      elif types_pb2.DataType.Name(inputs[key].dtype) != _DTYPES[kind]:
        problems.append(
            f'{features.RAW_SIGNATURE} input {key!r} is '
            f'{types_pb2.DataType.Name(inputs[key].dtype)}, models/features.py '
            f'says {_DTYPES[kind]}')
    extra = sorted(set(inputs) - set(features.RAW_FEATURE_TYPES))
    if extra:
      problems.append(f'{features.RAW_SIGNATURE} has inputs clients do not '
                      f'send: {extra}')
  return problems


def check_version(version_dir: str) -> Tuple[Check, Optional[object]]:
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
  return Check('infra', not problems, summary, problems), loaded


# --- step 2: serve V under `canary` ----------------------------------------
def start_canary(run: Delivery) -> Check:
  """Serves V (TF Serving labels only available versions), then labels it."""
  start = time.monotonic()
  entry = _entry(_read_config(run.config_file), run.model_name)
  if (_policy(entry) == 'specific' and
      run.version not in entry.model_version_policy.specific.versions):
    run.edit_config(lambda e: e.model_version_policy.specific.versions.append(
        run.version))
    run.added_to_policy = True
    run.log('cd_serve', policy='specific', config=run.config_file)
  loaded_in = run.wait_until(
      f'load version {run.version}',
      lambda: run.served_as(version=run.version) == run.version)
  versions.promote(run.config_file, run.model_name, run.version, CANARY)
  labelled_in = run.wait_until(
      f'serve labels/{CANARY} at version {run.version}',
      lambda: run.served_as(CANARY) == run.version)
  return Check('canary', True,
               f'labels/{CANARY} -> {run.version} after '
               f'{time.monotonic() - start:.1f} s',
               figures={'loaded_s': round(loaded_in, 2),
                        'labelled_s': round(labelled_in, 2)})


# --- step 3: prediction checks ---------------------------------------------
def newest_span_csv(data_root: str) -> str:
  spans = sorted(int(n[5:]) for n in os.listdir(data_root)
                 if n.startswith('span-') and n[5:].isdigit())
  if not spans:
    raise InfraError(f'no span-N/ directories under {data_root}')
  return os.path.join(data_root, f'span-{spans[-1]}', 'data.csv')


def read_rows(path: str, limit: int) -> Tuple[List[Dict], List[int]]:
  """Trips (raw features) and their labels (models/features.py's rule); rows
  without a label (tips or fare missing) are left out."""
  try:
    with open(path, newline='') as f:
      rows = [r for r in csv.DictReader(f)
              if features.label_of(r) is not None][:limit]
  except OSError as e:
    raise InfraError(f'check rows: {e}') from e
  if not rows:
    raise InfraError(f'check rows: {path} has no labelled rows')
  missing = sorted(set(features.RAW_FEATURE_TYPES) - set(rows[0]))
  if missing:
    raise InfraError(f'check rows: {path} lacks columns {missing}')
  trips = [{k: r[k] for k in features.RAW_FEATURE_TYPES} for r in rows]
  return trips, [features.label_of(r) for r in rows]


def in_process(loaded, trips: List[Dict]) -> List[float]:
  """The SavedModel's own answers: what the server must reproduce."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  dtypes = {'float': tf.float32, 'int': tf.int64, 'string': tf.string}
  instances = [client.raw_instance(t) for t in trips]
  inputs = {k: tf.constant([i[k] for i in instances], dtype=dtypes[kind])
            for k, kind in features.RAW_FEATURE_TYPES.items()}
  outputs = loaded.signatures[features.RAW_SIGNATURE](**inputs)['outputs']
  return [float(p[0]) for p in outputs.numpy()]


def _accuracy(predictions: List[float], labels: List[int]) -> float:
  return sum((p > 0.5) == bool(y) for p, y in zip(predictions, labels)) / len(
      labels)


def check_predictions(run: Delivery, loaded, trips: List[Dict],
                      labels: List[int], stable: Optional[int],
                      args: argparse.Namespace) -> Check:
  """Canary answers: sane, the same over both APIs and in-process, and not
  too far from `stable` on the same rows."""
  failures, figures = [], {'rows': len(trips)}
  try:
    rest = client.RestClient(run.rest_url, run.model_name, label=CANARY)
    by_rest = rest.predict(trips)
    grpc_client = client.GrpcClient(run.grpc_address, run.model_name,
                                    label=CANARY)
    try:
      by_grpc = grpc_client.predict(trips)
    finally:
      grpc_client.close()
  except Exception as e:  # pylint: disable=broad-except
    return Check('predictions', False, f'canary did not answer: {e}',
                 [f'canary did not answer: {e}'], figures)
  expected = in_process(loaded, trips)
  bad = [p for p in by_rest + by_grpc if not (math.isfinite(p) and
                                              0.0 <= p <= 1.0)]
  if bad or len(by_rest) != len(trips) or len(by_grpc) != len(trips):
    failures.append(f'{len(bad)} answers are not probabilities in [0, 1] '
                    f'(e.g. {bad[:3]}), or rows are missing')
    return Check('predictions', False, failures[0], failures, figures)
  figures['max_rest_grpc_diff'] = max(abs(a - b) for a, b in
                                      zip(by_rest, by_grpc))
  figures['max_served_in_process_diff'] = max(
      abs(a - b) for a, b in zip(by_rest, expected))
  figures['mean_prediction'] = round(sum(by_rest) / len(by_rest), 4)
  figures['accuracy'] = round(_accuracy(by_rest, labels), 4)
  if figures['max_rest_grpc_diff'] > args.tolerance:
    failures.append(f'REST and gRPC differ by up to '
                    f'{figures["max_rest_grpc_diff"]:.2g} (> {args.tolerance})')
  if figures['max_served_in_process_diff'] > args.tolerance:
    failures.append('served answers differ from the SavedModel in-process by '
                    f'up to {figures["max_served_in_process_diff"]:.2g} '
                    f'(> {args.tolerance})')
  max_diff = max(figures['max_rest_grpc_diff'],
                 figures['max_served_in_process_diff'])
  summary = (f'{len(trips)} rows: probabilities in [0, 1]; REST = gRPC = '
             f'in-process (max diff {max_diff:.1g}); '
             f'accuracy {figures["accuracy"]:.3f}')
  if stable is not None:
    try:
      by_stable = client.RestClient(run.rest_url, run.model_name,
                                    label=STABLE).predict(trips)
    except Exception as e:  # pylint: disable=broad-except
      raise InfraError(f'stable (version {stable}) did not answer: {e}') from e
    shift = abs(figures['mean_prediction'] - sum(by_stable) / len(by_stable))
    disagreement = sum((a > 0.5) != (b > 0.5)
                       for a, b in zip(by_rest, by_stable)) / len(trips)
    stable_accuracy = _accuracy(by_stable, labels)
    figures.update(stable_version=stable, mean_shift=round(shift, 4),
                   disagreement=round(disagreement, 4),
                   stable_accuracy=round(stable_accuracy, 4))
    if shift > args.max_mean_shift:
      failures.append(f'mean prediction shifted by {shift:.3f} from stable '
                      f'(> {args.max_mean_shift})')
    if disagreement > args.max_disagreement:
      failures.append(f'{disagreement:.1%} of decisions disagree with stable '
                      f'(> {args.max_disagreement:.1%})')
    if stable_accuracy - figures['accuracy'] > args.max_accuracy_drop:
      failures.append(f'accuracy {figures["accuracy"]:.3f} is more than '
                      f'{args.max_accuracy_drop} below stable\'s '
                      f'{stable_accuracy:.3f}')
    summary += (f' vs stable {stable_accuracy:.3f}; mean shift {shift:.3f} '
                f'(<= {args.max_mean_shift}), disagreement '
                f'{disagreement:.1%} (<= {args.max_disagreement:.0%})')
  else:
    summary += '; no stable version to compare with'
  return Check('predictions', not failures,
               '; '.join(failures) if failures else summary, failures, figures)


# --- step 4: load test ------------------------------------------------------
def check_load(run: Delivery, trips: List[Dict],
               args: argparse.Namespace) -> Check:
  """One-trip REST requests to labels/canary from --concurrency threads."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  url = urllib.parse.urlsplit(run.rest_url)
  path = f'/v1/models/{run.model_name}/labels/{CANARY}:predict'
  bodies = [json.dumps({'signature_name': features.RAW_SIGNATURE,
                        'instances': [client.raw_instance(t)]})
            for t in trips]
  deadline = (None if args.load_requests else
              time.monotonic() + args.load_seconds)
  shares = ([args.load_requests // args.concurrency +
             (i < args.load_requests % args.concurrency)
             for i in range(args.concurrency)] if args.load_requests
            else [None] * args.concurrency)

  def worker(index: int, share: Optional[int]):
    latencies, errors = [], []
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    n = 0
    while (n < share) if share is not None else (time.monotonic() < deadline):
      body = bodies[(index + n * args.concurrency) % len(bodies)]
      n += 1
      start = time.perf_counter()
      try:
        conn.request('POST', path, body=body)
        response = conn.getresponse()
        data = response.read()
        if response.status != 200:
          errors.append(f'HTTP {response.status}: {data[:200]!r}')
          continue
      except (OSError, http.client.HTTPException) as e:
        errors.append(f'{type(e).__name__}: {e}')
        conn.close()
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        continue
      latencies.append(time.perf_counter() - start)
    conn.close()
    return latencies, errors

  start = time.monotonic()
  with concurrent.futures.ThreadPoolExecutor(args.concurrency) as pool:
    results = list(pool.map(worker, range(args.concurrency), shares))
  wall = time.monotonic() - start
  latencies = [x for lat, _ in results for x in lat]
  errors = [x for _, err in results for x in err]
  figures = {'requests': len(latencies) + len(errors), 'errors': len(errors),
             'concurrency': args.concurrency, 'seconds': round(wall, 2),
             'p50_target_ms': args.p50_target_ms,
             'p99_target_ms': args.p99_target_ms}
  failures = []
  if errors:
    failures.append(f'{len(errors)} of {figures["requests"]} requests failed '
                    f'(first: {errors[0]})')
  if not latencies:
    failures.append('no request succeeded')
    return Check('load', False, '; '.join(failures), failures, figures)
  p50, p99 = (float(x) for x in np.percentile(np.array(latencies) * 1000,
                                              [50, 99]))
  figures.update(p50_ms=round(p50, 2), p99_ms=round(p99, 2),
                 requests_per_s=round(len(latencies) / wall, 1))
  if p50 > args.p50_target_ms:
    failures.append(f'p50 {p50:.2f} ms > target {args.p50_target_ms} ms')
  if p99 > args.p99_target_ms:
    failures.append(f'p99 {p99:.2f} ms > target {args.p99_target_ms} ms')
  summary = (f'{figures["requests"]} requests at concurrency '
             f'{args.concurrency} in {wall:.1f} s, {len(errors)} errors; '
             f'p50 {p50:.2f} ms (target {args.p50_target_ms}), '
             f'p99 {p99:.2f} ms (target {args.p99_target_ms})')
  return Check('load', not failures,
               summary + ('; ' + '; '.join(failures) if failures else ''),
               failures, figures)


# --- step 5: decision ------------------------------------------------------
def promote(run: Delivery, stable: Optional[int]) -> str:
  """stable -> V; canary removed; the old stable unloaded from `specific`."""
  versions.promote(run.config_file, run.model_name, run.version, STABLE)

  def finish(entry):
    entry.version_labels.pop(CANARY, None)
    specific = entry.model_version_policy.specific
    if (_policy(entry) == 'specific' and stable is not None and
        stable in specific.versions and
        stable not in entry.version_labels.values()):
      specific.versions.remove(stable)
  run.edit_config(finish)
  run.log('cd_unlabel', label=CANARY, unloaded=stable)
  decision = f'PROMOTED: {STABLE} {stable} -> {run.version}, {CANARY} removed'
  try:
    run.wait_until(f'serve labels/{STABLE} at version {run.version}',
                   lambda: run.served_as(STABLE) == run.version)
  except InfraError as e:  # the config is right; the server will follow
    decision += f' (warning: {e})'
  return decision


def withdraw_canary(run: Delivery, rejected: bool) -> None:
  """Removes the canary label, and V from a `specific` policy: always when V
  was rejected (unless another label needs it), else (an aborted run) only
  if this run added it."""
  proto = _read_config(run.config_file)
  entry = _entry(proto, run.model_name)
  labelled = entry.version_labels.get(CANARY) == run.version
  if labelled:
    del entry.version_labels[CANARY]
  listed = entry.model_version_policy.specific.versions
  unload = run.version in listed and (
      run.added_to_policy if not rejected else
      run.version not in entry.version_labels.values())
  if unload:
    listed.remove(run.version)
  if labelled or unload:  # else nothing to undo (infra check failed first)
    _write_config(run.config_file, proto)
    run.log('cd_unlabel', label=CANARY if labelled else None,
            unloaded=run.version if unload else None)


def roll_back(run: Delivery, stable: Optional[int], reasons: List[str]) -> str:
  """Stable stays; V stops being served and is moved to .rolled-back."""
  withdraw_canary(run, rejected=True)
  if run.rest_url:  # let the server let go of V before its directory goes
    try:
      run.wait_until(f'drop labels/{CANARY}',
                     lambda: run.served_as(CANARY) != run.version)
    except InfraError as e:
      print(f'warning: {e}', file=sys.stderr)
  others = sorted(k for k, v in run.labels().items() if v == run.version)
  if others:
    run.log('cd_keep', reason=f'labels {others} still point at it')
    moved = f'kept on disk (labels {others} point at it)'
  else:
    versions.rollback(run.base, run.version)
    moved = f'moved to {versions.ROLLED_BACK_DIR}/'
  return (f'ROLLED BACK: {STABLE} stays {stable}, {CANARY} removed, version '
          f'{run.version} {moved}; because: {"; ".join(reasons)}')


# --- the command -----------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
  defaults = configs.PipelineConfig()
  parser = argparse.ArgumentParser(
      prog='python -m serving.cd', description=__doc__.split('\n\n')[0],
      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  parser.add_argument('--model_config_file', required=True,
                      help='TF Serving model config the server reads; CD '
                      'edits its labels and policy')
  parser.add_argument('--model_name', default=defaults.model_name,
                      help='model in the config file')
  parser.add_argument('--model_base_path', default=None,
                      help='where Pusher writes versions; checked against '
                      'the config\'s base_path (None: take that)')
  parser.add_argument('--version', type=int, default=None,
                      help='version to deliver (None: the newest on disk)')
  parser.add_argument('--server', default=None,
                      help='REST URL of a running server reading the config '
                      'file (with --grpc); None: start one for the run')
  parser.add_argument('--grpc', default=None,
                      help='gRPC host:port of the same running server')
  parser.add_argument('--check_data', default=None,
                      help='CSV of labelled rows (None: the newest span '
                      f'under {defaults.data_root})')
  parser.add_argument('--check_rows', type=int, default=DEFAULT_ROWS,
                      help='how many of its rows to check')
  parser.add_argument('--tolerance', type=float, default=DEFAULT_TOLERANCE,
                      help='max |REST - gRPC| and |served - in-process|')
  parser.add_argument('--max_mean_shift', type=float,
                      default=DEFAULT_MAX_MEAN_SHIFT,
                      help='max |mean(canary) - mean(stable)| prediction')
  parser.add_argument('--max_disagreement', type=float,
                      default=DEFAULT_MAX_DISAGREEMENT,
                      help='share of rows whose decision (p > 0.5) differs '
                      'from stable')
  parser.add_argument('--max_accuracy_drop', type=float,
                      default=DEFAULT_MAX_ACCURACY_DROP,
                      help='max accuracy of stable minus accuracy of canary')
  parser.add_argument('--concurrency', type=int, default=DEFAULT_CONCURRENCY,
                      help='load test: client threads')
  parser.add_argument('--load_seconds', type=float,
                      default=DEFAULT_LOAD_SECONDS,
                      help='load test: how long to send requests')
  parser.add_argument('--load_requests', type=int, default=None,
                      help='send this many requests instead of '
                      '--load_seconds')
  parser.add_argument('--p50_target_ms', type=float,
                      default=DEFAULT_P50_TARGET_MS,
                      help='performance target: median latency')
  parser.add_argument('--p99_target_ms', type=float,
                      default=DEFAULT_P99_TARGET_MS,
                      help='performance target: 99th percentile latency')
  parser.add_argument('--wait_seconds', type=float,
                      default=DEFAULT_WAIT_SECONDS,
                      help='how long the server may take to apply a config')
  args = parser.parse_args(argv)
  if bool(args.server) != bool(args.grpc):
    parser.error('--server and --grpc go together (both APIs are checked)')
  if args.concurrency < 1 or (args.load_requests is not None and
                              args.load_requests < 1):
    parser.error('--concurrency and --load_requests must be >= 1')
  return args


def _print_summary(run: Optional[Delivery], checks: List[Check],
                   decision: str, code: int) -> None:
  what = (f'{run.model_name} version {run.version}' if run else 'model')
  print(f'\nCD summary for {what}:')
  for check in checks:
    print(f'  {check.name:<12} {"PASS" if check.passed else "FAIL"}  '
          f'{check.summary}')
  print(f'  {"decision":<12} {decision}\nexit {code}', flush=True)


def deliver(args: argparse.Namespace) -> int:
  """Runs the five steps; returns the exit status."""
  checks: List[Check] = []
  print('[1/5] infra compatibility', flush=True)
  config = check_config(args.model_config_file, args.model_name,
                        args.model_base_path)
  base = config.base_path
  on_disk = model_config.versions_on_disk(base)
  if not on_disk and args.version is None:
    raise InfraError(f'no version under {base} to deliver')
  version = on_disk[-1] if args.version is None else args.version
  if version not in on_disk:
    raise InfraError(f'version {version} is not under {base} '
                     f'(there: {on_disk})')
  stable = config.labels.get(STABLE)
  canary = config.labels.get(CANARY)
  if canary is not None and canary != version:
    raise InfraError(
        f'{args.model_config_file}: {CANARY} already points at version '
        f'{canary}: another CD run is in flight, or one was interrupted '
        f'(remove that version_labels entry to retry)')
  trips, labels = read_rows(
      args.check_data or newest_span_csv(configs.PipelineConfig().data_root),
      args.check_rows)
  run = Delivery(args.model_config_file, args.model_name, base, version,
                 args.server, args.grpc, args.wait_seconds)
  if stable == version:
    run.log('cd_skip', reason=f'already {STABLE}')
    _print_summary(run, checks, f'nothing to do: already {STABLE}',
                   EXIT_PROMOTED)
    return EXIT_PROMOTED
  run.log('cd_start', stable=stable, config=args.model_config_file,
          server=args.server or 'own')
  check, loaded = check_version(os.path.join(base, str(version)))
  checks.append(check)
  run.log('cd_check', check=check.name, passed=check.passed,
          failures=check.failures)
  if not check.passed:
    decision = roll_back(run, stable, check.failures)
    run.log('cd_done', decision='rolled_back', failed=['infra'])
    _print_summary(run, checks, decision, EXIT_ROLLED_BACK)
    return EXIT_ROLLED_BACK

  proc = None
  if not args.server:  # a server of our own on the same config file
    try:
      proc, rest_port, grpc_port = demo.start_server(
          args.model_name, None,
          ['--model_config_file', args.model_config_file,
           '--model_config_file_poll_wait_seconds', '0.5',
           '--file_system_poll_wait_seconds', '0.5'])
    except RuntimeError as e:
      raise InfraError(str(e)) from e
    run.rest_url = f'http://127.0.0.1:{rest_port}'
    run.grpc_address = f'127.0.0.1:{grpc_port}'
    print(f'started python -m serving: REST {run.rest_url}, gRPC '
          f'{run.grpc_address}', flush=True)
  try:
    if stable is not None and run.served_as(STABLE) != stable:
      raise InfraError(f'the server does not answer labels/{STABLE} '
                       f'(version {stable}) yet')
    try:
      print(f'[2/5] serve version {version} as {CANARY}', flush=True)
      check = start_canary(run)
      checks.append(check)
      run.log('cd_check', check=check.name, passed=True, **check.figures)
      print('[3/5] prediction checks', flush=True)
      check = check_predictions(run, loaded, trips, labels, stable, args)
      checks.append(check)
      run.log('cd_check', check=check.name, passed=check.passed,
              failures=check.failures, **check.figures)
      print('[4/5] load test', flush=True)
      check = check_load(run, trips, args)
      checks.append(check)
      run.log('cd_check', check=check.name, passed=check.passed,
              failures=check.failures, **check.figures)
    except InfraError as e:
      withdraw_canary(run, rejected=False)
      run.log('cd_abort', error=str(e))
      raise
    print('[5/5] decision', flush=True)
    failed = [c for c in checks if not c.passed]
    if failed:
      decision = roll_back(run, stable,
                           [f for c in failed for f in c.failures])
      run.log('cd_done', decision='rolled_back',
              failed=[c.name for c in failed])
      code = EXIT_ROLLED_BACK
    else:
      decision = promote(run, stable)
      run.log('cd_done', decision='promoted', stable=version)
      code = EXIT_PROMOTED
  finally:
    if proc is not None:
      demo.stop_server(proc)
  _print_summary(run, checks, decision, code)
  return code


def main(argv=None) -> int:
  args = parse_args(argv)
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
  try:
    return deliver(args)
  except InfraError as e:
    print(f'cd: infrastructure error, nothing delivered: {e}', file=sys.stderr)
    return EXIT_ERROR


if __name__ == '__main__':
  sys.exit(main())
