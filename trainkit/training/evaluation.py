"""Evaluation and prediction on the test split: pure steps and their loops.

`eval_step` sums the task's figures (trainkit/tasks) over the unmasked
examples of a batch; `evaluate` runs it over every test example exactly once
(padded, masked batches), split over the device mesh like training, and the
task turns the totals into its metrics. A metric that is not a sum (ROC-AUC)
comes from per-example values the step returns too (`eval_values`: e.g.
each example's score), gathered whole, in order, from every device and
process.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from trainkit.data import calls
from trainkit.runtime import parallel
from trainkit.training import optimizers


@jax.jit
def eval_step(state, batch):
  """(The task's sums over the unmasked examples of a batch and their count, its values).

  The values are per example, with the batch's mask ({} when the task's
  metrics are all sums).
  """
  outputs = state.apply_fn(
      {'params': state.params, 'batch_stats': state.batch_stats},
      batch['x'], train=False)
  mask = batch['mask']
  values = state.task.eval_values(outputs, batch['y'])
  if values:
    values = {**values, 'mask': mask}
  return {**state.task.eval_sums(outputs, batch['y'], mask), 'count': jnp.sum(mask)}, values


def _eval_steps(state, batches):
  """`eval_step` over stacked batches [n, batch, ...], in one call: (sums, values [n, batch])."""
  def body(totals, batch):
    sums, values = eval_step(state, batch)
    return jax.tree.map(jnp.add, totals, sums), values
  first = jax.tree.map(lambda x: x[0], batches)
  zeros = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype),
                       jax.eval_shape(eval_step, state, first)[0])
  return jax.lax.scan(body, zeros, batches)


def _predict_steps(state, batches):
  """The task's predictions [n, batch, ...] for stacked batches [n, batch, ...]."""
  def predict(x):
    outputs = state.apply_fn(
        {'params': state.params, 'batch_stats': state.batch_stats}, x, train=False)
    return state.task.predict(outputs)
  return jax.lax.map(predict, batches['x'])


# On one device (sweep groups vmap these; inference and tests call them).
eval_steps = jax.jit(_eval_steps)
predict_steps = jax.jit(_predict_steps)


@functools.cache
def mesh_steps(mesh) -> dict:
  """'eval' and 'predict' compiled for `mesh`: state replicated, batches split.

  Sums and predictions come back replicated, so every process reads them
  whole; 'predict' returns the batches too, as in a multi-process run each
  process holds only its own rows.
  """
  state, batches = parallel.replicated_sharding(mesh), parallel.row_sharding(mesh)
  return {
      'eval': jax.jit(_eval_steps, in_shardings=(state, batches), out_shardings=state),
      'predict': jax.jit(lambda s, b: (_predict_steps(s, b), b),
                         in_shardings=(state, batches), out_shardings=state),
  }


def test_predictions(state, data, batch_size: int) -> dict:
  """The test split's inputs 'x', targets 'y' and the task's predictions, in order.

  As numpy arrays, one row per example (a classifier's predictions are its
  class probabilities, 'probs').
  """
  state = optimizers.params_for_eval(state)
  parts = []
  for batches in calls.eval_calls(data, batch_size):
    predictions, batches = jax.device_get(mesh_steps(data.mesh)['predict'](state, batches))
    mask = batches.pop('mask').reshape(-1)
    rows = {**batches, **predictions}
    parts.append({k: v.reshape(mask.size, *v.shape[2:])[mask] for k, v in rows.items()})
  return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def evaluate(state, data, batch_size: int) -> dict:
  """The task's metrics over every test example exactly once.

  Of the averaged parameters, when an average is kept (config.ema_decay).
  """
  state = optimizers.params_for_eval(state)
  totals, parts = None, []
  for batches in calls.eval_calls(data, batch_size):
    # One copy to the host per call: a small table evaluates every epoch,
    # where each copy's fixed cost counts.
    sums, values = jax.device_get(mesh_steps(data.mesh)['eval'](state, batches))
    totals = sums if totals is None else jax.tree.map(np.add, totals, sums)
    parts.append(values)
  return metrics_from_sums(state, totals, unmasked(parts))


def unmasked(parts: list) -> dict:
  """eval_step's values of several calls ([n, batch] each) as one row per real example."""
  if not parts or not parts[0]:
    return {}
  rows = []
  for values in parts:
    mask = np.asarray(values['mask']).reshape(-1).astype(bool)
    rows.append({k: np.asarray(v).reshape(mask.size, *np.shape(v)[2:])[mask]
                 for k, v in values.items() if k != 'mask'})
  return {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}


def metrics_from_sums(state, totals, values: dict) -> dict:
  """The task's metrics from eval_step's summed totals and its unmasked values (host)."""
  return state.task.metrics_from_sums(totals, int(totals['count']), values)
