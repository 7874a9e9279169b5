"""The array source: a .npz file of features and targets, or a generator's draws.

`dataset='path/to/file.npz'` reads arrays 'x' (features, any shape, float or
integer) and 'y' (targets: integer classes, or real values of any shape), as
the split 'train'; or 'x_<split>' and 'y_<split>' for named splits. The
configured splits select from them with TFDS's split syntax, e.g.
train_split='train[:80%]', validation_split='train[80%:]'.
`dataset='synthetic:<name>'` draws them (trainkit/data/sources/synthetic.py).

Each split is checked whole before any work: features and targets of equal
length, numbers only, every value finite. 64-bit numbers become 32-bit ones,
as JAX computes them.
"""

import os
import zipfile

import numpy as np

from trainkit import errors
from trainkit.data.sources import base
from trainkit.data.sources import synthetic
from trainkit.data.sources import table_files


def is_arrays(dataset: str) -> bool:
  """Whether `dataset` names arrays (a .npz file or a generator; an .npy file, refused)."""
  return dataset.lower().endswith(('.npz', '.npy')) or dataset.startswith(synthetic.PREFIX)


def _refuse(dataset: str, why: str):
  raise base.DataError(f'dataset={dataset!r}: {why}')


def _check(dataset: str, split: str, x, y) -> None:
  for name, values in (('x', x), ('y', y)):
    if values.dtype.kind not in 'biuf':
      _refuse(dataset, f'{name} of split {split!r} holds {values.dtype} values, not numbers')
    if values.ndim == 0 or len(values) == 0:
      _refuse(dataset, f'{name} of split {split!r} is empty')
    if values.dtype.kind == 'f':
      bad = ~np.isfinite(values)
      if bad.any():
        row = int(np.argwhere(bad)[0][0])
        _refuse(dataset, f'{name} of split {split!r} holds {int(bad.sum())} NaN or infinite '
                f'values (the first in row {row})')
    _check_32_bits(dataset, f'{name} of split {split!r}', values)
  if len(x) != len(y):
    _refuse(dataset, f'split {split!r} has {len(x)} rows of x but {len(y)} of y')


def _check_32_bits(dataset: str, what: str, values: np.ndarray) -> None:
  """Refuses 64-bit values that 32 bits cannot hold (they would wrap, or become inf)."""
  if values.dtype.itemsize <= 4 or values.dtype.kind not in 'iuf':
    return
  limits = np.finfo(np.float32) if values.dtype.kind == 'f' else np.iinfo(np.int32)
  outside = (values < limits.min) | (values > limits.max)
  if outside.any():
    row = int(np.argwhere(outside)[0][0])
    _refuse(dataset, f'{what} holds {int(outside.sum())} values past 32 bits\' range '
            f'({values[np.nonzero(outside)][0]!r} in row {row}); JAX computes in 32 bits')


def _read_npz(dataset: str) -> dict:
  path = os.path.expanduser(dataset)
  if not os.path.isfile(path):
    _refuse(dataset, 'no such file')
  if path.lower().endswith('.npy'):
    _refuse(dataset, "an .npy file holds one array, features without targets; an arrays "
            "dataset is an .npz file of 'x' (features) and 'y' (targets): "
            'numpy.savez(path, x=x, y=y)')
  try:
    with np.load(path, allow_pickle=False) as arrays:
      arrays = {k: arrays[k] for k in arrays.files}
  except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
    _refuse(dataset, f'cannot be read as a .npz file ({errors.raised(e)})')
  split_keys = sorted(k for k in arrays if k.startswith(('x_', 'y_')))
  if ('x' in arrays or 'y' in arrays) and split_keys:
    _refuse(dataset, f"holds both 'x'/'y' (one split, 'train') and named splits "
            f"({', '.join(split_keys)}); keep one form")
  if 'x' in arrays or 'y' in arrays:
    named = {'train': ('x', 'y')}
  else:
    named = {k[2:]: (k, 'y' + k[1:]) for k in arrays if k.startswith('x_')}
  if not named:
    _refuse(dataset, "holds no arrays 'x' and 'y' (nor 'x_<split>' and 'y_<split>'); it has: "
            + (', '.join(sorted(arrays)) or 'none'))
  splits = {}
  for split, (x_key, y_key) in named.items():
    for key in (x_key, y_key):
      if key not in arrays:
        _refuse(dataset, f'has {(x_key, y_key)[key == x_key]!r} but no {key!r}')
    splits[split] = {'x': arrays[x_key], 'y': arrays[y_key]}
  return splits


