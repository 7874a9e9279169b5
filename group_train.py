"""Sweep members trained together, as one vmapped program over a member axis.

Members that differ only in values the train state carries (the injected
learning rate, weight decay and momentum, and the seed, which gives the
initial parameters, dropout keys and data order) share one compiled program:
the train state is stacked on a leading member axis and `train.train_steps`
and `evaluation.eval_steps` are vmapped over it, with the resident training data
shared. Each member keeps its own workdir with exactly what `main.py` writes
(checkpoints, metrics, summary), so it can be resumed or evaluated alone. A
member that diverges is stopped alone: its later steps are skipped (its
per-member step count is 0) and nothing more of it is saved.
"""

import functools
import json
import os
import time

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

import checkpointing
import config_checks
import divergence
import evaluation
import input_pipeline
import metric_logging
import optimizers
import preemption
import progress as progress_lib
import train

# Fields whose values live in the train state (see optimizers.py), so members
# that differ only in these can train as one program.
STATE_FIELDS = ('learning_rate', 'weight_decay', 'momentum', 'seed')


class NotGroupable(Exception):
  """Members that cannot train together (then they train one by one)."""


def group_key(config) -> str:
  """Equal for configs that can share one vmapped program."""
  fields = config.to_dict()
  for name in STATE_FIELDS:
    fields.pop(name)
  # Decay > 0 adds a transform (and state) to the optimizer chain.
  fields['weight_decay_on'] = config.weight_decay > 0
  return json.dumps(fields, sort_keys=True, default=str)


# The member axis leads the state, batches of indices and dropout keys; the
# per-member step count lets a diverged member sit out; the data is shared.
_group_train_steps = jax.jit(
    jax.vmap(train.train_steps, in_axes=(0, 0, 0, 0, None)), donate_argnums=0)
_group_eval_steps = jax.jit(jax.vmap(evaluation.eval_steps, in_axes=(0, None)))


def _evaluate(stacked, data) -> list:
  """Each member's {'loss', 'accuracy'} on the resident test split."""
  sums = jax.device_get(_group_eval_steps(stacked, data.test))
  count = len(sums['count'])
  return [evaluation.metrics_from_sums(jax.tree.map(lambda x: x[i], sums))  # pylint: disable=cell-var-from-loop
          for i in range(count)]


@functools.partial(jax.jit, static_argnums=2)
def _rows(orders, start, length: int):
  return jax.lax.dynamic_slice_in_dim(orders, start, length, axis=1)


class _Member:
  """One member's own files and counters."""

  def __init__(self, config, workdir, state, spec):
    self.config, self.workdir = config, workdir
    self.manager = checkpointing.create_manager(
        os.path.join(os.path.abspath(workdir), 'checkpoints'), config.keep_checkpoints)
    self.meta = {'best_eval_accuracy': 0.0, 'train_wall_s': 0.0}
    restored = checkpointing.restore_latest(self.manager, state, workdir)
    if restored:
      state, self.meta, _ = restored
    self.state = state
    self.alive = True
    self.spec = spec
    self.tracker = divergence.NonFiniteTracker(
        config.nan_policy, config.nan_skip_limit, self.meta.get('skipped_steps', 0),
        self.meta.get('nonfinite_in_a_row', 0))
    self.averager = metric_logging.StepAverager(config.log_every_steps)
    self.learning_rate_fn = optimizers.create_learning_rate_fn(
        config, spec['steps_per_epoch'])
    self.logger = None

  def open_logs(self, step: int) -> None:
    os.makedirs(self.workdir, exist_ok=True)
    metric_logging.write_json(os.path.join(self.workdir, 'config.json'),
                              self.config.to_dict())
    metric_logging.write_json(os.path.join(self.workdir, train.MODEL_SPEC), self.spec)
    self.logger = metric_logging.MetricLogger(self.workdir, resume_step=step,
                                              log_scalars=False)
    self.logger.write_hparams(metric_logging.flat_hparams(self.config))


