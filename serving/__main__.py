"""A model server that speaks TF Serving's REST API: `python -m serving`.

Takes tensorflow_model_server's flags and serves the versions Pusher writes
under `<model_base_path>/<version>/`: REST (status, metadata, predict) and
gRPC (PredictionService.Predict/GetModelMetadata, ModelService.GetModelStatus).
:classify / :regress answer as TF Serving does for predict-only models.

    python -m serving --model_name taxi --model_base_path outputs/serving/taxi
    curl localhost:8501/v1/models/taxi
With --enable_batching, concurrent requests share model executions
(serving/batching.py; --batching_parameters_file as TF Serving reads it).
Version labels come from --model_config_file, and so does request
logging: a model's TF Serving `logging_config` makes the server write a
sample of its predictions as PredictionLogs (serving/request_logging.py).

--rest_api_timeout_in_ms keeps TF Serving's name and default (30 s), not
its exact meaning: there it is the deadline of a REST call's Session::Run;
here it bounds a client's I/O (a request body must arrive within it, a
kept-alive connection idle that long is closed), since a running
tf.function cannot be interrupted. Request limits: serving/http_server.py
(HTTP) and serving/tensors.py (gRPC tensors).
"""

import argparse
import logging
import signal
import sys

from project import cli
from project import display

DEFAULT_REST_PORT = 8501
DEFAULT_GRPC_PORT = 8500


def parse_args(argv=None) -> argparse.Namespace:
  # TF Serving's flags, spelled its way (underscores); a usage error is
  # exit 2, as tensorflow_model_server's.
  parser = cli.ArgumentParser(
      prog='python -m serving', description=__doc__.split('\n\n')[0],
      formatter_class=argparse.ArgumentDefaultsHelpFormatter,
      underscores=True)
  parser.add_argument('--port', type=int, default=DEFAULT_GRPC_PORT,
                      help='gRPC port (0: pick a free port)')
  parser.add_argument('--rest_api_port', type=int, default=DEFAULT_REST_PORT,
                      help='REST API port (0: pick a free port)')
  parser.add_argument('--bind_address', default='127.0.0.1',
                      help='address to listen on (0.0.0.0 to expose)')
  parser.add_argument('--model_name', default=None, help='served model name')
  parser.add_argument('--model_base_path', default=None,
                      help='directory holding <version>/ SavedModels')
  parser.add_argument('--model_config_file', default=None,
                      help='TF Serving model_config_list text proto '
                      '(instead of --model_name/--model_base_path)')
  parser.add_argument('--model_config_file_poll_wait_seconds', type=float,
                      default=0, help='check --model_config_file this often '
                      'and apply it when it changed; 0: never')
  parser.add_argument('--enable_batching', action='store_true',
                      help='batch concurrent requests into shared model '
                      'executions')
  parser.add_argument('--batching_parameters_file', default=None,
                      help='TF Serving BatchingParameters text proto '
                      '(max_batch_size, batch_timeout_micros, '
                      'num_batch_threads, max_enqueued_batches)')
  parser.add_argument('--file_system_poll_wait_seconds', type=float,
                      default=1.0, help='how often to look for new versions')
  parser.add_argument('--max_request_bytes', type=int, default=10 << 20,
                      help='larger requests are refused: 400 (REST) or '
                      'RESOURCE_EXHAUSTED (gRPC)')
  parser.add_argument('--rest_api_timeout_in_ms', type=int, default=30000,
                      help='REST: a request\'s headers and body must arrive '
                      'within this from its first byte (else 408), and a '
                      'kept-alive connection idle this long is closed')
  parser.add_argument('--rest_api_num_threads', type=int, default=64,
                      help='REST: connections served at once, a thread each '
                      '(TF Serving multiplexes connections on this many '
                      'threads; here a kept-alive connection holds one, hence '
                      'the larger default). Past it, the connection waiting '
                      'longest for a request is closed; if none waits: 503')
  args = parser.parse_args(argv)
  if bool(args.model_config_file) == bool(args.model_base_path):
    parser.error('give either --model_config_file or --model_base_path')
  if args.model_base_path and not args.model_name:
    parser.error('--model_base_path needs --model_name')
  if args.batching_parameters_file and not args.enable_batching:
    parser.error('--batching_parameters_file needs --enable_batching')
  if min(args.max_request_bytes, args.rest_api_timeout_in_ms,
         args.rest_api_num_threads) <= 0:
    parser.error('--max_request_bytes, --rest_api_timeout_in_ms and '
                 '--rest_api_num_threads must be positive')
  return args


