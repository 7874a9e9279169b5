"""Sweep: 4 peak learning rates x 2 seeds of the default model, 1 epoch each.

The config lives in the package (trainkit/configs/sweeps/lr_seed.py), which installs
it; this file is its place in the flax-examples layout.
"""

from trainkit.configs.sweeps.lr_seed import get_config
from trainkit.configs.sweeps.lr_seed import get_sweep

__all__ = ['get_config', 'get_sweep']
