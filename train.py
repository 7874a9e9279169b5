"""Training of the MLP: the train state, the pure step, the loop.

`train_and_evaluate(config, workdir)` is the entry point for `main.py` and the
tests. The math lives in pure, jitted functions (`train_step` here,
`eval_step` in trainkit/evaluation.py). `train_loop` is the one training
loop, for a single run and for a sweep's vmapped group alike: it decides the
device calls, checkpoints, signals and evaluations, and leaves each run's
files to its `trainkit.runs.Run`.
"""

import functools
import os
import sys
import time
from typing import Any

from absl import logging
import flax
from flax import serialization
from flax.training import train_state
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

import input_pipeline
import models
from trainkit import carried_values
from trainkit import compile_ahead
from trainkit import config_checks
from trainkit import config_history
from trainkit import evaluation
from trainkit import optimizers
from trainkit import parallel
from trainkit import preemption
from trainkit import profiling
from trainkit import progress as progress_lib
from trainkit import runs as runs_lib
from trainkit import tracking
from trainkit import tasks
from trainkit import trained_data
from trainkit import training_statistics
from trainkit import workdir as workdir_lib
from trainkit import warm_start
from trainkit import workdir_lock


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
  init_key, dropout_key = jax.random.split(jax.random.key(seed))
  return init_key, dropout_key


def create_train_state(rng, config, model, input_shape, steps_per_epoch,
                       input_dtype='uint8') -> TrainState:
  """Initialises parameters, BatchNorm statistics and the optimizer."""
  variables = model.init(rng, jnp.zeros((1, *input_shape), input_dtype), train=False)
  return TrainState.create(
      apply_fn=model.apply,
      params=variables['params'],
      batch_stats=variables.get('batch_stats', {}),
      keep_probs=models.keep_probs(config.model),
      task=model.head.for_training(config),
      tx=optimizers.create_optimizer(config, steps_per_epoch)).replace(
          step=jnp.zeros((), jnp.int32))  # An array, so checkpoints type it.


def initial_state(config, spec: workdir_lib.ModelSpec, workdir: str) -> TrainState:
  """The state a run in `workdir` starts from before it restores its own checkpoints.

  Fresh, or warm-started from `config.init_from` when the workdir has no
  checkpoint of its own to resume (trainkit/warm_start.py).
  """
  state = create_state(config, spec)
  if config.init_from and not workdir_lib.checkpoint_steps(workdir):
    state = warm_start.load(config, state)
    logging.info('Warm start: parameters and BatchNorm statistics from %s.', config.init_from)
  return state


def model_spec(config, data: input_pipeline.Data) -> workdir_lib.ModelSpec:
  """What the model and the schedules need to know of the dataset."""
  shift, scale = training_statistics.normalization_constants(config, data)
  target_shift, target_scale = training_statistics.target_constants(config, data)
  return workdir_lib.ModelSpec(
      num_classes=data.num_classes, input_shape=tuple(data.input_shape), shift=shift,
      scale=scale, steps_per_epoch=input_pipeline.steps_per_epoch(data, config.batch_size),
      input_dtype=data.input_dtype, target_shape=tuple(data.target_shape),
      target_shift=target_shift, target_scale=target_scale, columns=data.columns,
      class_names=data.class_names,
      class_weights=training_statistics.class_weights(config, data),
      data_fingerprint=data.fingerprint)


# The static parts of train states (optimizer, init program and with it the
# model), by carried_values.structure_key.
_STATIC_PARTS = {}


