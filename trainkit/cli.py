"""The command line's side of the library: parsing, what each mode prints, exit statuses.

main.py and sweep.py are flags and platform set-up on top of this module.
"""

import atexit
import contextlib
import logging as std_logging
import os
import re
import shutil
import sys
import zlib

from absl import app
from absl import flags
from absl import logging
import jax

from trainkit import configs
from trainkit import errors
from trainkit import tasks
from trainkit.checkpoints import manager as checkpointing
from trainkit.data import sources
from trainkit.data.sources import table_formats
from trainkit.runtime import preemption
from trainkit.serving import predict_images
from trainkit.serving import predict_rows as predictions
from trainkit.serving import restore as restore_lib
from trainkit.serving import saved_model
from trainkit.tracking import progress
from trainkit.training import config_checks
from trainkit.training import divergence
from trainkit.training import model_summary
from trainkit.training import train
from trainkit.workdirs import config_history
from trainkit.workdirs import full_disk
from trainkit.workdirs import layout as workdir_lib
from trainkit.workdirs import lock as workdir_lock

# Exit statuses (docs/crash_safety.md has them as a table).
EXIT_BAD_INPUT = 2  # Refused before any work: one `error:` line.
EXIT_DIVERGED = 3  # Training diverged (nan_policy).
EXIT_WORKDIR_BUSY = 4  # Another live run holds the workdir.
EXIT_DISK_FULL = 5  # No room to write; what was saved before is intact.
EXIT_NO_DIGIT = 6  # --mode=predict: an input image has no digit in it.
EXIT_UNREADABLE_INPUT = 7  # --mode=predict: an input file is not an image it can read.
# Stopped by SIGTERM / Ctrl-C after a checkpoint: 128 + signal (143 / 130).

# Refused with one line and EXIT_BAD_INPUT.
INPUT_ERRORS = (errors.ConfigError, sources.DataError,
                checkpointing.CheckpointMismatchError,
                checkpointing.BrokenCheckpointError, workdir_lock.LockFileError,
                workdir_lib.WorkdirError)


# What the library refuses or stops a run with, and the exit status of each.
_STATUSES = ((INPUT_ERRORS, EXIT_BAD_INPUT), ((workdir_lock.WorkdirBusy,), EXIT_WORKDIR_BUSY),
             ((full_disk.DiskFull,), EXIT_DISK_FULL), ((divergence.Diverged,), EXIT_DIVERGED))


def exit_status(error: BaseException) -> int | None:
  """The exit status of a refusal `error` (one `error:` line); None for anything else."""
  return next((status for kinds, status in _STATUSES if isinstance(error, kinds)), None)


@contextlib.contextmanager
def exits(interrupted_hint: str = ''):
  """Turns what the library refuses or stops with into one line and its exit status."""
  try:
    yield
  except preemption.Interrupted as e:
    print(f'interrupted: {e}{interrupted_hint}', file=sys.stderr)
    sys.exit(e.exit_status)
  except Exception as e:  # pylint: disable=broad-except
    status = exit_status(e)
    if status is None:
      raise
    refuse(e, status)


def export(config, workdir: str, checkpoint: str, export_format: str) -> str:
  """Writes the export `export_format` names ('jax', 'onnx', 'savedmodel'); returns its folder.

  A full disk is DiskFull (exit 5), not a traceback from the writer.
  """
  with full_disk.writing(f'the {export_format} export', workdir):
    if export_format == 'jax':
      from trainkit.serving import jax_export  # pylint: disable=g-import-not-at-top
      return jax_export.export(config, workdir, checkpoint)
    if export_format == 'onnx':
      from trainkit.serving import onnx_export  # pylint: disable=g-import-not-at-top
      return onnx_export.export(config, workdir, checkpoint)
    return saved_model.export_saved_model(config, workdir, checkpoint)


def check_predict_inputs(inputs, output: str, header_given: bool = False) -> None:
  """Refuses --mode=predict inputs that mix a file of rows with others, or flags they ignore.

  --output is for a file of rows, --header for a text one (.csv, .tsv, .txt).
  """
  rows_file = predictions.takes_rows(inputs)
  if header_given and not (rows_file and table_formats.is_text(inputs[0])):
    refuse(f'--header is for a text file of rows (.csv, .tsv, .txt), not --input='
           f'{inputs[0]!r}')
  if rows_file:
    return
  rows = [path for path in inputs if path.lower().endswith(predictions.SUFFIXES)]
  if rows:
    refuse(f'--input={rows[0]!r}: a file of rows is predicted alone (one --input), '
           f'not with {len(inputs) - 1} other input(s)')
  if output:
    refuse(f'--output={output!r}: is for a file of rows; the classes of images are printed')


