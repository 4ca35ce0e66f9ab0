"""inference.execute's flat call answers exactly as the keyword call does."""

import dataclasses

import numpy as np
import pytest

from models import features
from serving import inference
from serving import model_registry
from tests import helpers


@pytest.fixture(scope='module')
def loaded(trained_model):
  return model_registry.load_version(trained_model.serving_model_dir, 1)


def _inputs(name, rows):
  if name == features.RAW_SIGNATURE:
    raw = helpers.raw_rows(rows)
    return {k: [r[k] for r in raw] for k in helpers.RAW_TYPES}
  schema = helpers.load_schema()
  return {'examples': [helpers.to_example(r, schema, drop_label=True)
                       .SerializeToString() for r in rows]}


@pytest.mark.parametrize('name', ['serving_default', features.RAW_SIGNATURE,
                                  'transform_features'])
def test_flat_call_equals_keyword_call(loaded, eval_rows, name):
  assert loaded.flat_inputs[name] is not None  # the fast path is taken
  by_keyword = dataclasses.replace(loaded, flat_inputs={})
  inputs = inference.prepare(loaded, name, _inputs(name, eval_rows[:7]))
  fast = inference.execute(loaded, name, inputs)
  slow = inference.execute(by_keyword, name, inputs)
  assert sorted(fast) == sorted(slow)
  for key in slow:
    np.testing.assert_array_equal(fast[key], slow[key])
