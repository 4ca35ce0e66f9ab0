"""components/model_card.py's rendering: a card is a local HTML file any
browser opens from disk (no server, so no response header protects it), and
every value on it comes from artifacts and configuration a user does not
read before opening it. So each value is escaped, and the page itself
forbids scripts (its own Content-Security-Policy). Fast: no pipeline runs;
the card is a hand-made dict of the shape `model_card.build` returns.
"""

import html
import re

import pytest

from components import model_card
from models import problem as problems
from pipeline import blessing
from pipeline import configs

HOSTILE = ('<script>alert(1)</script>', '"><img src=x onerror=alert(1)>')


def _bad(i: int) -> str:
  return f'{HOSTILE[i % 2]}{i}'


def hostile_card(rule=None, shown=None):
  """A card whose every text field (names, descriptions, slice values,
  metric names, hyperparameters) is markup; each value the card shows is
  appended to `shown`."""
  problem = problems.load('taxi')
  shown = [] if shown is None else shown

  def bad():
    shown.append(_bad(len(shown)))
    return shown[-1]

  metric, label = _bad(-1), bad()  # the key is looked up, never shown
  slices = [
      {'slice': 'overall', 'candidate': {'example_count': 500.0, 'auc': 0.8,
                                         metric: 0.5},
       'baseline': {'auc': 0.7}, 'not_compared': None},
      {'slice': f'payment_type={bad()}', 'candidate': {'example_count': 10.0},
       'baseline': {}, 'not_compared': bad()},
  ]
  return {
      'schema': model_card.CARD_SCHEMA,
      'problem': {'name': bad(), 'title': bad(), 'question': bad(),
                  'task': bad(), 'label': bad(), 'classes': [bad(), bad()],
                  'columns': [['example_count', bad()], ['auc', 'AUC'],
                              [metric, label]],
                  'baseline_columns': [['auc', bad()]]},
      'model_details': {'name': bad(), 'model_id': 7, 'model_uri': bad(),
                        'version': bad(), 'code_commit': bad(),
                        'code_dirty': True, 'pipeline_release': bad(),
                        'card_made_at': bad()},
      'data': {'spans': [{'span': bad(), 'examples_id': bad(),
                          'rows': {'train': bad(), 'eval': bad()}}],
               'rows': {'train': bad(), 'eval': bad()},
               'schema_digest': bad(), 'schema_id': bad()},
      'training': {'hparams': {bad(): bad(), 'learning_rate': bad()},
                   'seed': bad(), 'tuned': ['learning_rate'],
                   'hyperparameters_id': bad(), 'train_steps': bad(),
                   'eval_steps': bad(), 'train_class_shares': [0.5, 0.5],
                   'final_training_metrics': {}, 'code_version': bad()},
      'evaluation': {'evaluation_id': 3, 'slices': slices},
      'slice_differences': (model_card.slice_differences(slices, problem)
                            + [bad()]),
      'decision': {'blessed': False, 'failures': [bad()],
                   'rule': rule or [bad()], 'baseline_model_id': bad(),
                   'blessing_id': 4,
                   'infra': {'blessed': False, 'infra_blessing_id': 5,
                             'summary': bad(), 'report': None}},
      'considerations': {'intended_use': bad(), 'limitations': [bad()]},
  }


def test_every_value_on_the_html_card_is_escaped():
  shown = []
  text = model_card.render(hostile_card(shown=shown))['html']
  assert '<script' not in text.lower()
  assert '<img' not in text.lower()
  assert len(shown) > 35
  for value in shown:  # each on the card, as text
    assert html.escape(value, quote=False).replace('"', '&#34;') in text, (
        value)


def test_the_real_rule_is_escaped_and_the_card_forbids_scripts():
  cfg = configs.PipelineConfig(data_root='/d', pipeline_root='/p',
                               serving_dir='/s')
  rule = blessing.describe(blessing.eval_config(cfg))
  assert 'AUC >= 0.7 (overall)' in rule
  text = model_card.render(hostile_card(rule))['html']
  assert 'AUC &gt;= 0.7 (overall)' in text
  assert 'AUC >= 0.7' not in text
  from project import web  # pylint: disable=g-import-not-at-top
  policy = re.search(r'<meta http-equiv="Content-Security-Policy" '
                     r'content="([^"]*)">', text)
  assert policy, 'the card names no Content-Security-Policy'
  assert html.unescape(policy.group(1)) == web.META_CONTENT_SECURITY_POLICY
  assert "default-src 'none'" in web.META_CONTENT_SECURITY_POLICY
  assert 'script-src' not in web.META_CONTENT_SECURITY_POLICY  # none: default
  # a <meta> policy cannot carry it: browsers log a console error
  assert 'frame-ancestors' not in web.META_CONTENT_SECURITY_POLICY


def test_the_markdown_card_is_not_html_escaped():
  """Markdown is text: `>=` stays `>=` (the Markdown viewer escapes)."""
  text = model_card.render(hostile_card(['AUC >= 0.7 (overall)']))['md']
  assert 'AUC >= 0.7 (overall)' in text


@pytest.mark.parametrize('name', ['model_card.html.j2', 'base.html.j2',
                                  'x.html'])
def test_one_autoescape_rule_escapes_every_html_template(name):
  from project import web  # pylint: disable=g-import-not-at-top
  assert web.autoescape(name)
  assert not web.autoescape('model_card.md.j2')


def test_the_ui_and_the_card_state_the_same_policy():
  from project import web  # pylint: disable=g-import-not-at-top
  from ui import server  # pylint: disable=g-import-not-at-top
  assert dict(server.SECURITY_HEADERS)['Content-Security-Policy'] == (
      web.CONTENT_SECURITY_POLICY)
