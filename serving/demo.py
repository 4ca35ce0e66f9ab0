"""Ask the served model about a sample trip over REST and gRPC, then stop.

    python -m serving.demo --model_base_path outputs/serving/taxi

Starts `python -m serving` on free loopback ports over the pushed versions,
sends the same trip through both APIs with serving.client, prints both
answers and the version that gave them, and stops the server. The pipeline
runners call it last, so a run ends with a prediction from the model it
pushed, served the way TF Serving would serve it. Exit status 1 if the
server does not start or the two APIs disagree.
"""

import argparse
import importlib
import json
import os
import subprocess
import sys
import threading
import time
from typing import List, Optional, Tuple

from models import features
from serving import client
from serving import model_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
START_TIMEOUT_SECONDS = 120


def start_server(model_name: str, base_path: Optional[str],
                 extra: Optional[List[str]] = None
                ) -> Tuple[subprocess.Popen, int, int]:
  """A `python -m serving` process on free loopback ports, and its ports.

  `base_path` None: `extra` names the models instead (--model_config_file,
  as delivery.cd starts it).
  """
  source = (['--model_name', model_name, '--model_base_path', base_path]
            if base_path else [])
  proc = subprocess.Popen(
      [sys.executable, '-m', 'serving', *source, '--rest_api_port', '0',
       '--port', '0', *(extra or [])],
      cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  deadline = time.time() + START_TIMEOUT_SECONDS
  while time.time() < deadline:
    line = proc.stdout.readline()
    if line.startswith('REST_API_PORT='):
      ports = dict(item.split('=') for item in line.split())
      return proc, int(ports['REST_API_PORT']), int(ports['GRPC_PORT'])
    if not line and proc.poll() is not None:
      break
  stop_server(proc)
  raise RuntimeError('the model server did not start: ' +
                     proc.stderr.read()[-2000:].strip())


def stop_server(proc: subprocess.Popen) -> None:
  proc.terminate()
  try:
    proc.wait(timeout=20)
  except subprocess.TimeoutExpired:
    proc.kill()
    proc.wait()


def _import_grpc_client() -> None:
  for module in ('grpc', 'tensorflow_serving.apis.prediction_service_pb2_grpc',
                 'serving.tensors'):
    importlib.import_module(module)


def describe_trip(trip) -> str:
  return (f'{trip.get("trip_miles", "?")} mi, ${trip.get("fare", "?")} fare, '
          f'{trip.get("payment_type", "?")}, '
          f'{trip.get("trip_start_hour", "?")}:00')


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--model_base_path', required=True,
                      help='directory holding <version>/ SavedModels')
  parser.add_argument('--model_name', default='taxi')
  parser.add_argument('--trip', default=None,
                      help='trip as a JSON object (default: a sample trip)')
  args = parser.parse_args(argv)
  trip = json.loads(args.trip) if args.trip else client.SAMPLE_TRIP
  versions = model_config.versions_on_disk(args.model_base_path)
  if not versions:
    print(f'No model version under {args.model_base_path} to serve yet.')
    return 0
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
  start = time.time()
  # The gRPC client needs TensorFlow's protos (~8 s to import): import them
  # on the other core while the server starts, not after.
  preload = threading.Thread(target=_import_grpc_client, daemon=True)
  preload.start()
  proc, rest_port, grpc_port = start_server(args.model_name,
                                            args.model_base_path)
  preload.join()
  try:
    rest = client.RestClient(f'http://127.0.0.1:{rest_port}', args.model_name)
    grpc_client = client.GrpcClient(f'127.0.0.1:{grpc_port}', args.model_name)
    version = rest.status()[0]['version']
    by_rest = rest.predict([trip])[0]
    by_grpc = grpc_client.predict([trip])[0]
    grpc_client.close()
  finally:
    stop_server(proc)
  question = f'P(tip > {features.TIP_FRACTION:.0%} of fare)'
  print(f'Served prediction (python -m serving, version {version}, '
        f'{time.time() - start:.1f} s including start-up):\n'
        f'  sample trip   {describe_trip(trip)}\n'
        f'  REST  :{rest_port:<6} {question} = {by_rest:.4f}\n'
        f'  gRPC  :{grpc_port:<6} {question} = {by_grpc:.4f}', flush=True)
  if abs(by_rest - by_grpc) > 1e-5:
    print('REST and gRPC answers differ', file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  sys.exit(main())