def create_state(config, spec: workdir_lib.ModelSpec) -> TrainState:
  """The freshly initialised train state of `config` for a dataset's `spec`.

  Built by one jitted program (the same values as op by op): dozens of small
  initialisers dispatched one at a time cost half a second at every start.

  The values the state carries (trainkit/carried_values.py) are placeholders
  while it is built and set afterwards. So configs that differ only in them
  get the very same init program, model and optimizer objects, which jit
  caches by: every run of a sweep or search in one process reuses the train
  step compiled for the first, with nothing traced or compiled again.
  """
  key = (carried_values.structure_key(config), spec)
  if key not in _STATIC_PARTS:
    traced = carried_values.placeholders(config)
    model = models.create_model(traced.model, input_shift=spec.shift, input_scale=spec.scale,
                                dtype=config.dtype, head=tasks.create(config, spec))
    _STATIC_PARTS[key] = (
        optimizers.create_optimizer(traced, spec.steps_per_epoch),
        jax.jit(lambda rng: create_train_state(rng, traced, model, spec.input_shape,
                                               spec.steps_per_epoch, spec.input_dtype)))
  tx, init = _STATIC_PARTS[key]
  state = init(seed_keys(config.seed)[0])
  return state.replace(tx=tx, opt_state=optimizers.with_hyperparams(state.opt_state, config),
                       keep_probs=models.keep_probs(config.model))


def _train_step(state: TrainState, batch, rng):
  """One optimizer step; dropout is keyed by (rng, step), so it is replayable.

  A step whose loss or gradient is not finite changes nothing but the step
  counter (metrics['finite'] = 0); `divergence` decides on the host whether
  the run goes on.
  """
  dropout_rng = jax.random.fold_in(rng, state.step)

  def loss_fn(params):
    outputs, updates = state.apply_fn(
        {'params': params, 'batch_stats': state.batch_stats}, batch['x'],
        train=True, keep_probs=state.keep_probs, rngs={'dropout': dropout_rng},
        mutable=['batch_stats'])
    return state.task.objective(outputs, batch['y'], batch.get('w')), (outputs, updates)

  (loss, (outputs, updates)), grads = jax.value_and_grad(
      loss_fn, has_aux=True)(state.params)
  grad_norm = optax.global_norm(grads)
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  state = jax.lax.cond(
      finite,
      lambda: state.apply_gradients(
          grads=grads, batch_stats=updates.get('batch_stats', state.batch_stats)),
      lambda: state.replace(step=state.step + 1))
  metrics = {'loss': loss, 'grad_norm': grad_norm, 'finite': finite.astype(jnp.float32),
             **state.task.train_metrics(outputs, batch['y'], loss)}
  return state, metrics


# The step alone, one call per step; `train_steps` scans the same function.
train_step = jax.jit(_train_step, donate_argnums=0)


def _train_steps(state: TrainState, batches, rng, num_steps, source=None):
  """Runs the first `num_steps` of `batches` in a single call (lax.scan).

  Args:
    state: the train state (donated).
    batches: stacked batches {'x': [n, batch, ...], 'y': [n, batch]};
      or, with `source`, {'index': [n, batch]} positions into `source`. Rows
      from `num_steps` on are padding and skipped, so calls of any length up to
      n share one compiled program.
    rng: the run's dropout key (folded with each step's number).
    num_steps: how many rows of `batches` to train on (<= n).
    source: optional {'x', 'y'} arrays resident on the device.

  Returns:
    (state after num_steps steps, per-step metrics {'loss': [n], ...} (the
    task's train metrics too), zero in the skipped rows).
  """
  def run(state, batch):
    if source is not None:
      batch = jax.tree.map(lambda x: x[batch['index']], source)
    return _train_step(state, batch, rng)

  def body(state, indexed):
    i, batch = indexed
    skip = lambda state, batch: (state, jax.tree.map(
        lambda x: jnp.zeros(x.shape, x.dtype), jax.eval_shape(run, state, batch)[1]))
    return jax.lax.cond(i < num_steps, run, skip, state, batch)

  n = jax.tree.leaves(batches)[0].shape[0]
  return jax.lax.scan(body, state, (jnp.arange(n), batches))


# On one device (sweep groups vmap it; tests and the benchmark call it).
train_steps = jax.jit(_train_steps, donate_argnums=0)


@functools.cache
def mesh_train_steps(mesh):
  """`train_steps` compiled for data parallelism on `mesh`.

  The state (and resident data, and the dropout key) are replicated, batches
  split along their batch axis; the per-step metrics come back replicated.
  """
  state, batches = parallel.replicated_sharding(mesh), parallel.row_sharding(mesh)
  return jax.jit(_train_steps, in_shardings=(state, batches, state, state, state),
                 out_shardings=(state, state), donate_argnums=0)


