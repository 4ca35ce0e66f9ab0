"""A model card for every candidate, pushed inside the version it describes.

Google's model-card-toolkit (and tfx-addons' ModelCardGenerator built on it)
does not install with TFX 1.16 (every release pins tfx below 1.16 or to one
older minor), so the card is this component's: a JSON document in the
toolkit's spirit (model details, parameters, quantitative analysis,
considerations), rendered to Markdown and HTML with Jinja2 templates
(components/model_card_templates/). The HTML card is opened from disk, with
no server to send it headers, and every value on it is read from artifacts:
so it is escaped (project/web.py's one rule for every HTML template) and
states the UI's Content-Security-Policy itself, in a <meta> element.

Everything on the card is read from the artifacts the component's inputs
resolve to in ML Metadata, never restated from the configuration:
  data        the training window's Examples (span, rows per split, counted
              in the files), the schema's digest (lineage.readers.schema_digest);
  training    the hyperparameters run_fn actually used, the tuned ones among
              them and the steps (the Trainer's history.json in ModelRun),
              the HyperParameters artifact (the Tuner's, when tuned);
  evaluation  every slice's metrics, candidate and baseline, from the
              Evaluator's ModelEvaluation (lineage.readers.sliced_metrics);
  decision    the blessing, why not (lineage.readers.blessing_failures), the
              rule as the Evaluator applied it (pipeline/blessing.describe),
              and the infra validation's verdict (components/infra_validator.py).
The git commit is the checkout the card was made from. It is read when the
card is made, not passed as a property, so a new commit is no cache miss;
a card is made (or reused from the cache) with the model's evaluation.

The Pusher (components/pusher.py) takes the card as an input, adds the version
number and writes it into the version's assets.extra/ before the rename
(serving.base_path.MODEL_CARD_FILES), where TF Serving never looks.
"""

import datetime
import json
import math
import os
from typing import Any, Dict, List, Optional

import jinja2
from tfx import types
from tfx.dsl.components.base import base_component
from tfx.dsl.components.base import base_executor
from tfx.dsl.components.base import executor_spec
from tfx.dsl.io import fileio
from tfx.types import artifact_utils
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter
from tfx.types.component_spec import ComponentSpec
from tfx.types.component_spec import ExecutionParameter

from lineage import readers
from models import model as model_lib
from models import problem as problems
from project import web
from components import infra_validator
from serving import base_path

CARD_SCHEMA = 'tfx-reference/model-card/v1'
TEMPLATES = os.path.join(os.path.dirname(__file__), 'model_card_templates')
# Slices with fewer evaluation examples are listed, but their metrics are
# not compared: a 30-example slice's AUC is mostly noise.
MIN_SLICE_EXAMPLES = 100
# What every card says, whatever the problem (the problem adds its own).
LIMITATIONS = (
    f'Slices with fewer than {MIN_SLICE_EXAMPLES} evaluation examples, or '
    'with one class only, are listed but not compared.',
)

MODEL_CARD_KEY = 'model_card'


class ModelCard(types.Artifact):
  """A model card: model_card.json, .md and .html (this module)."""
  # namespace.Name: the form KubeflowV2 requires of a custom artifact type.
  TYPE_NAME = 'tfx_reference.ModelCard'


class ModelCardGeneratorSpec(ComponentSpec):
  """Inputs: what the card describes; `blessing_rule`: blessing.describe()
  of the Evaluator's EvalConfig, as JSON."""
  PARAMETERS = {
      'problem': ExecutionParameter(type=str),
      'model_name': ExecutionParameter(type=str),
      'blessing_rule': ExecutionParameter(type=str),  # JSON list of lines
      'code_version': ExecutionParameter(type=str),
  }
  INPUTS = {
      'model': ChannelParameter(type=standard_artifacts.Model),
      'model_run': ChannelParameter(type=standard_artifacts.ModelRun),
      'evaluation': ChannelParameter(type=standard_artifacts.ModelEvaluation),
      'blessing': ChannelParameter(type=standard_artifacts.ModelBlessing),
      'examples': ChannelParameter(type=standard_artifacts.Examples),
      'schema': ChannelParameter(type=standard_artifacts.Schema),
      'infra_blessing': ChannelParameter(
          type=standard_artifacts.InfraBlessing, optional=True),
      'hyperparameters': ChannelParameter(
          type=standard_artifacts.HyperParameters, optional=True),
  }
  OUTPUTS = {MODEL_CARD_KEY: ChannelParameter(type=ModelCard)}


