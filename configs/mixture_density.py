"""The Elegy example's mixture density network, on its 1-D inverse problem.

The config lives in the package (trainkit/configs/mixture_density.py), which installs
it; this file is its place in the flax-examples layout.
"""

from trainkit.configs.mixture_density import get_config

__all__ = ['get_config']
