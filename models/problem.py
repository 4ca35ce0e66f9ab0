"""What a problem is: the one place its data, label and task are described.

A problem is a folder, models/<name>/, beside its data (data/<name>/span-N/)
and its curated schema (schema/<name>/schema.pbtxt). The folder holds

  problem.py        PROBLEM = Problem(...): the raw features and how each is
                    encoded, the label and how it is derived from a row, the
                    task (models/tasks.py), the slices, the thresholds that
                    differ from the task's defaults, a sample instance, the
                    question a prediction answers, what drift and skew leave
                    out. Pure Python: the model server and the lineage tools
                    read it without TensorFlow.
  preprocessing.py  preprocessing_fn, TFX Transform's callback (usually
                    models/transform.py's from the declared encodings).

Everything else (the pipeline, its components, serving, delivery,
monitoring, continuous training, lineage, the UI, the runners) reads the
problem through `load(name)` and names no feature, label or class itself.
docs/adapt.md is the walk-through for a new problem.
"""

import dataclasses
import importlib
import os
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from models import tasks
from project import paths

MODELS_DIR = os.path.dirname(os.path.abspath(__file__))

# How a raw feature becomes model input (models/transform.py applies them):
Z_SCORE = 'z_score'            # numbers: (x - mean) / std; missing -> mean
QUANTILES = 'quantile_buckets'  # numbers: `size` quantile buckets + missing
VOCABULARY = 'vocabulary'      # strings: top `size` values + OOV buckets
CATEGORY = 'category'          # small integers 0..size-1; missing/out -> 0
ENCODINGS = (Z_SCORE, QUANTILES, VOCABULARY, CATEGORY)
# What each raw type is in the CSV, a tf.Example and the serving_raw
# signature (models/features.py's tables map them to TensorFlow's).
DTYPES = ('float', 'int', 'string')
# Which encodings are compared as numbers, which as categories, when drift
# and skew compare two samples (monitoring/distribution.py).
NUMERIC_ENCODINGS = (Z_SCORE, QUANTILES)


@dataclasses.dataclass(frozen=True)
class Feature:
  """One raw feature the model reads."""
  name: str
  dtype: str      # one of DTYPES
  encoding: str   # one of ENCODINGS
  size: int = 0   # buckets (QUANTILES), vocabulary (VOCABULARY), values
                  # (CATEGORY: 0..size-1); unused by Z_SCORE
  why: str = ''   # what it is, and how its missing values are handled

  def __post_init__(self):
    if self.dtype not in DTYPES:
      raise ValueError(f'feature {self.name!r}: dtype {self.dtype!r} is not '
                       f'one of {DTYPES}')
    if self.encoding not in ENCODINGS:
      raise ValueError(f'feature {self.name!r}: encoding {self.encoding!r} is '
                       f'not one of {ENCODINGS}')
    if self.encoding != Z_SCORE and self.size <= 0:
      raise ValueError(f'feature {self.name!r}: {self.encoding} needs a size')
    if self.encoding == VOCABULARY and self.dtype != 'string':
      raise ValueError(f'feature {self.name!r}: a vocabulary is of strings')
    if self.encoding == CATEGORY and self.dtype != 'int':
      raise ValueError(f'feature {self.name!r}: a category is an integer')

  @property
  def numeric(self) -> bool:
    return self.encoding in NUMERIC_ENCODINGS


@dataclasses.dataclass(frozen=True)
class Label:
  """What the model predicts, and how a row's label is read.

  `derive(columns)` is THE label rule: `columns` maps each name of
  `columns` to its value, and it returns the class index (0 ..
  len(classes) - 1). It must work on Python numbers, NumPy arrays and
  TensorFlow tensors alike (plain arithmetic and comparisons), so that
  tf.Transform, the CD gate, the monitor and scoring apply one expression.
  """
  name: str                        # as CSVs and reports name it
  columns: Tuple[str, ...]         # the raw columns it is derived from
  classes: Tuple[str, ...]         # class names, by index
  derive: Callable[[Mapping[str, Any]], Any]
  why: str = ''                    # what it means, said once

  @property
  def transformed(self) -> str:
    """Its name among tf.Transform's outputs (TFMA's label_key)."""
    return self.name + '_xf'


# The model's hyperparameters when a problem names none (models/model.py
# reads each; a problem's `hparams` override them, flags override both).
DEFAULT_HPARAMS = {'hidden_units': [16, 8], 'learning_rate': 0.01,
                   'batch_size': 32, 'seed': 42}