def _single(input_dict, key) -> Optional[types.Artifact]:
  artifacts = input_dict.get(key) or []
  return artifacts[0] if artifacts else None


def _int_property(artifact, key) -> Optional[int]:
  if artifact is None or not artifact.has_custom_property(key):
    return None
  return artifact.get_int_custom_property(key)


def count_records(split_uri: str) -> int:
  """Examples in one split directory (gzipped TFRecords, as ExampleGen)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  files = sorted(fileio.glob(os.path.join(split_uri, '*')))
  if not files:
    return 0
  dataset = tf.data.TFRecordDataset(files, compression_type='GZIP')
  return int(dataset.reduce(tf.constant(0, tf.int64), lambda n, _: n + 1))


def data_section(examples: List[types.Artifact],
                 schema: types.Artifact) -> Dict[str, Any]:
  """Spans and rows (counted), and the schema's digest."""
  spans = []
  for artifact in sorted(examples, key=lambda a: (
      _int_property(a, 'span') or 0, a.id or 0)):
    rows = {split: count_records(artifact_utils.get_split_uri([artifact],
                                                              split))
            for split in artifact_utils.decode_split_names(
                artifact.split_names)}
    spans.append({'span': _int_property(artifact, 'span'),
                  'examples_id': artifact.id or None, 'rows': rows})
  with fileio.open(os.path.join(schema.uri, 'schema.pbtxt'), 'rb') as f:
    digest = readers.schema_digest(f.read())
  return {
      'spans': spans,
      'rows': {split: sum(s['rows'].get(split, 0) for s in spans)
               for split in sorted({k for s in spans for k in s['rows']})},
      'schema_digest': digest,
      'schema_id': schema.id or None,
  }


def training_section(model_run: types.Artifact,
                     hyperparameters: Optional[types.Artifact],
                     code_version: str) -> Dict[str, Any]:
  """What run_fn used (history.json), and where tuned values came from."""
  with fileio.open(os.path.join(model_run.uri, model_lib.HISTORY_FILE)) as f:
    history = json.load(f)
  hparams = history.get('hparams', {})
  final = {name: values[-1] for name, values in history.get(
      'metrics', {}).items() if values}
  return {
      'hparams': hparams,
      'seed': hparams.get('seed'),
      'tuned': history.get('tuned', []),
      'hyperparameters_id': (hyperparameters.id or None
                             if hyperparameters is not None else None),
      'train_steps': history.get('train_steps'),
      'eval_steps': history.get('eval_steps'),
      'train_class_shares': history.get('train_class_shares'),
      'final_training_metrics': final,
      'code_version': code_version,
  }


def _finite(value: Optional[float]) -> Optional[float]:
  return value if value is not None and math.isfinite(value) else None


def evaluation_section(evaluation: types.Artifact,
                       problem: problems.Problem) -> Dict[str, Any]:
  """Every slice, candidate and baseline, as the Evaluator wrote them (the
  task's card metrics, and the mean label where the task has one)."""
  metrics = problem.task.card + ('mean_label', 'mean_prediction')
  slices = []
  for name, per_model in sorted(
      readers.sliced_metrics(evaluation.uri).items(),
      key=lambda item: (item[0] != 'overall', item[0])):
    candidate = per_model.get('candidate', {})
    baseline = per_model.get('baseline', {})
    slices.append({
        'slice': name,
        'candidate': {k: _finite(candidate.get(k)) for k in metrics
                      if k in candidate},
        'baseline': {k: _finite(baseline.get(k)) for k in metrics
                     if k in baseline},
        'not_compared': None if name == 'overall' else _why_not(candidate),
    })
  return {'evaluation_id': evaluation.id or None, 'slices': slices}