def train_group(configs, workdirs, data: input_pipeline.Data | None = None) -> list:
  """Trains the members (configs with equal group_key) together.

  `data`: input_pipeline.create_datasets(configs[0]), if already loaded.

  Returns:
    One summary dict per member (as written to its summary.json), or None for
    a member that diverged.

  Raises:
    NotGroupable: more than one device, streamed input, or members at
      different steps.
  """
  base = configs[0]
  if jax.device_count() > 1:
    raise NotGroupable(f'{jax.device_count()} devices: each member uses them all')
  for config, workdir in zip(configs, workdirs):
    config_checks.validate(config)
    config_checks.check_workdir(workdir)
  data = data or input_pipeline.create_datasets(base)
  if data.mode != 'device':
    raise NotGroupable('the data is streamed (input_mode=stream)')
  config_checks.check_data(base, data)
  steps_per_epoch = input_pipeline.steps_per_epoch(data, base.batch_size)
  shift, scale = input_pipeline.normalization_constants(base, data)
  spec = {'num_classes': data.num_classes, 'image_shape': list(data.image_shape),
          'shift': shift, 'scale': scale, 'steps_per_epoch': steps_per_epoch}
  template = train.create_state_from_spec(base, spec)
  members = [_Member(c, w, train.create_state_from_spec(c, spec), spec)
             for c, w in zip(configs, workdirs)]
  steps = {int(m.state.step) for m in members}
  if len(steps) > 1:
    for m in members:
      m.manager.close()
    raise NotGroupable(f'members are at different steps {sorted(steps)}')
  step = steps.pop()
  # One static part (model, optimizer code) for all; the arrays are each member's.
  stacked = jax.tree.map(lambda *x: jnp.stack(x), *[
      template.replace(step=m.state.step, params=m.state.params,
                       batch_stats=m.state.batch_stats, opt_state=m.state.opt_state)
      for m in members])
  for m in members:
    m.state = None
    m.open_logs(step)
  dropout_rngs = jnp.stack([jax.random.split(jax.random.key(c.seed))[1] for c in configs])
  batch_size = base.batch_size
  call_length = min(base.steps_per_call or steps_per_epoch,
                    base.checkpoint_every_steps or steps_per_epoch, steps_per_epoch)
  show = progress_lib.Progress(
      style=base.progress, num_epochs=base.num_epochs, steps_per_epoch=steps_per_epoch,
      batch_size=base.batch_size * len(members), every_s=base.progress_every_s)
  start = time.perf_counter()
  walls = [m.meta['train_wall_s'] for m in members]

  def member_state(i):
    return jax.tree.map(lambda x: x[i], stacked)

  def checkpoint(eval_metrics=None):
    for i, m in enumerate(members):
      if not m.alive:
        continue
      m.meta.update(epoch=step // steps_per_epoch,
                    train_wall_s=walls[i] + time.perf_counter() - start, **m.tracker.state())
      checkpointing.save(
          m.manager, step, member_state(i), meta=dict(m.meta),
          metrics=eval_metrics and {checkpointing.BEST_METRIC: eval_metrics[i]['accuracy']})

  def finish_call(first, num_steps, metrics):
    metrics = jax.device_get(metrics)
    shown = []
    for i, m in enumerate(members):
      if not m.alive:
        continue
      own = jax.tree.map(lambda x: x[i, :num_steps], metrics)  # pylint: disable=cell-var-from-loop
      try:
        m.tracker.update(first, own)
      except divergence.Diverged as e:
        m.alive = False
        logging.warning('Member %s stopped: %s', m.workdir, e)
        continue
      shown.append(own)
      for at, averaged in m.averager.add(first, own):
        averaged['learning_rate'] = m.learning_rate_fn(at - 1)
        averaged['steps_per_s'] = show.steps_per_s
        m.logger.write(at, 'train', averaged)
    if shown:
      show.update(first + num_steps, num_steps,
                  jax.tree.map(lambda *x: np.mean(x, axis=0), *shown))

  eval_metrics = None
  try:
    with preemption.stop_on_signals() as stop, show.logs_above_bar():
      for epoch in range(step // steps_per_epoch, base.num_epochs):
        show.start_epoch(epoch, step)
        orders = jnp.stack([input_pipeline.device_epoch_order(
            data, c.seed, epoch, batch_size, call_length) for c in configs])
        spans = train.call_spans(step - epoch * steps_per_epoch, epoch * steps_per_epoch,
                                 steps_per_epoch, base.steps_per_call,
                                 base.checkpoint_every_steps)
        pending = None
        for first, stop_at in spans:
          num_steps = stop_at - first
          active = jnp.asarray([num_steps if m.alive else 0 for m in members], jnp.int32)
          stacked, metrics = _group_train_steps(
              stacked, {'index': _rows(orders, first, call_length)}, dropout_rngs,
              active, data.train)
          if pending:
            finish_call(*pending)
          pending = (step, num_steps, metrics)
          step += num_steps
          due = (base.checkpoint_every_steps and step % steps_per_epoch
                 and step % base.checkpoint_every_steps == 0)
          if due or stop:
            finish_call(*pending)
            pending = None
            checkpoint()
          if stop:
            for m in members:
              m.manager.wait_until_finished()
            raise preemption.Interrupted(stop.signum, step, workdirs[0])
        if pending:
          finish_call(*pending)
        eval_metrics = _evaluate(stacked, data)
        for i, m in enumerate(members):
          if m.alive:
            m.meta['best_eval_accuracy'] = max(m.meta['best_eval_accuracy'],
                                               eval_metrics[i]['accuracy'])
            m.logger.write(step, 'eval', eval_metrics[i])
        checkpoint(eval_metrics)
        show.end_epoch(step, {k: np.mean([e[k] for e, m in zip(eval_metrics, members)
                                          if m.alive] or [np.nan])
                              for k in ('loss', 'accuracy')})
  finally:
    for m in members:
      m.manager.wait_until_finished()
      m.best_step = m.manager.best_step()
      m.manager.close()
      m.logger.close()
  if eval_metrics is None:  # Nothing was left to train.
    eval_metrics = _evaluate(stacked, data)
  summaries = []
  for i, m in enumerate(members):
    if not m.alive:
      summaries.append(None)
      continue
    summary = train.finish_run(m.workdir, m.config, member_state(i), data,
                               eval_metrics[i], m.meta, m.best_step, step,
                               steps_per_epoch, m.tracker.skipped)
    summaries.append(summary)
  return summaries
