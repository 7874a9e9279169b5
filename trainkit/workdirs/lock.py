"""One run per workdir: an exclusive OS lock held for the run's whole life.

`WORKDIR/.lock` is locked with `fcntl.lockf` (a POSIX record lock, which NFS
also honours); while held it names its holder (host, pid, since when, the
command). The kernel drops the lock when its process dies, however it dies,
so a lock left by a dead process blocks nobody: the file may still name the
dead holder, but nothing holds it. Released, the file is emptied, so a
workdir's bytes do not depend on which run last looked at it.

Only process 0 of a multi-process run takes the lock; its other processes
share the workdir, as they must.
"""

import contextlib
import datetime
import errno
import fcntl
import json
import os
import shutil
import socket
import sys

import jax

from trainkit.workdirs import layout as workdir_lib


LOCK_FILE = workdir_lib.LOCK


class WorkdirBusy(Exception):
  """Another live process holds the workdir's lock."""


class LockFileError(ValueError):
  """The lock file's place holds something that cannot be locked (a refusal)."""


def _holder(path: str) -> str:
  try:
    with open(path) as f:
      who = json.loads(f.read() or '{}')
  except (OSError, ValueError):
    who = {}
  if not who or not isinstance(who, dict):  # Emptied, or garbage: it says nothing.
    return 'another process'
  return (f'pid {who.get("pid")} on {who.get("host")} since {who.get("since")} '
          f'({who.get("command", "")[:120]})')


@contextlib.contextmanager
def hold(workdir: str, purpose: str = 'train'):
  """Holds `workdir`'s lock for the block; WorkdirBusy if a live process has it.

  Creates the workdir if needed; if the block then raises a refusal
  (a ValueError: ConfigError, DataError, ...), what was created here goes again:
  the workdir if it holds nothing but the lock, else a lock file made here (a
  folder of the user's own files is left as it was). A refused run leaves no trace.
  """
  if jax.process_index() > 0:
    yield
    return
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise LockFileError(f'--workdir={workdir!r} is a file, not a folder')
  created = not os.path.exists(workdir)
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, LOCK_FILE)
  lock_created = not os.path.lexists(path)
  try:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  except OSError as e:  # A folder, or a file not ours, in its place.
    raise LockFileError(f'{path} cannot be used as the workdir\'s lock file ({e.strerror}); '
                        'remove it (nothing else is kept in it)') from None
  try:
    try:
      fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      if e.errno not in (errno.EACCES, errno.EAGAIN):
        raise
      raise WorkdirBusy(f'--workdir={workdir!r} is in use by {_holder(path)}; wait '
                        'for it to end, or use another --workdir') from None
    since = datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M:%S UTC')
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps({'host': socket.gethostname(), 'pid': os.getpid(),
                              'since': since, 'purpose': purpose,
                              'command': ' '.join(sys.argv)}).encode() + b'\n', 0)
    refused = False
    try:
      yield
    except ValueError:  # The refusals (ConfigError, DataError, ...) are ValueErrors.
      refused = True
      raise
    finally:
      try:
        os.ftruncate(fd, 0)
      except OSError:
        pass  # A full disk cannot refuse a truncation, but be safe on exit.
      if refused and created and os.listdir(workdir) == [LOCK_FILE]:
        shutil.rmtree(workdir, ignore_errors=True)
      elif refused and lock_created:
        with contextlib.suppress(OSError):
          os.remove(path)
  finally:
    os.close(fd)  # Releases the lock.
