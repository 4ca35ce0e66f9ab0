"""Continuous delivery: canary a pushed version, check it, promote or roll back.

    python -m delivery.cd --model_config_file models.config [--version V]
        [--server http://127.0.0.1:8501 --grpc 127.0.0.1:8500]

The CD gate of MLOps level 2, for one version V (default: the newest pushed):
  1. infra: V is a complete SavedModel with the signatures clients call
     (serving_default, serving_raw), serving_raw takes the inputs and dtypes
     of models/features.py, it loads in-process, and the config file parses
     with a version policy that can serve `stable` and `canary` side by side.
  2. canary: V is added to a `specific` policy and, once the server reports
     it AVAILABLE, the `canary` label is pointed at it (TF Serving only
     labels available versions); waits until /labels/canary answers V.
  3. predictions: labelled rows (the newest bundled spans) through
     labels/canary over REST and gRPC: finite probabilities in [0, 1], REST =
     gRPC = the SavedModel in-process; against `stable` (if any), paired on
     the same rows, accuracy, AUC and calibration error must be shown (a
     seeded bootstrap's one-sided 95% bound) to be worse by at most their
     margins: being better or just different never fails (canary_stats).
  4. load: one-trip REST requests to labels/canary from concurrent clients
     that back off on connection failures (cd_infra): no error answers,
     p50/p99 within the performance targets.
  5. decision. All pass: `stable` -> V, `canary` removed, the old stable
     unloaded from a `specific` policy. Any fails: `stable` stays, `canary`
     removed, V leaves the policy and is moved to <base>/.rolled-back/ (V
     itself, not "the newest": the Pusher may have pushed another meanwhile)
     so no `latest` policy serves it and the Pusher never pushes it again.
     The stable version is never moved.
  Not judged at all (exit 2): the server unreachable (refused, reset, timed
  out, gone) at any step, stable not answering, a load test that got too
  few answers, or too few check rows to show either way. The config file
  is put back byte for byte as before the run, no version is moved, and
  `cd_abort` is logged.

One run at a time per model: from reading the config file to its decision
CD holds the model base path's lock (serving.base_path), which
`delivery.versions rollback|promote` and the Pusher take too, so none of them
changes the versions or the config under a run, and two CD runs never
canary at once (the second waits up to --lock_timeout, then exits 2 naming
the holder, having changed nothing). A Pusher waits for the run to end.

Every config change is an atomic file replace a polling server picks up;
requests to `stable` keep being answered throughout. Each step is printed and
appended to <base>/.versions.log (delivery.versions' action log). Exit status:
0 promoted (or already stable), 1 rolled back, 2 nothing judged (usage,
infrastructure, too little evidence, the lock busy); every error is one line
on stderr.
"""

import argparse
import dataclasses
import http.client
import json
import math
import os
import sys
import time
import traceback
import urllib.error
import urllib.request
from typing import Callable, Dict, List, Optional, Tuple

from models import features
from project import cli
from project import paths
from serving import base_path
from delivery import canary_stats
from delivery import cd_infra
from serving import client
from serving import demo
from serving import model_config
from delivery import versions

EXIT_PROMOTED, EXIT_ROLLED_BACK, EXIT_ERROR = 0, 1, 2
CANARY, STABLE = 'canary', 'stable'
REQUIRED_SIGNATURES = ('serving_default', features.RAW_SIGNATURE)
_DTYPES = {'float': 'DT_FLOAT', 'int': 'DT_INT64', 'string': 'DT_STRING'}

# Gate defaults (check rows and margins are canary_stats'). Latency targets
# are for one-trip REST requests at --concurrency on the serving host
# (README: c=8 p99 is ~21 ms on an idle 2-core machine).
CHUNK_ROWS = 100  # rows per predict request: under any request limit
DEFAULT_TOLERANCE = 1e-4  # |REST - gRPC|, |served - in-process|
DEFAULT_CONCURRENCY = 4
MIN_LOAD_REQUESTS = 100  # fewer answers cannot give a p99
DEFAULT_LOAD_SECONDS = 5.0
DEFAULT_P50_TARGET_MS = 25.0
DEFAULT_P99_TARGET_MS = 100.0
DEFAULT_WAIT_SECONDS = 60.0
InfraError = cd_infra.InfraError  # nothing judged: exit 2


