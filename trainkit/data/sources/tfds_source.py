"""The TFDS source: a dataset name, prepared once, then read without TensorFlow.

A dataset is prepared into the TFDS data dir in the ArrayRecord format (from
`manual_dir` offline, see trainkit/data/sources/tfds_prepare.py, or by TFDS's download), the
only step that may import TensorFlow. From then on every command reads it
through `builder.as_data_source` (ArrayRecord files, random access by index,
images decoded by TFDS with OpenCV), which Grain consumes; TensorFlow is not
imported.
"""

import difflib
import math
import os
import socket
import threading
import urllib.parse

import jax
import numpy as np

from trainkit import errors
from trainkit.data.sources import base
from trainkit.data.sources import decoded_cache
from trainkit.data.sources import host_tensorflow
from trainkit.data.sources import tfds_prepare as offline_data
from trainkit.runtime import parallel

# Examples decoded per read when a whole split is loaded.
_READ_CHUNK = 4096


def check_name(name: str) -> None:
  """Refuses a dataset name TFDS does not know, with the nearest it does."""
  tfds = offline_data.tfds()
  try:
    tfds.builder_cls(name)
  except tfds.core.registered.DatasetNotFoundError as e:
    close = difflib.get_close_matches(
        name, tfds.list_builders(with_community_datasets=False), n=1)
    raise base.DataError(
        f'dataset={name!r} is not a TFDS dataset'
        + (f' (did you mean {close[0]!r}?)' if close else '')) from e
  except ValueError as e:  # Not even the form of a name ('mnist!').
    raise base.DataError(f'dataset={name!r} is not a TFDS dataset name, a table or .npz arrays '
                         f'({errors.raised(e)})') from e


