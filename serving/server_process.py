"""Starting and stopping a `python -m serving` process on free loopback ports.

The one way the project's tools (serving.demo, delivery.cd's own server,
bench/serving_latency.py) and tests run a model server: port 0 for REST and
gRPC, so the kernel picks free ones and runs never collide, on the default
bind address 127.0.0.1; the ports are read from the `REST_API_PORT=...
GRPC_PORT=...` line the server prints once it listens. Stopping is SIGTERM
(the server finishes its requests and closes its logs), then SIGKILL after
STOP_TIMEOUT_SECONDS. The server's stderr (its log) goes to a temporary
file, not a pipe: nobody reads it while the server runs, and a pipe that
fills (64 KiB of tracebacks, say) would block the server mid-request.
"""

import subprocess
import sys
import tempfile
import time
from typing import IO, Optional, Sequence

from project import paths

START_TIMEOUT_SECONDS = 120  # TensorFlow's import and a model's first load
STOP_TIMEOUT_SECONDS = 20


class ServerProcess:
  """A running `python -m serving` and the ports it listens on."""

  def __init__(self, proc: subprocess.Popen, rest_port: int, grpc_port: int,
               log: IO[str]):
    self.proc, self.rest_port, self.grpc_port = proc, rest_port, grpc_port
    self.log = log  # the server's stderr

  @property
  def rest_url(self) -> str:
    return f'http://127.0.0.1:{self.rest_port}'

  @property
  def grpc_address(self) -> str:
    return f'127.0.0.1:{self.grpc_port}'

  def stop(self) -> str:
    """Stops the server; returns what it wrote on stderr (its log)."""
    return _stop(self.proc, self.log)


def start(flags: Sequence[str] = (),
          timeout: float = START_TIMEOUT_SECONDS,
          cwd: Optional[str] = None) -> ServerProcess:
  """`python -m serving --rest_api_port 0 --port 0 *flags`, once it listens.

  `flags` name the models (--model_name and --model_base_path, or
  --model_config_file) and anything else; RuntimeError with the end of the
  server's log if it exits or does not listen within `timeout`.
  """
  log = tempfile.TemporaryFile(mode='w+')  # pylint: disable=consider-using-with
  proc = subprocess.Popen(
      [sys.executable, '-m', 'serving', '--rest_api_port', '0', '--port', '0',
       *flags],
      cwd=cwd or paths.REPO_ROOT, stdout=subprocess.PIPE, stderr=log,
      text=True)
  deadline = time.time() + timeout
  while time.time() < deadline:
    line = proc.stdout.readline()
    if line.startswith('REST_API_PORT='):
      ports = dict(item.split('=') for item in line.split())
      return ServerProcess(proc, int(ports['REST_API_PORT']),
                           int(ports['GRPC_PORT']), log)
    if not line and proc.poll() is not None:
      break
  said = _stop(proc, log)
  raise RuntimeError('the model server did not start: ' +
                     said[-2000:].strip())


def _stop(proc: subprocess.Popen, log: IO[str]) -> str:
  """Stops the process; returns its stderr (and closes the file); '' when
  it was stopped before."""
  if log.closed:
    return ''
  proc.terminate()
  try:
    proc.wait(timeout=STOP_TIMEOUT_SECONDS)
  except subprocess.TimeoutExpired:
    proc.kill()
    proc.wait()
  if proc.stdout:
    proc.stdout.close()
  with log:
    log.seek(0)
    return log.read()
