"""Evaluation and prediction on the test split: pure steps and their loops.

`eval_step` sums cross-entropy and correct predictions over the unmasked
examples of a batch; `evaluate` runs it over every test example exactly once
(padded, masked batches), split over the device mesh like training.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

import input_pipeline
from trainkit import losses
from trainkit import optimizers
from trainkit import parallel


@jax.jit
def eval_step(state, batch):
  """Sums of cross-entropy and correct predictions over unmasked examples.

  Evaluation always reports standard cross-entropy, whatever the training
  objective, so losses compare across configs.
  """
  logits = state.apply_fn(
      {'params': state.params, 'batch_stats': state.batch_stats},
      batch['x'], train=False)
  mask = batch['mask']
  return {
      'loss_sum': jnp.sum(losses.cross_entropy(logits, batch['y']) * mask),
      'correct': jnp.sum((jnp.argmax(logits, -1) == batch['y']) * mask),
      'count': jnp.sum(mask),
  }


def _eval_steps(state, batches):
  """`eval_step` sums over stacked batches [n, batch, ...], in one call."""
  def body(totals, batch):
    return jax.tree.map(jnp.add, totals, eval_step(state, batch)), None
  zeros = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype),
                       jax.eval_shape(eval_step, state, jax.tree.map(lambda x: x[0], batches)))
  return jax.lax.scan(body, zeros, batches)[0]


def _predict_steps(state, batches):
  """Class probabilities [n, batch, classes] for stacked batches [n, batch, ...]."""
  def predict(images):
    logits = state.apply_fn(
        {'params': state.params, 'batch_stats': state.batch_stats}, images, train=False)
    return jax.nn.softmax(logits.astype(jnp.float32))
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
  """The test split's {'x', 'y', 'probs'} in order, as numpy arrays."""
  state = optimizers.params_for_eval(state)
  parts = []
  for batches in input_pipeline.eval_calls(data, batch_size):
    probs, batches = jax.device_get(mesh_steps(data.mesh)['predict'](state, batches))
    mask = batches['mask'].reshape(-1)
    parts.append({'x': batches['x'].reshape(-1, *data.image_shape)[mask],
                  'y': batches['y'].reshape(-1)[mask],
                  'probs': probs.reshape(mask.size, -1)[mask]})
  return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def evaluate(state, data, batch_size: int) -> dict:
  """Loss and accuracy over every test example exactly once.

  Of the averaged parameters, when an average is kept (config.ema_decay).
  """
  state = optimizers.params_for_eval(state)
  totals = None
  for batches in input_pipeline.eval_calls(data, batch_size):
    sums = mesh_steps(data.mesh)['eval'](state, batches)
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  return metrics_from_sums(jax.device_get(totals))


def metrics_from_sums(totals) -> dict:
  """{'loss', 'accuracy'} from eval_step's sums (host values)."""
  count = int(totals['count'])
  return {'loss': float(totals['loss_sum']) / count,
          'accuracy': float(totals['correct']) / count}
