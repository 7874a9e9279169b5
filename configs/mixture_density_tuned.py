"""The mixture density network with more data, more components and a schedule.

The config lives in the package (trainkit/configs/mixture_density_tuned.py), which installs
it; this file is its place in the flax-examples layout.
"""

from trainkit.configs.mixture_density_tuned import get_config

__all__ = ['get_config']
