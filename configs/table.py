"""Your own table: an MLP on the columns of a CSV or Parquet file.

The config lives in the package (trainkit/configs/table.py), which installs
it; this file is its place in the flax-examples layout.
"""

from trainkit.configs.table import get_config

__all__ = ['get_config']
