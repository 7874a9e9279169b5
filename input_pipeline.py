"""Input from tensorflow-datasets: resident on the device, or streamed.

Two paths (`config.input_mode`):

- 'device': a split that fits is read once through tfds and kept on every
  device as uint8. Each epoch's order is a permutation drawn on the device, and
  the train step gathers its batch from the resident arrays by index, so a call
  of many steps needs nothing from the host but a slice of indices. The index
  rows are split over the mesh: each device (of each process) gathers only its
  slice of every global batch, and the order is the same for any number of
  devices and processes.
- 'stream': each process reads its own share of the split (a per-process TFDS
  split), and tf.data shuffles (with a buffer) and batches it on the host;
  batches of several steps are stacked, assembled into global arrays with the
  other processes' rows and sent to the devices one call ahead of the one
  running, so host input overlaps device compute.

'auto' picks 'device' when the splits take at most a quarter of the device's
memory. Either way images stay uint8 until the model scales them, and the order
of an epoch is a pure function of (seed, epoch): a run resumed at step s of an
epoch starts at batch s of that order and sees exactly the batches an
uninterrupted run would.
"""

import collections
import dataclasses
import difflib
import functools
import math
import os
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow_datasets as tfds

from trainkit import offline_data
from trainkit import parallel

INPUT_MODES = ('auto', 'device', 'stream')
NORMALIZATIONS = ('unit', 'standardize', 'raw')
# 'auto' keeps the data on the device up to this share of its memory.
_DEVICE_MEMORY_SHARE = 0.25
# A streamed evaluation sends at most this many bytes of images per call.
_EVAL_CALL_BYTES = 64 << 20
# Examples used to estimate the mean and std-dev for 'standardize'.
_STATS_EXAMPLES = 10_000


@dataclasses.dataclass
class Data:
  """A dataset, placed for a device mesh.

  With mode 'device', `train` is {'image', 'label'} replicated on every device
  of `mesh` and `test` the same, padded to whole eval batches, stacked as
  [batches, batch, ...] with a 'mask' of the real examples and split over the
  mesh along the batch axis. With mode 'stream', both are tf.data datasets of
  this process's share of single decoded examples (cached).
  """
  mode: str  # 'device' or 'stream'.
  train: Any
  test: Any
  num_train: int  # Training examples, all processes together.
  num_test: int  # Test examples, all processes together.
  num_classes: int
  image_shape: tuple
  mesh: Any  # The jax.sharding.Mesh the arrays are placed on.


