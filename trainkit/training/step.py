"""The pure train step, and the scan of many steps in one device call.

`train_step(state, batch, rng)` holds no Python-side state, so it is vmapped
over sweep members (trainkit/search/groups.py) and sharded over a mesh as it is.
"""

import functools

import jax
import jax.numpy as jnp
import optax

from trainkit.runtime import parallel
from trainkit.training.state import TrainState


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
    num_steps: how many rows of `batches` to train on (<= n; a call of one row runs it).
    source: optional {'x', 'y'} arrays resident on the device.

  Returns:
    (state after num_steps steps, per-step metrics {'loss': [n], ...} (the
    task's train metrics too), zero in the skipped rows).
  """
  def run(state, batch):
    if source is not None:
      batch = jax.tree.map(lambda x: x[batch['index']], source)
    return _train_step(state, batch, rng)

  # Jitted, so the step is traced once for the cond's branch and the skipped
  # branch's shapes alike (eval_shape of the plain function traced the
  # model, its gradient and the optimizer a second time; the first call's
  # time gains a few tens of ms, within this machine's noise).
  traced_run = jax.jit(run)

  def body(state, indexed):
    i, batch = indexed
    skip = lambda state, batch: (state, jax.tree.map(
        lambda x: jnp.zeros(x.shape, x.dtype), jax.eval_shape(traced_run, state, batch)[1]))
    return jax.lax.cond(i < num_steps, traced_run, skip, state, batch)

  n = jax.tree.leaves(batches)[0].shape[0]
  if n == 1:
    # No loop for one step: XLA's CPU compiler leaves a convolution's weight
    # gradient inside a loop body in a slow generic form (jax#12868; 8x here).
    state, metrics = run(state, jax.tree.map(lambda x: x[0], batches))
    return state, jax.tree.map(lambda x: x[None], metrics)
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
