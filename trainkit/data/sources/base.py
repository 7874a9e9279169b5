"""The interface every data source implements, and random access to examples.

A source (`Source`) is one dataset's named splits. Its examples are read as
batches of arrays {'x': features, 'y': targets}, by index (`Records`), so the
streamed input reads any rows in any order, or whole (`Source.arrays`), so
the device input can keep a split resident. `fields()` tells the model what
the data holds (classes, input shape and dtype, target shape) before a split
is read. Every refusal of bad data is a `DataError` naming the dataset and
what is wrong with it.
"""

import abc

import numpy as np


class DataError(ValueError):
  """Source data that is missing or malformed."""


class Records(abc.ABC):
  """Random access to one split: `read(indices)` -> {'x', 'y'} stacked arrays.

  Picklable, so Grain's worker processes read from it.
  """

  @abc.abstractmethod
  def __len__(self) -> int:
    ...

  @abc.abstractmethod
  def read(self, indices) -> dict:
    """The examples at `indices` (a sequence of ints), stacked in that order."""


class ArrayRecords(Records):
  """Random access to arrays held in memory (or memory-mapped)."""

  def __init__(self, arrays: dict):
    self.arrays = arrays

  def __len__(self):
    return len(self.arrays['y'])

  def read(self, indices) -> dict:
    indices = np.asarray(indices, np.int64)
    return {k: np.asarray(v[indices]) for k, v in self.arrays.items()}


class SliceRecords(Records):
  """Random access to consecutive ranges of other splits' records, as one split.

  `parts` is [(records, start, stop)]: e.g. 'train[:50%]+test' reads the
  first half of train, then all of test.
  """

  def __init__(self, parts: list):
    self.parts = parts
    self._starts = np.cumsum([0] + [hi - lo for _, lo, hi in parts])

  def __len__(self):
    return int(self._starts[-1])

  def read(self, indices) -> dict:
    indices = np.asarray(indices, np.int64)
    if len(indices) and (indices.min() < 0 or indices.max() >= len(self)):
      raise IndexError(f'indices outside 0..{len(self) - 1}')
    part = np.searchsorted(self._starts, indices, side='right') - 1
    out = None
    for p in np.unique(part):
      records, lo, _ = self.parts[p]
      rows = np.flatnonzero(part == p)
      got = records.read(lo + indices[rows] - self._starts[p])
      if out is None:
        out = {k: np.empty((len(indices), *v.shape[1:]), v.dtype) for k, v in got.items()}
      for k, v in got.items():
        out[k][rows] = v
    if out is None:  # No indices: the shapes of one example, none of them.
      first = self.parts[0][0].read([self.parts[0][1]])
      out = {k: v[:0] for k, v in first.items()}
    return out


class Source(abc.ABC):
  """A dataset's named splits (`config.dataset` names it; sources.open opens it).

  Opening is cheap: nothing is prepared or read until a split is asked for,
  so `--mode=summary` learns the shapes from `fields()` alone.
  """

  def __init__(self, dataset: str):
    self.dataset = dataset

  def refuse(self, why: str):
    """Raises the DataError of this dataset: 'dataset=...: why'."""
    raise DataError(f'dataset={self.dataset!r}: {why}')

  @abc.abstractmethod
  def fields(self) -> dict:
    """num_classes (0 for real targets), input_shape, input_dtype, target_shape, target_dtype."""

  @abc.abstractmethod
  def records(self, split: str) -> Records:
    """Random access to the named split (a DataError if there is none)."""

  @abc.abstractmethod
  def arrays(self, split: str) -> dict:
    """The whole named split as arrays {'x', 'y'} (memory-mapped where a source caches)."""

  def fingerprint(self) -> str:
    """A digest of the data a model trains on, kept in its workdir; '' if not tracked."""
    return ''

  def nbytes(self) -> int | None:
    """Bytes of its splits' examples as stored (for input_mode='auto'); None if unknown."""
    return None

  def split_sizes(self) -> dict | None:
    """{split name: examples}, known without reading or preparing any; None if not yet."""
    return None
