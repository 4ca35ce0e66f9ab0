"""A span with nothing to score stops the scoring run, saying so.

BulkInferrer writes no PredictionLogs for a span with a header and no rows,
and the CSV step then blamed "an unblessed model?". The span's CSV check
refuses it first, naming the span, before any TFX work: no model is
trained or loaded here (the served model is a stand-in).
"""

import os

from ml_metadata.proto import metadata_store_pb2
from components import baseline
from pipeline import configs
from pipeline import run_pipeline as runs
from pipeline import scoring
from tests import helpers
from tests.ops import test_csv_check


def test_scoring_an_empty_span_stops_and_says_so(tmp_path, monkeypatch,
                                                 capsys):
  root = tmp_path / 'data'
  helpers.small_spans(str(root), sources=(9,), rows=20)
  empty = os.path.join(str(root), 'span-2', 'data.csv')
  os.makedirs(os.path.dirname(empty))
  with open(empty, 'w') as f:
    f.write(test_csv_check.HEADER + '\n')
  cfg = configs.PipelineConfig(
      data_root=str(root), pipeline_root=str(tmp_path / 'pipeline'),
      serving_dir=str(tmp_path / 'serving'), **helpers.FAST_PIPELINE)
  served = baseline.ServedModel(
      version=1, model=metadata_store_pb2.Artifact(id=11),
      blessing=metadata_store_pb2.Artifact(id=12), why='a stand-in')
  monkeypatch.setattr(baseline, 'served_model', lambda *a, **k: served)

  def no_tfx(*args, **kwargs):
    raise AssertionError('a TFX run was started on an empty span')
  monkeypatch.setattr(runs, 'run_pinned', no_tfx)

  outcome = scoring.run_scoring(cfg, lambda: None, str(tmp_path / 'scores'),
                                span=2)
  assert not outcome.ok
  assert outcome.error.startswith('span 2: no rows: ')
  out = capsys.readouterr().out
  assert 'STOPPED - nothing was scored' in out
  assert 'span 2: no rows' in out and 'unblessed' not in out
