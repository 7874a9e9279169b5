"""Default config: the Flax+Optax MNIST tutorial's MLP, modernised.

The config lives in the package (trainkit/configs/default.py), which installs
it; this file is its place in the flax-examples layout.
"""

from trainkit.configs.default import get_config

__all__ = ['get_config']
