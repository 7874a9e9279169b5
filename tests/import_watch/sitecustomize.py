"""Logs, in every Python process started with this folder on PYTHONPATH, heavy imports.

tests/modules_at_exit.py puts it there for the command it runs, so its
children (Grain's worker processes, a sweep's or search's processes) are
watched as well: each writes `PID start` when it starts and `PID NAME` the
moment a package of HEAVY runs (is imported, not only looked up), to the
file TRAINKIT_IMPORT_LOG names.
A process killed later has already written what it imported.
"""

import os
import sys

HEAVY = ('tensorflow', 'torch', 'clu')
_LOG = os.environ.get('TRAINKIT_IMPORT_LOG')


def _write(text: str) -> None:
  with open(_LOG, 'a') as f:
    f.write(f'{os.getpid()} {text}\n')


class _Logged:
  """A loader that notes the module when it runs (a look-up alone runs nothing)."""

  def __init__(self, inner):
    self._inner = inner

  def __getattr__(self, name):
    return getattr(self._inner, name)

  def create_module(self, spec):
    return self._inner.create_module(spec)

  def exec_module(self, module):
    _write(module.__name__)
    return self._inner.exec_module(module)


class _Watch:
  """A meta path finder that wraps the loader of a heavy top-level package."""

  def find_spec(self, name, path=None, target=None):
    if name not in HEAVY:
      return None
    for finder in sys.meta_path:
      if finder is not self and hasattr(finder, 'find_spec'):
        spec = finder.find_spec(name, path, target)
        if spec is not None and spec.loader is not None:
          spec.loader = _Logged(spec.loader)
          return spec
    return None


if _LOG:
  _write('start')
  sys.meta_path.insert(0, _Watch())
