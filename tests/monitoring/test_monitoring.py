"""Request logging in the real server, and the monitor on what it logged.

One server process serves the trained test model under five names, each
with its own TF Serving logging_config: `taxi` (every request), `shifted`
(every request, traffic with known skews: card only, 3am only, fares x3),
`sampled` (rate 0.25), `off`
(rate 0) and `broken` (a prefix that cannot be written). Traffic is sent
once; the server is stopped (which flushes the logs) before any test reads
them. The model, its traffic and its shifts are the taxi problem's
(helpers.TAXI); an answer is the model's `outputs` row, a list (one
probability for taxi's binary task).
"""

import base64
import json
import os

import numpy as np
import pytest

from models import features
from monitoring import accuracy
from monitoring import config as monitor_config
from monitoring import distribution
from monitoring import monitor
from monitoring import prediction_logs
from monitoring import replay_traffic
from serving import client
from serving import model_config
from tests import helpers


SAMPLED_REQUESTS = 200
SAMPLED_RATE = 0.25


def _config(base, logs, blocker):
  def model(name, rate, prefix):
    return f'''config {{
    name: "{name}" base_path: "{base}" model_platform: "tensorflow"
    logging_config {{
      log_collector_config {{ type: "tfrecord" filename_prefix: "{prefix}" }}
      sampling_config {{ sampling_rate: {rate} }}
    }}
  }}'''
  return 'model_config_list {\n' + '\n'.join([
      model('taxi', 1.0, f'{logs}/taxi'),
      model('shifted', 1.0, f'{logs}/shifted'),
      model('sampled', SAMPLED_RATE, f'{logs}/sampled'),
      model('off', 0.0, f'{logs}/off'),
      model('broken', 1.0, f'{blocker}/cannot/be/a/dir'),
  ]) + '\n}\n'


