"""Preparing TFDS datasets from local source files, with no network access.

For the MNIST family (`mnist`, `fashion_mnist`, `kmnist`) the source files are
the four IDX `.gz` files of the original distribution. TFDS's own builder would
download them and verify their published checksums; here they are read from
`manual_dir` and validated by format instead (magic number, dimensions, counts,
label range), so a re-compressed or recovered copy is accepted. The examples are
written into the TFDS data dir under the dataset's own name and version, so the
rest of the program reads them through the ordinary `tfds.builder` path. They
are written as ArrayRecord, which is read by index without TensorFlow
(trainkit/sources/tfds_source.py); only this preparation imports TensorFlow.
"""

import contextlib
import fcntl
import gzip
import os
import struct

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.image_classification import mnist as tfds_mnist

from trainkit import host_tensorflow
from trainkit.sources import base

IDX_FILES = {
    'train': ('train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz'),
    'test': ('t10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz'),
}
IDX_DATASETS = ('mnist', 'fashion_mnist', 'kmnist')
_UBYTE = 0x08  # IDX type code of unsigned bytes, the only one MNIST uses.


def _check_header(path, raw: bytes, expected_ndim: int) -> tuple:
  """The shape an IDX header declares; DataError if it is not unsigned bytes of that rank."""
  if len(raw) < 4:
    raise base.DataError(f'{path} is too short to be an IDX file ({len(raw)} bytes)')
  zero, dtype, ndim = struct.unpack('>HBB', raw[:4])
  if zero != 0 or dtype != _UBYTE or ndim != expected_ndim:
    raise base.DataError(
        f'{path}: bad IDX magic number 0x{int.from_bytes(raw[:4], "big"):08x},'
        f' expected 0x{_UBYTE << 8 | expected_ndim:08x}')
  if len(raw) < 4 + 4 * ndim:
    raise base.DataError(f'{path}: truncated IDX header')
  return struct.unpack(f'>{ndim}I', raw[4:4 + 4 * ndim])


def _read(path, size: int = -1) -> bytes:
  """The first `size` (all: -1) uncompressed bytes of a gzip file."""
  if not os.path.isfile(path):
    raise base.DataError(f'missing file {path}')
  try:
    with gzip.open(path, 'rb') as f:
      return f.read(size)
  except (OSError, EOFError) as e:
    raise base.DataError(f'{path} is not a readable gzip file ({e})') from None


def read_idx(path, expected_ndim):
  """Reads a gzipped IDX file of unsigned bytes, validating its header.

  Args:
    path: the `.gz` file.
    expected_ndim: 3 for images (count, rows, cols), 1 for labels.

  Returns:
    A uint8 numpy array shaped as the header says.

  Raises:
    DataError: the file is missing, not gzip, or its header and payload disagree.
  """
  raw = _read(path)
  shape = _check_header(path, raw, expected_ndim)
  header = 4 + 4 * expected_ndim
  size = int(np.prod(shape))
  if len(raw) - header != size:
    raise base.DataError(
        f'{path}: header says shape {shape} ({size} bytes) but the payload has'
        f' {len(raw) - header} bytes (truncated or corrupt)')
  return np.frombuffer(raw, np.uint8, offset=header).reshape(shape)


def _check_split_headers(manual_dir, split) -> None:
  """What the headers of `split`'s files say, checked without reading the payload."""
  image_file, label_file = (os.path.join(manual_dir, f) for f in IDX_FILES[split])
  images = _check_header(image_file, _read(image_file, 16), 3)
  labels = _check_header(label_file, _read(label_file, 8), 1)
  if images[1:] != (28, 28):
    raise base.DataError(f'{image_file}: images are {images[1:]}, expected (28, 28)')
  if images[0] != labels[0]:
    raise base.DataError(f'{image_file} has {images[0]} images but {label_file} '
                    f'has {labels[0]} labels')


def load_idx_split(manual_dir, split):
  """Returns validated (images [N, 28, 28, 1], labels [N]) for `split`."""
  image_file, label_file = (os.path.join(manual_dir, f) for f in IDX_FILES[split])
  images = read_idx(image_file, 3)
  labels = read_idx(label_file, 1)
  if images.shape[1:] != (28, 28):
    raise base.DataError(f'{image_file}: images are {images.shape[1:]}, expected (28, 28)')
  if len(images) != len(labels):
    raise base.DataError(f'{image_file} has {len(images)} images but {label_file} '
                    f'has {len(labels)} labels')
  if len(labels) == 0:
    raise base.DataError(f'{label_file} holds no examples')
  if labels.max() >= tfds_mnist.MNIST_NUM_CLASSES:
    raise base.DataError(f'{label_file}: label {labels.max()} out of range 0-9')
  return images[..., None], labels


def validate_manual_dir(dataset, manual_dir, payload: bool = True):
  """Checks `manual_dir` before any work; raises DataError naming the problem.

  With `payload=False` only the files' headers are read (a dataset already
  prepared from them needs no more, and reading every image costs time and
  memory in proportion to the dataset).
  """
  if not os.path.isdir(manual_dir):
    raise base.DataError(f'manual_dir={manual_dir!r} is not a directory')
  if dataset in IDX_DATASETS:
    for split in IDX_FILES:
      if payload:
        load_idx_split(manual_dir, split)
      else:
        _check_split_headers(manual_dir, split)


def _idx_builder_cls(dataset):
  """A builder that writes `dataset` under its registered name, from IDX files."""
  base = tfds.builder_cls(dataset)

  class IdxBuilder(base, skip_registration=True):
    name = base.name

    def _split_generators(self, dl_manager):
      return [
          tfds.core.SplitGenerator(
              name=split, gen_kwargs={'split': split})
          for split in IDX_FILES
      ]

    def _generate_examples(self, split):
      images, labels = load_idx_split(self._manual_dir, split)
      for index, (image, label) in enumerate(zip(images, labels)):
        yield index, {'image': image, 'label': int(label)}

  return IdxBuilder


@contextlib.contextmanager
def preparing(dataset: str, data_dir: str | None):
  """Held while `dataset` is prepared into `data_dir`.

  Processes sharing a data dir (a search's workers, started together) prepare
  it once: the others wait, then find it prepared.
  """
  root = os.path.expanduser(data_dir or tfds.core.constants.DATA_DIR)
  os.makedirs(root, exist_ok=True)
  with open(os.path.join(root, f'.{dataset}.prepare.lock'), 'a') as f:
    fcntl.lockf(f, fcntl.LOCK_EX)
    yield


def prepare(dataset, data_dir, manual_dir):
  """Prepares `dataset` into `data_dir` from `manual_dir`, offline.

  The files are validated first, so a bad `manual_dir` fails before any work;
  when the dataset is already prepared there (and left as it is), by their
  headers only.
  """
  validate_manual_dir(dataset, manual_dir, payload=False)
  if dataset in IDX_DATASETS:
    builder = _idx_builder_cls(dataset)(data_dir=data_dir, file_format='array_record')
    builder._manual_dir = manual_dir  # pylint: disable=protected-access
  else:
    builder = tfds.builder(dataset, data_dir=data_dir, file_format='array_record')
  if builder.is_prepared():
    return
  with preparing(dataset, data_dir):
    if builder.is_prepared():  # By another process while this one waited.
      return
    validate_manual_dir(dataset, manual_dir)
    host_tensorflow.tensorflow()  # Preparing writes through TensorFlow, on the host.
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(
            manual_dir=manual_dir, try_download_gcs=False))
