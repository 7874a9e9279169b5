"""The JAX documentation's MNIST example ("Training a simple neural network").

The config lives in the package (trainkit/configs/jax_docs.py), which installs
it; this file is its place in the flax-examples layout.
"""

from trainkit.configs.jax_docs import get_config

__all__ = ['get_config']