def _spread(rows, count=200):
  """`count` rows spread over a whole span. The bundled CSVs come in blocks
  (runs of trips from one community area), so a contiguous slice is no
  sample of its span: rows 500-700 of span 5 hold 22% O'Hare pickups, the
  span 6%, and the skew rule rightly reports that."""
  return rows[1::len(rows) // count][:count]


def _unshifted_rows():
  """Trips of the test model's spans (5, 6), spread over each span."""
  return _spread(helpers.read_span(5)) + _spread(helpers.read_span(6))


@pytest.fixture(scope='module')
def traffic(tmp_path_factory, trained_model):
  """Sends the traffic, stops the server; returns what was sent and got."""
  root = tmp_path_factory.mktemp('monitoring')
  base = str(root / 'models' / 'taxi')
  os.makedirs(base)
  helpers.copy_version(trained_model.serving_model_dir, base, 1)
  blocker = root / 'a-file'
  blocker.write_text('a regular file: no directory can be made under it')
  config = root / 'models.config'
  config.write_text(_config(base, root / 'logs', blocker))
  server = helpers.Server(None, ['--model_config_file', str(config)])
  sent = {'taxi': [], 'shifted': []}  # (trip, answer) per instance
  try:
    rows = _unshifted_rows()
    trips = [{k: r[k] for k in helpers.RAW_TYPES} for r in rows]
    rest = client.RestClient(server.url, 'taxi', helpers.TAXI)
    for start in range(0, len(trips), 50):
      batch = trips[start:start + 50]
      sent['taxi'] += zip(batch, rest.predict(batch))
    grpc_client = client.GrpcClient(server.grpc_address, 'taxi',
                                    helpers.TAXI)
    try:
      sent['taxi'] += zip(trips[:10], grpc_client.predict(trips[:10]))
    finally:
      grpc_client.close()
    schema = helpers.load_schema()
    b64 = [{'b64': base64.b64encode(helpers.to_example(
        r, schema, drop_label=True).SerializeToString()).decode()}
           for r in rows[10:15]]
    code, body = server.request('/v1/models/taxi:predict', {'instances': b64})
    assert code == 200, body
    sent['taxi'] += zip(trips[10:15], body['predictions'])

    shifted = trips
    for name in ('credit-card-only', 'night-only', 'fare-x3'):
      shifted = [helpers.TAXI.traffic_shifts[name](t) for t in shifted]
    rest_shifted = client.RestClient(server.url, 'shifted', helpers.TAXI)
    assert replay_traffic.send(rest_shifted, shifted, 50) == len(shifted)

    sampled = client.RestClient(server.url, 'sampled', helpers.TAXI)
    for trip in trips[:SAMPLED_REQUESTS]:
      sampled.predict([trip])
    off = client.RestClient(server.url, 'off', helpers.TAXI)
    broken = client.RestClient(server.url, 'broken', helpers.TAXI)
    expected = rest.predict(trips[:20])
    sent['taxi'] += zip(trips[:20], expected)
    np.testing.assert_allclose(off.predict(trips[:20]), expected, rtol=1e-6)
    for i in range(20):  # every request answered, each one correctly
      np.testing.assert_allclose(broken.predict(trips[i:i + 1]),
                                 expected[i:i + 1], rtol=1e-6)
    code, _ = server.request('/v1/models/broken')
    assert code == 200
  finally:
    stderr = server.stop()  # flushes and closes the log files
  return {'root': root, 'logs': str(root / 'logs'), 'sent': sent,
          'rows': rows, 'stderr': stderr, 'config': str(config)}


def test_logging_config_is_parsed_and_checked(tmp_path):
  text = _config('models/taxi', 'logs', '/x').replace(
      'base_path: "models/taxi"', 'base_path: "m"')
  (tmp_path / 'm.config').write_text(text)
  taxi, _, sampled, off, _ = model_config.load(str(tmp_path / 'm.config'))
  assert taxi.logging == model_config.LoggingConfig(
      str(tmp_path / 'logs' / 'taxi'), 1.0, 'tfrecord')
  assert sampled.logging.sampling_rate == SAMPLED_RATE
  assert off.logging.sampling_rate == 0.0
  assert model_config.parse(
      'model_config_list { config { name: "a" base_path: "/a" } }'
  )[0].logging is None
  bad = 'model_config_list {{ config {{ name: "a" base_path: "/a" ' \
        'logging_config {{ {} }} }} }}'
  with pytest.raises(ValueError, match='not supported'):
    model_config.parse(bad.format(
        'log_collector_config { type: "kafka" filename_prefix: "x" }'))
  with pytest.raises(ValueError, match='filename_prefix'):
    model_config.parse(bad.format('log_collector_config { type: "tfrecord" }'))
  with pytest.raises(ValueError, match='sampling_rate'):
    model_config.parse(bad.format(
        'log_collector_config { type: "tfrecord" filename_prefix: "x" } '
        'sampling_config { sampling_rate: 1.5 }'))
  with pytest.raises(ValueError, match='share a logging filename_prefix'):
    model_config.parse(text.replace('/sampled"', '/taxi"'))
  example = os.path.join(helpers.REPO, 'serving', 'deploy',
                         'models-logging.config')
  (deployed,) = model_config.load(example)
  assert os.path.normpath(deployed.logging.filename_prefix) == \
      monitor_config.log_prefix('taxi')
  assert monitor_config.log_prefix('taxi') == os.path.join(
      helpers.REPO, 'outputs', 'taxi', 'monitoring', 'prediction_logs', 'taxi')
  assert os.path.normpath(deployed.base_path) == os.path.join(
      helpers.REPO, 'outputs', 'serving', 'taxi')


def _rounded(answer):
  """An answer (an `outputs` row) to compare, at 5 decimals."""
  return tuple(round(v, 5) for v in answer)


@pytest.mark.integration
def test_every_request_is_logged_with_version_and_content(traffic):
  from tensorflow_serving.apis import prediction_log_pb2  # pylint: disable=g-import-not-at-top
  files = prediction_logs.log_files(os.path.join(traffic['logs'], 'taxi'))
  assert files and all(f.endswith('.tfrecord') for f in files)
  first = prediction_log_pb2.PredictionLog.FromString(
      next(prediction_logs.read_records(files[0])))
  assert first.log_metadata.model_spec.name == 'taxi'
  assert first.log_metadata.model_spec.version.value == 1
  assert first.log_metadata.sampling_config.sampling_rate == 1.0
  assert first.predict_log.request.inputs and first.predict_log.response.outputs

  rows = prediction_logs.read(helpers.TAXI,
                              os.path.join(traffic['logs'], 'taxi'))
  sent = traffic['sent']['taxi']
  assert len(rows) == len(sent) == 400 + 10 + 5 + 20
  assert {r.model_version for r in rows} == {'1'}
  assert {r.signature for r in rows} == {features.RAW_SIGNATURE,
                                         'serving_default'}
  # one probability per instance (taxi's task is binary), as answered
  assert all(len(r.prediction) == 1 for r in rows)
  assert all(len(p) == 1 for _, p in sent)
  logged = sorted((accuracy.fingerprint(helpers.TAXI, r.features),
                   _rounded(r.prediction)) for r in rows)
  expected = sorted((accuracy.fingerprint(helpers.TAXI, t), _rounded(p))
                    for t, p in sent)
  assert logged == expected
  # a raw value survives the trip: the first trip's fare and payment type
  trip, _ = sent[0]
  match = [r for r in rows if accuracy.fingerprint(helpers.TAXI, r.features)
           == accuracy.fingerprint(helpers.TAXI, trip)][0]
  assert match.features['payment_type'] == trip['payment_type']
  assert match.features['fare'] == pytest.approx(float(trip['fare']), rel=1e-6)


@pytest.mark.integration
def test_sampling_rate_is_honoured(traffic):
  sampled = prediction_logs.read(helpers.TAXI,
                                 os.path.join(traffic['logs'], 'sampled'))
  # Binomial(200, 0.25): mean 50, sd 6.1; these bounds are ~5 sd away.
  assert 20 <= len(sampled) <= 85, len(sampled)
  assert prediction_logs.read(helpers.TAXI,
                              os.path.join(traffic['logs'], 'off')) == []
  assert prediction_logs.log_files(os.path.join(traffic['logs'], 'off')) == []


@pytest.mark.integration
def test_unwritable_prefix_fails_no_request_and_is_reported(traffic):
  # The requests to `broken` all succeeded (checked while sending); the
  # server said why nothing was logged, once, and counted the losses.
  assert 'record not written' in traffic['stderr']
  assert traffic['stderr'].count('record not written') == 1
  assert '0 dropped (queue full), 20 failed' in traffic['stderr']


@pytest.fixture(scope='module')
def training_data(tmp_path_factory):
  """Spans 5 and 6 as ExampleGen writes them: an Examples artifact
  directory with a GZIP TFRecord train split. (The test model trained on a
  slice of them, not a sample: see _spread.)"""
  root = tmp_path_factory.mktemp('examples')
  helpers.write_examples(str(root / 'Split-train' / 'data.gz'),
                         helpers.read_span(5) + helpers.read_span(6))
  return str(root)


@pytest.mark.integration
def test_no_skew_on_traffic_like_the_training_data(traffic, training_data):
  report = monitor.run(helpers.TAXI, os.path.join(traffic['logs'], 'taxi'),
                       monitor_config.THRESHOLDS,
                       training_data=[training_data])
  assert report['problem'] == 'taxi'
  assert set(report['skew']) == set(distribution.kinds_of(helpers.TAXI))
  assert 'trip_start_month' not in report['skew']  # shifts by design
  assert not report['skew_detected'], report['skew']
  assert report['skew_anomalies'] == []
  for s in report['skew'].values():
    assert s['distance'] <= s['threshold'] or s['p_value'] >= s['alpha'], s
  # Missing values (a third of `company`, some dropoff coordinates) went
  # through the REST client as '' / NaN / 0 and were read back as missing:
  # otherwise `company` alone would differ by its missing share (~0.34).
  assert report['skew']['company']['distance'] < 0.1


@pytest.mark.integration
def test_skew_found_in_shifted_traffic(traffic, training_data):
  report = monitor.run(helpers.TAXI, os.path.join(traffic['logs'], 'shifted'),
                       monitor_config.THRESHOLDS,
                       training_data=[training_data])
  skewed = {k for k, s in report['skew'].items() if s['anomalous']}
  assert skewed == {'payment_type', 'trip_start_hour', 'fare'}, report['skew']
  assert report['skew']['payment_type']['measure'] == 'L-inf'
  assert report['skew']['trip_start_hour']['measure'] == 'L-inf'
  assert report['skew']['fare']['measure'] == 'JSD'
  for name in skewed:
    s = report['skew'][name]
    assert s['p_value'] < s['alpha'] and s['distance'] > s['threshold']
  assert report['skew_detected'] and 'payment_type' in report['reason']
  assert any(a.startswith('fare: JSD') for a in report['skew_anomalies'])


def _expected_accuracy(traffic):
  """Accuracy and count, computed here from the CSV rows and the answers."""
  by_features = {}
  for row in traffic['rows']:
    key = tuple(row[k] for k in helpers.RAW_TYPES)
    label = float(row['tips']) > 0.2 * float(row['fare'])
    by_features.setdefault(key, set()).add(label)
  hits = total = 0
  for trip, answer in traffic['sent']['taxi']:
    labels = by_features[tuple(trip[k] for k in helpers.RAW_TYPES)]
    if len(labels) != 1:
      continue  # identical trips with different labels: not joinable
    total += 1
    [probability] = answer  # P(big tip)
    hits += (probability > 0.5) == next(iter(labels))
  return hits / total, total


@pytest.mark.integration
def test_live_accuracy_against_labels_that_arrive_later(
    traffic, training_data, tmp_path):
  labels = tmp_path / 'labels.csv'
  helpers.write_csv(str(labels), traffic['rows'])
  expected, count = _expected_accuracy(traffic)
  report = monitor.run(helpers.TAXI, os.path.join(traffic['logs'], 'taxi'),
                       monitor_config.THRESHOLDS, label_files=[str(labels)],
                       training_data=[training_data], baseline_accuracy=0.0)
  assert report['labelled'] == count > 400
  assert report['live_accuracy'] == pytest.approx(expected)
  assert 0.0 <= report['live_auc'] <= 1.0
  assert report['degraded'] is False


def report_count(traffic):
  return _expected_accuracy(traffic)[1]


@pytest.mark.integration
def test_degradation_is_flagged_and_written_for_the_controller(
    traffic, training_data, tmp_path):
  labels = tmp_path / 'labels.csv'
  helpers.write_csv(str(labels), traffic['rows'])
  live, _ = _expected_accuracy(traffic)
  out = tmp_path / 'out' / 'report.json'
  drop = monitor_config.THRESHOLDS.max_accuracy_drop
  args = ['--logs', os.path.join(traffic['logs'], 'taxi'), '--labels',
          str(labels), '--training-data', training_data, '--report',
          str(out), '--metadata-path', str(tmp_path / 'none.sqlite')]
  upper = monitor.accuracy_upper_bound(
      live, report_count(traffic), monitor_config.THRESHOLDS.confidence)
  assert live < upper < live + 0.06  # ~435 labels: about +-0.035
  assert monitor.main(args + ['--baseline-accuracy',
                              str(upper + drop + 0.01)]) == 0
  report = json.loads(out.read_text())
  assert report['degraded'] is True and 'below it by more' in report['reason']
  for key, kind in [('model_version', str), ('live_accuracy', float),
                    ('baseline_accuracy', float), ('degraded', bool),
                    ('reason', str), ('skew', dict), ('requests', int),
                    ('labelled', int), ('created', str)]:
    assert isinstance(report[key], kind), key
  assert report['model_version'] == '1' and report['requests'] == 435
  assert set(report['skew']['fare']) >= {'distance', 'threshold', 'p_value',
                                         'alpha', 'anomalous', 'measure'}
  assert report['thresholds']['alpha'] == monitor_config.THRESHOLDS.alpha
  assert not (tmp_path / 'none.sqlite').exists()  # never created
  assert [p.name for p in out.parent.iterdir()] == ['report.json']
  # A point estimate more than the allowed drop below, but within what
  # ~435 labels can tell apart: not degraded (the case a point rule gets
  # wrong). Too few labels: no verdict.
  assert monitor.main(args + ['--baseline-accuracy',
                              str((live + upper) / 2 + drop)]) == 0
  report = json.loads(out.read_text())
  assert report['degraded'] is False and 'not shown' in report['reason']
  assert monitor.main(args + ['--baseline-accuracy', '1.0',
                              '--min-labelled', '10000']) == 0
  report = json.loads(out.read_text())
  assert report['degraded'] is False and 'fewer than' in report['reason']
