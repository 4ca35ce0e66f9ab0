"""Who a process is, and whether it still runs: psutil, not /proc parsing.

A pid names a process only while it runs: the kernel hands it to a new one
afterwards. So a record of a process (the run lock's holder, ops/run_lock.py;
the local Flink cluster's daemons, cluster/daemons.py) keeps its start time
too, and the recorded process runs only if a process with that pid exists,
started at that time, and is no zombie (exited, not reaped yet). psutil
reads all that (on Linux from /proc/<pid>/stat, which three modules used to
parse each their own way), and the CPU time the serving bench reads.

The start time is psutil's create_time less psutil's boot time: seconds
since boot, at the kernel's 1/100 s resolution, as /proc records it. The
epoch time alone would move when the system clock is set (psutil adds the
boot time as the clock sees it now), so a live process could look reused.
"""

from typing import Optional

import psutil

RUNNING = 'running'
GONE = 'gone'  # no process with that pid
REUSED = 'reused'  # a process with that pid, started at another time
ZOMBIE = 'zombie'  # exited, not reaped yet
UNKNOWN = 'unknown'  # a process with that pid that cannot be inspected here


def start_time(pid: int) -> Optional[float]:
  """Seconds since boot at which process `pid` started; None if there is
  no such process or it cannot be inspected."""
  try:
    created = psutil.Process(pid).create_time()
  except (psutil.Error, ValueError):
    return None
  return round(created - psutil.boot_time(), 2)


def status(pid: int, started: Optional[float] = None) -> str:
  """RUNNING, GONE, REUSED (its start time is not `started`, when given),
  ZOMBIE or UNKNOWN: what became of the process recorded as `pid`."""
  try:
    process = psutil.Process(pid)
    created = round(process.create_time() - psutil.boot_time(), 2)
    zombie = process.status() == psutil.STATUS_ZOMBIE
  except psutil.ZombieProcess:
    return ZOMBIE
  except psutil.NoSuchProcess:
    return GONE
  except (psutil.AccessDenied, ValueError):
    return UNKNOWN
  if started is not None and created != started:
    return REUSED
  return ZOMBIE if zombie else RUNNING


def cpu_seconds(pid: int) -> float:
  """CPU seconds (user + system) process `pid` has used so far."""
  times = psutil.Process(pid).cpu_times()
  return times.user + times.system
