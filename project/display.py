"""What every command shows on its console, defined once: standard library
only, so every layer (serving, monitoring, delivery, cluster, the runners)
may import it.

`quiet_imports()` silences, before TensorFlow and Google's client libraries
load, what they print that a user cannot act on; `figure()` prints a number
the way a summary or a report should.
"""

import os
import warnings
from typing import Any

# What C++ code prints when its library loads, before Python can intercept
# it: TensorFlow's (the cuDNN/cuFFT/cuBLAS "Unable to register ... factory"
# errors, "Could not find cuda drivers", oneDNN and cpu_feature_guard
# notices, "TF-TRT Warning: Could not find TensorRT") and gRPC core's
# (fork handler notices, after absl's "All log messages before
# absl::InitializeLog() is called are written to STDERR"). Each is read once,
# at load time, and inherited by every subprocess (the model server, Beam's
# workers). A value already in the environment wins: TF_CPP_MIN_LOG_LEVEL=0
# shows them again.
QUIET_ENVIRONMENT = {'TF_CPP_MIN_LOG_LEVEL': '3', 'GRPC_VERBOSITY': 'ERROR'}

# Library warnings that reach a command's console and that its user cannot
# act on, as (category, the module the warning is attributed to: a regex
# matched from its start). Warnings of the project's own modules, and any
# other, still show (and, in a pipeline run, go to its log: ops/console.py quiet_logging).
LIBRARY_WARNINGS = (
    # Every Google client library (google-api-core, bigquery, pubsub, ...)
    # on every import: "You are using a non-supported Python version
    # (3.10...)"; TFX 1.16 needs Python 3.10.
    (FutureWarning, r'google\.api_core\._python_version_support'),
    # pyarrow.filesystem, deprecated, imported by Beam and TFX.
    (FutureWarning, r'pyarrow\.'),
    # urllib3's optional SOCKS support (PySocks is not installed).
    (Warning, r'urllib3\.contrib\.socks'),
    # Keras's `layer.updates` / `Model.state_updates`, when TF saves a model.
    (UserWarning, r'tensorflow\.python\.trackable\.'),
    # The TF stack's deprecations of its own internals (TFMA's NumPy scalar
    # conversions, TFX's, Beam's, httplib2's pyparsing, IPython's): hidden by
    # Python's defaults, shown under -W default or a host that enables them.
    (DeprecationWarning, r'(tensorflow|tfx|apache_beam|keras|tf_keras|'
                         r'httplib2|IPython|google)(_|\.|$)'),
)


def quiet_imports() -> None:
  """Silences what TensorFlow, gRPC and Google's client libraries print.

  Call before importing them (QUIET_ENVIRONMENT is read once, at load
  time); it imports nothing itself.
  """
  for name, value in QUIET_ENVIRONMENT.items():
    os.environ.setdefault(name, value)
  for category, module in LIBRARY_WARNINGS:
    warnings.filterwarnings('ignore', category=category, module=module)


def figure(value: Any) -> str:
  """A summary's number as people read it: 4 significant digits (0.8408),
  but a whole number (a count: 33180, not 3.318e+04) or one of 10,000 or
  more in full."""
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    return str(value)
  if float(value).is_integer() or abs(value) >= 1e4:
    return f'{value:.0f}'
  return f'{value:.4g}'
