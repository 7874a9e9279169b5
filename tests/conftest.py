"""Shared fixtures: the repo on sys.path, tiny configs, real MNIST if present."""

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-position

tf.config.set_visible_devices([], 'GPU')

from configs import default  # pylint: disable=g-import-not-at-top,wrong-import-position

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
  for key, value in overrides.items():
    set_field(config, key, value)
  return config


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
