"""Optax optimizers and learning-rate schedules from the config.

The peak learning rate, weight decay and momentum are injected
hyperparameters (`optax.inject_hyperparams`): they live in the optimizer state,
so the train step holds no Python-side values and a sweep can give each member
its own in one vmapped program.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from trainkit import errors

OPTIMIZERS = ('sgd', 'momentum', 'nesterov', 'adam', 'adamw', 'rmsprop')
SCHEDULES = ('constant', 'cosine', 'warmup_cosine', 'exponential', 'linear')


def _lr_multiplier(config, steps_per_epoch: int) -> optax.Schedule:
  """The schedule as a factor of the peak learning rate, by optimizer update.

  With gradient accumulation an update takes `grad_accumulation_steps` train
  steps, and the schedule counts updates.
  """
  steps_per_epoch = steps_per_epoch / config.grad_accumulation_steps
  total = int(config.num_epochs * steps_per_epoch)
  if config.get('max_steps', 0):  # The run's length where the budget ends it sooner.
    total = min(total, int(config.max_steps / config.grad_accumulation_steps))
  if config.schedule == 'constant':
    return optax.constant_schedule(1.0)
  if config.schedule == 'cosine':
    return optax.cosine_decay_schedule(1.0, total, alpha=config.end_lr_factor)
  if config.schedule == 'warmup_cosine':
    return optax.warmup_cosine_decay_schedule(
        0.0, 1.0, int(config.warmup_epochs * steps_per_epoch), total,
        end_value=config.end_lr_factor)
  if config.schedule == 'exponential':
    # decay_rate per decay_epochs, expressed per epoch so that `staircase`
    # steps at epoch boundaries.
    return optax.exponential_decay(
        1.0, steps_per_epoch, config.decay_rate ** (1 / config.decay_epochs),
        staircase=config.staircase)
  if config.schedule == 'linear':
    return optax.linear_schedule(1.0, config.end_lr_factor, total)
  raise ValueError(f'schedule={config.schedule!r} is not one of '
                   f'{SCHEDULES}')


def create_learning_rate_fn(config, steps_per_epoch: int) -> optax.Schedule:
  """The learning rate by step: `config.learning_rate` times the schedule.

  Jitted: evaluated op by op, a schedule compiles a dozen one-operation
  programs, half a second of a run's start.
  """
  multiplier = _lr_multiplier(config, steps_per_epoch)
  every = config.grad_accumulation_steps
  return jax.jit(lambda step: config.learning_rate * multiplier(step // every))


# Parameters of more than one dimension that are not kernels: TabM's members'
# biases and the scales in front of and behind its layers (trainkit/models/tabular.py).
_NOT_DECAYED = ('bias', 'input_scale', 'output_scale')


def _decay_mask(params):
  """Weight decay applies to kernels only, not to biases, scales or BatchNorm."""
  return jax.tree_util.tree_map_with_path(
      lambda path, p: p.ndim > 1 and getattr(path[-1], 'key', None) not in _NOT_DECAYED,
      params)


def create_optimizer(config, steps_per_epoch: int) -> optax.GradientTransformation:
  """The configured Optax optimizer.

  The peak learning rate, weight decay and momentum are injected
  hyperparameters: they live in the optimizer state, so a sweep can give each
  member its own values in one vmapped program.
  """
  if config.optimizer not in OPTIMIZERS:
    raise ValueError(f'optimizer={config.optimizer!r} is not one of '
                     f'{OPTIMIZERS}')
  multiplier = _lr_multiplier(config, steps_per_epoch)
  name = config.optimizer

  def make(learning_rate, weight_decay, momentum=None):
    lr = lambda count: learning_rate * multiplier(count)
    parts = []
    if config.grad_clip_norm > 0:
      parts.append(optax.clip_by_global_norm(config.grad_clip_norm))
    if name != 'adamw' and config.weight_decay > 0:
      parts.append(optax.add_decayed_weights(weight_decay, mask=_decay_mask))
    parts.append({
        'sgd': lambda: optax.sgd(lr),
        'momentum': lambda: optax.sgd(lr, momentum=momentum),
        'nesterov': lambda: optax.sgd(lr, momentum=momentum, nesterov=True),
        'adam': lambda: optax.adam(lr),
        'adamw': lambda: optax.adamw(lr, weight_decay=weight_decay, mask=_decay_mask),
        'rmsprop': lambda: optax.rmsprop(lr, momentum=momentum),
    }[name]())
    if config.ema_decay > 0:
      parts.append(ema_of_params(config.ema_decay))
    return optax.chain(*parts)

  hyperparams = {'learning_rate': config.learning_rate,
                 'weight_decay': config.weight_decay}
  if name in ('momentum', 'nesterov', 'rmsprop'):
    hyperparams['momentum'] = config.momentum
  tx = optax.inject_hyperparams(make)(**hyperparams)
  if config.grad_accumulation_steps > 1:
    # Gradients of k steps averaged into one update: k times the batch, in
    # the memory of one. Its state (the running sum) is in every checkpoint.
    tx = optax.MultiSteps(tx, every_k_schedule=config.grad_accumulation_steps)
  return tx


class EmaParamsState(NamedTuple):
  """The exponential moving average of the parameters after each update."""
  ema_params: optax.Params


def ema_of_params(decay: float) -> optax.GradientTransformation:
  """Keeps an exponential moving average of the parameters; updates pass unchanged.

  Last in the chain, it sees each final update: the new parameters are
  params + updates. Living in the optimizer state, the average is
  checkpointed, resumed, stacked in sweep groups and skipped with a
  non-finite step like the rest of it.
  """
  def init(params):
    return EmaParamsState(jax.tree.map(jnp.copy, params))  # Never the same buffers.

  def update(updates, state, params=None):
    new = optax.apply_updates(params, updates)
    ema = jax.tree.map(lambda e, p: decay * e + (1 - decay) * p, state.ema_params, new)
    return updates, EmaParamsState(ema)

  return optax.GradientTransformation(init, update)


def params_for_eval(state):
  """`state` with the parameters evaluation uses: their average, if one is kept."""
  if not _keeps_average(jax.tree.structure(state.opt_state)):
    return state  # Every epoch's evaluation asks: the search is cached by the tree's form.
  return state.replace(params=optax.tree_utils.tree_get(state.opt_state, 'ema_params'))


def average_from_params(state):
  """`state` whose average of the parameters, if one is kept, starts from its parameters.

  As a fresh one starts from the fresh ones: a warm start's loaded
  parameters (evaluation uses the average).
  """
  if not _keeps_average(jax.tree.structure(state.opt_state)):
    return state
  return state.replace(opt_state=optax.tree_utils.tree_set(
      state.opt_state, ema_params=jax.tree.map(np.array, state.params)))


@functools.lru_cache(maxsize=64)
def _keeps_average(treedef) -> bool:
  """Whether an optimizer state of this form holds an EmaParamsState."""
  state = jax.tree.unflatten(treedef, [0] * treedef.num_leaves)
  return optax.tree_utils.tree_get(state, 'ema_params') is not None


def hyperparams(opt_state) -> dict:
  """The injected hyperparameters in `opt_state` (of create_optimizer)."""
  inner = getattr(opt_state, 'inner_opt_state', opt_state)  # optax.MultiSteps.
  return inner.hyperparams


def replace_hyperparams(opt_state, **values):
  """`opt_state` with the named injected hyperparameters replaced.

  Each value (a number, or an array of a sweep group's values) takes the
  dtype and placement of the one it replaces.
  """
  if hasattr(opt_state, 'inner_opt_state'):
    return opt_state._replace(
        inner_opt_state=replace_hyperparams(opt_state.inner_opt_state, **values))
  old = opt_state.hyperparams
  return opt_state._replace(hyperparams={**old, **{
      name: jax.device_put(np.asarray(value, old[name].dtype), old[name].sharding)
      for name, value in values.items()}})


def with_hyperparams(opt_state, config, lr_scale: float = 1.0):
  """`opt_state` (of create_optimizer) holding `config`'s injected hyperparameters.

  A checkpoint restores the values it was trained with; a resume that
  changes them (config_history's --continue_with_changes) sets the new ones,
  each placed as the value it replaces. `lr_scale`: the factor plateaus put
  on the learning rate so far (trainkit/training/plateaus.py).
  """
  values = {name: config[name] for name in hyperparams(opt_state)}
  values['learning_rate'] = values['learning_rate'] * lr_scale
  return replace_hyperparams(opt_state, **values)


def check_config(config) -> None:
  """Refuses the optimizer's and the schedule's fields that no run can use."""
  errors.numbers(config, ('learning_rate', 'momentum', 'weight_decay', 'grad_clip_norm',
                          'warmup_epochs', 'end_lr_factor', 'decay_rate', 'decay_epochs'))
  errors.one_of(config, 'optimizer', OPTIMIZERS)
  errors.one_of(config, 'schedule', SCHEDULES)
  errors.positive_integers(config, ('grad_accumulation_steps',))
  errors.require(config.learning_rate > 0, 'learning_rate', config.learning_rate, 'must be > 0')
  for name in ('weight_decay', 'grad_clip_norm', 'warmup_epochs', 'end_lr_factor'):
    errors.require(config[name] >= 0, name, config[name], 'must be >= 0')
  errors.require(0 <= config.momentum < 1, 'momentum', config.momentum, 'must be in [0, 1)')
  errors.require(isinstance(config.ema_decay, (int, float)) and 0 <= config.ema_decay < 1,
                 'ema_decay', config.ema_decay, 'must be in [0, 1) (0 = off)')
  errors.require(0 < config.decay_rate <= 1, 'decay_rate', config.decay_rate,
                 'must be in (0, 1]')
  errors.require(config.decay_epochs > 0, 'decay_epochs', config.decay_epochs, 'must be > 0')
  if config.schedule == 'warmup_cosine':
    errors.require(config.warmup_epochs < config.num_epochs, 'warmup_epochs',
                   config.warmup_epochs, f'must be < num_epochs={config.num_epochs}')