@dataclasses.dataclass
class Check:
  """One gate step's verdict; `figures` go to the log and the summary."""
  name: str
  passed: bool
  summary: str
  failures: List[str] = dataclasses.field(default_factory=list)
  figures: Dict = dataclasses.field(default_factory=dict)
  undecided: List[str] = dataclasses.field(default_factory=list)

  @property
  def verdict(self) -> str:
    return ('FAIL' if not self.passed else
            'UNDECIDED' if self.undecided else 'PASS')


class Delivery:
  """One CD run: where the model lives, the server, and the action log."""

  def __init__(self, config_file: str, model_name: str, base: str,
               version: int, rest_url: str, grpc_address: str,
               wait_seconds: float):
    self.config_file, self.model_name, self.base = config_file, model_name, base
    self.version, self.wait_seconds = version, wait_seconds
    self.rest_url, self.grpc_address = rest_url, grpc_address
    self.run_id = f'{int(time.time())}-{os.getpid()}'
    self.added_to_policy = False  # undo on rollback
    with open(config_file, 'rb') as f:
      self.original_config = f.read()  # put back on abort
    self.written_config = None  # the file as this run last wrote it

  def log(self, action: str, **details) -> None:
    """delivery.versions' action log: one JSON line per action, printed too."""
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
    self.remember_config()

  def label(self, label: str) -> None:
    """Points `label` at V (delivery.versions.promote writes the file)."""
    versions.promote(self.config_file, self.model_name, self.version, label)
    self.remember_config()

  def remember_config(self) -> None:
    with open(self.config_file, 'rb') as f:
      self.written_config = f.read()

  def undo(self) -> None:
    """Puts the config file back as it was before the run, byte for byte;
    if someone else rewrote it meanwhile, removes only what this run added."""
    if self.written_config is None:
      return
    with open(self.config_file, 'rb') as f:
      ours = f.read() == self.written_config
    if ours:
      _replace(self.config_file, self.original_config)
      self.log('cd_undo', config=self.config_file, restored=True)
    else:
      withdraw_canary(self, rejected=False)

  # --- the server ----------------------------------------------------------
  def served_as(self, label: Optional[str] = None,
                version: Optional[int] = None) -> Optional[int]:
    """The version the server answers for a label / version; None if 404."""
    path = (f'/labels/{label}' if label else
            f'/versions/{version}' if version is not None else '')
    url = self.status_url + path
    try:
      with urllib.request.urlopen(url, timeout=10) as response:
        body = json.loads(response.read())
    except urllib.error.HTTPError as e:
      if e.code == 404:
        return None
      raise InfraError(f'{url}: HTTP {e.code}') from e
    except (OSError, http.client.HTTPException) as e:
      raise InfraError(f'model server at {self.rest_url} not reachable: '
                       f'{e}') from e
    return int(body['model_version_status'][0]['version'])

  @property
  def status_url(self) -> str:
    return f'{self.rest_url}/v1/models/{self.model_name}'

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
  from google.protobuf import text_format  # pylint: disable=g-import-not-at-top
  _replace(path, text_format.MessageToString(proto).encode())


def _replace(path: str, data: bytes) -> None:
  """Write-then-rename, as delivery.versions.promote: never half a config."""
  tmp = f'{path}.tmp{os.getpid()}'
  with open(tmp, 'wb') as f:
    f.write(data)
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
  run.label(CANARY)
  labelled_in = run.wait_until(
      f'serve labels/{CANARY} at version {run.version}',
      lambda: run.served_as(CANARY) == run.version)
  return Check('canary', True,
               f'labels/{CANARY} -> {run.version} after '
               f'{time.monotonic() - start:.1f} s',
               figures={'loaded_s': round(loaded_in, 2),
                        'labelled_s': round(labelled_in, 2)})


