"""A model server over the session's trained model, one per test module."""

import os

import pytest

from tests import helpers


@pytest.fixture(scope='module')
def base_path(tmp_path_factory, trained_model):
  """A model base path holding version 1: the trained model."""
  base = str(tmp_path_factory.mktemp('models') / 'taxi')
  os.makedirs(base)
  helpers.copy_version(trained_model.serving_model_dir, base, 1)
  return base


@pytest.fixture(scope='module')
def server(base_path):
  """`python -m serving` on base_path (helpers.Server), stopped after the
  module."""
  s = helpers.Server(base_path)
  yield s
  s.stop()
