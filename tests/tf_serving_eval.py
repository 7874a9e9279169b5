"""Test-split accuracy of an exported SavedModel, with TensorFlow alone.

  python tests/tf_serving_eval.py SAVED_MODEL_DIR MNIST_IDX_DIR [SCORES.npy]

JAX (and everything built on it) is made unimportable first, so a pass shows
that the SavedModel needs nothing but TensorFlow. Reads the raw uint8 t10k IDX
files and prints the accuracy (and saves every image's scores, if asked).
"""

import sys

for _name in ('jax', 'jaxlib', 'flax', 'optax', 'orbax'):
  sys.modules[_name] = None  # `import jax` now raises ImportError.

import gzip  # pylint: disable=g-import-not-at-top,wrong-import-position  # noqa: E402
import os  # pylint: disable=g-import-not-at-top,wrong-import-position  # noqa: E402

import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position  # noqa: E402
import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-position  # noqa: E402


def read_idx(path):
  with gzip.open(path) as f:
    data = f.read()
  ndim = data[3]
  shape = np.frombuffer(data[4:4 + 4 * ndim], '>u4')
  return np.frombuffer(data[4 + 4 * ndim:], np.uint8).reshape(shape)


def main(saved_model, idx_dir, scores_out=None):
  images = read_idx(os.path.join(idx_dir, 't10k-images-idx3-ubyte.gz'))[..., None]
  labels = read_idx(os.path.join(idx_dir, 't10k-labels-idx1-ubyte.gz'))
  serve = tf.saved_model.load(saved_model).signatures['serving_default']
  scores = np.concatenate([
      serve(images=tf.constant(images[i:i + 1000]))['scores'].numpy()
      for i in range(0, len(images), 1000)])
  assert scores.shape == (len(labels), 10), scores.shape
  if scores_out:
    np.save(scores_out, scores)
  print(f'accuracy {np.mean(scores.argmax(-1) == labels):.6f}')


if __name__ == '__main__':
  main(*sys.argv[1:])
