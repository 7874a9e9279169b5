"""Runs a script as `__main__` and prints, at exit, which heavy packages it imported.

`python -m tests.modules_at_exit main.py --flags...`: the last stderr line is
`IMPORTED: [...]`, the top-level names of `HEAVY` found in sys.modules. Its
child processes are watched too (tests/import_watch/sitecustomize.py, when
the caller puts that folder on PYTHONPATH).
"""

import atexit
import runpy
import sys

HEAVY = {'tensorflow', 'torch', 'clu'}


def _report():
  # list() copies the names in one step: a daemon thread (the plots' import)
  # may still be importing while the interpreter exits.
  print('IMPORTED:', sorted({m.split('.')[0] for m in list(sys.modules)} & HEAVY),
        file=sys.stderr, flush=True)


if __name__ == '__main__':
  atexit.register(_report)
  sys.argv = sys.argv[1:]
  runpy.run_path(sys.argv[0], run_name='__main__')
