"""TensorFlow, for the two commands that need it, kept off the accelerators.

Only preparing a TFDS dataset the first time and exporting a SavedModel
import TensorFlow; nothing else may, and it must never take device memory
that JAX needs.
"""

import functools

from trainkit import extras


@functools.cache
def tensorflow():
  """TensorFlow, imported on first use, with no GPU or TPU visible to it."""
  extras.require('preparing this TFDS dataset or a SavedModel (TensorFlow)', 'tensorflow')
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], 'GPU')
  tf.config.set_visible_devices([], 'TPU')
  return tf
