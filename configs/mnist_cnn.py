"""MNIST with the built-in CNN.

The config lives in the package (trainkit/configs/mnist_cnn.py), which installs
it; this file is its place in the flax-examples layout.
"""

from trainkit.configs.mnist_cnn import get_config

__all__ = ['get_config']
