"""Search workers launched as a job array: on SLURM through submitit, or locally.

`python sweep.py ... --launcher=slurm --workers=N` checks the search and
creates its study, then submits N jobs (one array) that each run the same
command without the launcher flags: N workers sharing the study. The sweep
directory and the storage must be on a filesystem (or server) every node
reaches. A job nearing its time limit is sent SIGUSR2, its worker saves a
checkpoint and exits, and submitit requeues the job, which resumes the trial.
`--launcher=local` runs the same jobs as processes of this machine (and waits
for them): the launcher's test, and a way to use a big machine's cores.
"""

import os
import subprocess
import sys
import tempfile

import submitit

from trainkit import errors


LAUNCHERS = ('none', 'local', 'slurm')
# The flags of the launching command that its workers do not get.
_LAUNCH_FLAGS = ('--launcher', '--workers', '--slurm')
# submitit's executor parameters unless --slurm sets them.
_DEFAULTS = {'timeout_min': 240, 'slurm_signal_delay_s': 120, 'stderr_to_stdout': True}


class Worker(submitit.helpers.Checkpointable):
  """One job: a worker process running the sweep command; requeued near its time limit."""

  def __init__(self, command: list, cwd: str):
    self.command, self.cwd = command, cwd

  def __call__(self) -> int:
    status = subprocess.run(self.command, cwd=self.cwd, check=False).returncode
    if status and status < 128:  # 128+N: stopped by a signal, checkpointed; requeued.
      raise RuntimeError(f'search worker exited with status {status}')
    return status


def worker_command(argv: list) -> list:
  """`argv` (this sweep.py command) without the launcher's flags."""
  keep, args = [], iter(argv[1:])
  for arg in args:
    # absl takes -launcher=local as --launcher=local: a worker keeping it would launch more.
    if arg.startswith('-') and '--' + arg.split('=')[0].lstrip('-') in _LAUNCH_FLAGS:
      if '=' not in arg:
        next(args, None)  # `--workers 4`: its value too.
      continue
    keep.append(arg)
  return [sys.executable, os.path.abspath(argv[0]), *keep]


def parameters(options: list) -> dict:
  """--slurm=KEY=VALUE,... as submitit executor parameters (numbers parsed)."""
  out = dict(_DEFAULTS)
  for option in options:
    key, sep, value = option.partition('=')
    if not sep or not key:
      raise errors.ConfigError(f'--slurm={option!r}: expected KEY=VALUE')
    for cast in (int, float):
      try:
        value = cast(value)
        break
      except ValueError:
        pass
    out[key] = value
  return out


def _executor(launcher: str, workers: int, options: list, folder: str):
  """The executor (submitit's) for `launcher`, its parameters set; bad ones refused in one line."""
  if workers < 1:
    raise errors.ConfigError(f'--workers={workers}: must be >= 1')
  try:
    executor = submitit.AutoExecutor(folder, cluster='local' if launcher == 'local' else 'slurm')
  except RuntimeError as e:  # No SLURM here (no srun).
    raise errors.ConfigError(f'--launcher={launcher}: {errors.raised(e)}') from e
  params = parameters(options)
  if launcher == 'slurm':
    params.setdefault('slurm_array_parallelism', workers)
  else:  # The local executor knows none of SLURM's parameters.
    params = {k: v for k, v in params.items() if not k.startswith('slurm_')}
  try:
    executor.update_parameters(**params)
  # submitit: NameError for an unknown key, AssertionError for a value of the wrong type.
  except (ValueError, TypeError, NameError, AssertionError) as e:
    raise errors.ConfigError(f'--slurm: {errors.raised(e)}') from e
  return executor


def check(launcher: str, workers: int, options: list) -> None:
  """Refuses bad --workers or --slurm values in one line, before the search is prepared."""
  with tempfile.TemporaryDirectory() as folder:
    _executor(launcher, workers, options, folder)


def launch(launcher: str, workers: int, options: list, directory: str, argv: list) -> list:
  """Submits `workers` jobs running this command's worker; returns the jobs."""
  executor = _executor(launcher, workers, options, os.path.join(directory, 'launch'))
  worker = Worker(worker_command(argv), os.getcwd())
  with executor.batch():
    jobs = [executor.submit(worker) for _ in range(workers)]
  return jobs
