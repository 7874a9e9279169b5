"""Training and evaluation of the MLP classifier.

`train_and_evaluate(config, workdir)` is the entry point for `main.py` and the
tests. The math lives in pure, jitted functions (`train_step` here,
`eval_step` in evaluation.py); I/O (data, checkpoints, metrics) stays in the
loop around them.
"""

import functools
import os
import time
from typing import Any, Callable

from absl import logging
import flax
from flax.training import train_state
import jax
import jax.numpy as jnp
import ml_collections
import optax

import checkpointing
import config_checks
import divergence
import evaluation
import input_pipeline
import losses
import metric_logging
import models
import optimizers
import parallel
import plots
import preemption
import profiling
import progress as progress_lib

# Written to the workdir: what rebuilds the model besides config and checkpoint.
MODEL_SPEC = 'model.json'


class TrainState(train_state.TrainState):
  """Train state with BatchNorm's running statistics and the training loss."""
  batch_stats: Any
  # Static, like apply_fn and tx: the objective (logits, labels) -> scalar.
  loss_fn: Callable = flax.struct.field(pytree_node=False, default=None)


def create_train_state(rng, config, model, image_shape, steps_per_epoch) -> TrainState:
  """Initialises parameters, BatchNorm statistics and the optimizer."""
  variables = model.init(rng, jnp.zeros((1, *image_shape), jnp.uint8), train=False)
  return TrainState.create(
      apply_fn=model.apply,
      params=variables['params'],
      batch_stats=variables.get('batch_stats', {}),
      loss_fn=losses.LOSSES[config.loss],
      tx=optimizers.create_optimizer(config, steps_per_epoch)).replace(
          step=jnp.zeros((), jnp.int32))  # An array, so checkpoints type it.


def create_state_from_spec(config, spec: dict) -> TrainState:
  """The freshly initialised train state of `config` for a dataset `spec`.

  `spec` holds num_classes, image_shape, shift, scale and steps_per_epoch,
  as written to MODEL_SPEC, so inference needs no dataset.
  """
  model = models.create_model(config.model, spec['num_classes'], spec['shift'],
                              spec['scale'], config.dtype)
  init_rng = jax.random.split(jax.random.key(config.seed))[0]
  return create_train_state(init_rng, config, model, tuple(spec['image_shape']),
                            spec['steps_per_epoch'])


def _train_step(state: TrainState, batch, rng):
  """One optimizer step; dropout is keyed by (rng, step), so it is replayable.

  A step whose loss or gradient is not finite changes nothing but the step
  counter (metrics['finite'] = 0); `divergence` decides on the host whether
  the run goes on.
  """
  dropout_rng = jax.random.fold_in(rng, state.step)

  def loss_fn(params):
    logits, updates = state.apply_fn(
        {'params': params, 'batch_stats': state.batch_stats}, batch['image'],
        train=True, rngs={'dropout': dropout_rng}, mutable=['batch_stats'])
    return state.loss_fn(logits, batch['label']), (logits, updates)

  (loss, (logits, updates)), grads = jax.value_and_grad(
      loss_fn, has_aux=True)(state.params)
  grad_norm = optax.global_norm(grads)
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  state = jax.lax.cond(
      finite,
      lambda: state.apply_gradients(
          grads=grads, batch_stats=updates.get('batch_stats', state.batch_stats)),
      lambda: state.replace(step=state.step + 1))
  metrics = {'loss': loss, 'grad_norm': grad_norm, 'finite': finite.astype(jnp.float32),
             'accuracy': jnp.mean(jnp.argmax(logits, -1) == batch['label'])}
  return state, metrics


# The step alone, one call per step; `train_steps` scans the same function.
train_step = jax.jit(_train_step, donate_argnums=0)


