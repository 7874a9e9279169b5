"""Command-line plumbing shared by main.py and sweep.py: parsing and exits."""

import atexit
import logging as std_logging
import os
import re
import sys

from absl import app
from absl import flags
from absl import logging
import jax

from trainkit import checkpointing
from trainkit import config_checks
from trainkit import offline_data

# Exit statuses (documented in the README).
EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3
# Stopped by SIGTERM / Ctrl-C after a checkpoint: 128 + signal (143 / 130).

# Refused with one line and EXIT_BAD_INPUT.
INPUT_ERRORS = (config_checks.ConfigError, offline_data.DataError,
                checkpointing.CheckpointMismatchError,
                checkpointing.BrokenCheckpointError)


def _quiet_orbax(record) -> bool:
  # Orbax narrates every save at INFO; keep its warnings and errors only.
  return record.levelno >= std_logging.WARNING or '/orbax/' not in record.pathname


def parse_flags(argv):
  """Parses flags as absl does, but bad flags or config fields are one line and status 2."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    refuse(str(e).splitlines()[0])
  except AttributeError as e:  # ml_collections: a field the config lacks.
    message = str(e).replace('\\n', ' ').replace('\\', '')
    field = re.search(r"'(\w+)'", message)
    if not field:
      raise
    hint = re.search(r'Did you mean "(\w+)"', message)
    refuse(f'unknown config field {field.group(1)!r} in the --config overrides'
            + (f' (did you mean {hint.group(1)!r}?)' if hint else ''))


def run(main) -> None:
  """Absl's app.run(main) with this module's flag parsing, then a quick exit.

  Once `main` is done, everything the command wrote is closed. Python's
  teardown of the interpreter (the XLA client, every module) then costs about
  half a second that a user waits for, so the exit handlers run, the streams
  are flushed and the process ends there. An uncaught error still ends with
  its traceback, as usual.
  """
  try:
    app.run(main, flags_parser=parse_flags)
    code = 0
  except SystemExit as e:
    code = e.code
  if code is not None and not isinstance(code, int):
    print(code, file=sys.stderr)
    code = 1
  atexit._run_exitfuncs()  # pylint: disable=protected-access
  logging.flush()
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(code or 0)  # pylint: disable=protected-access


def refuse(message):
  """Prints one `error:` line and exits with EXIT_BAD_INPUT."""
  print(f'error: {message}', file=sys.stderr)
  sys.exit(EXIT_BAD_INPUT)


def use_compilation_cache(cache_dir: str) -> None:
  """JAX's persistent compilation cache in CACHE_DIR/jax ('' = off).

  Set before anything compiles. Every program is cached, however small or
  quick to compile: this project's programs compile in well under JAX's
  default one-second threshold, and a command compiles many of them.
  """
  if not cache_dir:
    return
  jax.config.update('jax_compilation_cache_dir',
                    os.path.join(os.path.expanduser(cache_dir), 'jax'))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)


def setup_logging() -> None:
  """Quiets Orbax's per-save INFO lines in the log."""
  logging.get_absl_handler().addFilter(_quiet_orbax)
