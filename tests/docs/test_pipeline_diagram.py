"""The committed pipeline diagram is the one create_pipeline draws today."""

import os
import re
import subprocess
import sys

from tests import helpers

DOCS = os.path.join(helpers.REPO, 'docs')


def test_committed_dot_matches_create_pipeline():
  result = subprocess.run(
      [sys.executable, os.path.join(DOCS, 'pipeline_diagram.py'), '--check'],
      cwd=helpers.REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stdout + result.stderr[-2000:]


def test_committed_image_shows_every_node_of_the_dot():
  with open(os.path.join(DOCS, 'pipeline.dot')) as f:
    nodes = set(re.findall(r'^\s+"?(\w+)"? \[label=', f.read(), re.M))
  with open(os.path.join(DOCS, 'pipeline.svg')) as f:
    titles = set(re.findall(r'<title>([^<&]+)</title>', f.read()))
  assert {'CsvExampleGen', 'Trainer', 'Pusher', 'span_window_resolver'} <= nodes
  assert nodes <= titles, nodes - titles
