"""Ask the served model about the problem's sample over REST and gRPC, then stop.

    python -m serving.demo --model_base_path outputs/serving/taxi
    python -m serving.demo --problem penguin --model_base_path outputs/serving/penguin

Starts `python -m serving` on free loopback ports over the pushed versions,
sends the same instance through both APIs with serving.client, prints both
answers and the version that gave them, and stops the server. The pipeline
runners call it last, so a run ends with a prediction from the model it
pushed, served the way TF Serving would serve it. Exit status 1 if the
server does not start or the two APIs disagree.
"""

import importlib
import json
import sys
import threading
import time

from models import problem as problems
from project import cli
from project import display
from serving import client
from serving import model_config
from serving import protos
from serving import server_process


def _import_grpc_client() -> None:
  importlib.import_module('grpc')
  importlib.import_module('serving.tensors')
  protos.load('tensorflow_serving.apis.prediction_service_pb2_grpc')


def main(argv=None) -> int:
  parser = cli.ArgumentParser(prog='python -m serving.demo',
                              description=__doc__.split('\n\n')[0],
                              underscores=True)
  parser.add_argument('--model_base_path', required=True,
                      help='directory holding <version>/ SavedModels')
  client.add_instance_flags(parser, 'whose sample and answers')
  args = parser.parse_args(argv)
  problem = problems.load(args.problem)
  model_name = args.model_name or problem.name
  if args.instance:
    instance, described = json.loads(args.instance), 'instance'
  else:
    instance, described = problem.sample, problem.sample_text
  versions = model_config.versions_on_disk(args.model_base_path)
  if not versions:
    print(f'No model version under {args.model_base_path} to serve yet.')
    return 0
  display.quiet_imports()
  start = time.time()
  # The gRPC client's imports (~0.3 s, without TensorFlow: serving/protos.py)
  # run on the other core while the server starts, not after.
  preload = threading.Thread(target=_import_grpc_client, daemon=True)
  preload.start()
  server = server_process.start(['--model_name', model_name,
                                 '--model_base_path', args.model_base_path])
  preload.join()
  try:
    rest = client.RestClient(server.rest_url, model_name, problem)
    grpc_client = client.GrpcClient(server.grpc_address, model_name, problem)
    version = rest.status()[0]['version']
    [by_rest] = rest.predict([instance])
    [by_grpc] = grpc_client.predict([instance])
    grpc_client.close()
  finally:
    server.stop()
  rest_port, grpc_port = server.rest_port, server.grpc_port
  question = problem.question
  answer = lambda a: problem.task.describe(a, problem.label)  # pylint: disable=unnecessary-lambda-assignment
  print(f'Served prediction (python -m serving, version {version}, '
        f'{time.time() - start:.1f} s including start-up):\n'
        f'  sample        {described}\n'
        f'  REST  :{rest_port:<6} {question} = {answer(by_rest)}\n'
        f'  gRPC  :{grpc_port:<6} {question} = {answer(by_grpc)}', flush=True)
  if max(abs(a - b) for a, b in zip(by_rest, by_grpc)) > 1e-5:
    print('REST and gRPC answers differ', file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  sys.exit(main())
