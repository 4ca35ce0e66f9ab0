"""Beam's Python worker pool, bound to one address, for EXTERNAL environments.

    python -m cluster.worker_pool --address 127.0.0.1:50000

What `python -m apache_beam.runners.worker.worker_pool_main` does (each
TaskManager asks it for an SDK harness; it starts one Python process per
request, which runs that TaskManager's share of the pipeline's Python
code), with three differences, because that module cannot be told:

* it listens on the given address, not on every interface (`[::]`): the
  pool runs whatever pickled code a client sends, so it must not be
  reachable from the network;
* the harness processes are this interpreter (this venv), not whatever
  `python` is first on PATH, which on a fresh machine has no Beam at all
  (the job then waits for a harness that never starts);
* one pool serves several TaskManagers. Each TaskManager numbers its
  harnesses itself ("1-1", "2-1", ...), so two TaskManagers ask for the same
  worker id; Beam's pool keys its processes by that id alone, and the first
  TaskManager to finish stopped the other's harness mid-job ("CANCELLED:
  client cancelled", the CsvExampleGen job failed on 2 TaskManagers). Here a
  harness is keyed by the requesting connection and its id. (On Kubernetes
  each TaskManager has a pool of its own, so Beam never meets this.)
"""

import logging
import os
import signal
import sys
import time

from project import cli


def _pool_class():
  """The servicer, keyed by (peer, worker id); built on first use so that
  --help imports no Beam."""
  import threading  # pylint: disable=g-import-not-at-top
  from apache_beam.portability.api import beam_fn_api_pb2  # pylint: disable=g-import-not-at-top
  from apache_beam.runners.worker import worker_pool_main  # pylint: disable=g-import-not-at-top

  class WorkerPool(worker_pool_main.BeamFnExternalWorkerPoolServicer):
    """Beam's process-mode pool, one harness per (connection, worker id)."""

    def __init__(self):
      super().__init__(use_process=True)
      self._lock = threading.Lock()
      self.harnesses = {}  # (peer, worker id) -> subprocess.Popen

    def StartWorker(self, request, context):
      with self._lock:
        for key, process in list(self.harnesses.items()):
          if process.poll() is not None:  # exited on its own: reap it
            del self.harnesses[key]
        response = super().StartWorker(request, context)
        process = self._worker_processes.pop(request.worker_id, None)
        if process is not None:
          self.harnesses[(context.peer(), request.worker_id)] = process
          logging.info('harness %s for %s: pid %d', request.worker_id,
                       context.peer(), process.pid)
        return response

    def StopWorker(self, request, context):
      with self._lock:
        process = self.harnesses.pop((context.peer(), request.worker_id),
                                     None)
      if process is None:
        logging.warning('StopWorker %s from %s: no harness of that '
                        'connection (it exits when its job ends)',
                        request.worker_id, context.peer())
      else:
        logging.info('stopping harness %s for %s', request.worker_id,
                     context.peer())
        worker_pool_main.kill_process_gracefully(process)
      return beam_fn_api_pb2.StopWorkerResponse()

    def stop_all(self):
      with self._lock:
        processes, self.harnesses = list(self.harnesses.values()), {}
      for process in processes:
        if process.poll() is None:
          worker_pool_main.kill_process_gracefully(process)

  return WorkerPool


def serve(address: str) -> None:
  # Heavy import after --help; Beam only, no TensorFlow.
  import grpc  # pylint: disable=g-import-not-at-top
  from apache_beam.portability.api import beam_fn_api_pb2_grpc  # pylint: disable=g-import-not-at-top
  from apache_beam.utils import thread_pool_executor  # pylint: disable=g-import-not-at-top

  # The servicer starts harnesses as `python -c ...` (worker_pool_main.py).
  os.environ['PATH'] = (os.path.dirname(sys.executable) + os.pathsep +
                        os.environ.get('PATH', ''))
  server = grpc.server(thread_pool_executor.shared_unbounded_instance(),
                       options=[('grpc.http2.max_pings_without_data', 0),
                                ('grpc.http2.max_ping_strikes', 0)])
  if not server.add_insecure_port(address):
    raise SystemExit(f'worker pool: cannot listen on {address}')
  pool = _pool_class()()
  beam_fn_api_pb2_grpc.add_BeamFnExternalWorkerPoolServicer_to_server(
      pool, server)
  server.start()
  # `cluster down` sends SIGTERM: stop the harnesses before exiting.
  signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
  logging.info('Beam worker pool listening on %s (harness: %s)', address,
               sys.executable)
  try:
    while True:
      time.sleep(3600)
  finally:
    pool.stop_all()


def main(argv=None) -> int:
  parser = cli.ArgumentParser(description=__doc__.split('\n\n')[0],
                              epilog=__doc__.split('\n\n', 1)[1])
  parser.add_argument('--address', required=True, metavar='HOST:PORT',
                      help='where to listen, e.g. 127.0.0.1:50000')
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO,
                      format='%(asctime)s %(levelname)s %(message)s')
  try:
    serve(args.address)
  except KeyboardInterrupt:
    pass
  return 0


if __name__ == '__main__':
  sys.exit(main())