def load(config) -> dict:
  """{split name: {'x', 'y'}} of the dataset `config` names, each split checked."""
  dataset = config.dataset
  if dataset.startswith(synthetic.PREFIX):
    name = dataset[len(synthetic.PREFIX):]
    if name not in synthetic.GENERATORS:
      _refuse(dataset, f'no generator {name!r}; there are: {", ".join(synthetic.GENERATORS)}')
    sizes = tuple(config.synthetic_examples)
    if len(sizes) != 3 or not all(isinstance(n, int) and n >= 1 for n in sizes):
      raise base.DataError(
          f'synthetic_examples={sizes!r}: must be 3 positive integers (train, validation, test)')
    splits = synthetic.splits(name, sizes, config.data_seed)
  else:
    splits = _read_npz(dataset)
  for split, arrays in splits.items():
    _check(dataset, split, arrays['x'], arrays['y'])
    splits[split] = {k: _as_device_dtype(v) for k, v in arrays.items()}
  _check_alike(dataset, splits)
  return splits


def _kind(name: str, values: np.ndarray):
  """What must agree between splits: x's dtype; y's kind, integers of any width alike."""
  if name == 'x':
    return values.dtype
  return 'i' if values.dtype.kind in 'iu' else values.dtype.kind


def _check_alike(dataset: str, splits: dict) -> None:
  """Refuses splits whose rows differ in shape or dtype: the model takes one kind of row.

  Targets compare by kind: integer labels of any width are labels.
  """
  first = 'train' if 'train' in splits else next(iter(splits))
  arrays = splits[first]
  for split, other in splits.items():
    for name in ('x', 'y'):
      want, got = arrays[name], other[name]
      if (want.shape[1:], _kind(name, want)) != (got.shape[1:], _kind(name, got)):
        _refuse(dataset, f'{name} of split {split!r} has rows of shape {got.shape[1:]} '
                f'{got.dtype}, but split {first!r} has {want.shape[1:]} {want.dtype}')


def _as_device_dtype(values: np.ndarray) -> np.ndarray:
  """64-bit numbers as 32-bit ones (JAX computes in 32 bits); other dtypes as they are."""
  if values.dtype.kind == 'f' and values.dtype.itemsize > 4:
    return values.astype(np.float32)
  if values.dtype.kind in 'iu' and values.dtype.itemsize > 4:
    return values.astype(np.int32)
  if values.dtype.kind == 'b':
    return values.astype(np.int32)
  return values


def num_classes(splits: dict) -> int:
  """For class labels (integer targets from 0): the largest label + 1; else 0."""
  labels = [s['y'] for s in splits.values()]
  if any(y.dtype.kind not in 'biu' for y in labels) or min(y.min() for y in labels) < 0:
    return 0
  return int(max(y.max() for y in labels)) + 1


def describe(splits: dict) -> dict:
  """What the model needs to know of the arrays: classes, input shape and dtype, target shape."""
  first = next(iter(splits.values()))
  return {'num_classes': num_classes(splits), 'input_shape': first['x'].shape[1:],
          'input_dtype': first['x'].dtype.name, 'target_shape': first['y'].shape[1:],
          'target_dtype': first['y'].dtype.name}


class ArraySource(base.Source):
  """The splits of an .npz file or a generator, read whole (once) when first asked for."""

  def __init__(self, config):
    super().__init__(config.dataset)
    self._config = config
    self._splits = None

  def _all(self) -> dict:
    if self._splits is None:
      self._splits = load(self._config)
    return self._splits

  def fields(self) -> dict:
    return {**describe(self._all()), 'fingerprint': self.fingerprint()}

  def fingerprint(self) -> str:
    """A digest of the .npz file's bytes ('' for a generator: its config decides it)."""
    if self.dataset.startswith(synthetic.PREFIX):
      return ''
    path = os.path.expanduser(self.dataset)
    if not os.path.isfile(path):
      self.refuse('no such file')
    return table_files.digest([path])

  def arrays(self, split: str) -> dict:
    if split not in self._all():
      self.refuse(f'has no split {split!r} (it has: {", ".join(self._all())})')
    return self._all()[split]

  def records(self, split: str) -> base.ArrayRecords:
    return base.ArrayRecords(self.arrays(split))

  def nbytes(self) -> int:
    return sum(v.nbytes for split in self._all().values() for v in split.values())
