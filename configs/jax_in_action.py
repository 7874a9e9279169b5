""""JAX in Action" (Sapunov), chapter 2: an MNIST MLP in pure JAX.

The config lives in the package (trainkit/configs/jax_in_action.py), which installs
it; this file is its place in the flax-examples layout.
"""

from trainkit.configs.jax_in_action import get_config

__all__ = ['get_config']