@dataclasses.dataclass(frozen=True)
class Problem:
  """One problem: data, label, task and everything a run needs to know."""
  name: str
  title: str                       # 'Chicago taxi tips', for pages and cards
  question: str                    # what one prediction answers
  features: Tuple[Feature, ...]
  label: Label
  task: tasks.Task
  # An instance to ask the served model (raw feature values; some may be
  # missing), and what it is in words.
  sample: Mapping[str, Any]
  sample_text: str
  # A model card's considerations: what the model is for, what it is not.
  intended_use: str = ''
  limitations: Tuple[str, ...] = ()
  # Columns of the data the model does not read, and why.
  unused_columns: Mapping[str, str] = dataclasses.field(default_factory=dict)
  # Features the Evaluator slices by; slices whose metrics must also pass
  # the task's slice thresholds (feature -> values). A guarded slice missing
  # from the evaluation data fails the blessing (fail closed).
  slices: Tuple[str, ...] = ()
  guarded_slices: Mapping[str, Tuple[str, ...]] = dataclasses.field(
      default_factory=dict)
  # The blessing rule's knobs that differ from the task's defaults
  # (models/tasks.py RULE_DEFAULTS), each with why.
  thresholds: Mapping[str, float] = dataclasses.field(default_factory=dict)
  # Features drift and skew do not compare, each with why (all the others
  # are compared: numbers by bins, categories by shares).
  drift_excluded: Mapping[str, str] = dataclasses.field(default_factory=dict)
  # Named changes to served traffic a monitoring drill applies
  # (monitoring/replay_traffic.py): name -> (instance -> instance).
  traffic_shifts: Mapping[str, Callable[[Dict[str, Any]], Dict[str, Any]]] = (
      dataclasses.field(default_factory=dict))
  # Extra columns scoring's CSV repeats from each row, to find the row again.
  id_columns: Tuple[str, ...] = ()
  # The model's hyperparameters that differ from DEFAULT_HPARAMS, and its
  # budget (flags override them).
  hparams: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  train_steps: int = 1000
  eval_steps: int = 150
  window_spans: int = 16

  def __post_init__(self):
    names = [f.name for f in self.features]
    if len(set(names)) != len(names):
      raise ValueError(f'problem {self.name!r}: a feature is declared twice')
    for where, keys in (('slices', self.slices),
                        ('guarded_slices', list(self.guarded_slices)),
                        ('drift_excluded', list(self.drift_excluded)),
                        ('sample', list(self.sample))):
      unknown = sorted(set(keys) - set(names))
      if unknown:
        raise ValueError(f'problem {self.name!r}: {where} names {unknown}, '
                         'which are not features')
    wrong = self.task.check_classes(len(self.label.classes))
    if wrong:
      raise ValueError(f'problem {self.name!r}: a {self.task.name} task '
                       f'{wrong}; label {self.label.name!r} has '
                       f'{len(self.label.classes)}')
    unknown = sorted(set(self.hparams) - set(DEFAULT_HPARAMS))
    if unknown:
      raise ValueError(f'problem {self.name!r}: hparams {unknown} are not '
                       f'hyperparameters of the model ({sorted(DEFAULT_HPARAMS)})')
    unknown = sorted(set(self.thresholds) - set(self.task.rule_defaults()))
    if unknown:
      raise ValueError(f'problem {self.name!r}: thresholds {unknown} are not '
                       f'knobs of a {self.task.name} task '
                       f'({sorted(self.task.rule_defaults())})')

  # --- derived, so that no consumer keeps a list of its own -----------------

  @property
  def raw_types(self) -> Dict[str, str]:
    """Raw feature -> dtype, in declaration order (the serving_raw
    signature's inputs, a client's instance, a CSV's columns)."""
    return {f.name: f.dtype for f in self.features}

  def feature(self, name: str) -> Feature:
    return {f.name: f for f in self.features}[name]

  @property
  def drift_kinds(self) -> Dict[str, bool]:
    """Feature -> numeric? for every feature drift and skew compare."""
    return {f.name: f.numeric for f in self.features
            if f.name not in self.drift_excluded}

  @property
  def label_only_columns(self) -> Tuple[str, ...]:
    """Columns the label reads that are no model feature (never served)."""
    return tuple(c for c in self.label.columns if c not in self.raw_types)

  def label_of(self, row: Mapping[str, Any]) -> Optional[int]:
    """The class index of a raw row (CSV text or numbers), or None when a
    column the label needs is missing: such a row never trains (the
    schema requires the label's columns) and is left out of every check
    rather than guessed."""
    values = {}
    for column in self.label.columns:
      value = row.get(column)
      if value is None or value == '':
        return None
      values[column] = float(value)
    return int(self.label.derive(values))

  def rule(self) -> Dict[str, float]:
    """The blessing rule's knobs: the task's defaults, this problem's
    overrides (each a flag of the runners too)."""
    return {**self.task.rule_defaults(), **self.thresholds}

  @property
  def preprocessing_fn(self) -> str:
    """TFX Transform's module path of this problem's preprocessing_fn."""
    return f'models.{self.name}.preprocessing.preprocessing_fn'


def names() -> List[str]:
  """Every problem: each folder of models/ with a problem.py."""
  return sorted(name for name in os.listdir(MODELS_DIR)
                if os.path.isfile(os.path.join(MODELS_DIR, name,
                                               'problem.py')))


def add_flag(parser, what: str) -> None:
  """`--problem NAME`, as every entry point takes it: one of names(), the
  default problem when left out. `what`: what the problem decides there."""
  parser.add_argument('--problem', default=paths.DEFAULT_PROBLEM,
                      choices=names(),
                      help=f'{what} (a folder of models/; default: '
                      '%(default)s)')


_LOADED: Dict[str, Problem] = {}


def load(name: str = paths.DEFAULT_PROBLEM) -> Problem:
  """models/<name>/problem.py's PROBLEM (checked once per process)."""
  if name not in _LOADED:
    if name not in names():
      raise ValueError(f'no problem {name!r}: problems are the folders of '
                       f'models/ with a problem.py ({", ".join(names())})')
    problem = importlib.import_module(f'models.{name}.problem').PROBLEM
    if problem.name != name:
      raise ValueError(f'models/{name}/problem.py names itself '
                       f'{problem.name!r}')
    _LOADED[name] = problem
  return _LOADED[name]
