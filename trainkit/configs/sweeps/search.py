"""Search: learning rate, weight decay and dropout of the default model, with pruning.

  python sweep.py --config=configs/sweeps/search.py --workdir=/tmp/search

Optuna's TPE draws each trial's values; successive halving stops trials
whose validation accuracy trails after their first epoch. More workers (this
command again, here or on other machines with --storage) share the trials.
"""

from trainkit.configs import default
from trainkit.search import space as search_space


def get_config():
  """The base config every trial starts from; num_epochs is one trial's budget."""
  config = default.get_config()
  config.num_epochs = 5  # The budget of a trial that is never pruned.
  config.optimizer = 'adamw'  # Decoupled weight decay, searched below.
  config.plots = False  # The search draws its own plots.
  config.progress = 'off'  # Many trials: one log line per epoch, no bars.
  return config


def get_search():
  """The space, the budget and the strategy (trainkit/search/space.py)."""
  return search_space.Search(
      space={
          'learning_rate': search_space.Float(3e-4, 1e-2, log=True),
          'weight_decay': search_space.Float(1e-5, 1e-1, log=True),
          # One rate for both hidden layers, in steps of 0.05.
          'model.dropout_rates': search_space.Float(0.0, 0.5, step=0.05),
      },
      num_trials=20,
      sampler='tpe',
      startup_trials=4,
      # Every trial trains 1 epoch; those in the best fifth so far train on to
      # the end (the next rung, 5 epochs, is the budget: no second cut).
      pruner='successive_halving',
      reduction_factor=5,
  )
