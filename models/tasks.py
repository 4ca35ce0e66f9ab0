"""What a prediction means: the one owner, for every task.

A task decides
  * the model's head: output units, activation, loss, the starting bias
    (models/model.py builds it from these);
  * what one answer of the served model is (`read`): class probabilities,
    the predicted class, the score a person reads; and what is *not* a valid
    answer (`fault`), which the InfraValidator refuses to push;
  * the blessing rule: which metrics, which thresholds (`RULE`, its knobs'
    defaults `rule_defaults`, each with why), applied by TFX's Evaluator
    (pipeline/blessing.py builds the TFMA config from them);
  * the headline metrics summaries, model cards and pages lead with.

Pure Python: the model server, the client, the CD gate and the monitor read
it without TensorFlow.

Tasks: BINARY (one probability of the positive class; taxi) and MULTICLASS
(a probability per class; penguin).
"""

import dataclasses
import math
import struct
from typing import Any, Dict, List, Optional, Sequence, Tuple


def _float32(value: float) -> str:
  """A float32 answer in its shortest exact form, as numpy.float32's str
  prints it ('0.27341256'), without NumPy."""
  target = struct.unpack('f', struct.pack('f', value))[0]
  for digits in range(1, 18):
    text = f'{target:.{digits}g}'
    if struct.unpack('f', struct.pack('f', float(text)))[0] == target:
      return text if any(c in text for c in '.en') else text + '.0'
  return repr(target)


@dataclasses.dataclass(frozen=True)
class Check:
  """One threshold of the blessing rule: `metric` (a TFMA metric class)
  within the knobs' bounds on `where` ('overall' or 'guarded': each
  guarded slice of the problem). `drop`: a knob bounding how far below the
  baseline's value the candidate may be (skipped while there is none)."""
  metric: str
  lower: Optional[str] = None   # knob name
  upper: Optional[str] = None   # knob name
  drop: Optional[str] = None    # knob name
  where: str = 'overall'


@dataclasses.dataclass(frozen=True)
class Knob:
  """A threshold's default and why it is that value for this task."""
  default: float
  why: str


def _snake(name: str) -> str:
  """'BalancedAccuracy' -> 'balanced_accuracy', TFMA's key for a class."""
  out = ''
  for i, c in enumerate(name):
    if c.isupper() and i and (not name[i - 1].isupper() or (
        i + 1 < len(name) and name[i + 1].islower())):
      out += '_'
    out += c.lower()
  return out


