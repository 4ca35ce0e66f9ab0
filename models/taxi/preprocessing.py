"""tf.Transform preprocessing for the taxi problem: TFX Transform's
`preprocessing_fn`, the encodings models/taxi/problem.py declares (numbers
z-scored, coordinates in quantile buckets, vocabularies, integer
categories), built by models/transform.py."""

from models import transform
from models.taxi import problem

preprocessing_fn = transform.preprocessing_fn_for(problem.PROBLEM)
