"""The train state: parameters, BatchNorm statistics, optimizer, and how it is built.

One place derives a run's keys from its seed and builds its state, so a lone
run, a sweep member and a restored workdir start from the same values.
"""

import functools
from typing import Any

from absl import logging
import flax
from flax import serialization
from flax.training import train_state
import jax
import jax.numpy as jnp
import numpy as np

from trainkit import models as models_lib
from trainkit import tasks
from trainkit.checkpoints import manager as checkpointing
from trainkit.checkpoints import warm_start
from trainkit.data import calls
from trainkit.data import pipeline as input_pipeline
from trainkit.data import statistics as training_statistics
from trainkit.models import mlp as models
from trainkit.training import carried_values
from trainkit.training import optimizers
from trainkit.workdirs import layout as workdir_lib


class TrainState(train_state.TrainState):
  """Train state with BatchNorm's running statistics and the training loss."""
  batch_stats: Any
  # Dropout's keep probability per hidden layer ([n] float32): values the
  # step takes, not constants of the model, so one compiled step serves every
  # rate (apply_fn's model holds placeholders). Not checkpointed: the
  # config sets them.
  keep_probs: Any = None
  # Static, like apply_fn and tx: the task (trainkit/tasks), whose head the
  # model ends in; its objective is the loss the step minimises.
  task: Any = flax.struct.field(pytree_node=False, default=None)


# What a checkpoint holds of the train state (its keep_probs come from the config).
_CHECKPOINTED = ('step', 'params', 'batch_stats', 'opt_state')
serialization.register_serialization_state(
    TrainState,
    lambda state: {name: serialization.to_state_dict(getattr(state, name))
                   for name in _CHECKPOINTED},
    lambda state, saved: state.replace(**{
        name: serialization.from_state_dict(getattr(state, name), saved[name], name=name)
        for name in _CHECKPOINTED}),
    override=True)


def seed_keys(seed: int) -> tuple[jax.Array, jax.Array]:
  """A run's (parameter init key, dropout key), both from its seed.

  The one place they are derived: a lone run, a sweep member and a restored
  workdir get the same keys for the same seed. (The data order is drawn from
  (seed, epoch) in input_pipeline.)
  """
  # One program (drawing them op by op loads four). The seed goes in as its
  # low 32 bits, as jax.random.key takes a Python int without 64-bit types.
  return _seed_keys(np.uint32(seed % 2**32))


@jax.jit
def _seed_keys(seed):
  init_key, dropout_key = jax.random.split(jax.random.key(seed))
  return init_key, dropout_key


def create_train_state(rng, config, model, input_shape, steps_per_epoch,
                       input_dtype='uint8') -> TrainState:
  """Initialises parameters, BatchNorm statistics and the optimizer."""
  # A 'dropout' stream too: an NNX module's Dropout takes one when it is built
  # (a linen module's params are the same: they draw from 'params' alone).
  variables = model.init({'params': rng, 'dropout': rng},
                         jnp.zeros((1, *input_shape), input_dtype), train=False)
  return TrainState.create(
      apply_fn=model.apply,
      params=variables['params'],
      batch_stats=variables.get('batch_stats', {}),
      keep_probs=models.keep_probs(config.model),
      task=model.head.for_training(config),
      tx=optimizers.create_optimizer(config, steps_per_epoch)).replace(
          step=jnp.zeros((), jnp.int32))  # An array, so checkpoints type it.


def warm_started(config, state: TrainState) -> TrainState:
  """`state` with `config.init_from`'s parameters and BatchNorm statistics, placed as its own.

  Each loaded array is placed from the host, as parallel.replicate places a
  fresh state: the same values in every process.
  """
  warm = optimizers.average_from_params(warm_start.load(config, state))
  logging.info('Warm start: parameters and BatchNorm statistics from %s.', config.init_from)

  def placed(new, old):
    if new is old or not isinstance(old, jax.Array):
      return new
    return jax.device_put(np.asarray(new), old.sharding)
  return jax.tree.map(placed, warm, state)