class Task:
  """The base of BINARY and MULTICLASS (see the module docstring)."""
  name = ''
  activation = ''
  loss = ''
  keras_metric = ''
  # TFMA metrics computed for every model (reported, whether or not a
  # threshold applies).
  metrics: Tuple[str, ...] = ()
  checks: Tuple[Check, ...] = ()
  knobs: Dict[str, Knob] = {}
  # What summaries, cards and pages show first, in this order (metric keys
  # as TFMA names them); a model card's table per slice (`card`), the
  # baseline's figures beside it (`card_baseline`); how people read each.
  headline: Tuple[str, ...] = ()
  card: Tuple[str, ...] = ()
  card_baseline: Tuple[str, ...] = ()
  labels: Dict[str, str] = {}
  # The Evaluator's metric of the share of right answers (what live
  # accuracy, monitoring/accuracy.py, is compared with), and of balanced
  # accuracy (the one every task has: tables that show one metric beside
  # the headline's first show this one).
  accuracy_metric = ''
  balanced_metric = ''

  @property
  def metric_keys(self) -> Dict[str, str]:
    """TFMA metric class -> the key its value has among the Evaluator's
    metrics (AUC -> auc, SparseCategoricalAccuracy ->
    sparse_categorical_accuracy)."""
    return {name: _snake(name) for name in self.metrics}

  def check_classes(self, n: int) -> Optional[str]:
    """Why a label of `n` classes is no label of this task, or None."""
    return None if n >= 2 else 'needs at least 2 classes'

  def units(self, n_classes: int) -> int:
    return n_classes

  def initial_bias(self, shares: Sequence[float]) -> List[float]:
    """The output layer's starting bias: the untrained model predicts the
    training data's class shares, so short budgets spend their steps on the
    features, not on first learning the base rate."""
    raise NotImplementedError

  def rule_defaults(self) -> Dict[str, float]:
    return {name: knob.default for name, knob in self.knobs.items()}

  # --- one answer ----------------------------------------------------------

  def fault(self, output: Any, n_classes: int) -> Optional[str]:
    """Why `output` (one instance's `outputs`, as TF Serving's JSON gives
    it) is no valid answer of this task, or None."""
    values = output if isinstance(output, list) else [output]
    if len(values) != self.units(n_classes):
      return (f'{len(values)} values, not the {self.units(n_classes)} a '
              f'{self.name} model answers')
    for value in values:
      if (isinstance(value, bool) or not isinstance(value, (int, float)) or
          not math.isfinite(value) or not 0.0 <= value <= 1.0):
        return f'{value!r} is not a probability in [0, 1]'
    return None

  def probabilities(self, output: Any, n_classes: int) -> List[float]:
    """One answer as a probability per class (ValueError if invalid)."""
    why = self.fault(output, n_classes)
    if why:
      raise ValueError(f'answer {output!r}: {why}')
    return [float(v) for v in (output if isinstance(output, list)
                               else [output])]

  def predicted(self, output: Any, n_classes: int) -> int:
    """The class an answer predicts."""
    p = self.probabilities(output, n_classes)
    return max(range(len(p)), key=p.__getitem__)

  def score(self, output: Any, n_classes: int) -> float:
    """The one number a person reads for an answer (see describe)."""
    raise NotImplementedError

  def describe(self, output: Any, label) -> str:
    """An answer in words, for consoles and pages."""
    raise NotImplementedError

  def csv_columns(self, label) -> List[str]:
    """The columns of scoring's CSV (components/predictions_to_csv.py) that
    hold one answer."""
    raise NotImplementedError

  def csv_values(self, output: Any, label) -> List[str]:
    """One answer in csv_columns' columns (float32, shortest exact form)."""
    raise NotImplementedError

  def accuracy(self, outputs: Sequence[Any], labels: Sequence[int],
               n_classes: int) -> float:
    """The share of answers whose predicted class is the label."""
    if not labels:
      raise ValueError('no labelled answers')
    right = sum(self.predicted(o, n_classes) == y
                for o, y in zip(outputs, labels))
    return right / len(labels)


class _Binary(Task):
  """One probability: of class 1 (the label's second class)."""
  name = 'binary'
  activation = 'sigmoid'
  loss = 'binary_crossentropy'
  keras_metric = 'binary_accuracy'
  metrics = ('ExampleCount', 'AUC', 'BalancedAccuracy', 'Calibration',
             'BinaryAccuracy', 'Precision', 'Recall', 'MeanLabel',
             'MeanPrediction')
  checks = (
      Check('AUC', lower='min_auc', drop='max_auc_drop'),
      Check('BalancedAccuracy', lower='min_balanced_accuracy'),
      Check('Calibration', lower='min_calibration', upper='max_calibration'),
      Check('Calibration', lower='min_slice_calibration',
            upper='max_slice_calibration', where='guarded'),
  )
  knobs = {
      'min_auc': Knob(0.7, 'AUC >= this (chance is 0.5)'),
      'min_balanced_accuracy': Knob(
          0.7, 'balanced accuracy (mean of the true positive and true '
          'negative rates at p > 0.5) >= this; the majority class and a '
          'constant score 0.5 whatever the base rate, so plain accuracy, '
          'which rewards the majority class, has no threshold'),
      'min_calibration': Knob(
          0.8, 'calibration (mean prediction / mean label) >= this, '
          'overall'),
      'max_calibration': Knob(1.25, '... and <= this, overall'),
      'min_slice_calibration': Knob(
          0.7, 'calibration floor on each guarded slice'),
      'max_slice_calibration': Knob(
          1.43, 'calibration ceiling on each guarded slice'),
      'max_auc_drop': Knob(
          0.01, 'AUC >= the baseline\'s AUC - this (the baseline is the '
          'served model, components/baseline.py)'),
  }
  headline = ('auc', 'balanced_accuracy', 'binary_accuracy', 'calibration')
  card = ('example_count',) + headline
  card_baseline = ('auc', 'calibration')
  accuracy_metric = 'binary_accuracy'
  balanced_metric = 'balanced_accuracy'
  labels = {'example_count': 'examples', 'auc': 'AUC',
            'balanced_accuracy': 'balanced accuracy',
            'binary_accuracy': 'accuracy', 'calibration': 'calibration',
            'mean_label': 'mean label', 'mean_prediction': 'mean prediction',
            'precision': 'precision', 'recall': 'recall'}

  def check_classes(self, n: int) -> Optional[str]:
    return None if n == 2 else 'has exactly 2 classes'

  def units(self, n_classes: int) -> int:
    return 1

  def initial_bias(self, shares: Sequence[float]) -> List[float]:
    rate = min(max(shares[1], 1e-3), 1 - 1e-3)
    return [math.log(rate / (1 - rate))]

  def probabilities(self, output: Any, n_classes: int) -> List[float]:
    [p] = super().probabilities(output, n_classes)
    return [1.0 - p, p]

  def score(self, output: Any, n_classes: int) -> float:
    return self.probabilities(output, n_classes)[1]

  def describe(self, output: Any, label) -> str:
    return f'{self.score(output, 2):.4f}'

  def csv_columns(self, label) -> List[str]:
    return ['prediction']  # P(class 1): e.g. P(big tip)

  def csv_values(self, output: Any, label) -> List[str]:
    return [_float32(self.score(output, 2))]


