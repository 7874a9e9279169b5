"""The input, as the flax examples lay it out: `create_datasets(config)`.

The machinery lives in the library (trainkit/data/pipeline.py and its
sources in trainkit/data/sources/); this is its entry point.
"""

from trainkit.data.pipeline import Data
from trainkit.data.pipeline import create_datasets

__all__ = ['Data', 'create_datasets']
