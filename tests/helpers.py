"""What many tests share: tiny configs, small IDX files, digests, the CLI runner."""

import glob
import gzip
import hashlib
import json
import os
import signal
import struct
import subprocess
import sys
import time

import numpy as np

from configs import default
from configs import mixture_density
from trainkit.data.sources import tfds_prepare as offline_data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MNIST_DIR = os.path.join(ROOT, '..', 'shared', 'data', 'mnist')
# A command still running after 200 s prints its threads' stacks and exits: a
# hang then fails its test (timeouts of 240-300 s) with where it waits.
ENV = {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2', 'TRAINKIT_STACKS_AFTER_S': '200'}


def set_field(config, dotted, value):
  """Sets `config.a.b = value` for `dotted='a.b'`."""
  *path, last = dotted.split('.')
  for part in path:
    config = config[part]
  config[last] = value


# Where conftest.py puts this session's shared cache (compiled programs, decoded splits).
SESSION_CACHE_ENV = 'TRAINKIT_TEST_SESSION_CACHE'


def session_cache_dir() -> str:
  """The session's shared cache_dir, for main.py and sweep.py runs of the tests ('' = none).

  Their programs are compiled once per session, as a user's are once per
  machine; the tests of the cache itself give their own.
  """
  return os.environ.get(SESSION_CACHE_ENV, '')


def tiny_config(**overrides):
  """A config small enough to train in a second on mocked data (dotted overrides)."""
  config = default.get_config()
  config.model.hidden_sizes = (16,)
  config.model.dropout_rates = (0.1,)
  config.batch_size = 8
  config.eval_batch_size = 16
  config.num_epochs = 2
  config.log_every_steps = 2
  config.schedule = 'cosine'
  config.plots = False  # Drawing costs seconds; the plot tests turn it on.
  config.input_workers = 0  # Worker processes cost a second to start.
  config.cache_dir = ''  # No writes to the user's cache; the cache tests set one.
  # All 50 mocked examples to train on; epochs evaluated on the test split
  # (the validation tests set a validation split).
  config.train_split, config.validation_split = 'train', ''
  for key, value in overrides.items():
    set_field(config, key, value)
  return config


def mdn_config(**overrides):
  """The Elegy MDN config (configs/mixture_density.py), small: 512 points, 8 steps an epoch."""
  config = mixture_density.get_config()
  config.update(dict(synthetic_examples=(512, 256, 256), num_epochs=3, cache_dir='',
                     progress='off', log_every_steps=4))
  for key, value in overrides.items():
    set_field(config, key, value)
  return config


def write_idx(path, array, truncate=0):
  """Writes `array` as a gzipped IDX file (optionally cut short)."""
  header = struct.pack('>HBB', 0, 0x08, array.ndim) + struct.pack(f'>{array.ndim}I',
                                                                  *array.shape)
  payload = header + array.astype(np.uint8).tobytes()
  with gzip.open(path, 'wb') as f:
    f.write(payload[:len(payload) - truncate] if truncate else payload)


def write_mnist(directory, n_train=30, n_test=12, seed=0):
  """Random MNIST-shaped IDX files in `directory`; returns the arrays."""
  rng = np.random.default_rng(seed)
  arrays = {}
  for split, n in (('train', n_train), ('test', n_test)):
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, (n,), dtype=np.uint8)
    image_file, label_file = offline_data.IDX_FILES[split]
    write_idx(os.path.join(directory, image_file), images)
    write_idx(os.path.join(directory, label_file), labels)
    arrays[split] = (images, labels)
  return arrays


def idx_dir(parent, n_train=40, n_test=20):
  """`parent/idx` holding small random MNIST IDX files; returns its path."""
  directory = os.path.join(parent, 'idx')
  os.makedirs(directory, exist_ok=True)
  write_mnist(directory, n_train=n_train, n_test=n_test)
  return directory


def digest(path) -> dict:
  """{relative path: sha256} of every file under `path`."""
  out = {}
  for name in sorted(glob.glob(os.path.join(path, '**'), recursive=True, include_hidden=True)):
    if os.path.isfile(name):
      with open(name, 'rb') as f:
        out[os.path.relpath(name, path)] = hashlib.sha256(f.read()).hexdigest()
  return out


def checkpoint_steps(workdir) -> list:
  """The steps of the checkpoints in `workdir`, sorted."""
  return sorted(int(d) for d in os.listdir(os.path.join(workdir, 'checkpoints'))
                if d.isdigit())