def call_spans(first: int, epoch_start: int, steps_per_epoch: int,
               steps_per_call: int, checkpoint_every_steps: int,
               extra_ends=()) -> list:
  """Splits the steps from `first` to the epoch's end into (start, stop) calls.

  Positions are relative to the epoch. A call ends every `steps_per_call`
  steps of the epoch (0: one call for the rest of the epoch) and at every
  global step that is a multiple of `checkpoint_every_steps`, so checkpoints
  land on exactly the steps configured, and at the global steps `extra_ends`.
  """
  ends = set(range(steps_per_call, steps_per_epoch, steps_per_call)
             if steps_per_call else ())
  if checkpoint_every_steps:
    offset = -epoch_start % checkpoint_every_steps
    ends.update(range(offset or checkpoint_every_steps, steps_per_epoch,
                      checkpoint_every_steps))
  ends.update(e - epoch_start for e in extra_ends)
  ends = sorted(e for e in ends if first < e < steps_per_epoch) + [steps_per_epoch]
  return list(zip([first] + ends[:-1], ends))


class MeshSteps:
  """The device program of one run: `train_steps` split over the data mesh.

  `train_loop` drives a list of runs through such a program; this one holds
  a single run's state as it is (trainkit.grouping.GroupSteps stacks several
  on a member axis). Per-run arguments come as lists of one.
  """

  def __init__(self, mesh):
    self.mesh = mesh
    self._train_steps = mesh_train_steps(mesh)

  def stack(self, states: list):
    (state,) = states
    return state

  def member(self, tree, index: int):
    del index  # The only member.
    return tree

  def dropout_keys(self, configs: list):
    (config,) = configs
    return parallel.replicate(seed_keys(config.seed)[1], self.mesh)

  def train(self, state, batches: list, rng, num_steps: list, source):
    return self._train_steps(state, batches[0], rng, num_steps[0], source)

  def set_learning_rate(self, state, index: int, value: float):
    """`state` with its injected peak learning rate set to `value`."""
    del index  # The only member.
    return state.replace(opt_state=optimizers.replace_hyperparams(state.opt_state,
                                                                  learning_rate=value))

  def evaluate(self, state, data, batch_size: int) -> list:
    return [evaluation.evaluate(state, data, batch_size)]


def call_length(config, data: input_pipeline.Data, steps_per_epoch: int) -> int:
  """Steps per device call, padding included: one compiled length per run.

  Calls never cross a checkpoint step.
  """
  return min(input_pipeline.steps_per_call(config, data) or steps_per_epoch,
             config.checkpoint_every_steps or steps_per_epoch, steps_per_epoch)


def _mean(metrics: list) -> dict:
  """The members' metrics averaged, for the progress display."""
  return jax.tree.map(lambda *x: np.mean(x, axis=0), *metrics)


