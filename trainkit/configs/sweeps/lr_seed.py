"""Sweep: 4 peak learning rates x 2 seeds of the default model, 1 epoch each.

  python sweep.py --config=configs/sweeps/lr_seed.py --workdir=/tmp/sweep
"""

from trainkit.configs import default
from trainkit.search import sweeps


def get_config():
  """The base config every member starts from."""
  config = default.get_config()
  config.num_epochs = 1  # A short budget per member: compare rates, not final accuracy.
  config.warmup_epochs = 0.1  # Warmup < num_epochs.
  config.plots = False  # One overlay plot for the whole sweep instead.
  return config


def get_sweep():
  """One dict of dotted overrides per member."""
  return sweeps.product(learning_rate=[3e-4, 1e-3, 3e-3, 1e-2], seed=[0, 1])