# --- step 3: prediction checks ---------------------------------------------
def in_process(loaded, trips: List[Dict]) -> List[float]:
  """The SavedModel's own answers: what the server must reproduce."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  dtypes = {'float': tf.float32, 'int': tf.int64, 'string': tf.string}
  instances = [client.raw_instance(t) for t in trips]
  inputs = {k: tf.constant([i[k] for i in instances], dtype=dtypes[kind])
            for k, kind in features.RAW_FEATURE_TYPES.items()}
  outputs = loaded.signatures[features.RAW_SIGNATURE](**inputs)['outputs']
  return [float(p[0]) for p in outputs.numpy()]


def check_predictions(run: Delivery, loaded, trips: List[Dict],
                      labels: List[int], stable: Optional[int],
                      args: argparse.Namespace) -> Check:
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
    return Check('predictions', False, f'canary answered an error: {error}',
                 [f'canary answered an error: {error}'], figures)
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
  return Check('predictions', not failures,
               '; '.join(failures) if failures else summary, failures, figures,
               undecided)


# --- step 4: load test ------------------------------------------------------
def check_load(run: Delivery, trips: List[Dict],
               args: argparse.Namespace) -> Check:
  """One-trip REST requests to labels/canary from --concurrency clients that
  back off on connection failures (cd_infra); the server gone, or too
  few answers to judge latency, is InfraError, not a verdict."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  bodies = [json.dumps({'signature_name': features.RAW_SIGNATURE,
                        'instances': [client.raw_instance(t)]})
            for t in trips]
  result = cd_infra.run_load(
      run.rest_url, f'/v1/models/{run.model_name}/labels/{CANARY}:predict',
      bodies, args.concurrency, args.load_requests, args.load_seconds,
      run.status_url)
  latencies, errors, lost = (result.latencies, result.errors,
                             result.connection_failures)
  figures = {'requests': len(latencies) + len(errors), 'errors': len(errors),
             'connection_failures': len(lost),
             'status_checks': result.status_checks,
             'concurrency': args.concurrency,
             'seconds': round(result.seconds, 2),
             'p50_target_ms': args.p50_target_ms,
             'p99_target_ms': args.p99_target_ms}
  if result.server_gone:
    raise InfraError(f'load test: the server stopped answering after '
                     f'{figures["requests"]} answers ({len(lost)} connection '
                     f'failures, last: {lost[-1]})', figures)
  failures = []
  if errors:
    failures.append(f'{len(errors)} of {figures["requests"]} requests failed '
                    f'(first: {errors[0]})')
  summary = (f'{figures["requests"]} requests at concurrency '
             f'{args.concurrency} in {result.seconds:.1f} s, {len(errors)} '
             f'errors, {len(lost)} connection failures')
  if latencies:
    p50, p99 = (float(x) for x in np.percentile(np.array(latencies) * 1000,
                                                [50, 99]))
    figures.update(p50_ms=round(p50, 2), p99_ms=round(p99, 2),
                   requests_per_s=round(len(latencies) / result.seconds, 1))
    summary += (f'; p50 {p50:.2f} ms (target {args.p50_target_ms}), '
                f'p99 {p99:.2f} ms (target {args.p99_target_ms})')
    if p50 > args.p50_target_ms:
      failures.append(f'p50 {p50:.2f} ms > target {args.p50_target_ms} ms')
    if p99 > args.p99_target_ms and len(latencies) >= MIN_LOAD_REQUESTS:
      failures.append(f'p99 {p99:.2f} ms > target {args.p99_target_ms} ms')
  if not failures and len(latencies) < MIN_LOAD_REQUESTS:
    raise InfraError(f'load test: {summary}: too few answers to judge p99 '
                     f'(>= {MIN_LOAD_REQUESTS})', figures)
  return Check('load', not failures,
               summary + ('; ' + '; '.join(failures) if failures else ''),
               failures, figures)


