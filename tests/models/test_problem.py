"""models/problem.py: a problem is checked when it is declared."""

import dataclasses

import pytest

from models import problem as p
from models import tasks


def _base(**changes):
  fields = dict(
      name='t', title='T', question='?',
      features=(p.Feature('x', 'float', p.Z_SCORE),
                p.Feature('c', 'string', p.VOCABULARY, size=5)),
      label=p.Label('y', ('raw',), ('no', 'yes'),
                    derive=lambda c: c['raw'] > 1),
      task=tasks.BINARY, sample={'x': 1.0}, sample_text='x 1')
  fields.update(changes)
  return p.Problem(**fields)


def test_every_bundled_problem_loads_and_names_itself():
  assert {'taxi', 'penguin'} <= set(p.names())
  for name in p.names():
    problem = p.load(name)
    assert problem.name == name
    assert problem.task.check_classes(len(problem.label.classes)) is None


def test_unknown_problem_lists_the_known_ones():
  with pytest.raises(ValueError, match='penguin.*taxi|taxi.*penguin'):
    p.load('nope')


@pytest.mark.parametrize('changes,message', [
    (dict(slices=('z',)), "slices names \\['z'\\]"),
    (dict(drift_excluded={'z': 'why'}), 'drift_excluded'),
    (dict(sample={'z': 1}), 'sample names'),
    (dict(thresholds={'min_accuracy': 0.5}), 'not knobs of a binary task'),
    (dict(task=tasks.MULTICLASS), 'has 3 classes or more'),
    (dict(hparams={'dropout': 0.5}), "hparams \\['dropout'\\] are not"),
    (dict(features=(p.Feature('x', 'float', p.Z_SCORE),) * 2),
     'declared twice'),
])
def test_a_wrong_declaration_fails_at_load_saying_where(changes, message):
  with pytest.raises(ValueError, match=message):
    _base(**changes)


@pytest.mark.parametrize('args,message', [
    (('x', 'double', p.Z_SCORE), 'dtype'),
    (('x', 'float', 'log'), 'encoding'),
    (('x', 'float', p.QUANTILES), 'needs a size'),
    (('x', 'int', p.VOCABULARY, 3), 'of strings'),
    (('x', 'string', p.CATEGORY, 3), 'integer')])
def test_a_wrong_feature_says_what(args, message):
  with pytest.raises(ValueError, match=message):
    p.Feature(*args)


def test_derived_views_come_from_the_declaration():
  problem = _base(drift_excluded={'c': 'ids'})
  assert problem.raw_types == {'x': 'float', 'c': 'string'}
  assert problem.drift_kinds == {'x': True}
  assert problem.label_only_columns == ('raw',)
  assert problem.label_of({'raw': '2.5'}) == 1
  assert problem.label_of({'raw': '0'}) == 0
  # A row without the label's column never trains: None, not a guess.
  assert problem.label_of({'raw': ''}) is None
  assert problem.rule() == tasks.BINARY.rule_defaults()
  tuned = dataclasses.replace(problem, thresholds={'min_auc': 0.8})
  assert tuned.rule()['min_auc'] == 0.8
