"""TFDS datasets as random-access sources: prepared once, then read without TensorFlow.

A dataset is prepared into the TFDS data dir in the ArrayRecord format (from
`manual_dir` offline, see trainkit/offline_data.py, or by TFDS's download), the
only step that imports TensorFlow. From then on every command reads it through
`builder.as_data_source` (ArrayRecord files, random access by index, images
decoded by TFDS with PIL), which Grain consumes; TensorFlow is not imported.
"""

import difflib
import functools
import os
import socket
import threading
import types
import urllib.parse

import jax
import numpy as np
import tensorflow_datasets as tfds

from trainkit import offline_data
from trainkit import parallel

# Examples decoded per read when a whole split is loaded.
_READ_CHUNK = 4096


@functools.cache
def tensorflow():
  """TensorFlow, imported on first use and kept off the accelerators.

  Only preparing a dataset and exporting a SavedModel use it, and it must
  never take device memory that JAX needs.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], 'GPU')
  tf.config.set_visible_devices([], 'TPU')
  return tf


def check_name(name: str) -> None:
  """Refuses a dataset name TFDS does not know, with the nearest it does."""
  try:
    tfds.builder_cls(name)
  except tfds.core.registered.DatasetNotFoundError as e:
    close = difflib.get_close_matches(
        name, tfds.list_builders(with_community_datasets=False), n=1)
    raise offline_data.DataError(
        f'dataset={name!r} is not a TFDS dataset'
        + (f' (did you mean {close[0]!r}?)' if close else '')) from e


def _download_and_prepare(config, builder) -> None:
  """Prepares a dataset that is not in the data dir yet (imports TensorFlow)."""
  tensorflow()  # Before TFDS touches TensorFlow.
  try:
    with offline_data.preparing(config.dataset, config.data_dir):
      if builder.is_prepared():  # By another process while this one waited.
        return
      builder.download_and_prepare(file_format='array_record')
  except (OSError, ConnectionError) as e:  # requests' errors are OSErrors.
    raise offline_data.DataError(
        f'could not download dataset={config.dataset!r} ({type(e).__name__}). '
        + _OFFLINE_HINT) from e


def _check_reachable(config, timeout_s: float = 5.0) -> None:
  """Refuses a download at once when TFDS's download host cannot be reached.

  TFDS retries each file for minutes before it gives up; a name lookup and a
  connection to storage.googleapis.com (where TFDS looks first, and MNIST's
  files are), or to the proxy the environment names, take seconds.
  """
  proxy = os.environ.get('HTTPS_PROXY') or os.environ.get('https_proxy')
  target = urllib.parse.urlsplit(proxy) if proxy else None
  host, port = ((target.hostname, target.port or 80) if target
                else ('storage.googleapis.com', 443))
  result = []

  def connect():
    try:
      socket.create_connection((host, port), timeout=timeout_s).close()
      result.append(None)
    except OSError as e:
      result.append(e)

  thread = threading.Thread(target=connect, daemon=True)  # Name lookups ignore timeouts.
  thread.start()
  thread.join(timeout_s)
  if not result or result[0] is not None:
    why = f'{type(result[0]).__name__}: {result[0]}' if result else f'no answer in {timeout_s:g} s'
    raise offline_data.DataError(
        f'dataset={config.dataset!r} is not prepared in data_dir={config.data_dir!r} and '
        f'cannot be downloaded: {host}:{port} is not reachable ({why}). ' + _OFFLINE_HINT)


_OFFLINE_HINT = (
    'With no network, point --config.manual_dir at a folder holding its source '
    'files (for mnist: train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, '
    't10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz), or --config.data_dir '
    'at a TFDS data dir where it is already prepared.')


def builder(config):
  """The TFDS builder of `config.dataset`, prepared (as ArrayRecord) if it was not."""
  check_name(config.dataset)  # The same refusal whichever way it would be prepared.
  if config.manual_dir:
    # Process 0 first, so processes sharing a data_dir never write it at once;
    # the others then find it prepared (or prepare their own disk's).
    if jax.process_index() == 0:
      offline_data.prepare(config.dataset, config.data_dir, config.manual_dir)
    parallel.barrier('dataset prepared')
    if jax.process_index() > 0:
      offline_data.prepare(config.dataset, config.data_dir, config.manual_dir)
  found = tfds.builder(config.dataset, data_dir=config.data_dir)
  features = found.info.features
  if not {'image', 'label'} <= set(features.keys()):
    raise offline_data.DataError(
        f'dataset={config.dataset!r} has no image and label features '
        f'(it has: {", ".join(features.keys())})')
  if not found.is_prepared():
    _check_reachable(config)
    _download_and_prepare(config, found)
    found = tfds.builder(config.dataset, data_dir=config.data_dir)
  return found


def source(found_builder, split: str):
  """Random access to `split`: source[i] is TFDS's {'image': uint8 array, 'label': int}."""
  try:
    return found_builder.as_data_source(split=split)
  except NotImplementedError as e:  # Prepared by an earlier version, as TFRecord.
    raise offline_data.DataError(
        f'dataset={found_builder.name!r} in {found_builder.data_dir} is prepared '
        'in a format without random access; convert it once with `tfds '
        f'convert_format --dataset_version_dir={found_builder.data_dir} '
        '--out_file_format=array_record` or give another --config.data_dir') from e


