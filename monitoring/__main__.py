"""`python -m monitoring`: see monitoring/monitor.py."""

import sys

from monitoring.monitor import main

if __name__ == '__main__':
  sys.exit(main())