def run_mode(mode: str, config, workdir: str, inputs=(), *, continue_with_changes=False,
             checkpoint='latest', split='', output='', header='auto',
             export_format='savedmodel') -> None:
  """Does what `--mode` says with `workdir`; prints what a person asked for.

  main.py's one call, with its flags as arguments. Exits with the documented
  status where a prediction finds no digit or cannot read an image.
  """
  if mode == 'train':
    train.train_and_evaluate(config, workdir,
                             continue_with_changes=continue_with_changes)
  elif mode == 'eval':
    result = restore_lib.evaluate_checkpoint(config, workdir, checkpoint, split)
    figures = ' '.join(f'eval_{name} {progress.figure(name, result["eval_" + name], True)}'
                       for name in tasks.metrics(config))
    print(f'checkpoint {result["step"]}: {figures} on {result["num_examples"]} examples of '
          f'{result["split"]} (written to {workdir}/{workdir_lib.EVAL})')
  elif mode == 'predict' and predictions.takes_rows(inputs):
    path, table = predictions.predict_rows(config, workdir, inputs[0], checkpoint,
                                           output, header)
    print(table)
    print(f'(every row: {path})')
  elif mode == 'predict':
    results = predict_images.predict_files(config, workdir, inputs, checkpoint)
    for result in results:
      if result.problem:
        print(f'{result.path}: {result.problem}')
      else:
        print(f'{result.path}: {result.label} ({result.probability:.1%})')
    problems = {r.problem for r in results} - {None}
    if problems - {predict_images.NO_DIGIT}:
      sys.exit(EXIT_UNREADABLE_INPUT)
    if problems:
      sys.exit(EXIT_NO_DIGIT)
  elif mode == 'export':
    print(export(config, workdir, checkpoint, export_format))
  else:
    config_checks.validate(config)
    config_history.check_inference(config, workdir)  # A trained workdir's own model.
    print(model_summary.table(config, model_summary.spec_without_data(config, workdir)))




def _config_file(argv) -> tuple | None:
  """(index, path, argument or None) that --config names in `argv` (`file.py[:argument]`)."""
  for i, arg in enumerate(argv):
    if arg.startswith('--config='):
      path = arg[len('--config='):]
    elif arg == '--config' and i + 1 < len(argv):
      path, i = argv[i + 1], i + 1
    else:
      continue
    if not os.path.exists(path) and ':' in path:
      return (i, *path.split(':', 1))  # ml_collections' `file.py:argument`.
    return i, path, None
  return None


def check_config_file(path: str, argument: str | None = None) -> None:
  """Refuses a config file that cannot give a config, naming the file and why.

  Run before absl parses the flags: ml_collections would report each of
  these with a traceback.
  """
  where = f'--config={path}'
  if not os.path.isfile(path):
    refuse(f'{where}: no such file')
  try:
    with open(path) as f:
      code = compile(f.read(), path, 'exec')
  except SyntaxError as e:
    refuse(f'{where}: syntax error on line {e.lineno}: {e.msg}')
  except (OSError, UnicodeDecodeError, ValueError) as e:
    refuse(f'{where}: cannot be read ({e})')
  module = {'__name__': 'config_file', '__file__': os.path.abspath(path)}
  try:
    exec(code, module)  # pylint: disable=exec-used
    get_config = module.get('get_config')
    if not callable(get_config):
      refuse(f'{where}: defines no get_config() function')
    get_config() if argument is None else get_config(argument)
  except SystemExit:
    raise
  except Exception as e:  # pylint: disable=broad-except
    refuse(f'{where}: {"get_config()" if "get_config" in module else "loading it"} raised '
           f'{errors.raised(e)}')


def _quiet_orbax(record) -> bool:
  # Orbax narrates every save at INFO; keep its warnings and errors only.
  return record.levelno >= std_logging.WARNING or '/orbax/' not in record.pathname


def config_overrides(argv) -> tuple:
  """([--config.FIELD=VALUE ...], argv without them): the overrides, each whole.

  absl takes them as --config.FIELD=VALUE, --config.FIELD VALUE and, for a
  bool, --noconfig.FIELD.
  """
  overrides, rest, skip = [], [], False
  for i, arg in enumerate(argv):
    if skip:
      skip = False
    elif arg.startswith('--noconfig.'):
      overrides.append(f'--config.{arg[len("--noconfig."):]}=False')
    elif arg.startswith('--config.') and '=' not in arg:
      skip = i + 1 < len(argv) and not argv[i + 1].startswith('--')
      overrides.append(f'{arg}={argv[i + 1] if skip else True}')
    elif arg.startswith('--config.'):
      overrides.append(arg)
    else:
      rest.append(arg)
  return overrides, rest


def print_help_if_asked(argv, doc: str, module: str) -> None:
  """--help (-h): the command's usage and its own flags, exit 0.

  absl's lists only the main module's flags (none: they are the library's)
  and exits 1, the status of a bug.
  """
  if any(a in ('--help', '-h', '-?', '--helpshort') for a in argv[1:]):
    print(f'{doc.strip()}\n\nFlags:{flags.FLAGS.module_help(module)}\n\n'
          '--config.FIELD=VALUE sets any field of the config. Exit statuses: '
          'docs/crash_safety.md. --helpfull lists every library\'s flags too.')
    sys.exit(0)


