"""The input: any data source's splits, resident on the device or streamed through Grain.

A dataset is a source (trainkit/data/sources/: a TFDS dataset, an .npz file's
arrays, a generator), whose splits are read whole or by index; nothing here
imports TensorFlow, or knows which kind of source it reads. Two paths
(`config.input_mode`):

- 'device': a split that fits is read whole once (a TFDS split is decoded
  once per machine, then memory-mapped) and kept on every device in its
  stored dtype (images as uint8). Each epoch's order is a permutation drawn
  on the device, and the train step gathers its batch from the resident
  arrays by index, so a call of many steps needs nothing from the host but a
  slice of indices. The index rows are split
  over the mesh: each device (of each process) gathers only its slice of every
  global batch, and the order is the same for any number of devices and
  processes.
- 'stream': Grain shuffles the indices of the whole split (a permutation
  computed per index, no buffer), cuts them into global batches, and each
  process reads and decodes, in `input_workers` worker processes, only its own
  rows of every global batch, so the batches are the same for any number of
  processes and host memory does not grow with the dataset. Batches of several
  steps are stacked, assembled into global arrays with the other processes'
  rows and sent to the devices one call ahead of the one running. The Grain
  iterator's state goes into every checkpoint; a resumed run continues from it.

'auto' picks 'device' when the splits take at most a quarter of the device's
memory. Either way inputs keep their stored dtype until the model scales them, and the order
of an epoch is a pure function of (seed, epoch): a run resumed at step s of an
epoch starts at batch s of that order and sees exactly the batches an
uninterrupted run would. Placing the splits is this module's; cutting them
into each device call's batches is trainkit/data/calls.py's.
"""

import dataclasses
import os
from typing import Any

from absl import flags
import jax
import ml_collections
import numpy as np

from trainkit import errors
from trainkit.data import sources
from trainkit.data.sources import base
from trainkit.data.sources import split_syntax
from trainkit.data.sources import tables
from trainkit.runtime import parallel

INPUT_MODES = ('auto', 'device', 'stream')
# 'auto' keeps the data on the device up to this share of its memory.
_DEVICE_MEMORY_SHARE = 0.25


@dataclasses.dataclass
class Data:
  """A dataset, placed for a device mesh.

  With mode 'device', `train` is {'x', 'y'} (inputs, targets) replicated on every device
  of `mesh` and `test` the same, padded to whole eval batches, stacked as
  [batches, batch, ...] with a 'mask' of the real examples and split over the
  mesh along the batch axis. With mode 'stream', both are random-access
  records of the whole split (sources.base.Records); each process reads its
  own rows.
  """
  mode: str  # 'device' or 'stream'.
  train: Any
  test: Any
  num_train: int  # Training examples, all processes together.
  num_test: int  # Test examples, all processes together.
  num_classes: int  # Classes of integer targets (TFDS's label feature); 0 for real targets.
  input_shape: tuple  # One input's shape, e.g. (28, 28, 1).
  mesh: Any  # The jax.sharding.Mesh the arrays are placed on.
  workers: int = 0  # Processes that decode streamed examples (0: this one).
  stream: Any = None  # The open streaming.Stream of the run being trained, if any.
  validation: Any = None  # Placed as `test` is; None without a validation split.
  num_validation: int = 0
  input_dtype: str = 'uint8'  # The inputs' dtype as stored.
  target_shape: tuple = ()  # One target's shape (() for a label or a scalar).
  target_dtype: str = 'int32'  # The targets' dtype as read.
  columns: tuple = ()  # A table's columns as features (tables.Column.as_tuple each).
  class_names: tuple = ()  # A table's class names, by class index.
  numeric_classes: bool = False  # They are a number column's values (predicted as numbers).
  fingerprint: str = ''  # A digest of the files read (tables, .npz); '' for other data.


def validation_view(data: Data) -> Data:
  """`data` with the validation split where evaluation reads the test split.

  Every evaluation function reads `test`: given this view, they evaluate the
  validation split, exactly as they do the test split. Without a validation
  split, `data` itself (the epochs are then evaluated on the test split).
  """
  if data.validation is None:
    return data
  return dataclasses.replace(data, test=data.validation, num_test=data.num_validation)


