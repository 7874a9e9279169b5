"""Shared fixtures: mocked TFDS data and the real MNIST files if present."""

import os

import pytest
import tensorflow_datasets as tfds

from tests.helpers import MNIST_DIR

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

# Mocked splits: 50 examples each, so 6 steps of 8 per epoch and 4 eval
# batches of 16 with the tiny config.
NUM_EXAMPLES = 50


@pytest.fixture
def mock_mnist():
  """TFDS returns random MNIST-shaped examples, NUM_EXAMPLES per split."""
  with tfds.testing.mock_data(num_examples=NUM_EXAMPLES):
    yield


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