def parse_flags(argv):
  """Parses flags as absl does, but bad flags or config fields are one line and status 2."""
  config_file = _config_file(argv)
  if config_file is not None:
    i, path, argument = config_file
    path = configs.path(path)
    argv = list(argv)
    argv[i] = (argv[i][:argv[i].index('=') + 1] if argv[i].startswith('--config=') else '') + (
        path if argument is None else f'{path}:{argument}')
    check_config_file(path, argument)
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    refuse(str(e).splitlines()[0])
  except (AttributeError, KeyError) as e:  # ml_collections: a field or section it lacks.
    message = str(e).replace('\\n', ' ').replace('\\', '')
    field = re.search(r"'(\w+)'", message)
    if not field:
      raise
    hint = re.search(r'Did you mean "(\w+)"', message)
    refuse(f'unknown config {"section" if isinstance(e, KeyError) else "field"} '
           f'{field.group(1)!r} in the --config overrides'
           + (f' (did you mean {hint.group(1)!r}?)' if hint else ''))
  except TypeError:  # A dotted path through a field that is no section.
    if config_file is None or config_file[2] is not None:
      raise
    config = configs.load(config_file[1])
    for arg in (a.split('=')[0] for a in argv[1:] if a.startswith('--config.')):
      field = _value_on_the_way(config, arg[len('--config.'):])
      if field:
        refuse(f'{arg}: {field!r} is a config field, not a section')
    raise


def _value_on_the_way(config, dotted: str) -> str:
  """The field holding a value that `dotted` ('optimizer.name') goes on past; '' if none."""
  node, parts = config, dotted.split('.')
  for i, part in enumerate(parts[:-1]):
    if not hasattr(node, 'keys') or part not in node:
      return ''
    node = node[part]
    if not hasattr(node, 'keys'):
      return '.'.join(parts[:i + 1])
  return ''


def run(main, flags_parser=None) -> None:
  """Absl's app.run(main) with this module's flag parsing, then a quick exit.

  Once `main` is done, everything the command wrote is closed. Python's
  teardown of the interpreter (the XLA client, every module) then costs about
  half a second that a user waits for, so the exit handlers run, the streams
  are flushed and the process ends there. An uncaught error still ends with
  its traceback, as usual.
  """
  _dump_stacks_when_overdue()
  try:
    app.run(main, flags_parser=flags_parser or parse_flags)
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


# Seconds after which a command prints every thread's Python stack and
# exits (status 1): for finding where a hung command waits (the test suite
# sets it below its timeouts). Unset or empty: never.
STACKS_AFTER_ENV = 'TRAINKIT_STACKS_AFTER_S'


def _dump_stacks_when_overdue() -> None:
  seconds = os.environ.get(STACKS_AFTER_ENV, '')
  if not seconds:
    return
  try:
    seconds = float(seconds)
  except ValueError:
    refuse(f'{STACKS_AFTER_ENV}={seconds!r}: not a number of seconds')
  import faulthandler  # pylint: disable=g-import-not-at-top
  faulthandler.dump_traceback_later(seconds, exit=True)


def refuse(message, status: int = EXIT_BAD_INPUT):
  """Prints one `error:` line and exits with `status`."""
  print(f'error: {message}', file=sys.stderr)
  sys.exit(status)


# How an entry of JAX's compilation cache starts when zstandard compressed it
# (zlib's, the default without zstandard, is checked by decompressing).
_ZSTD_MAGIC = b'\x28\xb5\x2f\xfd'


def drop_damaged_cache_entries(directory: str) -> list:
  """Removes the entries of JAX's compilation cache that cannot be read; returns them.

  JAX warns about such an entry at every start and compiles the program
  again, but never writes it anew while the damaged one is there. An entry
  is whole when it decompresses (zlib) or is zstandard's; the cache is a
  few MB, read in milliseconds.
  """
  if not os.path.isdir(directory):
    return []
  dropped = []
  for entry in os.scandir(directory):
    try:
      if entry.is_file(follow_symlinks=False):
        with open(entry.path, 'rb') as f:
          data = f.read()
        if data.startswith(_ZSTD_MAGIC):
          continue
        zlib.decompress(data)
        continue
    except (OSError, zlib.error):
      pass
    dropped.append(entry.path)
    if entry.is_dir(follow_symlinks=False):
      shutil.rmtree(entry.path, ignore_errors=True)
    else:
      with contextlib.suppress(OSError):
        os.remove(entry.path)
  if dropped:
    logging.warning('Compilation cache: removed %d damaged entries from %s (compiled again).',
                    len(dropped), directory)
  return dropped


def use_compilation_cache(cache_dir: str) -> None:
  """JAX's persistent compilation cache in CACHE_DIR/jax ('' = off).

  Set before anything compiles. Every program is cached, however small or
  quick to compile: this project's programs compile in well under JAX's
  default one-second threshold, and a command compiles many of them.
  """
  if not cache_dir:  # Off: JAX itself then neither looks one up nor writes one.
    jax.config.update('jax_enable_compilation_cache', False)
    return
  directory = os.path.join(os.path.expanduser(cache_dir), 'jax')
  drop_damaged_cache_entries(directory)
  jax.config.update('jax_compilation_cache_dir', directory)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)


def setup_logging() -> None:
  """Quiets Orbax's per-save INFO lines in the log."""
  logging.get_absl_handler().addFilter(_quiet_orbax)
