"""models/tasks.py: what one answer of each task is, and what is not."""

import math

import pytest

from models import tasks
from models import problem as problems


@pytest.mark.parametrize('task,output,n', [
    (tasks.BINARY, 0.3, 2), (tasks.BINARY, [0.3], 2),
    (tasks.MULTICLASS, [0.2, 0.3, 0.5], 3)])
def test_a_valid_answer_has_no_fault(task, output, n):
  assert task.fault(output, n) is None
  p = task.probabilities(output, n)
  assert len(p) == n and math.isclose(sum(p), 1.0)


@pytest.mark.parametrize('task,output,n,why', [
    # A softmax over 3 classes is no binary answer, and back.
    (tasks.BINARY, [0.2, 0.3, 0.5], 2, '3 values'),
    (tasks.MULTICLASS, [0.7], 3, '1 values'),
    (tasks.BINARY, 1.5, 2, 'not a probability'),
    (tasks.BINARY, float('nan'), 2, 'not a probability'),
    (tasks.MULTICLASS, [0.2, 'x', 0.5], 3, 'not a probability'),
    (tasks.MULTICLASS, [0.2, True, 0.5], 3, 'not a probability'),
    (tasks.MULTICLASS, [0.2, -0.1, 0.9], 3, 'not a probability')])
def test_an_invalid_answer_says_why(task, output, n, why):
  assert why in task.fault(output, n)
  with pytest.raises(ValueError, match='answer'):
    task.probabilities(output, n)


def test_binary_reads_one_probability_of_the_second_class():
  assert tasks.BINARY.predicted(0.7, 2) == 1
  assert tasks.BINARY.predicted(0.3, 2) == 0
  assert tasks.BINARY.score([0.25], 2) == 0.25
  assert tasks.BINARY.csv_values(0.27341256, None) == ['0.27341256']


def test_multiclass_reads_the_most_probable_class_in_label_order():
  label = problems.load('penguin').label
  out = [0.1, 0.7, 0.2]
  assert tasks.MULTICLASS.predicted(out, 3) == 1
  assert tasks.MULTICLASS.describe(out, label) == (
      'Chinstrap 0.7000, Gentoo 0.2000, Adelie 0.1000')
  assert tasks.MULTICLASS.csv_columns(label) == [
      'prediction', 'p_Adelie', 'p_Chinstrap', 'p_Gentoo']
  assert tasks.MULTICLASS.csv_values(out, label)[0] == '1'


@pytest.mark.parametrize('task', tasks.TASKS.values(), ids=lambda t: t.name)
def test_a_constant_answer_scores_chance_on_balanced_accuracy(task):
  """Why each task's balanced-accuracy floor refuses degenerate models: a
  model that answers the majority class for every row is right on the
  majority's share but balanced accuracy is 1 / classes."""
  n = 2 if task is tasks.BINARY else 3
  labels = [0] * 80 + [1] * 15 + ([2] * 5 if n == 3 else [0] * 5)
  constant = 0.1 if task is tasks.BINARY else [0.8, 0.15, 0.05]
  outputs = [constant] * len(labels)
  assert task.accuracy(outputs, labels, n) >= 0.8
  per_class = [
      sum(task.predicted(o, n) == y == c for o, y in zip(outputs, labels)) /
      labels.count(c) for c in range(n)]
  balanced = sum(per_class) / n
  assert balanced == pytest.approx(1 / n)
  assert balanced < task.rule_defaults()['min_balanced_accuracy']


@pytest.mark.parametrize('task', tasks.TASKS.values(), ids=lambda t: t.name)
def test_every_check_names_knobs_the_task_has_and_says_why(task):
  for check in task.checks:
    for knob in (check.lower, check.upper, check.drop):
      if knob:
        assert knob in task.knobs and task.knobs[knob].why
    assert check.metric in task.metrics


def test_initial_bias_predicts_the_class_shares():
  [b] = tasks.BINARY.initial_bias([0.75, 0.25])
  assert 1 / (1 + math.exp(-b)) == pytest.approx(0.25)
  bias = tasks.MULTICLASS.initial_bias([0.5, 0.3, 0.2])
  z = sum(math.exp(x) for x in bias)
  assert [math.exp(x) / z for x in bias] == pytest.approx([0.5, 0.3, 0.2])


def test_class_counts_each_task_accepts():
  assert tasks.BINARY.check_classes(2) is None
  assert tasks.BINARY.check_classes(3)
  assert tasks.MULTICLASS.check_classes(3) is None
  assert tasks.MULTICLASS.check_classes(2)
