"""The penguin problem (TFX's own penguin example, on its bundled data).

Data: data/penguin/span-N/data.csv, three spans of the Palmer penguins that
ship inside the tfx wheel (data/make_penguin_spans.py cuts them). Schema:
schema/penguin/schema.pbtxt. Label: the species, one of three. A
multi-class task (models/tasks.py).
"""

from typing import Any, Dict

from models import problem as p
from models import tasks

_SCALED = ('scaled to [0, 1] over the dataset by TFX\'s penguin example '
           'data; z-scored again by Transform, as TFX\'s example does')


def _species(columns):
  """THE label rule: the species column is the class index already."""
  return columns['species']


def _scaled(row: Dict[str, Any], column: str, factor: float) -> Dict[str, Any]:
  """A measurement times `factor` (a unit or scaling error upstream)."""
  value = row[column]
  return {**row, column: str(float(value) * factor) if value != '' else ''}


PROBLEM = p.Problem(
    name='penguin',
    title='Palmer penguin species',
    question='which species is this penguin?',
    features=tuple(
        p.Feature(name, 'float', p.Z_SCORE, why=_SCALED)
        for name in ('culmen_length_mm', 'culmen_depth_mm',
                     'flipper_length_mm', 'body_mass_g')),
    label=p.Label(
        name='species', columns=('species',),
        classes=('Adelie', 'Chinstrap', 'Gentoo'), derive=_species,
        why='the species as the data codes it: 0 Adelie, 1 Chinstrap, '
        '2 Gentoo'),
    task=tasks.MULTICLASS,
    # TFX's penguin example blesses at accuracy >= 0.6 (its eval_config);
    # the task's balanced-accuracy floor refuses a model that never
    # predicts Chinstrap (a fifth of the birds), which 0.6 accuracy alone
    # would not.
    thresholds={'min_accuracy': 0.6},
    sample={'culmen_length_mm': 0.2545, 'culmen_depth_mm': 0.6667,
            'flipper_length_mm': 0.1525, 'body_mass_g': 0.2917},
    sample_text='culmen 0.25 x 0.67, flipper 0.15, mass 0.29 (scaled)',
    intended_use=(
        'Tells the species of a Palmer Archipelago penguin (Adelie, '
        'Chinstrap, Gentoo) from four body measurements. A teaching model '
        'of the tfx-reference pipeline, on the data of TFX\'s penguin '
        'example: for showing a multi-class problem through the same '
        'MLOps level-2 loop, not for field biology.'),
    limitations=(
        'Trained on 334 birds measured in 2007-2009 on three islands, '
        'values min-max scaled by the source: raw millimetres and grams '
        'must be scaled the same way before asking.',
        'Chinstraps are a fifth of the birds: read balanced accuracy, not '
        'only accuracy.',
    ),
    traffic_shifts={
        'mass-x2': lambda r: _scaled(r, 'body_mass_g', 2.0),
        'flipper-x0.5': lambda r: _scaled(r, 'flipper_length_mm', 0.5),
    },
    # A small MLP learns this in a few hundred steps (TFX's penguin example:
    # 8-unit layers, 0.01 learning rate).
    hparams={'hidden_units': [8, 8], 'learning_rate': 0.01,
             'batch_size': 20, 'seed': 42},
    train_steps=300, eval_steps=20, window_spans=3,
)
