"""A full disk costs nothing already saved, and is reported in one line.

A checkpoint is not started unless the disk has room for it (and for the one
still being committed); the other files are written whole or not at all
(workdir.write_json replaces atomically) and a write that fails for lack of
space becomes `DiskFull`, which main.py prints as one line and exits with
EXIT_DISK_FULL. Checking first matters most for checkpoints: Orbax fails a
save that runs out of space in its own threads, each printing tracebacks.
"""

import contextlib
import errno
import os

_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def _existing(path: str) -> str:
  path = os.path.abspath(path)
  while not os.path.exists(path):
    path = os.path.dirname(path)
  return path


def free_bytes(path: str) -> int:
  """Bytes an unprivileged write may still use on `path`'s filesystem."""
  stat = os.statvfs(_existing(path))
  return stat.f_bavail * stat.f_frsize


def _mib(n: int) -> str:
  return f'{n / 2**20:.1f} MiB'


class DiskFull(Exception):
  """The workdir's filesystem has no room for what the run must write."""

  def __init__(self, what: str, path: str, needed: int | None = None):
    stat = os.statvfs(_existing(path))
    free, total = stat.f_bavail * stat.f_frsize, stat.f_blocks * stat.f_frsize
    need = f' needs about {_mib(needed)};' if needed else ' failed:'
    super().__init__(
        f'no space left on the disk: writing {what} to {path}{need} {_mib(free)} free '
        f'of {_mib(total)}. What was saved before is intact: free some space and run '
        'the same command to resume')


def ensure_space(path: str, needed: int, what: str) -> None:
  """Raises DiskFull unless `needed` bytes fit on `path`'s filesystem."""
  if free_bytes(path) < needed:
    raise DiskFull(what, path, needed)


def is_full(error: BaseException) -> bool:
  """Whether `error`, or one it was raised from, is a write that found no space.

  Orbax and TensorStore wrap the OS error in their own kinds, keeping its text.
  """
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno in _FULL_ERRNOS:
      return True
    if 'No space left on device' in str(error) or 'Disk quota exceeded' in str(error):
      return True
    error = error.__cause__ or error.__context__
  return False


@contextlib.contextmanager
def writing(what: str, path: str):
  """Turns a failure for lack of space inside the block into DiskFull."""
  try:
    yield
  except DiskFull:
    raise
  except Exception as e:  # pylint: disable=broad-except
    if is_full(e):
      raise DiskFull(what, path) from e
    raise
