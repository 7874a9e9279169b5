"""The model, as the flax examples lay it out: the MLP and `create_model`.

It lives in the library (trainkit/models/mlp.py); these are its entry points.
"""

from trainkit.models.mlp import MLP
from trainkit.models.mlp import create_model

__all__ = ['MLP', 'create_model']