def read(source_, indices) -> dict:
  """The examples at `indices`, decoded and stacked: {'x': the images, 'y': the labels (int32)}."""
  examples = source_.__getitems__(np.asarray(indices).tolist())
  return {'x': np.stack([np.asarray(e['image']) for e in examples]),
          'y': np.asarray([e['label'] for e in examples], np.int32)}


def read_all(source_) -> dict:
  """Every example of `source_`, decoded and stacked as arrays.

  One reading thread beside the decoding one: decoding (PIL) holds the GIL,
  so more threads only contend, and worker processes cost more to start
  (each imports the program) than they save on a split of MNIST's size.
  """
  import grain  # pylint: disable=g-import-not-at-top
  chunks = iter(grain.MapDataset.range(len(source_)).batch(_READ_CHUNK).map(
      functools.partial(read, source_)).to_iter_dataset(
          grain.ReadOptions(num_threads=1, prefetch_buffer_size=4)))
  try:
    parts = list(chunks)
  finally:
    chunks.close()
  return {k: np.concatenate([p[k] for p in parts]) for k in ('x', 'y')}


def split_ranges(spec: str, size_of) -> list:
  """[(split, start, stop)] that TFDS split syntax `spec` selects, in order.

  E.g. 'train[:55000]' -> [('train', 0, 55000)]; `size_of(name)` gives a
  named split's size. Raises DataError for a spec TFDS cannot read.
  """
  names = {part.split('[')[0].strip() for part in spec.split('+')}
  try:
    sizes = {name: types.SimpleNamespace(num_examples=size_of(name)) for name in names}
    instructions = tfds.core.ReadInstruction.from_spec(spec).to_absolute(sizes)
  except (ValueError, AssertionError, KeyError) as e:
    raise offline_data.DataError(f'split {spec!r}: {str(e).splitlines()[0]}') from None
  out = []
  for i in instructions:
    size = size_of(i.splitname)
    out.append((i.splitname, 0 if i.from_ is None else i.from_,
                size if i.to is None else i.to))
  return out


def overlap(a: list, b: list) -> int:
  """How many examples two split_ranges results share."""
  return sum(max(0, min(hi, hi2) - max(lo, lo2))
             for name, lo, hi in a for name2, lo2, hi2 in b if name == name2)


class SplitSource:
  """Random access to the examples `split_ranges` selects from whole-split sources."""

  def __init__(self, sources: dict, ranges: list):
    self._sources, self._ranges = sources, ranges
    self._starts = np.cumsum([0] + [hi - lo for _, lo, hi in ranges])

  def __len__(self):
    return int(self._starts[-1])

  def _locate(self, index: int):
    part = int(np.searchsorted(self._starts, index, side='right')) - 1
    name, lo, _ = self._ranges[part]
    return self._sources[name], lo + index - int(self._starts[part])

  def __getitem__(self, index):
    if not 0 <= index < len(self):
      raise IndexError(index)
    source, i = self._locate(int(index))
    return source[i]

  def __getitems__(self, indices):
    if len(self._ranges) == 1:  # One slice: the source's own batched read.
      name, lo, _ = self._ranges[0]
      return self._sources[name].__getitems__([lo + int(i) for i in indices])
    return [self[i] for i in indices]
