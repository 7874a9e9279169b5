"""Search: learning rate, weight decay and dropout of the default model, with pruning.

The config lives in the package (trainkit/configs/sweeps/search.py), which installs
it; this file is its place in the flax-examples layout.
"""

from trainkit.configs.sweeps.search import get_config
from trainkit.configs.sweeps.search import get_search

__all__ = ['get_config', 'get_search']
