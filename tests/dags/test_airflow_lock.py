"""requirements-airflow.lock keeps the main lock's pins (no Airflow needed).

The Airflow venv must run the same TFX, TensorFlow, Beam and protobuf as
`make run`, or a green Airflow test would vouch for another stack. Fails when
requirements.lock changed and `make airflow-lock` was not rerun.
"""

import os
import re
from typing import Dict

from tests import helpers


def _pins(name: str) -> Dict[str, str]:
  with open(os.path.join(helpers.REPO, name)) as f:
    return {m.group(1).lower(): m.group(2) for m in
            re.finditer(r'^([A-Za-z0-9._-]+)==(\S+)', f.read(), re.M)}


def _unpinned() -> set:
  with open(os.path.join(helpers.REPO, 'requirements-airflow.in')) as f:
    match = re.search(r'^# unpinned-from-main:(.*)$', f.read(), re.M)
  return set(match.group(1).split())


def test_airflow_lock_has_every_main_pin_except_the_named_ones():
  main, airflow = _pins('requirements.lock'), _pins('requirements-airflow.lock')
  unpinned = _unpinned()
  assert unpinned == {'rich', 'werkzeug'}
  differ = {name: (version, airflow.get(name))
            for name, version in main.items()
            if name not in unpinned and airflow.get(name) != version}
  assert not differ, f'run `make airflow-lock`: {differ}'
  assert airflow['apache-airflow'] == '2.10.3'
