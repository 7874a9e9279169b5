"""A search's Optuna sampler and pruner, as its Search describes them."""

import contextlib
import warnings

import numpy as np
import optuna

from trainkit.search import space as search_space


@contextlib.contextmanager
def experimental():
  """Silences Optuna's experimental-feature warnings inside the block.

  Heartbeats, retries and the matplotlib plots are marked experimental; the
  version is pinned and they are tested here, and the warning would repeat
  at every poll of the queue.
  """
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', optuna.exceptions.ExperimentalWarning)
    yield


# The samplers seeded per trial. QMC's points follow a counter the study
# keeps; a new QMC sampler per trial would draw its random first points anew
# from one seed after every failed trial.
PER_TRIAL_SEEDS = ('tpe', 'random')


def sampler(search: search_space.Search, trial_number: int | None = None):
  """The search's sampler; with `trial_number`, seeded for that trial alone (tpe, random).

  Every worker builds its own sampler: seeded by the search's seed alone,
  workers starting together (or one restarted) would draw the same values
  for their trials. Seeded by (seed, trial number), each trial's draws are
  its own, and a lone worker's search is the same every time.
  """
  seed = search.seed
  if trial_number is not None:
    seed = int(np.random.SeedSequence([search.seed, trial_number]).generate_state(1)[0])
  if search.sampler == 'tpe':
    with experimental():  # Multivariate: learning rate and weight decay interact.
      return optuna.samplers.TPESampler(seed=seed, multivariate=True,
                                        n_startup_trials=search.startup_trials)
  if search.sampler == 'qmc':
    with experimental():
      return optuna.samplers.QMCSampler(seed=seed)
  # 'grid' trials have every value fixed when queued: the sampler draws nothing.
  return optuna.samplers.RandomSampler(seed=seed)


def pruner(search: search_space.Search, num_epochs: int):
  """The search's pruner; epochs are its steps, from 1."""
  if search.pruner == 'hyperband':
    return optuna.pruners.HyperbandPruner(search.min_epochs, num_epochs,
                                          search.reduction_factor)
  if search.pruner == 'successive_halving':
    return optuna.pruners.SuccessiveHalvingPruner(search.min_epochs,
                                                  search.reduction_factor)
  if search.pruner == 'median':
    # Epochs are reported from 1, and Optuna prunes from step n_warmup_steps on.
    return optuna.pruners.MedianPruner(n_startup_trials=search.startup_trials,
                                       n_warmup_steps=search.min_epochs)
  return optuna.pruners.NopPruner()
