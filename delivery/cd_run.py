"""One delivery.cd run: its version, its server, its config edits, its log.

`Delivery` is what every gate step works on: the model config file (edited
through delivery/config_file.py, the file as it was kept to put back on
abort), the server's REST status endpoint (which version a label or version
number answers as), and the action log (<base>/.versions.log, shared with
delivery.versions). `Check` is one step's verdict.
"""

import dataclasses
import http.client
import json
import os
import time
import urllib.error
import urllib.request
from typing import Callable, Dict, List, Optional

from delivery import cd_infra
from delivery import config_file
from delivery import versions
from project import waiting

CANARY, STABLE = 'canary', 'stable'
InfraError = cd_infra.InfraError  # nothing judged: exit 2


@dataclasses.dataclass
class Check:
  """One gate step's verdict; `figures` go to the log and the summary."""
  name: str
  passed: bool
  summary: str
  failures: List[str] = dataclasses.field(default_factory=list)
  figures: Dict = dataclasses.field(default_factory=dict)
  undecided: List[str] = dataclasses.field(default_factory=list)

  @property
  def verdict(self) -> str:
    return ('FAIL' if not self.passed else
            'UNDECIDED' if self.undecided else 'PASS')


class Delivery:
  """One CD run: where the model lives, the server, and the action log."""

  def __init__(self, config_file_path: str, model_name: str, base: str,
               version: int, rest_url: str, grpc_address: str,
               wait_seconds: float, problem):
    self.config_file, self.model_name, self.base = (config_file_path,
                                                    model_name, base)
    self.problem = problem  # models.problem.Problem: instances and answers
    self.version, self.wait_seconds = version, wait_seconds
    self.rest_url, self.grpc_address = rest_url, grpc_address
    self.run_id = f'{int(time.time())}-{os.getpid()}'
    self.added_to_policy = False  # undo on rollback
    with open(config_file_path, 'rb') as f:
      self.original_config = f.read()  # put back on abort
    self.written_config = None  # the file as this run last wrote it

  def log(self, action: str, **details) -> None:
    """delivery.versions' action log: one JSON line per action, printed too."""
    versions._log_action(self.base, action, cd_run=self.run_id,  # pylint: disable=protected-access
                         version=self.version, **details)

  # --- the config file -----------------------------------------------------
  def labels(self) -> Dict[str, int]:
    return config_file.labels(self.config_file, self.model_name)

  def edit_config(self, edit: Callable[[object], None]) -> None:
    """Applies `edit` to this model's config entry; atomic replace."""
    config_file.edit(self.config_file, self.model_name, edit)
    self.remember_config()

  def label(self, label: str) -> None:
    """Points `label` at V (delivery.versions.promote writes the file)."""
    versions.promote(self.config_file, self.model_name, self.version, label)
    self.remember_config()

  def remember_config(self) -> None:
    with open(self.config_file, 'rb') as f:
      self.written_config = f.read()

  def config_is_ours(self) -> bool:
    """Whether the file is as this run last wrote it (nobody else since)."""
    with open(self.config_file, 'rb') as f:
      return f.read() == self.written_config

  # --- the server ----------------------------------------------------------
  def served_as(self, label: Optional[str] = None,
                version: Optional[int] = None) -> Optional[int]:
    """The version the server answers for a label / version; None if 404."""
    path = (f'/labels/{label}' if label else
            f'/versions/{version}' if version is not None else '')
    url = self.status_url + path
    try:
      with urllib.request.urlopen(url, timeout=10) as response:
        body = json.loads(response.read())
    except urllib.error.HTTPError as e:
      if e.code == 404:
        return None
      raise InfraError(f'{url}: HTTP {e.code}') from e
    except (OSError, http.client.HTTPException) as e:
      raise InfraError(f'model server at {self.rest_url} not reachable: '
                       f'{e}') from e
    return int(body['model_version_status'][0]['version'])

  @property
  def status_url(self) -> str:
    return f'{self.rest_url}/v1/models/{self.model_name}'

  def wait_until(self, what: str, predicate: Callable[[], bool]) -> float:
    """Seconds until `predicate` (project/waiting); InfraError after
    --wait_seconds."""
    start = time.monotonic()
    try:
      waiting.wait_until(predicate, self.wait_seconds, interval=0.2, what=what)
    except waiting.WaitTimeout:
      raise InfraError(
          f'the server at {self.rest_url} did not {what} within '
          f'{self.wait_seconds:.0f} s: does it read {self.config_file} '
          'with --model_config_file_poll_wait_seconds > 0?') from None
    return time.monotonic() - start
