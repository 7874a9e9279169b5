"""Sweep: dropout and weight decay (AdamW) together, 3 epochs each.

  python sweep.py --config=configs/sweeps/regularization.py --workdir=/tmp/reg
"""

from trainkit.configs import default
from trainkit.search import sweeps


def get_config():
  """The base config every member starts from."""
  config = default.get_config()
  config.num_epochs = 3  # Enough for regularisation to show in eval loss.
  config.optimizer = 'adamw'  # Decoupled weight decay.
  config.plots = False  # One overlay plot for the whole sweep instead.
  return config


def get_sweep():
  """Dropout pairs zipped with decays; `model__dropout_rates` is model.dropout_rates."""
  return sweeps.zip_axes(
      model__dropout_rates=[(0.1, 0.1), (0.3, 0.4), (0.5, 0.5)],
      weight_decay=[0.0, 1e-4, 1e-3])