def _why_not(metrics: Dict[str, float]) -> Optional[str]:
  """Why a slice's metrics are not compared with others (None: they are)."""
  if metrics.get('example_count', 0) < MIN_SLICE_EXAMPLES:
    return f'fewer than {MIN_SLICE_EXAMPLES} examples'
  if metrics.get('mean_label') in (0.0, 1.0):
    return 'one class only: AUC and balanced accuracy are undefined'
  return None


def slice_differences(slices: List[Dict[str, Any]],
                      problem: problems.Problem) -> List[str]:
  """Sentences on how the compared slices differ (best vs worst)."""
  compared = [s for s in slices
              if s['slice'] != 'overall' and not s['not_compared']]
  lines = []
  for metric in problem.task.headline:
    label = problem.task.labels[metric]
    scored = [(s['candidate'][metric], s['slice']) for s in compared
              if s['candidate'].get(metric) is not None]
    if len(scored) >= 2:
      (low, worst), (high, best) = min(scored), max(scored)
      lines.append(f'{label} ranges from {low:.3f} ({worst}) to {high:.3f} '
                   f'({best}) over the {len(scored)} comparable slices.')
  for s in slices:
    if s['not_compared']:
      lines.append(f'{s["slice"]} is not compared: {s["not_compared"]}.')
  return lines


def _infra_summary(report: Optional[Dict[str, Any]]) -> str:
  """One line from components/infra_validator.py's report."""
  if not report:
    return 'no report'
  line = (f'loaded in {report.get("load_seconds", "?")} s, '
          f'{report.get("requests_answered", "?")} of '
          f'{report.get("requests_sent", "?")} requests answered over '
          f'{" and ".join(report.get("apis", [])) or "?"}')
  if report.get('reason'):
    line += f'; {report["reason"]}'
  return line


def decision_section(blessing: types.Artifact, evaluation: types.Artifact,
                     infra_blessing: Optional[types.Artifact],
                     rule: List[str]) -> Dict[str, Any]:
  """The blessing, why not, the rule applied, the infra verdict."""
  infra = None
  if infra_blessing is not None:
    report_path = os.path.join(infra_blessing.uri,
                               infra_validator.REPORT_FILE)
    report = None
    if fileio.exists(report_path):
      with fileio.open(report_path) as f:
        report = json.load(f)
    infra = {'blessed': bool(_int_property(infra_blessing,
                                                infra_validator.BLESSED_KEY)),
             'infra_blessing_id': infra_blessing.id or None,
             'summary': _infra_summary(report), 'report': report}
  return {
      'blessed': bool(_int_property(blessing, 'blessed')),
      'failures': readers.blessing_failures(evaluation.uri) or [],
      'rule': rule,
      'baseline_model_id': _int_property(blessing, 'baseline_model_id'),
      'blessing_id': blessing.id or None,
      'infra': infra,
  }


