"""Offline preparation of MNIST from IDX files, and its validation."""

import io
import os
import sys

import jax
import numpy as np
import pytest
from PIL import Image
import tensorflow_datasets as tfds

from tests.helpers import tiny_config
from tests.helpers import write_idx as _write_idx
from tests.helpers import write_mnist as _write_mnist
from trainkit.data import pipeline as input_pipeline
from trainkit.data import sources
from trainkit.data.sources import tfds_prepare as offline_data
from trainkit.data.sources import tfds_source


def _examples(data, split):
  """(image bytes, label) of every example of `split`, in either input mode."""
  if data.mode == 'stream':
    source = getattr(data, split)
    read = source.read(range(len(source)))
    return [(image[..., 0].tobytes(), int(label))
            for image, label in zip(read['x'], read['y'])]
  arrays = jax.device_get(getattr(data, split))
  if split == 'test':  # Stacked eval batches: keep the unmasked examples.
    mask = arrays.pop('mask').reshape(-1)
    arrays = {k: v.reshape(-1, *v.shape[2:])[mask] for k, v in arrays.items()}
  return [(image[..., 0].tobytes(), int(label))
          for image, label in zip(arrays['x'], arrays['y'])]


@pytest.mark.parametrize('input_mode', ['device', 'stream'])
def test_prepares_mnist_from_idx_files_and_reads_it_through_tfds(tmp_path, input_mode):
  manual_dir, data_dir = tmp_path / 'idx', tmp_path / 'tfds'
  manual_dir.mkdir()
  arrays = _write_mnist(manual_dir)
  config = tiny_config(manual_dir=str(manual_dir), data_dir=str(data_dir),
                       input_mode=input_mode)
  data = input_pipeline.create_datasets(config)
  assert data.mode == input_mode
  assert (data.num_train, data.num_test, data.num_classes) == (30, 12, 10)
  # Streamed, it is prepared under TFDS's own name and version; kept on the device,
  # read from the IDX files and not prepared.
  assert (data_dir / 'mnist').is_dir() == (input_mode == 'stream')
  for split in ('train', 'test'):
    # TFDS stores examples in its own (hashed) order: compare as multisets.
    read = sorted(_examples(data, split))
    images, labels = arrays[split]
    assert read == sorted((image.tobytes(), int(label)) for image, label in zip(images, labels))
  if input_mode == 'stream':  # The same dataset is found again with no manual_dir.
    again = input_pipeline.create_datasets(tiny_config(data_dir=str(data_dir)))
    assert again.num_train == 30


@pytest.mark.parametrize('damage, message', [
    ('missing', 'missing file'),
    ('magic', 'bad IDX magic number'),
    ('truncated', 'truncated or corrupt'),
    ('not_gzip', 'not a readable gzip file'),
    ('count', 'has 30 images but'),
    ('label_range', 'out of range'),
])
def test_rejects_damaged_idx_files(tmp_path, damage, message):
  _write_mnist(tmp_path)
  images_path = tmp_path / 'train-images-idx3-ubyte.gz'
  labels_path = tmp_path / 'train-labels-idx1-ubyte.gz'
  images = np.zeros((30, 28, 28), np.uint8)
  if damage == 'missing':
    os.remove(labels_path)
  elif damage == 'magic':
    _write_idx(images_path, np.zeros(30, np.uint8))  # A labels file.
  elif damage == 'truncated':
    _write_idx(images_path, images, truncate=100)
  elif damage == 'not_gzip':
    images_path.write_bytes(b'not gzip at all')
  elif damage == 'count':
    _write_idx(labels_path, np.zeros(29, np.uint8))
  elif damage == 'label_range':
    _write_idx(labels_path, np.full(30, 10, np.uint8))
  with pytest.raises(sources.DataError, match=message):
    offline_data.validate_manual_dir('mnist', str(tmp_path))


def test_a_prepared_dataset_reads_only_the_headers_of_manual_dir(tmp_path):
  manual_dir, data_dir = tmp_path / 'idx', str(tmp_path / 'tfds')
  manual_dir.mkdir()
  _write_mnist(manual_dir)
  offline_data.prepare('mnist', data_dir, str(manual_dir))
  images_path = manual_dir / 'train-images-idx3-ubyte.gz'
  # A payload cut short is not read again once prepared ...
  _write_idx(images_path, np.zeros((30, 28, 28), np.uint8), truncate=100)
  offline_data.prepare('mnist', data_dir, str(manual_dir))
  # ... but files that are not these (by their headers) are still refused.
  _write_idx(images_path, np.zeros((31, 28, 28), np.uint8))
  with pytest.raises(sources.DataError, match='has 31 images but'):
    offline_data.prepare('mnist', data_dir, str(manual_dir))
  _write_idx(images_path, np.zeros(30, np.uint8))
  with pytest.raises(sources.DataError, match='bad IDX magic number'):
    offline_data.prepare('mnist', data_dir, str(manual_dir))


def test_no_network_and_no_data_says_how_to_supply_it(tmp_path, monkeypatch):
  """A download that fails after the host looked reachable (the probe passed)."""
  tried = []

  def offline(self, *args, **kwargs):
    tried.append(self.name)
    raise ConnectionError('Failed to resolve host')
  monkeypatch.setattr(tfds_source, '_check_reachable', lambda config: None)
  monkeypatch.setattr(tfds.core.DatasetBuilder, 'download_and_prepare', offline)
  with pytest.raises(sources.DataError) as e:
    input_pipeline.create_datasets(tiny_config(data_dir=str(tmp_path)))
  assert tried == ['mnist']  # The wrapped error, not the probe's.
  assert str(e.value).startswith("could not download dataset='mnist' (ConnectionError)")
  assert 'manual_dir' in str(e.value) and 'train-images-idx3-ubyte.gz' in str(e.value)


def test_real_mnist_files_validate(mnist_dir):
  for split, n in (('train', 60_000), ('test', 10_000)):
    images, labels = offline_data.load_idx_split(mnist_dir, split)
    assert images.shape == (n, 28, 28, 1) and labels.shape == (n,)


def test_without_opencv_the_pngs_are_pillows_and_decode_to_the_same_pixels(monkeypatch):
  # The core install has no OpenCV: the prepared dataset must hold the same images.
  images = np.random.default_rng(0).integers(0, 256, (5, 28, 28, 1), dtype=np.uint8)
  with_opencv = offline_data._png(images)  # pylint: disable=protected-access
  monkeypatch.setitem(sys.modules, 'cv2', None)  # `import cv2` raises ImportError.
  with_pillow = offline_data._png(images)  # pylint: disable=protected-access
  assert with_pillow != with_opencv  # Another encoder wrote them.
  decode = lambda data: np.asarray(Image.open(io.BytesIO(data)))
  for image, a, b in zip(images, with_opencv, with_pillow):
    assert np.array_equal(decode(a), image[..., 0]) and np.array_equal(decode(b), image[..., 0])