@functools.cache
def tensorflow():
  """TensorFlow, imported on first use and kept off the accelerators.

  It only reads and prepares data on the host (and exports SavedModels), so
  commands that do neither never import it, and it never takes device memory
  that JAX needs.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], 'GPU')
  tf.config.set_visible_devices([], 'TPU')
  return tf


def _builder(config):
  """Returns the TFDS builder, preparing the dataset first if needed."""
  tensorflow()  # Before TFDS touches TensorFlow.
  if config.manual_dir:
    # Process 0 first, so processes sharing a data_dir never write it at once;
    # the others then find it prepared (or prepare their own disk's).
    if jax.process_index() == 0:
      offline_data.prepare(config.dataset, config.data_dir, config.manual_dir)
    parallel.barrier('dataset prepared')
    if jax.process_index() > 0:
      offline_data.prepare(config.dataset, config.data_dir, config.manual_dir)
  try:
    builder = tfds.builder(config.dataset, data_dir=config.data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    close = difflib.get_close_matches(
        config.dataset, tfds.list_builders(with_community_datasets=False), n=1)
    raise offline_data.DataError(
        f'dataset={config.dataset!r} is not a TFDS dataset'
        + (f' (did you mean {close[0]!r}?)' if close else '')) from e
  features = builder.info.features
  if not {'image', 'label'} <= set(features.keys()):
    raise offline_data.DataError(
        f'dataset={config.dataset!r} has no image and label features '
        f'(it has: {", ".join(features.keys())})')
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


def _device_memory_bytes() -> int:
  stats = jax.local_devices()[0].memory_stats() or {}
  if 'bytes_limit' in stats:
    return int(stats['bytes_limit'])
  # The CPU backend reports nothing: its memory is the host's.
  return os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')


def dataset_bytes(builder) -> int | None:
  """Bytes of the train and test images and labels as stored; None if unknown."""
  image = builder.info.features['image']
  per_example = math.prod(image.shape) * np.dtype(image.np_dtype).itemsize + 4
  try:
    examples = sum(builder.info.splits[s].num_examples for s in ('train', 'test'))
  except KeyError:  # No split metadata (e.g. tfds.testing.mock_data).
    return None
  return examples * per_example


def choose_input_mode(config, builder) -> str:
  """'device' or 'stream', as configured or, for 'auto', by size."""
  if config.input_mode != 'auto':
    return config.input_mode
  size = dataset_bytes(builder)
  fits = size is not None and size <= _DEVICE_MEMORY_SHARE * _device_memory_bytes()
  return 'device' if fits else 'stream'


def _examples(builder, split, whole: bool = False):
  """This process's share of `split` (or all of it), in stored order, labels as int32.

  Returns:
    A tf.data.Dataset of single examples.
  """
  tf = tensorflow()
  ds = builder.as_dataset(
      split=split if whole else tfds.split_for_jax_process(split, drop_remainder=False),
      shuffle_files=False,
      read_config=tfds.ReadConfig(interleave_cycle_length=1))
  return ds.map(lambda x: {'image': x['image'], 'label': tf.cast(x['label'], tf.int32)},
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _load_arrays(builder, split) -> dict:
  """All of `split` as numpy arrays, read in one pass."""
  batches = list(tfds.as_numpy(_examples(builder, split, whole=True).batch(8192)))
  return {k: np.concatenate([b[k] for b in batches]) for k in ('image', 'label')}


def stack_eval_batches(examples: dict, batch_size: int) -> dict:
  """Pads `examples` to whole batches and stacks them as [batches, batch, ...].

  'mask' marks the real examples, so every example counts once and the eval
  step is compiled for one batch shape.
  """
  n = len(examples['label'])
  num_batches = max(1, -(-n // batch_size))
  pad = num_batches * batch_size - n
  out = {}
  for key, value in examples.items():
    value = np.pad(value, [(0, pad)] + [(0, 0)] * (value.ndim - 1))
    out[key] = value.reshape(num_batches, batch_size, *value.shape[1:])
  out['mask'] = (np.arange(num_batches * batch_size) < n).reshape(num_batches, batch_size)
  return out


def _split_size(builder, split: str, local) -> int:
  """Examples in `split`, all processes together."""
  if jax.process_count() == 1:
    return int(local.cardinality())
  return builder.info.splits[split].num_examples


def create_datasets(config, mesh=None) -> Data:
  """Loads the train and test splits of `config.dataset` for `mesh` (default: all devices)."""
  mesh = parallel.create_mesh() if mesh is None else mesh
  builder = _builder(config)
  features = builder.info.features
  mode = choose_input_mode(config, builder)
  if mode == 'device':
    train = _load_arrays(builder, 'train')
    test = _load_arrays(builder, 'test')
    num_train, num_test = len(train['label']), len(test['label'])
    train = parallel.replicate(train, mesh)
    test = parallel.put_rows(stack_eval_batches(
        test, parallel.padded_batch_size(config.eval_batch_size, mesh)), mesh)
  else:
    train, test = _examples(builder, 'train').cache(), _examples(builder, 'test').cache()
    num_train = _split_size(builder, 'train', train)
    num_test = _split_size(builder, 'test', test)
  return Data(mode=mode, train=train, test=test, num_train=num_train,
              num_test=num_test, num_classes=features['label'].num_classes,
              image_shape=tuple(features['image'].shape), mesh=mesh)


def normalization_constants(config, data: Data):
  """Returns (shift, scale) such that inputs are (pixels - shift) / scale."""
  if config.normalization == 'unit':
    return 0.0, 255.0
  if config.normalization == 'raw':
    return 0.0, 1.0
  if config.normalization == 'standardize':
    if data.mode == 'device':
      images = np.asarray(data.train['image'][:_STATS_EXAMPLES])
    else:
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
  """Full training batches per epoch (the remainder is dropped, reshuffled).

  Streamed, each process batches its own share, the smallest of which has
  num_train // processes examples.
  """
  if data.mode == 'device':
    return data.num_train // global_batch_size
  processes = jax.process_count()
  return (data.num_train // processes) // (global_batch_size // processes)


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4, 5))
def _epoch_order(seed, num_examples: int, steps: int, batch_size: int, pad: int,
                 sharding):
  """Example indices [steps + pad, batch]: a permutation, then `pad` rows of 0."""
  order = jax.random.permutation(jax.random.key(seed), num_examples)[:steps * batch_size]
  order = order.reshape(steps, batch_size).astype(jnp.int32)
  order = jnp.pad(order, ((0, pad), (0, 0)))
  return jax.lax.with_sharding_constraint(order, sharding)


def device_epoch_order(data: Data, seed: int, epoch: int, batch_size: int,
                       pad: int) -> jax.Array:
  """Mode 'device': the example indices [steps + pad, batch] of `epoch`.

  The same in every process; the rows are split over `data.mesh`.
  """
  return _epoch_order(epoch_seed(seed, epoch), data.num_train,
                      data.num_train // batch_size, batch_size, pad,
                      parallel.row_sharding(data.mesh))


@functools.partial(jax.jit, static_argnums=2)
def _rows(order, start, length: int):
  return jax.lax.dynamic_slice_in_dim(order, start, length)


def _prefetch_to_device(iterator: Iterator, mesh, size: int = 2) -> Iterator:
  """Keeps `size` (steps, batches) in flight to the devices ahead of the consumer."""
  queue = collections.deque()
  for steps, batches in iterator:
    queue.append((steps, parallel.global_rows(batches, mesh)))
    if len(queue) == size:
      yield queue.popleft()
  while queue:
    yield queue.popleft()


def train_calls(data: Data, config, epoch: int, spans: Sequence[tuple[int, int]],
                call_length: int) -> Iterator[tuple[int, dict]]:
  """Yields, per (start, stop) span of steps of `epoch`, one call's input.

  Each item is (steps, batches) with batches of leading size `call_length` >=
  steps, the rows past `steps` being padding, so every call has one shape and
  the step is compiled once. Mode 'device' yields {'index': [call_length,
  batch]} positions into `data.train`; mode 'stream' yields the stacked
  batches {'image': [call_length, batch, ...], 'label': [call_length, batch]}.
  """
  if data.mode == 'device':
    order = device_epoch_order(data, config.seed, epoch, config.batch_size, call_length)
    for start, stop in spans:
      yield stop - start, {'index': _rows(order, start, call_length)}
    return
  batch_size = config.batch_size // jax.process_count()
  ds = data.train.shuffle(
      min(config.shuffle_buffer_size, data.num_train),
      seed=epoch_seed(config.seed, epoch),
      reshuffle_each_iteration=False)
  ds = ds.batch(batch_size, drop_remainder=True)
  ds = ds.skip(spans[0][0] if spans else 0).prefetch(tensorflow().data.AUTOTUNE)
  batches = iter(tfds.as_numpy(ds))

  def stacked():
    for start, stop in spans:
      steps = [next(batches) for _ in range(stop - start)]
      steps += [jax.tree.map(np.zeros_like, steps[0])] * (call_length - len(steps))
      yield stop - start, {k: np.stack([b[k] for b in steps]) for k in steps[0]}
  yield from _prefetch_to_device(stacked(), data.mesh)


def eval_calls(data: Data, batch_size: int) -> Iterator[dict]:
  """Yields the test split as stacked, padded, masked eval batches, per call.

  Mode 'device': the whole split, one call. Mode 'stream': as many batches
  per call as fit in `_EVAL_CALL_BYTES` of images (at least one); every
  process makes the same number of calls of the same shapes (the processes
  with fewer examples add masked batches), each its share of the global batch.
  """
  if data.mode == 'device':
    yield data.test
    return
  processes = jax.process_count()
  local_batch = parallel.padded_batch_size(batch_size, data.mesh) // processes
  # The largest share decides how many batches every process sends.
  largest_share = -(-data.num_test // processes)
  num_batches = max(1, -(-largest_share // local_batch))
  per_call = max(1, _EVAL_CALL_BYTES // (local_batch * math.prod(data.image_shape)))
  local = iter(tfds.as_numpy(data.test.batch(local_batch)))
  empty = {'image': np.zeros((0, *data.image_shape), np.uint8),
           'label': np.zeros((0,), np.int32)}
  for first in range(0, num_batches, per_call):
    group = [stack_eval_batches(next(local, empty), local_batch)
             for _ in range(min(per_call, num_batches - first))]
    yield parallel.global_rows(
        jax.tree.map(lambda *x: np.concatenate(x), *group), data.mesh)
