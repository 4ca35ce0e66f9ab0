"""The cluster's processes, as the operating system sees them.

Each is started in its own session (so stopping its process group stops what
it started, e.g. the worker pool's harnesses), with its output in
<state dir>/log/<name>.out, and recorded by pid *and* start time (psutil,
through project/processes.py): a recorded pid that a new process reused is
not "alive", nor is a zombie. Waiting for them to exit is
project/waiting.py's (tenacity). Linux only, as the cluster is. cluster/flink.py starts and stops the
cluster with these.
"""

import os
import signal
import socket
import subprocess
from typing import Dict, List, Optional

from project import processes
from project import waiting


def port_free(port: int) -> bool:
  with socket.socket() as s:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
      s.bind(('', port))
      return True
    except OSError:
      return False


def listening(host: str, port: int) -> bool:
  with socket.socket() as s:
    s.settimeout(0.5)
    return s.connect_ex((host, port)) == 0


def alive(process: Dict) -> bool:
  """The recorded process still runs: same pid, same start time, no zombie
  (psutil, through project/processes)."""
  return processes.status(process['pid'],
                          process.get('started')) == processes.RUNNING


def start(name: str, cmd: List[str], state_dir: str,
          env: Optional[Dict[str, str]] = None) -> Dict:
  """Starts cmd in its own session; its stdout and stderr go to
  log/<name>.out (a Flink process's own log is log/<name>.log)."""
  out_path = os.path.join(state_dir, 'log', f'{name}.out')
  log_path = os.path.join(state_dir, 'log', f'{name}.log')
  if not any(arg.startswith('-Dlog.file=') for arg in cmd):
    log_path = out_path
  with open(out_path, 'ab') as log:
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, cwd=state_dir,
                            env=env, start_new_session=True)
  return {'name': name, 'pid': proc.pid,
          'started': processes.start_time(proc.pid),
          'log': log_path, 'cmd': cmd}


def stop(processes: List[Dict], grace: float = 15) -> List[str]:
  """SIGTERM to each live process group (a process and what it started,
  e.g. the pool's harnesses), SIGKILL after `grace` seconds."""
  live = [p for p in processes if alive(p)]
  for process in reversed(live):
    try:
      os.killpg(process['pid'], signal.SIGTERM)
    except ProcessLookupError:
      pass
  try:
    waiting.wait_until(lambda: not any(alive(p) for p in live), grace,
                       interval=0.2, what='the cluster processes to exit')
  except waiting.WaitTimeout:
    pass  # SIGKILL below
  for process in live:
    if alive(process):
      try:
        os.killpg(process['pid'], signal.SIGKILL)
      except ProcessLookupError:
        pass
  return [p['name'] for p in live]


def tail(path: str, lines: int = 12) -> str:
  try:
    with open(path, errors='replace') as f:
      return ''.join(f.readlines()[-lines:])
  except FileNotFoundError:
    return '(no log)'