def _download_and_prepare(config, builder) -> None:
  """Prepares a dataset that is not in the data dir yet (imports TensorFlow)."""
  host_tensorflow.tensorflow()  # Before TFDS touches TensorFlow.
  try:
    with offline_data.preparing(config.dataset, config.data_dir):
      if builder.is_prepared():  # By another process while this one waited.
        return
      builder.download_and_prepare(file_format='array_record')
  except (OSError, ConnectionError) as e:  # requests' errors are OSErrors.
    raise base.DataError(
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
    raise base.DataError(
        f'dataset={config.dataset!r} is not prepared in data_dir={config.data_dir!r} and '
        f'cannot be downloaded: {host}:{port} is not reachable ({why}). ' + _OFFLINE_HINT)


_OFFLINE_HINT = (
    'With no network, point --config.manual_dir at a folder holding its source '
    'files (for mnist: train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, '
    't10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz), or --config.data_dir '
    'at a TFDS data dir where it is already prepared.')


def _image_and_label(found_builder):
  """The builder's features, refused unless they hold an image and a label."""
  features = found_builder.info.features
  if not {'image', 'label'} <= set(features.keys()):
    raise base.DataError(
        f'dataset={found_builder.name!r} has no image and label features '
        f'(it has: {", ".join(features.keys())})')
  return features


def prepared(config):
  """The builder of `config.dataset`, prepared (as ArrayRecord) if it was not."""
  check_name(config.dataset)  # The same refusal whichever way it would be prepared.
  if config.manual_dir:
    # Process 0 first, so processes sharing a data_dir never write it at once;
    # the others then find it prepared (or prepare their own disk's).
    if jax.process_index() == 0:
      offline_data.prepare(config.dataset, config.data_dir, config.manual_dir)
    parallel.barrier('dataset prepared')
    if jax.process_index() > 0:
      offline_data.prepare(config.dataset, config.data_dir, config.manual_dir)
  found = offline_data.tfds().builder(config.dataset, data_dir=config.data_dir)
  _image_and_label(found)
  if not found.is_prepared():
    _check_reachable(config)
    _download_and_prepare(config, found)
    found = offline_data.tfds().builder(config.dataset, data_dir=config.data_dir)
  return found


def _sizes(found_builder) -> dict:
  """{split: examples} of a prepared builder, from its metadata."""
  return {name: split.num_examples for name, split in found_builder.info.splits.items()}


def records(found_builder, split: str) -> 'TfdsRecords':
  """Random access to `split` of a prepared dataset."""
  try:
    return TfdsRecords(found_builder.as_data_source(split=split))
  except NotImplementedError as e:  # Prepared by an earlier version, as TFRecord.
    raise base.DataError(
        f'dataset={found_builder.name!r} in {found_builder.data_dir} is prepared '
        'in a format without random access; convert it once with `tfds '
        f'convert_format --dataset_version_dir={found_builder.data_dir} '
        '--out_file_format=array_record` or give another --config.data_dir') from e


class TfdsRecords(base.Records):
  """A TFDS data source (ArrayRecord, by index) read as {'x': images, 'y': labels (int32)}."""

  def __init__(self, data_source):
    self.data_source = data_source

  def __len__(self):
    return len(self.data_source)

  def read(self, indices) -> dict:
    examples = self.data_source.__getitems__(np.asarray(indices).tolist())
    return {'x': np.stack([np.asarray(e['image']) for e in examples]),
            'y': np.asarray([e['label'] for e in examples], np.int32)}


def read_all(split_records: base.Records) -> dict:
  """Every example of `split_records`, decoded and stacked as arrays.

  One reading thread beside the decoding one: TFDS's parsing holds the GIL,
  so more threads only contend, and worker processes cost more to start
  (each imports the program) than they save on a split of MNIST's size
  (measured: benchmarks/decoding.py). TFDS decodes with OpenCV, 2.5 times
  PIL's speed.
  """
  import grain  # pylint: disable=g-import-not-at-top
  chunks = iter(grain.MapDataset.range(len(split_records)).batch(_READ_CHUNK).map(
      split_records.read).to_iter_dataset(
          grain.ReadOptions(num_threads=1, prefetch_buffer_size=4)))
  try:
    parts = list(chunks)
  finally:
    chunks.close()
  return {k: np.concatenate([p[k] for p in parts]) for k in ('x', 'y')}


class TfdsSource(base.Source):
  """A TFDS dataset of images and labels, prepared on first read (offline from manual_dir)."""

  def __init__(self, config):
    super().__init__(config.dataset)
    self._config = config
    self._builder = None
    # A dataset of IDX files given manual_dir: what TFDS registers of it, kept
    # in the cache, so a command that reads cached arrays never imports TFDS.
    self._facts = (decoded_cache.registered_facts(config.cache_dir, config.dataset,
                                                  self._checked_facts)
                   if self._from_idx_files() else None)
    if self._facts is None:
      check_name(config.dataset)  # The same refusal whichever way it would be prepared.

  def _from_idx_files(self) -> bool:
    return bool(self._config.manual_dir) and self.dataset in offline_data.IDX_DATASETS

  def _checked_facts(self) -> dict:
    check_name(self.dataset)
    return self._registered_facts()

  def _registered_facts(self) -> dict:
    """The dataset's name, version, image shape and dtype, and classes, as TFDS has them."""
    found = self._registered()
    features = _image_and_label(found)
    return {'name': found.name, 'version': str(found.version),
            'input_shape': list(features['image'].shape),
            'input_dtype': np.dtype(features['image'].np_dtype).name,
            'num_classes': features['label'].num_classes}

  @property
  def builder(self):
    """The prepared builder (prepared, or downloaded, on first use)."""
    if self._builder is None:
      self._builder = prepared(self._config)
    return self._builder

  def fields(self) -> dict:
    # Unprepared, the registered metadata gives the shapes: nothing is read.
    facts = self._facts or self._registered_facts()
    return {'num_classes': facts['num_classes'], 'input_shape': tuple(facts['input_shape']),
            'input_dtype': facts['input_dtype'], 'target_shape': (), 'target_dtype': 'int32'}

  def records(self, split: str) -> TfdsRecords:
    return records(self.builder, split)

  def arrays(self, split: str) -> dict:
    if self._facts:
      if split not in offline_data.IDX_FILES:
        self.refuse(f'has no split {split!r} (it has: '
                    f'{", ".join(map(repr, offline_data.IDX_FILES))})')
      # Read from the source files in TFDS's order: nothing to prepare or decode.
      offline_data.validate_manual_dir(self.dataset, self._config.manual_dir, payload=False)
      key = decoded_cache.files_key(self._facts['name'], self._facts['version'], split,
                                    offline_data.idx_files(self._config.manual_dir, split))
      return decoded_cache.load_keyed(key, self._config.cache_dir, lambda: offline_data.idx_arrays(
          self._config.manual_dir, split))
    found = self.builder
    return decoded_cache.load(found, split, self._config.cache_dir,
                              lambda: read_all(self.records(split)))

  def nbytes(self) -> int | None:
    if self._facts:
      shape, dtype = self._facts['input_shape'], self._facts['input_dtype']
    else:
      image = self._registered().info.features['image']
      shape, dtype = image.shape, image.np_dtype
    per_example = math.prod(shape) * np.dtype(dtype).itemsize + 4
    sizes = self.split_sizes()
    if sizes is None:  # Known once prepared (downloaded).
      sizes = _sizes(self.builder)
    try:
      return sum(sizes[s] for s in ('train', 'test')) * per_example
    except KeyError:  # No split metadata (e.g. tfds.testing.mock_data).
      return None

  def split_sizes(self) -> dict | None:
    if self._facts:  # Read from IDX files: their headers say.
      return offline_data.idx_sizes(self._config.manual_dir)
    found = self._registered()
    return _sizes(found) if found.is_prepared() else None

  def _registered(self):
    """The builder as prepared, or (not yet prepared) as registered: nothing is read."""
    return self._builder or offline_data.tfds().builder(self.dataset,
                                                        data_dir=self._config.data_dir)