def build(input_dict: Dict[str, List[types.Artifact]],
          exec_properties: Dict[str, Any]) -> Dict[str, Any]:
  """The card, as a JSON-able dict (module docstring: where each part is read)."""
  problem = problems.load(exec_properties['problem'])
  model = _single(input_dict, 'model')
  evaluation = _single(input_dict, 'evaluation')
  commit, dirty = readers.git_revision()
  evaluated = evaluation_section(evaluation, problem)
  task = problem.task
  return {
      'schema': CARD_SCHEMA,
      'problem': {
          'name': problem.name, 'title': problem.title,
          'question': problem.question, 'task': task.name,
          'label': problem.label.name, 'classes': list(problem.label.classes),
          # The table's columns: (metric key, how people read it).
          'columns': [[k, task.labels[k]] for k in task.card],
          'baseline_columns': [[k, task.labels[k]]
                               for k in task.card_baseline],
      },
      'model_details': {
          'name': exec_properties['model_name'],
          'model_id': model.id or None,
          'model_uri': model.uri,
          'version': None,  # set by the Pusher (`with_version`)
          'code_commit': commit,
          'code_dirty': dirty,
          'pipeline_release': readers.pipeline_release(),
          'card_made_at': datetime.datetime.now(
              datetime.timezone.utc).isoformat(timespec='seconds'),
      },
      'data': data_section(input_dict.get('examples', []),
                           _single(input_dict, 'schema')),
      'training': training_section(_single(input_dict, 'model_run'),
                                   _single(input_dict, 'hyperparameters'),
                                   exec_properties['code_version']),
      'evaluation': evaluated,
      'slice_differences': slice_differences(evaluated['slices'], problem),
      'decision': decision_section(
          _single(input_dict, 'blessing'), evaluation,
          _single(input_dict, 'infra_blessing'),
          json.loads(exec_properties['blessing_rule'])),
      'considerations': {
          'intended_use': problem.intended_use,
          'limitations': list(problem.limitations) + list(LIMITATIONS)},
  }


def with_version(card: Dict[str, Any], version: int,
                 destination: str) -> Dict[str, Any]:
  """The card of pushed version `version` (a copy)."""
  card = json.loads(json.dumps(card))
  card['model_details'].update(version=version, destination=destination)
  return card


def _environment() -> jinja2.Environment:
  """HTML escaped by the project's one rule (project/web.py), Markdown not."""
  env = jinja2.Environment(
      loader=jinja2.FileSystemLoader(TEMPLATES),
      autoescape=web.autoescape,
      undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
      keep_trailing_newline=True)

  def number(value, digits=4):
    return '-' if value is None else f'{value:.{digits}g}'

  env.filters['number'] = number
  return env


def render(card: Dict[str, Any]) -> Dict[str, str]:
  """kind ('html', 'md', 'json') -> the card's text."""
  env = _environment()
  texts = {kind: env.get_template(f'model_card.{kind}.j2').render(
      card=card, content_security_policy=web.META_CONTENT_SECURITY_POLICY)
           for kind in ('html', 'md')}
  texts['json'] = json.dumps(card, indent=2, sort_keys=True) + '\n'
  return texts


def write(card: Dict[str, Any], directory: str) -> None:
  """The card's three files into `directory` (serving.base_path names)."""
  fileio.makedirs(directory)
  for kind, text in render(card).items():
    with fileio.open(os.path.join(directory, base_path.MODEL_CARD_FILES[kind]),
                     'w') as f:
      f.write(text)


def read(directory: str) -> Dict[str, Any]:
  """The card written into `directory` (its JSON)."""
  path = os.path.join(directory, base_path.MODEL_CARD_FILES['json'])
  with fileio.open(path) as f:
    return json.load(f)


class Executor(base_executor.BaseExecutor):
  """Builds the card from the input artifacts and writes its three files."""

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]],
         exec_properties: Dict[str, Any]) -> None:
    card = artifact_utils.get_single_instance(output_dict[MODEL_CARD_KEY])
    write(build(input_dict, exec_properties), card.uri)


class ModelCardGenerator(base_component.BaseComponent):
  """Writes a ModelCard for the Trainer's model (module docstring)."""

  SPEC_CLASS = ModelCardGeneratorSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

  def __init__(self, *, model, model_run, evaluation, blessing, examples,
               schema, problem: str, model_name: str,
               blessing_rule: List[str], code_version: str,
               infra_blessing=None, hyperparameters=None):
    super().__init__(spec=ModelCardGeneratorSpec(
        model=model, model_run=model_run, evaluation=evaluation,
        blessing=blessing, examples=examples, schema=schema,
        infra_blessing=infra_blessing, hyperparameters=hyperparameters,
        problem=problem, model_name=model_name,
        blessing_rule=json.dumps(blessing_rule),
        code_version=code_version,
        model_card=types.Channel(type=ModelCard)))
