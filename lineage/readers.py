"""Facts read from files, never through TFX, TensorFlow or TFMA's package.

The checkout's git revision, the schema's content address, and what the
Evaluator wrote (its metrics and its validation result: TFRecord files of
TFMA protos, parsed with TFMA's generated proto modules loaded on their own,
see `_tfma_proto`). The lineage CLI, the serving process and the CT
controller read them in about a second.
"""

import hashlib
import importlib
import importlib.util
import json
import os
import re
import struct
import subprocess
import sys
import types
from typing import Any, Dict, List, Optional, Tuple

from project import paths

UNKNOWN = 'unknown'  # the commit of a run that is no git checkout
RELEASE_RECORD = 'release.json'  # pipeline/release.py's, in a release's code


def git_revision(repo_dir: str = paths.REPO_ROOT
                ) -> Tuple[str, Optional[bool]]:
  """(commit, dirty) of the checkout at `repo_dir`.

  ('unknown', None) when it is no git checkout or git is missing: an
  installed package or a container image still runs, its lineage says so.
  Untracked files count as dirty: a new module may well be imported. The
  code of a pipeline release (pipeline/release.py) is no checkout (though it
  may lie inside one, under outputs/): its release.json says which commit
  it was frozen from.
  """
  record = _release_record(repo_dir)
  if record is not None and 'git_commit' in record:
    return record['git_commit'], record.get('git_dirty')

  def git(*args: str) -> str:
    return subprocess.run(['git', '-C', repo_dir, *args], capture_output=True,
                          text=True, timeout=30, check=True).stdout
  try:
    commit = git('rev-parse', 'HEAD').strip()
    dirty = bool(git('status', '--porcelain').strip())
  except (OSError, subprocess.SubprocessError):
    return UNKNOWN, None
  return commit or UNKNOWN, dirty


def _release_record(repo_dir: str) -> Optional[Dict]:
  """The release.json of a release's code (pipeline/release.py); None for a
  checkout, or one that cannot be read."""
  try:
    with open(os.path.join(repo_dir, RELEASE_RECORD)) as f:
      record = json.load(f)
  except (OSError, ValueError):
    return None
  return record if isinstance(record, dict) else None


def pipeline_release(repo_dir: str = paths.REPO_ROOT) -> Optional[str]:
  """The pipeline release whose code this is, None for a checkout."""
  record = _release_record(repo_dir)
  return str(record['version']) if record and 'version' in record else None


# What models.model.run_fn writes into the Trainer's ModelRun (its
# HISTORY_FILE; tests/lineage checks they agree): the hparams it used, the
# tuned ones among them, the steps and the training curves.
TRAINING_HISTORY = 'history.json'


def training_history(model_run_uri: str) -> Optional[Dict]:
  """The Trainer's history.json, None if absent or unreadable here."""
  try:
    with open(os.path.join(model_run_uri, TRAINING_HISTORY)) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def schema_digest(content: bytes) -> str:
  """The schema's content address (pipeline.cache_keys.schema_snapshot, the Dockerfile)."""
  return hashlib.sha256(content).hexdigest()[:16]


def split_protos(artifact, file_name: str, proto_class) -> Dict[str, Any]:
  """split -> the binary proto `file_name` TFX wrote for that split of an
  MLMD artifact with `split_names` (StatisticsGen's FeatureStats.pb,
  ExampleValidator's SchemaDiff.pb); a split whose file is not readable
  from here is left out."""
  names = json.loads(artifact.properties['split_names'].string_value or '[]')
  protos = {}
  for split in names:
    path = os.path.join(artifact.uri, f'Split-{split}', file_name)
    try:
      with open(path, 'rb') as f:
        protos[split] = proto_class.FromString(f.read())
    except OSError:
      continue
  return protos


def _tfrecords(path: str):
  """Records of an uncompressed TFRecord file (checksums not verified)."""
  with open(path, 'rb') as f:
    while True:
      header = f.read(12)  # uint64 length, uint32 masked CRC of the length
      if len(header) < 12:
        return
      (length,) = struct.unpack('<Q', header[:8])
      data = f.read(length)
      f.read(4)  # masked CRC of the data
      yield data


_TFMA_PROTO_IMPORT = re.compile(
    r'^from tensorflow_model_analysis\.proto import (\w+) as (\w+)$', re.M)


def _tfma_proto(module: str):
  """A generated TFMA proto module, without importing TFMA.

  `tensorflow_model_analysis/__init__.py` imports TensorFlow and Beam
  (~15 s); the generated proto modules need only protobuf, so one is loaded
  from its file under a private name, and so are the TFMA protos it
  imports (its `from tensorflow_model_analysis.proto import X as Y` lines
  are pointed at those). Registering the same .proto again when the real
  package is imported later is allowed (identical descriptor).
  """
  if 'tensorflow_model_analysis' in sys.modules:  # already paid for
    return importlib.import_module(f'tensorflow_model_analysis.proto.{module}')
  name = f'_lineage_tfma_{module}'
  if name not in sys.modules:
    package = importlib.util.find_spec('tensorflow_model_analysis')
    path = os.path.join(package.submodule_search_locations[0], 'proto',
                        f'{module}.py')
    with open(path) as f:
      source = f.read()
    for dependency, _ in _TFMA_PROTO_IMPORT.findall(source):
      _tfma_proto(dependency)
    source = _TFMA_PROTO_IMPORT.sub(
        lambda m: f"{m.group(2)} = sys.modules['_lineage_tfma_{m.group(1)}']",
        source)
    loaded = types.ModuleType(name)
    loaded.__file__ = path
    loaded.sys = sys
    exec(compile(source, path, 'exec'), loaded.__dict__)  # pylint: disable=exec-used
    sys.modules[name] = loaded
  return sys.modules[name]


