"""Preparing TFDS datasets from local source files, with no network access.

For the MNIST family (`mnist`, `fashion_mnist`, `kmnist`) the source files are
the four IDX `.gz` files of the original distribution. TFDS's own builder would
download them and verify their published checksums; here they are read from
`manual_dir` and validated by format instead (magic number, dimensions, counts,
label range), so a re-compressed or recovered copy is accepted. The examples are
written into the TFDS data dir under the dataset's own name and version, so the
rest of the program reads them through the ordinary `tfds.builder` path. They
are written as ArrayRecord, which is read by index without TensorFlow
(trainkit/data/sources/tfds_source.py).

Nothing here imports TensorFlow for these datasets either: the images are
handed to TFDS already encoded as PNG (by OpenCV, a thread per core, while
TFDS's writer serialises), where TFDS would encode them one by one through
TensorFlow.

A run that keeps its arrays on the device needs no preparation at all:
`idx_arrays` reads a split from its IDX files in the very order TFDS writes
its examples (a hash of each example's key, salted with the split's name:
`hash_order`), so the run sees the same examples in the same order as one
that decodes the prepared dataset. Only reading records (a streamed run)
prepares it.
"""

from concurrent import futures
import contextlib
import fcntl
import glob
import gzip
import io
import os
import shutil
import struct

import numpy as np

from trainkit.data.sources import base
from trainkit.data.sources import host_tensorflow

IDX_FILES = {
    'train': ('train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz'),
    'test': ('t10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz'),
}
IDX_DATASETS = ('mnist', 'fashion_mnist', 'kmnist')
_UBYTE = 0x08  # IDX type code of unsigned bytes, the only one MNIST uses.
_NUM_CLASSES = 10  # Of every dataset in IDX_DATASETS.


def tfds():
  """TensorFlow Datasets, imported where it is used.

  Its import takes half a second that a command reading cached IDX arrays
  never needs.
  """
  import tensorflow_datasets  # pylint: disable=g-import-not-at-top
  return tensorflow_datasets


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


def write_idx(path, array) -> None:
  """Writes `array` as a gzipped IDX file of unsigned bytes (generated datasets)."""
  header = struct.pack('>HBB', 0, _UBYTE, array.ndim) + struct.pack(
      f'>{array.ndim}I', *array.shape)
  with gzip.open(path, 'wb', compresslevel=1) as f:
    f.write(header)
    f.write(np.ascontiguousarray(array, np.uint8).tobytes())


def _check_split_headers(manual_dir, split) -> int:
  """How many examples the headers of `split`'s files say, checked without reading the payload."""
  image_file, label_file = (os.path.join(manual_dir, f) for f in IDX_FILES[split])
  images = _check_header(image_file, _read(image_file, 16), 3)
  labels = _check_header(label_file, _read(label_file, 8), 1)
  if images[1:] != (28, 28):
    raise base.DataError(f'{image_file}: images are {images[1:]}, expected (28, 28)')
  if images[0] != labels[0]:
    raise base.DataError(f'{image_file} has {images[0]} images but {label_file} '
                    f'has {labels[0]} labels')
  return images[0]


def idx_sizes(manual_dir) -> dict:
  """{split: examples} as the IDX files' headers say (DataError if they are not IDX files)."""
  return {split: _check_split_headers(manual_dir, split) for split in IDX_FILES}


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
  if labels.max() >= _NUM_CLASSES:
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


# Images encoded per task of the encoding threads.
_ENCODE_CHUNK = 1024


def _png(images) -> list:
  """PNG bytes of each image ([n, h, w, 1] uint8), losslessly.

  With OpenCV (the `tfds` extra) the fastest; else Pillow (the core install).
  Either way the prepared dataset decodes to the same pixels, in the same
  order (TFDS orders examples by their keys), so training sees the same data.
  """
  try:
    import cv2  # pylint: disable=g-import-not-at-top
  except ImportError:
    return [_pillow_png(image) for image in images]
  # Unfiltered, fastest deflate: the quickest to write, yet smaller than
  # OpenCV's defaults for such images.
  options = [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_NONE, cv2.IMWRITE_PNG_COMPRESSION, 1]
  out = []
  for image in images:
    ok, encoded = cv2.imencode('.png', image, options)
    if not ok:
      raise base.DataError(f'OpenCV could not encode an image of shape {image.shape} as PNG')
    out.append(encoded.tobytes())
  return out