def model_spec(config, data: input_pipeline.Data) -> workdir_lib.ModelSpec:
  """What the model and the schedules need to know of the dataset."""
  shift, scale = training_statistics.normalization_constants(config, data)
  target_shift, target_scale = training_statistics.target_constants(config, data)
  return workdir_lib.ModelSpec(
      num_classes=data.num_classes, input_shape=tuple(data.input_shape), shift=shift,
      scale=scale, steps_per_epoch=calls.steps_per_epoch(data, config.batch_size),
      input_dtype=data.input_dtype, target_shape=tuple(data.target_shape),
      target_shift=target_shift, target_scale=target_scale, columns=data.columns,
      class_names=data.class_names, numeric_classes=data.numeric_classes,
      class_weights=training_statistics.class_weights(config, data),
      data_fingerprint=data.fingerprint, bins=training_statistics.quantile_bins(config, data),
      module_digest=models_lib.module_digest(config.model))


# A copy of a state (any tree of arrays) on its devices, in one call: a copy
# per leaf compiles and dispatches a program per leaf shape. The copy outlives
# the original, which the next train call donates.
copied = jax.jit(lambda tree: jax.tree.map(jnp.copy, tree))


# The init program runs once a run, and with empty caches its compilation is on
# the first step's path: XLA's optimisation level 1 compiles the default's in
# half the time (0.7 against 1.4 s on 2 CPU cores), to the same values bit for
# bit (the default, table and mixture-density runs' summaries are unchanged).
_INIT_COMPILER_OPTIONS = {'xla_backend_optimization_level': 1}


# The static parts of train states (optimizer, init program and with it the
# model), by carried_values.structure_key.
_STATIC_PARTS = {}


def create_state(config, spec: workdir_lib.ModelSpec, shapes_only: bool = False) -> TrainState:
  """The freshly initialised train state of `config` for a dataset's `spec`.

  `shapes_only`: its arrays as shapes and dtypes alone (jax.ShapeDtypeStruct),
  nothing compiled or run: a target to restore a checkpoint into.

  Built by one jitted program (the same values as op by op): dozens of small
  initialisers dispatched one at a time cost half a second at every start.

  The values the state carries (trainkit/training/carried_values.py) are placeholders
  while it is built and set afterwards. So configs that differ only in them
  get the very same init program, model and optimizer objects, which jit
  caches by: every run of a sweep or search in one process reuses the train
  step compiled for the first, with nothing traced or compiled again.
  """
  key = (carried_values.structure_key(config), spec)
  if key not in _STATIC_PARTS:
    traced = carried_values.placeholders(config)
    model = models_lib.create(traced.model, tasks.create(config, spec), spec.shift, spec.scale,
                              config.dtype, spec.bins)
    if not shapes_only:
      # Not for a restore's target (load, eval, predict, export): the check
      # initialises the model op by op, and the model passed it in training.
      models_lib.check_built(traced, model, spec.input_shape, spec.input_dtype)
    init = functools.partial(create_train_state, config=traced, model=model,
                             input_shape=spec.input_shape,
                             steps_per_epoch=spec.steps_per_epoch, input_dtype=spec.input_dtype)
    # Two jits of it: jit refuses compiler options inside eval_shape, and
    # the plain one keeps its trace for the next restore's shapes.
    _STATIC_PARTS[key] = (optimizers.create_optimizer(traced, spec.steps_per_epoch),
                          jax.jit(init), jax.jit(init, compiler_options=_INIT_COMPILER_OPTIONS))
  tx, traced_init, compiled_init = _STATIC_PARTS[key]
  if shapes_only:  # The keys are traced too (drawing them for real compiles programs).
    state = jax.eval_shape(lambda: traced_init(seed_keys(config.seed)[0]))
  else:
    state = compiled_init(seed_keys(config.seed)[0])
  return state.replace(tx=tx, opt_state=optimizers.with_hyperparams(state.opt_state, config),
                       keep_probs=models.keep_probs(config.model))


def restored(config, spec: workdir_lib.ModelSpec, manager, step: int) -> TrainState:
  """Checkpoint `step` of `manager`, restored into the state's shapes: nothing is compiled.

  Raises checkpointing.CheckpointMismatchError where the checkpoint does not
  fit the config, checkpointing.BrokenCheckpointError where it cannot be read.
  """
  state = create_state(config, spec, shapes_only=True)
  checkpointing.check_compatible(manager, step, state)
  return checkpointing.restore(manager, step, state)[0]
