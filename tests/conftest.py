"""Shared fixtures: mocked TFDS data and the real MNIST files if present."""

import contextlib
import fcntl
import os
from unittest import mock
import zlib

import numpy as np

import pytest
import tensorflow_datasets as tfds

from tests.helpers import MNIST_DIR, SESSION_CACHE_ENV, session_root, write_mnist
from trainkit import cli
from trainkit.checkpoints import manager as checkpointing
from trainkit.data.sources import tfds_source

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

# Mocked splits: 50 examples each, so 6 steps of 8 per epoch and 4 eval
# batches of 16 with the tiny config.
NUM_EXAMPLES = 50


class FakeSource:
  """A random-access source of random MNIST-shaped examples, fixed per (split, index).

  Stands in for TFDS's ArrayRecord data source under `tfds.testing.mock_data`
  (whose own mock source has no working batched read).
  """

  def __init__(self, split: str, num_examples: int = NUM_EXAMPLES):
    self.split, self.num_examples = split, num_examples

  def __len__(self):
    return self.num_examples

  def __getitem__(self, index):
    if not 0 <= index < self.num_examples:
      raise IndexError(index)
    rng = np.random.default_rng([zlib.crc32(self.split.encode()), int(index)])
    return {'image': rng.integers(0, 256, (28, 28, 1), dtype=np.uint8),
            'label': int(rng.integers(0, 10))}

  def __getitems__(self, indices):
    return [self[i] for i in indices]


@contextlib.contextmanager
def mock_data(num_examples: int = NUM_EXAMPLES):
  """tfds.testing.mock_data, with FakeSource as every split's data source.

  Its mocked download needs no network, so the check that the download host
  is reachable is skipped too.
  """
  with tfds.testing.mock_data(
      num_examples=num_examples,
      as_data_source_fn=lambda builder, split, **kw: FakeSource(split, num_examples)), \
      mock.patch.object(tfds_source, '_check_reachable', lambda config: None):
    yield


@pytest.fixture
def mock_mnist():
  """TFDS returns random MNIST-shaped examples, NUM_EXAMPLES per split."""
  with mock_data():
    yield


@pytest.fixture
def restored_steps(monkeypatch):
  """The steps the runs of the test restored from their own checkpoints, in order.

  An in-process resume that trained from scratch would reach the same
  numbers (runs are deterministic): its test asserts a restore happened.
  """
  steps = []
  restore = checkpointing.restore_latest

  def spy(*args, **kwargs):
    restored = restore(*args, **kwargs)
    if restored:
      steps.append(int(restored[2]))
    return restored
  monkeypatch.setattr(checkpointing, 'restore_latest', spy)
  return steps


@pytest.fixture
def mnist_dir():
  """The real MNIST IDX files; skipped when absent, except under CI."""
  if not os.path.isdir(MNIST_DIR):
    if os.environ.get('CI') == 'true':
      pytest.fail(f'CI=true but the real MNIST data is missing at {MNIST_DIR}')
    pytest.skip(f'real MNIST not found at {MNIST_DIR} (a clone without ../shared)')
  return MNIST_DIR




@pytest.fixture(scope='session')
def mnist_data_dir(tmp_path_factory):
  """A TFDS data dir where real MNIST gets prepared once per session.

  Shared by the xdist workers: preparing takes ~5 s, and
  offline_data.prepare's lock lets one worker prepare while the other waits.
  """
  return str(session_root(tmp_path_factory) / 'tfds-mnist')


@pytest.fixture(scope='session')
def random_mnist_4096(tmp_path_factory):
  """(IDX folder, TFDS data dir): 4,096 + 256 random MNIST-shaped examples.

  Written once per session for every xdist worker (under a lock), so the
  tests that train on it prepare it once between them.
  """
  root = session_root(tmp_path_factory)
  manual_dir = root / 'idx-4096'
  with open(root / 'idx-4096.lock', 'a') as lock:
    fcntl.lockf(lock, fcntl.LOCK_EX)
    if not manual_dir.exists():
      partial = root / 'idx-4096.partial'
      partial.mkdir(exist_ok=True)
      write_mnist(partial, n_train=4096, n_test=256)
      partial.rename(manual_dir)
  return str(manual_dir), str(root / 'tfds-4096')


@pytest.fixture(scope='session')
def mnist_cache_dir(tmp_path_factory):
  """A decoded-split cache for real MNIST, shared like `mnist_data_dir`."""
  return str(session_root(tmp_path_factory) / 'cache-mnist')



@pytest.fixture(scope='session', autouse=True)
def _compilation_cache(tmp_path_factory):
  """One JAX compilation cache for this session's test processes (both xdist workers).

  The tests compile the same small programs again and again (a new jit per
  config structure, per mesh); the cache serves them the executable an
  earlier test compiled, as it serves main.py (trainkit/cli.py).
  """
  root = str(session_root(tmp_path_factory))
  cli.use_compilation_cache(root)
  # For the runs the tests start in processes of their own (helpers.session_cache_dir).
  os.environ[SESSION_CACHE_ENV] = root