def _pillow_png(image) -> bytes:
  """PNG bytes of one image [h, w, 1] uint8, by Pillow (fastest deflate, no filter)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  buffer = io.BytesIO()
  Image.fromarray(image[..., 0]).save(buffer, format='PNG', compress_level=1)
  return buffer.getvalue()


def encode_pngs(images):
  """Yields the PNG bytes of each of `images`, in order, encoded ahead on every core.

  OpenCV lets go of the GIL while it encodes, so the threads run beside the
  consumer (TFDS's writer, which holds it).
  """
  with futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
    chunks = [pool.submit(_png, images[lo:lo + _ENCODE_CHUNK])
              for lo in range(0, len(images), _ENCODE_CHUNK)]
    try:
      for chunk in chunks:
        yield from chunk.result()
    finally:  # An abandoned generator encodes no further.
      for chunk in chunks:
        chunk.cancel()


def _idx_builder_cls(dataset):
  """A builder that writes `dataset` under its registered name, from IDX files.

  `sources` maps each split to its validated (images, labels); example i is
  keyed i, which fixes the order TFDS writes them in (`hash_order`).
  """
  base_cls = tfds().builder_cls(dataset)

  class IdxBuilder(base_cls, skip_registration=True):
    name = base_cls.name

    def __init__(self, sources, **kwargs):
      super().__init__(**kwargs)
      self.sources = sources

    def _split_generators(self, dl_manager):
      return [
          tfds().core.SplitGenerator(
              name=split, gen_kwargs={'split': split})
          for split in IDX_FILES
      ]

    def _generate_examples(self, split):
      images, labels = self.sources[split]
      for index, (png, label) in enumerate(zip(encode_pngs(images), labels.tolist())):
        yield index, {'image': png, 'label': label}

  return IdxBuilder


def hash_order(split: str, count: int) -> np.ndarray:
  """The order in which TFDS writes the examples keyed 0 .. count-1 of `split`.

  TFDS sorts a split's examples by an md5 hash of each key salted with the
  split's name (tfds.core.hashing; changing it would change every dataset's
  order, which TFDS does only with a new major version). `idx_arrays` relies
  on it; the tests hold it to what a preparation writes.
  """
  from tensorflow_datasets.core import hashing  # pylint: disable=g-import-not-at-top
  hasher = hashing.Hasher(split)
  hashes = [hasher.hash_key(index) for index in range(count)]
  return np.array(sorted(range(count), key=hashes.__getitem__), np.int64)


def idx_arrays(manual_dir, split) -> dict:
  """{'x', 'y' (int32)} of `split` read from its IDX files, in the order TFDS would write them."""
  images, labels = load_idx_split(manual_dir, split)
  order = hash_order(split, len(labels))
  return {'x': images[order], 'y': labels[order].astype(np.int32)}


def idx_files(manual_dir, split) -> list:
  """The paths of `split`'s IDX files."""
  return [os.path.join(manual_dir, f) for f in IDX_FILES[split]]


@contextlib.contextmanager
def preparing(dataset: str, data_dir: str | None):
  """Held while `dataset` is prepared into `data_dir`.

  Processes sharing a data dir (a search's workers, started together) prepare
  it once: the others wait, then find it prepared. What a preparation killed
  before its end left (TFDS writes into an `incomplete.*` folder and renames
  it when done) is removed first: nobody else can be writing it.
  """
  root = os.path.expanduser(data_dir or tfds().core.constants.DATA_DIR)
  os.makedirs(root, exist_ok=True)
  with open(os.path.join(root, f'.{dataset}.prepare.lock'), 'a') as f:
    fcntl.lockf(f, fcntl.LOCK_EX)
    for leftover in glob.glob(os.path.join(root, dataset, 'incomplete.*')):
      shutil.rmtree(leftover, ignore_errors=True)
    yield


def prepare(dataset, data_dir, manual_dir) -> None:
  """Prepares `dataset` into `data_dir` from `manual_dir`, offline.

  The files are validated first, so a bad `manual_dir` fails before any work;
  when the dataset is already prepared there (and left as it is), by their
  headers only.
  """
  validate_manual_dir(dataset, manual_dir, payload=False)
  builder = tfds().builder(dataset, data_dir=data_dir, file_format='array_record')
  if builder.is_prepared():
    return
  with preparing(dataset, data_dir):
    if builder.is_prepared():  # By another process while this one waited.
      return
    download_config = tfds().download.DownloadConfig(manual_dir=manual_dir,
                                                   try_download_gcs=False)
    if dataset not in IDX_DATASETS:
      host_tensorflow.tensorflow()  # Its builder may encode through TensorFlow.
      builder.download_and_prepare(download_config=download_config)
      return
    sources = {split: load_idx_split(manual_dir, split) for split in IDX_FILES}
    builder = _idx_builder_cls(dataset)(sources, data_dir=data_dir,
                                        file_format='array_record')
    builder.download_and_prepare(download_config=download_config)