def _metrics_for_slice_class():
  return _tfma_proto('metrics_for_slice_pb2').MetricsForSlice


def sliced_metrics(uri: str) -> Dict[str, Dict[str, Dict[str, float]]]:
  """Every slice's metrics of a ModelEvaluation, per model.

  {'overall': {'candidate': {'auc': ...}, 'baseline': {...}},
   'payment_type=Cash': {...}, ...}: the slice names _slice_name gives;
  'baseline' only when the Evaluator had one. {} when the files are not
  readable from here. Diffs (is_diff) and non-scalar metrics are left out.
  """
  metrics_for_slice = _metrics_for_slice_class()
  result: Dict[str, Dict[str, Dict[str, float]]] = {}
  try:
    names = sorted(n for n in os.listdir(uri) if n.startswith('metrics'))
  except OSError:
    return result
  for name in names:
    for record in _tfrecords(os.path.join(uri, name)):
      metrics = metrics_for_slice.FromString(record)
      per_model = result.setdefault(_slice_name(metrics.slice_key), {})
      for kv in metrics.metric_keys_and_values:
        if kv.key.is_diff or not kv.value.HasField('double_value'):
          continue
        model = 'baseline' if kv.key.model_name == 'baseline' else 'candidate'
        per_model.setdefault(model, {})[kv.key.name] = (
            kv.value.double_value.value)
  return result


def evaluation_metrics(uri: str) -> Dict[str, Dict[str, float]]:
  """Overall-slice metrics of a ModelEvaluation, per model.

  {'candidate': {'auc': ...}, 'baseline': {...}} ('baseline' only when the
  Evaluator had one); {} when the files are not readable from here.
  """
  return sliced_metrics(uri).get('overall', {})


def _slice_name(slice_key) -> str:
  parts = []
  for key in slice_key.single_slice_keys:
    value = key.WhichOneof('kind')
    value = getattr(key, value) if value else ''
    if isinstance(value, bytes):
      value = value.decode('utf-8', 'replace')
    parts.append(f'{key.column}={value}')
  return ', '.join(parts) or 'overall'


def _bounds(threshold) -> str:
  low = threshold.lower_bound.value if threshold.HasField('lower_bound') else None
  high = threshold.upper_bound.value if threshold.HasField('upper_bound') else None
  if low is not None and high is not None:
    return f'not in [{low:g}, {high:g}]'
  return f'< {low:g}' if low is not None else f'> {high:g}'


def _beside(value: float, threshold) -> str:
  """`value` with enough digits to differ from the bounds it failed
  (0.69996 < 0.7 must not print as 0.7000 < 0.7)."""
  bounds = [b.value for b in (threshold.lower_bound, threshold.upper_bound)]
  for digits in (4, 6, 8):
    text = f'{value:.{digits}f}'
    if all(text != f'{b:.{digits}f}' for b in bounds):
      return text
  return repr(value)


def blessing_failures(uri: str) -> Optional[List[str]]:
  """Why the Evaluator did not bless: one line per failed threshold.

  [] when it blessed, None when its validation result is unreadable from
  here. Read from the `validations` file TFMA writes beside the metrics.
  """
  result_class = _tfma_proto('validation_result_pb2').ValidationResult
  try:
    names = sorted(n for n in os.listdir(uri) if n.startswith('validations'))
  except OSError:
    return None
  results = [result_class.FromString(r) for name in names
             for r in _tfrecords(os.path.join(uri, name))]
  if not results:
    return None
  lines = []
  for result in results:
    for per_slice in result.metric_validations_per_slice:
      where = _slice_name(per_slice.slice_key)
      for failure in per_slice.failures:
        name = failure.metric_key.name
        value = failure.metric_value.double_value.value
        threshold = failure.metric_threshold
        if failure.metric_key.is_diff:
          drop = -threshold.change_threshold.absolute.value
          lines.append(f'{name} {value:+.4f} vs the baseline ({where}): '
                       f'more than {drop:g} below it')
        elif failure.message == 'Metric not found.':
          lines.append(f'{name} missing ({where})')
        else:
          lines.append(f'{name} {_beside(value, threshold.value_threshold)} '
                       f'{_bounds(threshold.value_threshold)} ({where})')
    for spec in result.missing_slices:
      lines.append('no evaluation data for slice '
                   + (', '.join(f'{k}={v}' for k, v in
                                sorted(spec.feature_values.items()))
                      or 'overall'))
  if not lines and not all(r.validation_ok for r in results):
    lines.append('not blessed (no threshold failure recorded)')
  return lines
