"""Sweep: dropout and weight decay (AdamW) together, 3 epochs each.

The config lives in the package (trainkit/configs/sweeps/regularization.py), which installs
it; this file is its place in the flax-examples layout.
"""

from trainkit.configs.sweeps.regularization import get_config
from trainkit.configs.sweeps.regularization import get_sweep

__all__ = ['get_config', 'get_sweep']
