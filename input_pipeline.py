"""tf.data input from tensorflow-datasets, yielding numpy batches.

Batches carry images as stored (uint8): the model scales them on the device,
with the constants from `normalization_constants`, so four times fewer bytes
cross from host to device.

The training order is a pure function of (seed, epoch): a run resumed at step s
of an epoch skips the first s batches of that epoch's order and sees exactly
the batches an uninterrupted run would.
"""

import dataclasses
from typing import Iterator

import jax
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

import offline_data

# Examples used to estimate the mean and std-dev for 'standardize'.
_STATS_EXAMPLES = 10_000


@dataclasses.dataclass
class Data:
  """This process's share of a dataset, decoded and cached."""
  train: tf.data.Dataset  # Unbatched training examples of this process.
  test: tf.data.Dataset  # Unbatched test examples of this process.
  num_train: int  # Training examples of this process.
  num_test: int  # Test examples of this process.
  num_classes: int
  image_shape: tuple


def _builder(config):
  """Returns the TFDS builder, preparing the dataset first if needed."""
  if config.manual_dir:
    offline_data.prepare(config.dataset, config.data_dir, config.manual_dir)
  builder = tfds.builder(config.dataset, data_dir=config.data_dir)
  try:
    builder.download_and_prepare()
  except (OSError, ConnectionError) as e:  # requests' errors are OSErrors.
    raise offline_data.DataError(
        f'could not download dataset={config.dataset!r} ({type(e).__name__}).'
        ' With no network, point --config.manual_dir at a folder holding its'
        ' source files (for mnist: train-images-idx3-ubyte.gz,'
        ' train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz,'
        ' t10k-labels-idx1-ubyte.gz), or --config.data_dir at a TFDS data dir'
        ' where it is already prepared.') from e
  return builder


def _load_split(builder, split):
  """Loads this process's share of `split`, decoded once and cached."""
  ds = builder.as_dataset(
      split=tfds.split_for_jax_process(split, drop_remainder=False),
      shuffle_files=False,
      read_config=tfds.ReadConfig(interleave_cycle_length=1))
  ds = ds.map(lambda x: {'image': x['image'], 'label': tf.cast(x['label'], tf.int32)})
  return ds.cache(), int(ds.cardinality())


def create_datasets(config) -> Data:
  """Loads the train and test splits of `config.dataset`."""
  builder = _builder(config)
  train, num_train = _load_split(builder, 'train')
  test, num_test = _load_split(builder, 'test')
  features = builder.info.features
  return Data(train=train, test=test, num_train=num_train, num_test=num_test,
              num_classes=features['label'].num_classes,
              image_shape=tuple(features['image'].shape))


def normalization_constants(config, data: Data):
  """Returns (shift, scale) such that inputs are (pixels - shift) / scale."""
  if config.normalization == 'unit':
    return 0.0, 255.0
  if config.normalization == 'raw':
    return 0.0, 1.0
  if config.normalization == 'standardize':
    images = np.stack([x['image'] for x in
                       tfds.as_numpy(data.train.take(_STATS_EXAMPLES))])
    images = images.astype(np.float64)
    return float(images.mean()), float(images.std())
  raise ValueError(f'normalization={config.normalization!r} is not one of '
                   "'unit', 'standardize', 'raw'")


def epoch_seed(seed: int, epoch: int) -> int:
  """A 31-bit shuffle seed for `epoch`, derived from the run's seed."""
  return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0] >> 1)


def steps_per_epoch(data: Data, global_batch_size: int) -> int:
  """Full training batches per epoch (the remainder is dropped, reshuffled)."""
  return data.num_train * jax.process_count() // global_batch_size


def train_batches(data: Data, config, epoch: int,
                  start_step: int = 0) -> Iterator[dict]:
  """Yields this process's training batches of `epoch` from `start_step` on."""
  batch_size = config.batch_size // jax.process_count()
  ds = data.train.shuffle(
      min(config.shuffle_buffer_size, data.num_train),
      seed=epoch_seed(config.seed, epoch),
      reshuffle_each_iteration=False)
  ds = ds.batch(batch_size, drop_remainder=True)
  ds = ds.skip(start_step).prefetch(tf.data.AUTOTUNE)
  return iter(tfds.as_numpy(ds))


def eval_batches(data: Data, batch_size: int) -> Iterator[dict]:
  """Yields the test split in batches of exactly `batch_size`.

  The last batch is padded and `mask` marks the real examples, so every
  example counts once and the step is compiled for one shape only.
  """
  ds = data.test.batch(batch_size).prefetch(tf.data.AUTOTUNE)
  for batch in tfds.as_numpy(ds):
    n = len(batch['label'])
    pad = batch_size - n
    yield {
        'image': np.pad(batch['image'], [(0, pad)] + [(0, 0)] * (batch['image'].ndim - 1)),
        'label': np.pad(batch['label'], (0, pad)),
        'mask': np.arange(batch_size) < n,
    }