class _Multiclass(Task):
  """A probability per class (softmax), classes as the label orders them."""
  name = 'multiclass'
  activation = 'softmax'
  loss = 'sparse_categorical_crossentropy'
  keras_metric = 'sparse_categorical_accuracy'
  metrics = ('ExampleCount', 'SparseCategoricalAccuracy',
             'MulticlassBalancedAccuracy')
  checks = (
      Check('SparseCategoricalAccuracy', lower='min_accuracy',
            drop='max_accuracy_drop'),
      Check('MulticlassBalancedAccuracy', lower='min_balanced_accuracy'),
  )
  knobs = {
      'min_accuracy': Knob(
          0.6, 'accuracy (the predicted class is the label) >= this: the '
          'threshold of TFX\'s own penguin example'),
      'min_balanced_accuracy': Knob(
          0.6, 'balanced accuracy (the mean over classes of the share of '
          'that class predicted right) >= this; the majority class, a '
          'constant or a model that learned one class score 1 / classes '
          '(0.33 for three), whatever the class shares, so this refuses '
          'them where accuracy alone (the majority share) may not'),
      'max_accuracy_drop': Knob(
          0.01, 'accuracy >= the baseline\'s accuracy - this (the baseline '
          'is the served model, components/baseline.py)'),
  }
  headline = ('sparse_categorical_accuracy', 'multiclass_balanced_accuracy')
  card = ('example_count',) + headline
  card_baseline = ('sparse_categorical_accuracy',)
  accuracy_metric = 'sparse_categorical_accuracy'
  balanced_metric = 'multiclass_balanced_accuracy'
  labels = {'example_count': 'examples',
            'sparse_categorical_accuracy': 'accuracy',
            'multiclass_balanced_accuracy': 'balanced accuracy'}

  def check_classes(self, n: int) -> Optional[str]:
    return None if n >= 3 else 'has 3 classes or more (2: a binary task)'

  def initial_bias(self, shares: Sequence[float]) -> List[float]:
    return [math.log(min(max(s, 1e-3), 1.0)) for s in shares]

  def score(self, output: Any, n_classes: int) -> float:
    return max(self.probabilities(output, n_classes))

  def describe(self, output: Any, label) -> str:
    p = self.probabilities(output, len(label.classes))
    order = sorted(range(len(p)), key=lambda i: -p[i])
    return ', '.join(f'{label.classes[i]} {p[i]:.4f}' for i in order)

  def csv_columns(self, label) -> List[str]:
    # The predicted class's index, then each class's probability.
    return ['prediction'] + [f'p_{c}' for c in label.classes]

  def csv_values(self, output: Any, label) -> List[str]:
    n = len(label.classes)
    return [str(self.predicted(output, n))] + [
        _float32(v) for v in self.probabilities(output, n)]


BINARY = _Binary()
MULTICLASS = _Multiclass()
TASKS = {t.name: t for t in (BINARY, MULTICLASS)}
# Every threshold knob of every task (PipelineConfig has a flag for each).
ALL_KNOBS: Dict[str, str] = {}
for _task in TASKS.values():
  for _name, _knob in _task.knobs.items():
    ALL_KNOBS.setdefault(_name, _knob.why)
