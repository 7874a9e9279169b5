"""Warm start: a new run's parameters and BatchNorm statistics from another run.

`init_from=WORKDIR` (or `WORKDIR:STEP`, `WORKDIR:best`, `WORKDIR:latest`, the
default) loads the parameters and BatchNorm statistics of that checkpoint
into a freshly initialised train state: the optimizer state and the step
counter stay fresh. Arrays whose path ('params/Dense_2/kernel', ...) matches
`init_exclude` (a regular expression) keep their fresh initialisation, so a
head of another shape can be trained on top of the rest. Any other array
that the checkpoint lacks, or holds with another shape, is refused in one
line naming it. Only a run that starts from scratch is warm-started; a run
that resumes its own checkpoints ignores `init_from`, and one whose
checkpoints were all broken and set aside starts from scratch again
(training/run.py).
"""

import os
import re

from absl import logging
import flax
import numpy as np
import optax

from trainkit import errors
from trainkit.checkpoints import manager as checkpointing
from trainkit.tasks import selection
from trainkit.workdirs import config_history
from trainkit.workdirs import layout as workdir_lib


def parse(init_from: str) -> tuple:
  """(workdir, 'latest' | 'best' | step) named by `init_from`."""
  workdir, _, which = init_from.rpartition(':')
  if not workdir or not (which in ('latest', 'best') or which.isdigit()):
    workdir, which = init_from, 'latest'
  return workdir, int(which) if which.isdigit() else which


def check(config, workdir: str) -> None:
  """Refuses an `init_from` that names no workdir with checkpoints (before any work).

  Only where it will be read: a run in `workdir` that has no readable
  checkpoint of its own yet. Once it has, the source matters no more (it
  may be gone). Checkpoints that read but do not restore are found later:
  Run._restore checks the source again before setting them aside.
  """
  if config.init_from and not checkpointing.readable_steps(workdir):
    check_source(config.init_from)


def check_source(init_from: str) -> None:
  """Refuses an `init_from` without the checkpoint it names (a step, :best, :latest).

  Before any work: the step is chosen as the warm start will choose it.
  """
  _read_source(init_from, read=False)


def _read_source(init_from: str, read: bool = True):
  """(step, its state dict or None) of the checkpoint `init_from` names."""
  workdir, which = parse(init_from)
  if not os.path.isdir(workdir_lib.checkpoint_dir(workdir)):  # Not made by a manager.
    raise errors.ConfigError(
        f'init_from={init_from!r}: {workdir!r} has no checkpoints folder (a trained '
        'workdir, optionally with :STEP, :best or :latest)')
  # "best" as the source run chose it: by its own metric and split.
  best_metric = selection.best_metric(config_history.stored(workdir) or {})
  manager = checkpointing.create_manager(workdir_lib.checkpoint_dir(workdir), 1,
                                         best_metric=best_metric)
  try:
    step = checkpointing.choose_step(manager, which, best_metric, f'init_from={init_from!r}')
    return step, (checkpointing.read_state_dict(manager, step) if read else None)
  finally:
    manager.close()


def load(config, state):
  """`state` with the params and batch_stats of `config.init_from`'s checkpoint."""
  step, saved = _read_source(config.init_from)
  exclude = re.compile(config.init_exclude) if config.init_exclude else None
  loaded, kept_fresh, unused = {}, [], []
  for collection in ('params', 'batch_stats'):
    fresh = flax.traverse_util.flatten_dict(
        flax.serialization.to_state_dict(getattr(state, collection)), sep='/')
    theirs = flax.traverse_util.flatten_dict(
        (_as_evaluated(saved) if collection == 'params' else saved.get(collection)) or {},
        sep='/')
    out = {}
    for key, value in fresh.items():
      path = f'{collection}/{key}'
      if exclude and exclude.search(path):
        out[key] = value
        kept_fresh.append(path)
        continue
      if key not in theirs:
        raise errors.ConfigError(
            f'init_from={config.init_from!r}: checkpoint {step} has no {path}; leave it '
            'freshly initialised with init_exclude')
      if (theirs[key].shape, theirs[key].dtype) != (value.shape, value.dtype):
        raise errors.ConfigError(
            f'init_from={config.init_from!r}: {path} is {theirs[key].shape} '
            f'{np.dtype(theirs[key].dtype).name} in checkpoint {step} but {value.shape} '
            f'{np.dtype(value.dtype).name} here; leave it freshly initialised with '
            'init_exclude')
      out[key] = np.asarray(theirs[key])
    unused += [f'{collection}/{key}' for key in theirs if key not in fresh]
    loaded[collection] = flax.serialization.from_state_dict(
        getattr(state, collection), flax.traverse_util.unflatten_dict(out, sep='/'))
  _report(config, step, kept_fresh, unused)
  return state.replace(**loaded)


def _as_evaluated(saved: dict):
  """The source's parameters as it evaluated, ranked and exported them.

  Their average (ema_decay) where it kept one, else the parameters.
  """
  # Where optimizers.params_for_eval finds it in a state, in the state's dict.
  averaged = optax.tree_utils.tree_get(saved.get('opt_state') or {}, 'ema_params')
  if averaged is not None:
    logging.info('Warm start: the source kept an average of its parameters (ema_decay); '
                 'that average is loaded, as it evaluated with it.')
  return saved.get('params') if averaged is None else averaged


def _report(config, step: int, kept_fresh: list, unused: list) -> None:
  """Refuses an init_exclude that matches nothing; says what stayed fresh and went unused.

  A pattern that matches nothing is a typo: every array would be loaded,
  the one meant to stay fresh too.
  """
  if config.init_exclude and not kept_fresh:
    raise errors.ConfigError(
        f'init_exclude={config.init_exclude!r} matches none of the model\'s arrays, so '
        'every one would be loaded; they are named as params/<layer>/<array> (see '
        '--mode=summary)')
  if kept_fresh:
    logging.info('Warm start: freshly initialised, not loaded: %s.', ', '.join(kept_fresh))
  if unused:
    logging.warning('Warm start from %r (checkpoint %d): %d of its arrays have no place in '
                    'this model and are not used: %s', config.init_from, step, len(unused),
                    ', '.join(unused[:8]) + (', ...' if len(unused) > 8 else ''))


def check_config(config) -> None:
  """Refuses init_from / init_exclude that are not strings, or a pattern that is not one."""
  for name in ('init_from', 'init_exclude'):
    errors.require(isinstance(config[name], str), name, config[name],
                   "must be a string ('' = none)")
  if config.init_exclude:
    try:
      re.compile(config.init_exclude)
    except re.error as e:
      raise errors.ConfigError(
          f'init_exclude={config.init_exclude!r}: not a regular expression ({e})') from None
