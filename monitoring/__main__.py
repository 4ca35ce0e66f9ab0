"""`python -m monitoring`: see monitoring/monitor.py."""

import sys

from project import display

if __name__ == '__main__':
  display.quiet_imports()  # before TensorFlow loads (it reads the logs)
  from monitoring.monitor import main  # pylint: disable=g-import-not-at-top
  sys.exit(main())
