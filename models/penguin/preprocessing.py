"""tf.Transform preprocessing for the penguin problem: TFX Transform's
`preprocessing_fn`, the encodings models/penguin/problem.py declares (four
z-scored measurements), built by models/transform.py."""

from models import transform
from models.penguin import problem

preprocessing_fn = transform.preprocessing_fn_for(problem.PROBLEM)
