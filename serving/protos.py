"""TF's and TF Serving's proto modules, without importing TensorFlow.

    predict_pb2 = protos.load('tensorflow_serving.apis.predict_pb2')

`tensorflow_serving.apis.*_pb2` import `tensorflow.core.framework.*_pb2`,
and importing a submodule runs its package's __init__ first: for
`tensorflow` that is all of TensorFlow (~4-9 s, a CUDA/TensorRT banner on
stderr, ~500 MB), for a gRPC client that only needs a few message classes.
The *_pb2 modules themselves need nothing of TensorFlow (protobuf and each
other; `tensorflow/core/__init__.py` and its subpackages' are empty).

So `load`, in a process that has not imported TensorFlow yet, puts a bare
package module in sys.modules['tensorflow'] (the real package's __path__,
none of its code) for the length of the import and then removes it. What
was imported stays in sys.modules, so a later `import tensorflow` in the
same process runs tensorflow/__init__.py as usual and its own
`from tensorflow.core.framework import tensor_pb2` finds these very modules:
one Python class per message, so messages pass between TF and this code
(tests/serving/test_protos.py checks both orders). TF's __init__ deletes
its `core` attribute anyway, so nothing is missing from the real module.

While the stand-in is in sys.modules, another thread's `import tensorflow`
would get it, so `load` holds the interpreter's global import lock
(`_imp.acquire_lock`, what importlib takes to hand out per-module locks):
other threads' imports of modules not yet loaded wait the ~0.1 s it takes.
To never wait on a module another thread is importing while holding that
lock, the non-TensorFlow modules the *_pb2 files import (protobuf, grpc)
are imported before it is taken. Any module other than a proto package
imported under the stand-in is an error: it would be TensorFlow code run
without its __init__.
"""

import _imp
import importlib
import importlib.util
import sys
import types

# What the TF / TF Serving *_pb2 and *_pb2_grpc modules import besides each
# other (see the module docstring: imported before the lock is taken).
_DEPENDENCIES = (
    'google.protobuf.any_pb2', 'google.protobuf.descriptor',
    'google.protobuf.descriptor_pb2', 'google.protobuf.descriptor_pool',
    'google.protobuf.internal.builder', 'google.protobuf.message',
    'google.protobuf.reflection', 'google.protobuf.symbol_database',
    'google.protobuf.wrappers_pb2')
# Packages whose modules may be imported under the stand-in: proto modules
# and their (empty) packages only.
_PROTO_PACKAGES = ('tensorflow.core', 'tensorflow.tsl', 'tensorflow_serving')


def load(name: str) -> types.ModuleType:
  """The module `name` (a TF or TF Serving *_pb2 / *_pb2_grpc module).

  Imported as usual when TensorFlow is imported already (the server);
  otherwise without running tensorflow/__init__.py (see the docstring).
  ValueError for a module outside the proto packages (TensorFlow code).
  """
  if not name.startswith(tuple(p + '.' for p in _PROTO_PACKAGES)):
    raise ValueError(f'{name} is not a proto module of {_PROTO_PACKAGES}')
  module = sys.modules.get(name)
  if module is not None:
    return module
  if 'tensorflow' in sys.modules:
    return importlib.import_module(name)
  for dependency in _DEPENDENCIES + (('grpc',) if name.endswith('_grpc') else ()):
    importlib.import_module(dependency)
  _imp.acquire_lock()
  try:
    if 'tensorflow' in sys.modules:  # imported by another thread meanwhile
      return importlib.import_module(name)
    return _load_without_tensorflow_init(name)
  finally:
    _imp.release_lock()


def _load_without_tensorflow_init(name: str) -> types.ModuleType:
  spec = importlib.util.find_spec('tensorflow')
  if spec is None or not spec.submodule_search_locations:
    raise ImportError('TensorFlow is not installed: its proto modules are '
                      'part of its package')
  stand_in = types.ModuleType('tensorflow', 'stand-in: see serving/protos.py')
  stand_in.__path__ = list(spec.submodule_search_locations)
  before = set(sys.modules)
  sys.modules['tensorflow'] = stand_in
  try:
    module = importlib.import_module(name)
  finally:
    if sys.modules.get('tensorflow') is stand_in:
      del sys.modules['tensorflow']
  others = sorted(m for m in set(sys.modules) - before
                  if m.split('.')[0] in ('tensorflow', 'tensorflow_serving')
                  and not m.startswith(_PROTO_PACKAGES))
  if others:
    raise ImportError(f'{name} imported TensorFlow code {others[:5]}: load it '
                      'after `import tensorflow` instead')
  return module
