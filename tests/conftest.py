"""Shared fixtures: the repo on sys.path, tiny configs, real MNIST if present."""

import gzip
import os
import struct
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-position

tf.config.set_visible_devices([], 'GPU')

from configs import default  # pylint: disable=g-import-not-at-top,wrong-import-position
import offline_data  # pylint: disable=g-import-not-at-top,wrong-import-position

MNIST_DIR = os.path.join(ROOT, '..', 'shared', 'data', 'mnist')


def tiny_config(**overrides):
  """A config small enough to train in a second on mocked data."""
  config = default.get_config()
  config.model.hidden_sizes = (16,)
  config.model.dropout_rates = (0.1,)
  config.batch_size = 8
  config.eval_batch_size = 16
  config.num_epochs = 2
  config.log_every_steps = 2
  config.schedule = 'cosine'
  config.plots = False  # Drawing costs seconds; the plot tests turn it on.
  for key, value in overrides.items():
    set_field(config, key, value)
  return config


def write_idx(path, array, truncate=0):
  """Writes `array` as a gzipped IDX file (optionally cut short)."""
  header = struct.pack('>HBB', 0, 0x08, array.ndim) + struct.pack(f'>{array.ndim}I', *array.shape)
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


def set_field(config, dotted, value):
  """Sets `config.a.b = value` for `dotted='a.b'`."""
  *path, last = dotted.split('.')
  for part in path:
    config = config[part]
  config[last] = value


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
  """A TFDS data dir where real MNIST gets prepared once per session."""
  return str(tmp_path_factory.mktemp('tfds'))