def main_command(*args) -> list:
  """The `python main.py ...` command line."""
  return [sys.executable, os.path.join(ROOT, 'main.py'), *args]


def run_main(*args, timeout=240, script='main.py') -> subprocess.CompletedProcess:
  """Runs main.py (or sweep.py) from the project root; captures its output."""
  return subprocess.run([sys.executable, os.path.join(ROOT, script), *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=timeout, env=ENV)


def error_lines(stderr: str) -> list:
  """The `error: ...` lines of a command's stderr."""
  return [line for line in stderr.splitlines() if line.startswith('error:')]


def descendants(pid: int) -> list:
  """The pids of every process descended from `pid` (from /proc)."""
  children = {}
  for entry in os.listdir('/proc'):
    if entry.isdigit():
      try:
        with open(f'/proc/{entry}/stat') as f:
          parent = int(f.read().rsplit(')', 1)[1].split()[1])
      except (OSError, IndexError, ValueError):
        continue  # Ended meanwhile.
      children.setdefault(parent, []).append(int(entry))
  found, stack = [], [pid]
  while stack:
    for child in children.get(stack.pop(), []):
      found.append(child)
      stack.append(child)
  return found


def alive(pids, within_s: float) -> list:
  """Those of `pids` still running (not zombies) `within_s` seconds from now, or sooner none."""
  deadline = time.time() + within_s
  while True:
    running = []
    for pid in pids:
      try:
        with open(f'/proc/{pid}/stat') as f:
          if f.read().rsplit(')', 1)[1].split()[0] != 'Z':
            running.append(pid)
      except OSError:
        pass
    if not running or time.time() > deadline:
      return running
    time.sleep(0.2)


def run_export(kind: str, folder: str, rows, tmp_path) -> dict:
  """The `kind` ('jax' or 'onnx') artifact in `folder` run on `rows` by a fresh process.

  The process is outside the project and imports neither it nor TensorFlow
  (tests/export_run.py). {'b1_<output>': the first row's, 'b37_<output>':
  37 rows' (repeated)}. `rows`: an array, or a CSV file's path (a table model's raw columns).
  """
  out = os.path.join(tmp_path, f'{kind}_out.npz')
  if isinstance(rows, str):
    rows_path = rows
  else:
    rows_path = os.path.join(tmp_path, f'{kind}_rows.npy')
    np.save(rows_path, rows)
  done = subprocess.run([sys.executable, os.path.join(ROOT, 'tests', 'export_run.py'),
                         kind, folder, rows_path, out], cwd=tmp_path, capture_output=True,
                        text=True, env=ENV, timeout=120)
  assert done.returncode == 0, done.stderr[-3000:]
  with np.load(out) as got:
    return dict(got)


def sigkill_after_first_checkpoint(command: list, workdir, log_path, also=None) -> list:
  """Runs `command`, SIGKILLs it once `workdir` holds a checkpoint; the steps saved.

  `also()`: a further condition to wait for before the kill.
  """
  with open(log_path, 'w') as log:
    proc = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=ENV)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not (
        os.path.isdir(os.path.join(workdir, 'checkpoints')) and checkpoint_steps(workdir)
        and (also is None or also())):
      time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
  return checkpoint_steps(workdir)


def sigkill_then_resume(command: list, workdir, log_path, last_step: int) -> dict:
  """Kills `command` after its first checkpoint (before `last_step`), runs it again; its summary."""
  saved = sigkill_after_first_checkpoint(command, workdir, log_path)
  assert saved and saved[-1] < last_step, open(log_path).read()[-2000:]
  resumed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=ENV,
                           timeout=300)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f'Restored checkpoint {workdir}/checkpoints/' in resumed.stderr
  with open(os.path.join(workdir, 'summary.json')) as f:
    return json.load(f)


def without_timing(summary: dict) -> dict:
  """A summary's figures but its wall time and throughput (which no two runs share)."""
  return {k: v for k, v in summary.items() if k not in ('train_wall_s', 'examples_per_s')}


def session_root(tmp_path_factory):
  """A folder every pytest-xdist worker of this session shares (the base one alone)."""
  base = tmp_path_factory.getbasetemp()
  return base.parent if os.environ.get('PYTEST_XDIST_WORKER') else base
