"""MNIST with the built-in CNN (trainkit/models/cnn.py): two conv blocks and a Dense layer.

The flax MNIST example's network, with BatchNorm and dropout, Adam with a
warmup and cosine decay; the default's split (5,000 training images held
out for validation).
"""

from trainkit.configs import default


def get_config():
  """The CNN on MNIST."""
  config = default.get_config()
  config.model.module = 'cnn'  # trainkit/models/cnn.py.
  config.model.args = {'channels': (32, 64), 'dense': 256, 'dropout': 0.3}
  config.learning_rate = 2e-3  # Peak, after the warmup.
  config.num_epochs = 10
  # One step per device call: on CPU, XLA runs a convolution's weight gradient
  # 8x slower inside a loop of steps (jax#12868). On a GPU, raise it.
  config.steps_per_call = 1
  return config
