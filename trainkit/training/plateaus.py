"""Early stopping, and a smaller learning rate, when the validation metric stalls.

Both act at the end of an epoch on its evaluation (the validation split, or
the test split when there is none), as Keras's EarlyStopping and
ReduceLROnPlateau do, and keep their state in the run's meta, which every
checkpoint saves: a resumed run makes the same decisions at the same epochs
as one never interrupted. The learning-rate factor is optax's
`contrib.reduce_on_plateau`, stepped once per epoch with the validation loss;
the factor scales the injected peak learning rate (optimizers.py).
"""

import jax.numpy as jnp
import optax

from trainkit import errors
from trainkit import tasks
from trainkit.tasks import selection


def _improved(value: float, best: float | None, metric: str, min_delta: float) -> bool:
  if best is None:
    return True
  return selection.score(metric, value) - selection.score(metric, best) > min_delta


# How an early stop's reason begins.
_EARLY_STOP = 'early stopping after epoch '


def lift_early_stop(config, meta: dict) -> None:
  """Drops an early stop in `meta` that the config's patience, changed since, would not make.

  A restored run that stopped early trains on with --continue_with_changes
  of a longer (or no) patience; a run killed before its first save after
  such a change finds config.json changed, and goes on the same way.
  """
  _restart_for_another_metric(config, meta)
  if str(meta.get('stop_reason')).startswith(_EARLY_STOP) and not (
      0 < config.early_stopping_patience <= meta.get('early_stopping_wait', 0)):
    del meta['stop_reason']


def _restart_for_another_metric(config, meta: dict) -> None:
  """A count of another metric (changed on a resume) starts afresh: its best is no bar."""
  if meta.get('early_stopping_for', config.early_stopping_metric) != (
      config.early_stopping_metric):
    meta.update(early_stopping_best=None, early_stopping_wait=0)
    meta.pop('early_stopping_for')


def early_stop(config, meta: dict, metrics: dict, epoch: int) -> str | None:
  """Updates the early-stopping state in `meta`; why to stop now, or None."""
  if config.early_stopping_patience <= 0:
    return None
  metric = config.early_stopping_metric
  value = metrics[metric]
  _restart_for_another_metric(config, meta)
  if _improved(value, meta.get('early_stopping_best'), metric,
               config.early_stopping_min_delta):
    meta.update(early_stopping_best=value, early_stopping_wait=0, early_stopping_for=metric)
    return None
  meta['early_stopping_wait'] = meta.get('early_stopping_wait', 0) + 1
  if meta['early_stopping_wait'] < config.early_stopping_patience:
    return None
  return (f'{_EARLY_STOP}{epoch}: the validation {metric} did not improve '
          f'by more than {config.early_stopping_min_delta:g} for '
          f'{config.early_stopping_patience} epochs (best {meta["early_stopping_best"]:.6g})')


def _plateau(config) -> optax.GradientTransformationExtraArgs:
  return optax.contrib.reduce_on_plateau(
      factor=config.plateau_factor, patience=config.plateau_patience, rtol=0.0,
      atol=config.plateau_min_delta)


def lr_scale(meta: dict) -> float:
  """The factor the plateaus so far have put on the learning rate."""
  return meta.get('plateau', {}).get('scale', 1.0)


def reduce_on_plateau(config, meta: dict, metrics: dict) -> float | None:
  """Steps the plateau state in `meta` with the epoch's loss; the new factor if it changed."""
  if config.plateau_patience <= 0:
    return None
  tx = _plateau(config)
  state = tx.init({})
  if 'plateau' in meta:
    state = state._replace(**{k: jnp.asarray(v, getattr(state, k).dtype)
                              for k, v in meta['plateau'].items()})
  before = float(state.scale)
  _, state = tx.update({}, state, value=jnp.asarray(metrics['loss'], jnp.float32))
  meta['plateau'] = {k: getattr(state, k).item() for k in state._fields}
  return float(state.scale) if float(state.scale) != before else None


def check_config(config, reported: tuple) -> None:
  """Refuses early-stopping and plateau settings that cannot be (`reported`: the task's metrics)."""
  tasks.require_reported(config, 'early_stopping_metric', reported)
  for name in ('early_stopping_patience', 'plateau_patience'):
    errors.require(isinstance(config[name], int) and config[name] >= 0, name, config[name],
                   'must be an integer >= 0 (0 = off)')
  errors.require(isinstance(config.early_stopping_min_delta, (int, float))
                 and config.early_stopping_min_delta >= 0, 'early_stopping_min_delta',
                 config.early_stopping_min_delta, 'must be >= 0')
  errors.require(isinstance(config.plateau_min_delta, (int, float))
                 and config.plateau_min_delta > 0,
                 'plateau_min_delta', config.plateau_min_delta, 'must be > 0')
  errors.require(isinstance(config.plateau_factor, (int, float))
                 and 0 < config.plateau_factor < 1,
                 'plateau_factor', config.plateau_factor, 'must be in (0, 1)')
