"""serving.client.RestClient on an error answer: the HTTP status and the
body's start, even when the body is not TF Serving's JSON (a proxy's page).

A real http.server on loopback answers; the client's HTTP is not mocked.
"""

import http.server
import json
import threading

import pytest

from serving import client

PAGE = ('<html><head><title>502 Bad Gateway</title></head><body>'
        + 'the upstream model server did not answer. ' * 20 + '</body></html>')


class _Handler(http.server.BaseHTTPRequestHandler):
  """GET /v1/models/<name>: an error answer chosen by the model name."""
  answers = {
      'proxy': (502, 'text/html', PAGE),
      'serving': (404, 'application/json',
                  json.dumps({'error': 'Servable not found: nope'})),
      'empty': (503, 'text/plain', ''),
      'list': (500, 'application/json', '[1, 2]'),
  }

  def do_GET(self):  # pylint: disable=invalid-name
    status, kind, body = self.answers[self.path.rsplit('/', 1)[-1]]
    data = body.encode()
    self.send_response(status)
    self.send_header('Content-Type', kind)
    self.send_header('Content-Length', str(len(data)))
    self.end_headers()
    self.wfile.write(data)

  def log_message(self, *args):
    pass


@pytest.fixture(scope='module')
def url():
  server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _Handler)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  yield f'http://127.0.0.1:{server.server_address[1]}'
  server.shutdown()
  server.server_close()


def _error(url, model):
  with pytest.raises(client.HttpError) as e:
    client.RestClient(url, model, timeout=10).status()
  return e.value


def test_a_body_that_is_not_json_shows_the_status_and_its_start(url):
  e = _error(url, 'proxy')
  assert isinstance(e, RuntimeError)  # what callers catch
  assert e.status == 502 and e.body == PAGE
  text = str(e)
  assert text.startswith('HTTP 502: <html><head><title>502 Bad Gateway')
  assert len(text) <= len('HTTP 502: ') + client.HttpError.BODY_SHOWN


def test_tf_servings_json_error_is_shown_as_its_message(url):
  assert str(_error(url, 'serving')) == 'HTTP 404: Servable not found: nope'


def test_empty_and_other_json_bodies_still_name_the_status(url):
  assert str(_error(url, 'empty')) == 'HTTP 503: (empty body)'
  assert str(_error(url, 'list')) == 'HTTP 500: [1, 2]'