# --- step 5: decision ------------------------------------------------------
def promote(run: Delivery, stable: Optional[int]) -> str:
  """stable -> V; canary removed; the old stable unloaded from `specific`."""
  run.label(STABLE)

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
    run.remember_config()
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
  parser = cli.ArgumentParser(underscores=True,
      prog='python -m delivery.cd', description=__doc__.split('\n\n')[0],
      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  parser.add_argument('--model_config_file', required=True,
                      help='TF Serving model config the server reads; CD '
                      'edits its labels and policy')
  parser.add_argument('--model_name', default=paths.MODEL_NAME,
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
                      help='CSV of labelled rows (None: the newest spans '
                      f'under {paths.DATA_ROOT}, newest first)')
  parser.add_argument('--check_rows', type=int,
                      default=canary_stats.DEFAULT_ROWS,
                      help='how many labelled rows to check')
  parser.add_argument('--tolerance', type=float, default=DEFAULT_TOLERANCE,
                      help='max |REST - gRPC| and |served - in-process|')
  for metric in canary_stats.METRICS:
    worse = ('above' if metric in canary_stats.LOWER_IS_BETTER else 'below')
    parser.add_argument(
        f'--{metric}_margin', type=float,
        default=canary_stats.DEFAULT_MARGINS[metric],
        help=f'non-inferiority margin: the canary passes when its {metric} '
        f'({canary_stats.DEFINITIONS[metric]}) is shown (one-sided 95%% '
        'bound, paired bootstrap over the check rows) to be at most this '
        f'much {worse} stable\'s, fails when shown to be further, and in '
        'between nothing is judged (exit 2)')
  parser.add_argument('--concurrency', type=int, default=DEFAULT_CONCURRENCY,
                      help='load test: client threads')
  parser.add_argument('--load_seconds', type=float,
                      default=DEFAULT_LOAD_SECONDS,
                      help='load test: how long to send requests')
  parser.add_argument('--load_requests', type=int, default=None,
                      help='send this many requests instead of '
                      f'--load_seconds (>= {MIN_LOAD_REQUESTS}, for a p99)')
  parser.add_argument('--p50_target_ms', type=float,
                      default=DEFAULT_P50_TARGET_MS,
                      help='performance target: median latency')
  parser.add_argument('--p99_target_ms', type=float,
                      default=DEFAULT_P99_TARGET_MS,
                      help='performance target: 99th percentile latency')
  parser.add_argument('--wait_seconds', type=float,
                      default=DEFAULT_WAIT_SECONDS,
                      help='how long the server may take to apply a config')
  parser.add_argument('--lock_timeout', type=float,
                      default=base_path.DEFAULT_TIMEOUT_S,
                      help='how long to wait for another CD run, rollback, '
                      'promote or push on the same base path to finish')
  args = parser.parse_args(argv)
  if bool(args.server) != bool(args.grpc):
    parser.error('--server and --grpc go together (both APIs are checked)')
  if args.concurrency < 1 or (args.load_requests is not None and
                              args.load_requests < MIN_LOAD_REQUESTS):
    parser.error('--concurrency must be >= 1 and --load_requests >= '
                 f'{MIN_LOAD_REQUESTS}')
  return args


def _print_summary(run: Optional[Delivery], checks: List[Check],
                   decision: str, code: int) -> None:
  what = (f'{run.model_name} version {run.version}' if run else 'model')
  print(f'\nCD summary for {what}:')
  for check in checks:
    print(f'  {check.name:<12} {check.verdict}  {check.summary}')
  print(f'  {"decision":<12} {decision}\nexit {code}', flush=True)


def deliver(args: argparse.Namespace) -> int:
  """Runs the five steps holding the base path's lock; the exit status."""
  print('[1/5] infra compatibility', flush=True)
  config = check_config(args.model_config_file, args.model_name,
                        args.model_base_path)
  base = config.base_path
  if not os.path.isdir(base):
    raise InfraError(f'model base path {base} is not a directory')
  try:
    with base_path.locked(base, args.lock_timeout, what='delivery.cd'):
      # Again, as it is now: another run may have changed it while we waited.
      config = check_config(args.model_config_file, args.model_name,
                            args.model_base_path)
      if os.path.realpath(config.base_path) != os.path.realpath(base):
        raise InfraError(f'{args.model_config_file} changed the base_path of '
                         f'{args.model_name!r} during the run')
      return _deliver(args, config)
  except base_path.Busy as e:
    raise InfraError(str(e)) from e


def _deliver(args: argparse.Namespace, config: model_config.ModelConfig
            ) -> int:
  checks: List[Check] = []
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
  try:
    trips, labels = canary_stats.read_rows(
        [args.check_data] if args.check_data else
        canary_stats.check_csvs(paths.DATA_ROOT),
        args.check_rows)
  except (OSError, ValueError) as e:
    raise InfraError(f'check rows: {e}') from e
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
  _record(run, checks, check)
  if not check.passed:
    decision = roll_back(run, stable, check.failures)
    run.log('cd_done', decision='rolled_back', failed=['infra'])
    _print_summary(run, checks, decision, EXIT_ROLLED_BACK)
    return EXIT_ROLLED_BACK

  proc = None
  try:
    try:
      if not args.server:  # a server of our own on the same config file
        proc = _own_server(run, args)
      if stable is not None and run.served_as(STABLE) != stable:
        raise InfraError(f'the server does not answer labels/{STABLE} '
                         f'(version {stable}) yet')
      print(f'[2/5] serve version {version} as {CANARY}', flush=True)
      _record(run, checks, start_canary(run))
      print('[3/5] prediction checks', flush=True)
      _record(run, checks, check_predictions(run, loaded, trips, labels,
                                             stable, args))
      print('[4/5] load test', flush=True)
      _record(run, checks, check_load(run, trips, args))
      failed = [c for c in checks if not c.passed]
      undecided = [u for c in checks for u in c.undecided]
      if undecided and not failed:  # canary_stats: too few rows either way
        raise InfraError('too little evidence to judge: ' +
                         '; '.join(undecided))
    except BaseException as e:  # the server's failure, or ours: undo
      run.undo()
      run.log('cd_abort', error=f'{type(e).__name__}: {e}',
              **getattr(e, 'figures', {}))
      _print_summary(run, checks, 'ABORTED: nothing judged, config file '
                     'as before the run, no version moved', EXIT_ERROR)
      raise
    print('[5/5] decision', flush=True)
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


def _own_server(run: Delivery, args: argparse.Namespace):
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
  return proc


def _record(run: Delivery, checks: List[Check], check: Check) -> None:
  checks.append(check)
  run.log('cd_check', check=check.name, passed=check.passed,
          failures=check.failures,
          **({'undecided': check.undecided} if check.undecided else {}),
          **check.figures)


def _one_line(e: BaseException) -> str:
  text = str(e).strip().splitlines()
  return text[0][:500] if text else type(e).__name__


def main(argv=None) -> int:
  """Exit 2 for anything but a verdict, with one line on stderr (and the
  traceback too for an exception no step expects: a bug)."""
  args = parse_args(argv)
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
  from google.protobuf import text_format  # pylint: disable=g-import-not-at-top
  try:
    return deliver(args)
  except (InfraError, versions.Error) as e:
    print(f'cd: nothing judged, nothing delivered: {e}', file=sys.stderr)
  except (OSError, ValueError, text_format.ParseError) as e:
    print(f'cd: nothing judged, nothing delivered: {type(e).__name__}: '
          f'{_one_line(e)}', file=sys.stderr)
  except KeyboardInterrupt:
    print('cd: interrupted: nothing judged, nothing delivered',
          file=sys.stderr)
  except Exception as e:  # pylint: disable=broad-except
    traceback.print_exc()
    print(f'cd: nothing judged, nothing delivered: {type(e).__name__}: '
          f'{_one_line(e)} (a bug: the traceback is above)', file=sys.stderr)
  return EXIT_ERROR


if __name__ == '__main__':
  sys.exit(main())
