"""Starting and stopping a `python -m serving` process on free loopback ports.

The one way the project's tools (serving.demo, delivery.cd's own server,
bench/serving_latency.py) and tests run a model server: port 0 for REST and
gRPC, so the kernel picks free ones and runs never collide, on the default
bind address 127.0.0.1; the ports are read from the `REST_API_PORT=...
GRPC_PORT=...` line the server prints once it listens. Stopping is SIGTERM
(the server finishes its requests and closes its logs), then SIGKILL after
STOP_TIMEOUT_SECONDS.
"""

import subprocess
import sys
import time
from typing import Optional, Sequence

from project import paths

START_TIMEOUT_SECONDS = 120  # TensorFlow's import and a model's first load
STOP_TIMEOUT_SECONDS = 20


class ServerProcess:
  """A running `python -m serving` and the ports it listens on."""

  def __init__(self, proc: subprocess.Popen, rest_port: int, grpc_port: int):
    self.proc, self.rest_port, self.grpc_port = proc, rest_port, grpc_port

  @property
  def rest_url(self) -> str:
    return f'http://127.0.0.1:{self.rest_port}'

  @property
  def grpc_address(self) -> str:
    return f'127.0.0.1:{self.grpc_port}'

  def stop(self) -> str:
    """Stops the server; returns what it wrote on stderr (its log)."""
    return _stop(self.proc)


def start(flags: Sequence[str] = (),
          timeout: float = START_TIMEOUT_SECONDS,
          cwd: Optional[str] = None) -> ServerProcess:
  """`python -m serving --rest_api_port 0 --port 0 *flags`, once it listens.

  `flags` name the models (--model_name and --model_base_path, or
  --model_config_file) and anything else; RuntimeError with the end of the
  server's log if it exits or does not listen within `timeout`.
  """
  proc = subprocess.Popen(
      [sys.executable, '-m', 'serving', '--rest_api_port', '0', '--port', '0',
       *flags],
      cwd=cwd or paths.REPO_ROOT, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True)
  deadline = time.time() + timeout
  while time.time() < deadline:
    line = proc.stdout.readline()
    if line.startswith('REST_API_PORT='):
      ports = dict(item.split('=') for item in line.split())
      return ServerProcess(proc, int(ports['REST_API_PORT']),
                           int(ports['GRPC_PORT']))
    if not line and proc.poll() is not None:
      break
  log = _stop(proc)
  raise RuntimeError('the model server did not start: ' +
                     log[-2000:].strip())


def _stop(proc: subprocess.Popen) -> str:
  proc.terminate()
  try:
    proc.wait(timeout=STOP_TIMEOUT_SECONDS)
  except subprocess.TimeoutExpired:
    proc.kill()
    proc.wait()
  return proc.stderr.read() if proc.stderr else ''
