"""Training, as the flax examples lay it out: the state, the step, `train_and_evaluate`.

The machinery lives in the library (trainkit/training/); these are its entry
points, for a reader who looks for them here.
"""

from trainkit.training.state import TrainState
from trainkit.training.state import create_train_state
from trainkit.training.step import train_step
from trainkit.training.train import train_and_evaluate

__all__ = ['TrainState', 'create_train_state', 'train_step', 'train_and_evaluate']
