"""A CNN for images: the flax MNIST example's, with BatchNorm and dropout.

The example's layers (a 3x3 Conv of 32 and one of 64 channels, each followed
by a 2x2 pool, then a Dense layer of 256), with BatchNorm after each
convolution, max rather than average pooling, and dropout around the Dense
layer: features for the task's head. `configs/mnist_cnn.py` trains it on
MNIST.
"""

from collections.abc import Sequence

import flax.linen as nn


class CNN(nn.Module):
  """Convolutional features of images [batch, h, w, c]."""
  channels: Sequence[int] = (32, 64)  # Per block.
  dense: int = 256  # Width of the Dense layer on the flattened features.
  dropout: float = 0.3  # Before and after the Dense layer.
  momentum: float = 0.9  # BatchNorm's running-average decay.
  dtype: str = 'float32'  # The layers' compute dtype (the run's `dtype`).

  @nn.compact
  def __call__(self, x, *, train: bool):
    norm = lambda: nn.BatchNorm(use_running_average=not train, momentum=self.momentum,
                                dtype=self.dtype)
    for width in self.channels:
      x = nn.relu(norm()(nn.Conv(width, (3, 3), use_bias=False, dtype=self.dtype)(x)))
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = x.reshape((x.shape[0], -1))
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    x = nn.relu(nn.Dense(self.dense, dtype=self.dtype)(x))
    return nn.Dropout(self.dropout, deterministic=not train)(x)