def train_loop(runs: list, program, data: input_pipeline.Data):
  """Trains `runs` (each at the same step) to their last epoch, evaluating each epoch.

  The one training loop. `program` runs the device calls: `MeshSteps` for one
  run, trainkit.grouping's vmapped program for several. The runs share every
  config field that shapes the loop (epochs, batch, call length, checkpoint
  cadence). A run that diverges stops alone: it trains, saves and logs no
  further (its `diverged` holds why); the loop ends when none is left.

  Returns:
    (final state as `program` holds it, [summary dict or None per run]).
  """
  config = runs[0].config
  steps_per_epoch = runs[0].spec.steps_per_epoch
  total_steps = config.num_epochs * steps_per_epoch
  step = first_step = runs[0].step
  state = program.stack([run.state for run in runs])
  for run in runs:
    run.state = None  # The program's state is the only copy.
  rng = program.dropout_keys([run.config for run in runs])
  # The epochs are evaluated on the validation split (the test split is for
  # the end: Run.finish), or on the test split if there is none.
  eval_data = input_pipeline.validation_view(data)
  source = data.train if data.mode == 'device' else None
  steps_per_call = input_pipeline.steps_per_call(config, data)
  length = call_length(config, data, steps_per_epoch)
  show = progress_lib.Progress(
      style=config.progress, num_epochs=config.num_epochs,
      steps_per_epoch=steps_per_epoch, batch_size=config.batch_size * len(runs),
      every_s=config.progress_every_s)
  tracer = profiling.StepTracer(config.profile_steps, [run.workdir for run in runs])
  for run in runs:
    # A group's members would interleave unnamed scalar lines in the log.
    run.open_logs(log_scalars=show.style != 'bar' and len(runs) == 1)
  if step >= total_steps or not any(run.alive for run in runs):
    logging.info('Training already finished at step %d (%s); re-evaluating only.', step,
                 runs[0].stop_reason or f'{config.num_epochs} epochs')
  else:
    logging.info('Training from step %d to %d (%d steps per epoch).',
                 step, total_steps, steps_per_epoch)

  def alive():  # The runs still training.
    return [i for i, run in enumerate(runs) if run.alive]

  def finished():  # The runs that end with a summary: all but the diverged.
    return [i for i, run in enumerate(runs) if run.diverged is None]

  def finish_call(first, num_steps, metrics):
    """Checks a finished call's steps for divergence, then reports them."""
    metrics = jax.device_get(metrics)
    shown = []
    for i in alive():
      own = jax.tree.map(lambda x: x[:num_steps], program.member(metrics, i))  # pylint: disable=cell-var-from-loop
      if runs[i].log_train(first, own, show.steps_per_s):
        shown.append(own)
    if shown:
      show.update(first + num_steps, num_steps, _mean(shown))

  def checkpoint(eval_metrics=None, which=None):
    for i in alive() if which is None else which:
      runs[i].checkpoint(step, program.member(state, i), eval_metrics and eval_metrics[i],
                         input_states[i])

  eval_metrics = None
  input_states = [None] * len(runs)
  try:
    with preemption.stop_on_signals() as stop, show.logs_above_bar():
      for epoch in range(step // steps_per_epoch, config.num_epochs):
        if not alive():
          break
        epoch_start, epoch_first_step = time.perf_counter(), step
        show.start_epoch(epoch, step)
        spans = call_spans(step - epoch * steps_per_epoch, epoch * steps_per_epoch,
                           steps_per_epoch, steps_per_call,
                           config.checkpoint_every_steps, tracer.call_ends())
        pending = None
        # Each run's own data order (its seed), one call's input at a time;
        # a streamed input resumes from the state its checkpoint saved.
        for calls in zip(*[input_pipeline.train_calls(data, run.config, epoch, spans,
                                                      length, run.input_state)
                           for run in runs]):
          num_steps = calls[0][0]
          input_states = [input_state for _, _, input_state in calls]
          tracer.before_call(step)
          state, metrics = program.train(
              state, [batches for _, batches, _ in calls], rng,
              [num_steps if run.alive else 0 for run in runs], source)
          # The previous call is done by now; checking its metrics (not this
          # call's) lets the host prepare the next input while this one runs.
          if pending:
            finish_call(*pending)
          pending = (step, num_steps, metrics)
          step += num_steps
          tracer.after_call(step, state)
          checkpoint_due = (config.checkpoint_every_steps and step % steps_per_epoch
                            and step % config.checkpoint_every_steps == 0)
          # A signal to any process stops them all at the same step.
          stopping = parallel.any_process(stop)
          if checkpoint_due or stopping:
            finish_call(*pending)  # Never save a state that diverged.
            pending = None
            checkpoint()
          if stopping:
            where = (runs[0].checkpoint_dir if len(runs) == 1 else
                     os.path.commonpath([os.path.abspath(run.workdir) for run in runs]))
            raise preemption.Interrupted(stop.signum, step, where)
          if not alive():
            break
        if pending:
          finish_call(*pending)
        if not alive():
          break
        eval_metrics = program.evaluate(state, eval_data, config.eval_batch_size)
        evaluated = alive()
        for i in evaluated:
          runs[i].log_eval(step, eval_metrics[i])
          # Plateaus and early stopping decide on the epoch's evaluation; the
          # checkpoint below saves their state with the state they changed.
          rate = runs[i].after_epoch(epoch + 1, eval_metrics[i])
          if rate is not None:
            state = program.set_learning_rate(state, i, rate)
        # Every checkpoint_every_epochs-th epoch, the last, and where a run
        # stopped early: a save costs more than an epoch of a small model.
        due = (epoch + 1) % config.checkpoint_every_epochs == 0 or epoch + 1 == config.num_epochs
        checkpoint(eval_metrics, [i for i in evaluated if due or not runs[i].alive])
        epoch_s = time.perf_counter() - epoch_start
        for i in evaluated:
          runs[i].log_epoch(step, {
              'wall_s': epoch_s, 'steps_per_s': (step - epoch_first_step) / epoch_s,
              'examples_per_s': (step - epoch_first_step) * config.batch_size / epoch_s})
        shown = _mean([eval_metrics[i] for i in evaluated])
        show.end_epoch(step, shown)
        if show.style == 'off':
          logging.info('Epoch %d/%d: eval %s (%.2f s).', epoch + 1, config.num_epochs,
                       ', '.join(f'{k} {v:.4f}' for k, v in shown.items()), epoch_s)
    if step == first_step:  # Nothing left to train: evaluate the restored state.
      eval_metrics = program.evaluate(state, eval_data, config.eval_batch_size)
      for i in finished():
        runs[i].log_eval(step, eval_metrics[i])
  finally:
    # Also on divergence or interruption: finish pending saves, flush logs.
    tracer.stop()
    input_pipeline.close_stream(data)
    for run in runs:
      run.close(sys.exc_info()[1])
  return state, [run.finish(program.member(state, i), data, eval_metrics[i],
                            int(program.member(state, i).step))
                 if run.diverged is None else None for i, run in enumerate(runs)]


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       data: input_pipeline.Data | None = None,
                       continue_with_changes: bool = False, epoch_hook=None):
  """Trains (or resumes training) in `workdir` and evaluates after each epoch.

  Args:
    config: the run's config (see configs/default.py).
    workdir: where checkpoints, logs and the summary go; a workdir with
      checkpoints resumes from its latest, with the config it was trained
      with (trainkit/config_history.py).
    data: input_pipeline.create_datasets(config), when several runs share it
      (as a sweep's members do); loaded here otherwise.
    continue_with_changes: a resume may change the continuable fields
      (more epochs, a new learning rate, ...); they are recorded.
    epoch_hook: optional `(epoch, eval_metrics) -> str | None`, called after
      each epoch's evaluation; a string stops the run there with that
      `stop_reason` (a search's pruner, trainkit/search.py).

  Returns:
    (final train state, summary dict as written to `summary.json`).

  Raises:
    trainkit.divergence.Diverged: a non-finite step ended the run (nan_policy).
    trainkit.workdir_lock.WorkdirBusy: another run holds the workdir.
  """
  # Everything that can refuse the run does so before the workdir is touched.
  config_checks.validate(config)
  config_checks.check_workdir(workdir)
  warm_start.check(config, workdir)
  changes = config_history.check_resume(config, workdir, continue_with_changes)
  trained_data.check(config, workdir, 'resume')
  # MLflow's import, in a process of its own, runs while the data loads.
  tracker = tracking.start(config, workdir) if jax.process_index() == 0 else None
  try:
    with workdir_lock.hold(workdir):
      if data is None:
        with compile_ahead.while_loading(config):
          data = input_pipeline.create_datasets(config)
      config_checks.check_data(config, data)
      spec = model_spec(config, data)
      # Replicated on every device; every process builds the same values.
      state = parallel.replicate(initial_state(config, spec, workdir), data.mesh)
      run = runs_lib.Run(config, workdir, spec, state, streamed=data.mode == 'stream',
                         config_changes=changes, epoch_hook=epoch_hook, tracker=tracker)
      state, (summary,) = train_loop([run], MeshSteps(data.mesh), data)
  finally:
    if tracker:  # Ended already, unless refused before it opened or failed after.
      tracker.end('FAILED' if sys.exc_info()[1] else None)
  if run.diverged:
    raise run.diverged
  return state, summary