def _train_steps(state: TrainState, batches, rng, num_steps, source=None):
  """Runs the first `num_steps` of `batches` in a single call (lax.scan).

  Args:
    state: the train state (donated).
    batches: stacked batches {'image': [n, batch, ...], 'label': [n, batch]};
      or, with `source`, {'index': [n, batch]} positions into `source`. Rows
      from `num_steps` on are padding and skipped, so calls of any length up to
      n share one compiled program.
    rng: the run's dropout key (folded with each step's number).
    num_steps: how many rows of `batches` to train on (<= n).
    source: optional {'image', 'label'} arrays resident on the device.

  Returns:
    (state after num_steps steps, per-step metrics {'loss': [n],
    'accuracy': [n]}, zero in the skipped rows).
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


@functools.lru_cache(maxsize=None)
def mesh_train_steps(mesh):
  """`train_steps` compiled for data parallelism on `mesh`.

  The state (and resident data, and the dropout key) are replicated, batches
  split along their batch axis; the per-step metrics come back replicated.
  """
  state, batches = parallel.replicated(mesh), parallel.rows(mesh)
  return jax.jit(_train_steps, in_shardings=(state, batches, state, state, state),
                 out_shardings=(state, state), donate_argnums=0)


def finish_run(workdir: str, config, state, data, eval_metrics: dict, meta: dict,
               best_step, step: int, steps_per_epoch: int, skipped: int) -> dict:
  """Writes summary.json (and, if configured, the plots); returns the summary."""
  wall = meta['train_wall_s']  # As of the last checkpoint.
  summary = {
      'eval_accuracy': eval_metrics['accuracy'],
      'eval_loss': eval_metrics['loss'],
      'best_eval_accuracy': max(meta['best_eval_accuracy'], eval_metrics['accuracy']),
      'best_step': best_step,
      'step': step,
      'epoch': step / steps_per_epoch,
      'train_wall_s': wall,
      'examples_per_s': step * config.batch_size / wall if wall else 0.0,
      'skipped_steps': skipped,
  }
  metric_logging.write_json(os.path.join(workdir, 'summary.json'), summary)
  if config.plots:
    predictions = evaluation.test_predictions(state, data, config.eval_batch_size)  # All processes.
    if jax.process_index() == 0:
      plots.write_run_plots(workdir, predictions)
  return summary


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


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       data: input_pipeline.Data | None = None):
  """Trains (or resumes training) in `workdir` and evaluates after each epoch.

  `data` (from input_pipeline.create_datasets(config)) may be passed in when
  several runs share it, as a sweep's members do.

  Returns:
    (final train state, summary dict as written to `summary.json`).
  """
  # Everything that can refuse the run does so before the workdir is touched.
  config_checks.validate(config)
  config_checks.check_workdir(workdir)
  data = data or input_pipeline.create_datasets(config)
  config_checks.check_data(config, data)
  steps_per_epoch = input_pipeline.steps_per_epoch(data, config.batch_size)
  total_steps = config.num_epochs * steps_per_epoch
  shift, scale = input_pipeline.normalization_constants(config, data)
  spec = {'num_classes': data.num_classes, 'image_shape': list(data.image_shape),
          'shift': shift, 'scale': scale, 'steps_per_epoch': steps_per_epoch}
  # Replicated on every device; every process builds the same values.
  state = parallel.replicate(create_state_from_spec(config, spec), data.mesh)
  dropout_rng = parallel.replicate(
      jax.random.split(jax.random.key(config.seed))[1], data.mesh)
  step_fn = mesh_train_steps(data.mesh)

  manager = checkpointing.create_manager(
      os.path.join(os.path.abspath(workdir), 'checkpoints'), config.keep_checkpoints)
  meta = {'best_eval_accuracy': 0.0, 'train_wall_s': 0.0}
  restored = checkpointing.restore_latest(manager, state, workdir)
  if restored:
    state, meta, latest = restored
    logging.info('Restored checkpoint %s/%d.', manager.directory, latest)

  os.makedirs(workdir, exist_ok=True)
  metric_logging.write_json(os.path.join(workdir, 'config.json'), config.to_dict())
  # What inference needs besides the checkpoint and the config.
  metric_logging.write_json(os.path.join(workdir, MODEL_SPEC), spec)
  step = first_step = int(state.step)
  show = progress_lib.Progress(
      style=config.progress, num_epochs=config.num_epochs,
      steps_per_epoch=steps_per_epoch, batch_size=config.batch_size,
      every_s=config.progress_every_s)
  # Lines past the checkpoint are from work the resume will redo.
  logger = metric_logging.MetricLogger(workdir, resume_step=step,
                                       log_scalars=show.style != 'bar')
  logger.write_hparams(metric_logging.flat_hparams(config))
  learning_rate_fn = optimizers.create_learning_rate_fn(config, steps_per_epoch)
  nonfinite = divergence.NonFiniteTracker(
      config.nan_policy, config.nan_skip_limit, meta.get('skipped_steps', 0),
      meta.get('nonfinite_in_a_row', 0))
  tracer = profiling.StepTracer(config.profile_steps, workdir)
  wall_before, start = meta['train_wall_s'], time.perf_counter()
  wall = lambda: wall_before + time.perf_counter() - start

  def checkpoint(eval_metrics=None):
    meta.update(epoch=step // steps_per_epoch, train_wall_s=wall(), **nonfinite.state())
    checkpointing.save(
        manager, step, state, meta=dict(meta),
        metrics=eval_metrics and {checkpointing.BEST_METRIC: eval_metrics['accuracy']})

  if step >= total_steps:
    logging.info('Training already finished at step %d (%d epochs); '
                 're-evaluating only.', step, config.num_epochs)
  else:
    logging.info('Training from step %d to %d (%d steps per epoch).',
                 step, total_steps, steps_per_epoch)
  source = data.train if data.mode == 'device' else None
  # One compiled length per run: calls never cross a checkpoint step.
  call_length = min(config.steps_per_call or steps_per_epoch,
                    config.checkpoint_every_steps or steps_per_epoch,
                    steps_per_epoch)
  averager = metric_logging.StepAverager(config.log_every_steps)

  def finish_call(first, num_steps, metrics):
    """Checks a finished call's steps for divergence, then reports them."""
    metrics = jax.tree.map(lambda x: x[:num_steps], jax.device_get(metrics))
    nonfinite.update(first, metrics)
    show.update(first + num_steps, num_steps, metrics)
    for at, averaged in averager.add(first, metrics):
      averaged['learning_rate'] = learning_rate_fn(at - 1)
      averaged['steps_per_s'] = show.steps_per_s
      logger.write(at, 'train', averaged)

  try:
    with preemption.stop_on_signals() as stop, show.logs_above_bar():
      for epoch in range(step // steps_per_epoch, config.num_epochs):
        epoch_start, epoch_first_step = time.perf_counter(), step
        show.start_epoch(epoch, step)
        spans = call_spans(step - epoch * steps_per_epoch, epoch * steps_per_epoch,
                           steps_per_epoch, config.steps_per_call,
                           config.checkpoint_every_steps, tracer.call_ends())
        pending = None
        for num_steps, batches in input_pipeline.train_calls(
            data, config, epoch, spans, call_length):
          tracer.before_call(step)
          state, metrics = step_fn(state, batches, dropout_rng, num_steps, source)
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
            manager.wait_until_finished()
            raise preemption.Interrupted(stop.signum, step, manager.directory)
        if pending:
          finish_call(*pending)
        eval_metrics = evaluation.evaluate(state, data, config.eval_batch_size)
        meta['best_eval_accuracy'] = max(meta['best_eval_accuracy'],
                                         eval_metrics['accuracy'])
        logger.write(step, 'eval', eval_metrics)
        checkpoint(eval_metrics)
        epoch_s = time.perf_counter() - epoch_start
        logger.write(step, 'epoch', {
            'wall_s': epoch_s, 'steps_per_s': (step - epoch_first_step) / epoch_s,
            'examples_per_s': (step - epoch_first_step) * config.batch_size / epoch_s})
        show.end_epoch(step, eval_metrics)
        if show.style == 'off':
          logging.info('Epoch %d/%d: eval accuracy %.4f, loss %.4f (%.2f s).',
                       epoch + 1, config.num_epochs, eval_metrics['accuracy'],
                       eval_metrics['loss'], epoch_s)
    if step == first_step:  # Nothing left to train: evaluate the restored state.
      eval_metrics = evaluation.evaluate(state, data, config.eval_batch_size)
      logger.write(step, 'eval', eval_metrics)
  finally:
    # Also on divergence or interruption: finish pending saves, flush logs.
    tracer.stop()
    manager.wait_until_finished()
    best_step = manager.best_step()
    manager.close()
    logger.close()
  summary = finish_run(workdir, config, state, data, eval_metrics, meta, best_step,
                       step, steps_per_epoch, nonfinite.skipped)
  logging.info('%s', progress_lib.run_summary(summary, workdir, best_step,
                                                 config.plots))
  return state, summary