def _remove_stale_incoming(configs) -> None:
  """Removes the <base>/.incoming-<v>/ copies of Pushers killed mid-copy.

  Never one a live Pusher is still writing: serving.base_path takes the
  base path's lock without waiting and removes nothing if it is held.
  """
  from serving import base_path  # pylint: disable=g-import-not-at-top
  for config in configs:
    base_path.remove_stale_incoming(config.base_path)


def _raise_interrupt(*_):
  raise KeyboardInterrupt  # ends serve_forever() in the main thread


def main(argv=None) -> int:
  args = parse_args(argv)
  display.quiet_imports()  # before TensorFlow loads
  logging.basicConfig(level=logging.INFO,
                      format='%(asctime)s %(levelname)s %(message)s')
  from serving import batching  # pylint: disable=g-import-not-at-top
  from serving import model_config  # pylint: disable=g-import-not-at-top
  from serving import model_registry  # pylint: disable=g-import-not-at-top
  from serving import request_logging  # pylint: disable=g-import-not-at-top
  from serving import grpc_api  # pylint: disable=g-import-not-at-top
  from serving import rest_api  # pylint: disable=g-import-not-at-top

  try:
    configs = (model_config.load(args.model_config_file)
               if args.model_config_file else
               model_config.from_flags(args.model_name, args.model_base_path))
  except model_config.ConfigError as e:
    logging.error('%s', e)  # one line, as tensorflow_model_server's
    return 2
  batcher = None
  if args.enable_batching:
    try:
      params = batching.load_parameters(args.batching_parameters_file)
    except (OSError, ValueError) as e:
      logging.error('bad --batching_parameters_file: %s', e)
      return 2
    batcher = batching.Batcher(params)
    logging.info('batching concurrent requests: %s', params)
  registry = model_registry.ModelRegistry(
      configs, poll_seconds=args.file_system_poll_wait_seconds,
      config_file=(args.model_config_file
                   if args.model_config_file_poll_wait_seconds > 0 else None),
      config_poll_seconds=args.model_config_file_poll_wait_seconds)
  _remove_stale_incoming(configs)
  registry.start()
  request_logger = request_logging.make_logger(registry)
  for c in configs:
    if c.logging:
      logging.info('model %s: logging %g of predictions to %s-*%s', c.name,
                   c.logging.sampling_rate, c.logging.filename_prefix,
                   request_logging.SUFFIX)
  server = rest_api.make_server(
      registry, (args.bind_address, args.rest_api_port),
      args.max_request_bytes, batcher, request_logger,
      timeout_seconds=args.rest_api_timeout_in_ms / 1000,
      max_connections=args.rest_api_num_threads)
  grpc_server, grpc_port = grpc_api.make_server(
      registry, f'{args.bind_address}:{args.port}', args.max_request_bytes,
      batcher, request_logger=request_logger)
  grpc_server.start()
  host, port = server.server_address[:2]
  logging.info('REST API at http://%s:%d/v1/models/%s, gRPC at %s:%d', host,
               port, configs[0].name, host, grpc_port)
  # Machine-readable ports, for scripts and tests.
  print(f'REST_API_PORT={port} GRPC_PORT={grpc_port}', flush=True)
  signal.signal(signal.SIGTERM, _raise_interrupt)
  try:
    server.serve_forever()
  except KeyboardInterrupt:
    pass
  finally:
    grpc_server.stop(grace=2)
    if request_logger:
      request_logger.stop()  # writes what is queued, closes the log files
    registry.stop()
    if batcher:
      batcher.stop()
    server.server_close()
  return 0


if __name__ == '__main__':
  sys.exit(main())