def device_memory_bytes() -> int:
  """Bytes of memory of this process's first device (the host's on CPU)."""
  stats = jax.local_devices()[0].memory_stats() or {}
  if 'bytes_limit' in stats:
    return int(stats['bytes_limit'])
  # The CPU backend reports nothing: its memory is the host's.
  return os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')


def choose_input_mode(config, source) -> str:
  """'device' or 'stream', as configured or, for 'auto', by size."""
  if config.input_mode != 'auto':
    return config.input_mode
  size = source.nbytes()
  fits = size is not None and size <= _DEVICE_MEMORY_SHARE * device_memory_bytes()
  return 'device' if fits else 'stream'


def _workers(requested: int) -> int:
  """Grain's worker processes need absl flags parsed (a library caller has none)."""
  if requested and not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  return requested


def stack_eval_batches(examples: dict, batch_size: int) -> dict:
  """Pads `examples` to whole batches and stacks them as [batches, batch, ...].

  'mask' marks the real examples, so every example counts once and the eval
  step is compiled for one batch shape.
  """
  n = len(examples['y'])
  num_batches = max(1, -(-n // batch_size))
  pad = num_batches * batch_size - n
  out = {}
  for key, value in examples.items():
    value = np.pad(value, [(0, pad)] + [(0, 0)] * (value.ndim - 1))
    out[key] = value.reshape(num_batches, batch_size, *value.shape[1:])
  out['mask'] = (np.arange(num_batches * batch_size) < n).reshape(num_batches, batch_size)
  return out


def _splits(config, source, mode: str) -> dict:
  """{'train', 'validation', 'test'}: the configured splits (TFDS split syntax).

  Slices are taken of whole named splits, each read once from `source` (as
  arrays on the device path, as random-access records when streamed), so
  'train[:55000]' and 'train[55000:]' share one copy. A validation split that
  shares examples with the training split is refused unless
  `allow_split_overlap`.
  """
  whole = {}

  def load(name):
    if name not in whole:
      whole[name] = source.arrays(name) if mode == 'device' else source.records(name)
    return whole[name]

  size_of = lambda name: len(load(name)['y'] if mode == 'device' else load(name))
  specs = {'train': config.train_split, 'validation': config.validation_split,
           'test': config.test_split}
  ranges = {k: split_syntax.split_ranges(v, size_of) for k, v in specs.items() if v}
  shared = split_syntax.overlap(ranges['train'], ranges.get('validation', []))
  if shared and not config.allow_split_overlap:
    raise sources.DataError(
        f'validation_split={config.validation_split!r} shares {shared} examples with '
        f'train_split={config.train_split!r}; choose disjoint splits (or set '
        'allow_split_overlap=True)')
  out = {}
  for key, parts in ranges.items():
    if mode == 'stream':
      out[key] = (whole[parts[0][0]] if len(parts) == 1 and parts[0][1:] == (
          0, len(whole[parts[0][0]])) else
                  base.SliceRecords([(whole[n], lo, hi) for n, lo, hi in parts]))
    elif len(parts) == 1:  # A view of the (memory-mapped) whole split.
      name, lo, hi = parts[0]
      out[key] = {k: v[lo:hi] for k, v in whole[name].items()}
    else:
      out[key] = {k: np.concatenate([whole[n][k][lo:hi] for n, lo, hi in parts])
                  for k in whole[parts[0][0]]}
  return out


# Every config field `create_datasets` reads: configs that agree on these get
# the same datasets (a sweep or search loads them once per such key).
DATA_FIELDS = ('dataset', 'data_dir', 'manual_dir', 'cache_dir', 'input_mode',
               'input_workers', 'train_split', 'validation_split', 'test_split',
               'allow_split_overlap', 'eval_batch_size', 'synthetic_examples', 'data_seed',
               'target_column', 'feature_columns', 'id_columns', 'weight_column',
               'split_column', 'split_seed', 'max_categories', 'table_separator',
               'table_encoding', 'positive_class', 'task')


def data_config(config) -> ml_collections.FrozenConfigDict:
  """The fields of `config` that decide its datasets (DATA_FIELDS), hashable.

  `create_datasets` reads its config through this alone, so a field it
  starts to read without listing it fails at once instead of being missed by
  the key that shares datasets.
  """
  return ml_collections.FrozenConfigDict({field: config[field] for field in DATA_FIELDS})


def eval_part(examples: dict) -> dict:
  """What evaluation reads of examples: inputs and targets (sample weights train only)."""
  return {'x': examples['x'], 'y': examples['y']}


def create_datasets(config, mesh=None, fitted=None) -> Data:
  """Loads the configured splits of `config.dataset` for `mesh` (default: all devices).

  `fitted`: a trained workdir's ModelSpec, whose stored encoding of a table
  is used instead of one fitted again (evaluation).
  """
  config = data_config(config)
  mesh = parallel.create_mesh() if mesh is None else mesh
  source = sources.open_source(config, fitted)
  mode = choose_input_mode(config, source)
  return _placed(config, mesh, mode, _splits(config, source, mode), source.fields())


def predicted_data(config, mesh=None, max_bytes: int | None = None) -> Data | None:
  """Data of the shapes `create_datasets(config)` will give, all zeros, read from nothing.

  From the source's metadata alone (its fields and split sizes), for the
  device path: what a run's programs can be compiled for while the real data
  loads (trainkit/training/compile_ahead.py). None when the sizes are not known before
  reading, the input will be streamed, or its splits take more than
  `max_bytes`.
  """
  config = data_config(config)
  source = sources.open_source(config)
  sizes = source.split_sizes()
  if sizes is None or choose_input_mode(config, source) != 'device':
    return None
  if max_bytes is not None and (source.nbytes() or 0) > max_bytes:
    return None
  fields = source.fields()
  size_of = lambda name: sizes[name]
  zeros = lambda n: {'x': np.zeros((n, *fields['input_shape']), fields['input_dtype']),
                     'y': np.zeros((n, *fields['target_shape']), fields['target_dtype'])}
  splits = {key: zeros(sum(hi - lo for _, lo, hi in split_syntax.split_ranges(spec, size_of)))
            for key, spec in (('train', config.train_split),
                              ('validation', config.validation_split),
                              ('test', config.test_split)) if spec}
  mesh = parallel.create_mesh() if mesh is None else mesh
  return _placed(config, mesh, 'device', splits, fields)


def _placed(config, mesh, mode: str, splits: dict, fields: dict) -> Data:
  """`splits` placed for `mesh` as `mode` keeps them, as Data (an empty split refused)."""
  size = lambda split: len(split['y'] if mode == 'device' else split)
  sizes = {k: size(v) for k, v in splits.items()}
  for key in splits:
    if not sizes[key]:
      raise sources.DataError(
          f'{key}_split={config[key + "_split"]!r} selects no examples')
  if mode == 'device':
    eval_batch = parallel.padded_batch_size(config.eval_batch_size, mesh)
    for key in splits:
      splits[key] = (parallel.replicate(splits[key], mesh) if key == 'train' else
                     parallel.put_rows(stack_eval_batches(eval_part(splits[key]), eval_batch),
                                       mesh))
  return Data(mode=mode, train=splits['train'], test=splits['test'],
              num_train=sizes['train'], num_test=sizes['test'], mesh=mesh,
              workers=_workers(config.input_workers) if mode == 'stream' else 0,
              validation=splits.get('validation'),
              num_validation=sizes.get('validation', 0), **fields)


def check_config(config) -> None:
  """Refuses the input's fields (mode, splits, workers, caches, a table's own) that cannot be."""
  errors.one_of(config, 'input_mode', INPUT_MODES)
  for name in ('train_split', 'test_split'):
    errors.require(isinstance(config[name], str) and config[name], name, config[name],
                   "must name a split in TFDS split syntax (e.g. 'train[:55000]')")
  errors.require(isinstance(config.validation_split, str), 'validation_split',
                 config.validation_split, "must be a split in TFDS split syntax or '' (none)")
  # The seeds: SeedSequence (the data order, the splits) takes no negative one.
  errors.counts(config, ('input_workers', 'seed', 'data_seed'))
  tables.check_config(config)
  errors.require(isinstance(config.cache_dir, str), 'cache_dir', config.cache_dir,
                 "must be a folder or '' (no caches)")
  cache = os.path.expanduser(config.cache_dir)
  errors.require(not config.cache_dir or not os.path.exists(cache) or os.path.isdir(cache),
                 'cache_dir', config.cache_dir,
                 "is not a folder (give a folder, or '' for no caches)")
  if config.manual_dir is not None:
    errors.require(os.path.isdir(config.manual_dir), 'manual_dir', config.manual_dir,
                   'is not a directory')
