"""Baselines the benchmark compares the trainer with, written independently.

Deliberately minimal and self-contained (no import of the trainer's modules):
the same MLP (784-512-512-10, Dense -> ReLU -> Dropout -> BatchNorm), Adam with
warmup + cosine, batch 128, in hand-written Flax/Optax and in PyTorch.
"""

import time

import flax.linen as nn
from flax.training import train_state
import jax
import jax.numpy as jnp
import numpy as np
import optax

HIDDEN = (512, 512)
DROPOUT = (0.3, 0.4)


class MinimalMLP(nn.Module):
  """The default model, written as a tutorial would."""

  @nn.compact
  def __call__(self, x, train: bool):
    x = x.reshape((x.shape[0], -1)).astype(jnp.float32) / 255.0
    for size, rate in zip(HIDDEN, DROPOUT):
      x = nn.relu(nn.Dense(size)(x))
      x = nn.Dropout(rate, deterministic=not train)(x)
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
    return nn.Dense(10)(x)


class State(train_state.TrainState):
  """TrainState with BatchNorm statistics."""

  batch_stats: dict


def minimal_state(steps_per_epoch, num_epochs, seed=0):
  model = MinimalMLP()
  variables = model.init(jax.random.key(seed), jnp.zeros((1, 28, 28, 1), jnp.uint8),
                         train=False)
  lr = optax.warmup_cosine_decay_schedule(0.0, 1e-3, steps_per_epoch // 2,
                                          num_epochs * steps_per_epoch)
  return State.create(apply_fn=model.apply, params=variables['params'],
                      batch_stats=variables['batch_stats'], tx=optax.adam(lr))


def _step(state, images, labels, rng):
  def loss_fn(params):
    logits, updates = state.apply_fn(
        {'params': params, 'batch_stats': state.batch_stats}, images, train=True,
        rngs={'dropout': rng}, mutable=['batch_stats'])
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), updates
  (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  return state.apply_gradients(grads=grads, batch_stats=updates['batch_stats']), loss


minimal_step = jax.jit(_step, donate_argnums=0)


@jax.jit
def _minimal_epoch(state, images, labels, rng):
  """One epoch as one lax.scan over shuffled in-memory batches."""
  n, batch = images.shape[0], 128
  steps = n // batch
  perm_rng, rng = jax.random.split(rng)
  order = jax.random.permutation(perm_rng, n)[:steps * batch].reshape(steps, batch)

  def body(state, xs):
    idx, step_rng = xs
    return _step(state, images[idx], labels[idx], step_rng)
  return jax.lax.scan(body, state, (order, jax.random.split(rng, steps)))


minimal_epoch = jax.jit(_minimal_epoch, donate_argnums=0)


@jax.jit
def matmul_epoch(images, weights):
  """The matrix products of one epoch of training steps, nearly alone: the roofline.

  Per step of 128: the forward products of the three layers, the weight
  gradients of all three and the input gradients of the two upper ones, on
  float32 operands of the model's shapes, and a plain SGD update so that every
  product is used (no bias, activation, dropout, BatchNorm, loss or Adam).
  """
  def step(weights, x):
    h, acts = x.astype(jnp.float32), []
    for w in weights:
      acts.append(h)
      h = h @ w
    g, new = h, list(weights)
    for i in reversed(range(len(weights))):
      new[i] = weights[i] - 1e-6 * (acts[i].T @ g)
      if i:
        g = g @ weights[i].T
    return new, None
  return jax.lax.scan(step, weights, images.reshape(-1, 128, 784))[0]


def matmul_weights(seed=0):
  sizes = (784, *HIDDEN, 10)
  keys = jax.random.split(jax.random.key(seed), len(sizes) - 1)
  return [jax.random.normal(k, (a, b), jnp.float32) * 0.01
          for k, a, b in zip(keys, sizes[:-1], sizes[1:])]


@jax.jit
def minimal_accuracy(state, images, labels):
  logits = state.apply_fn({'params': state.params, 'batch_stats': state.batch_stats},
                          images, train=False)
  return jnp.mean(jnp.argmax(logits, -1) == labels)


def run_minimal_loop(train, test, num_epochs):
  """Trains like the default config; returns per-epoch times and accuracies."""
  images, labels = jax.device_put(train['x']), jax.device_put(train['y'])
  test_images, test_labels = jax.device_put(test['x']), jax.device_put(test['y'])
  state = minimal_state(len(labels) // 128, num_epochs)
  rng = jax.random.key(1)
  epochs = []
  for epoch in range(num_epochs):
    t = time.perf_counter()
    state, losses = minimal_epoch(state, images, labels, jax.random.fold_in(rng, epoch))
    accuracy = float(minimal_accuracy(state, test_images, test_labels))
    epochs.append({'epoch_s': time.perf_counter() - t, 'accuracy': accuracy,
                   'time': time.time()})
  return epochs


def torch_steps_per_s(num_steps, warmup=20, threads=None):
  """Samples/s of bare PyTorch CPU training steps of the same model."""
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn as tnn  # pylint: disable=g-import-not-at-top
  if threads:
    torch.set_num_threads(threads)
  torch.manual_seed(0)
  layers, width = [], 784
  for size, rate in zip(HIDDEN, DROPOUT):
    layers += [tnn.Linear(width, size), tnn.ReLU(), tnn.Dropout(rate),
               tnn.BatchNorm1d(size, momentum=0.1)]
    width = size
  model = tnn.Sequential(*layers, tnn.Linear(width, 10))
  optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
  loss_fn = tnn.CrossEntropyLoss()
  rng = np.random.default_rng(0)
  x = torch.from_numpy(rng.integers(0, 256, (num_steps, 128, 784), dtype=np.uint8))
  y = torch.from_numpy(rng.integers(0, 10, (num_steps, 128)))
  model.train()

  def step(i):
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(model(x[i].float() / 255.0), y[i])
    loss.backward()
    optimizer.step()
  for i in range(warmup):
    step(i % num_steps)
  t = time.perf_counter()
  for i in range(num_steps):
    step(i)
  elapsed = time.perf_counter() - t
  return {'samples_per_s': num_steps * 128 / elapsed,
          'step_ms': 1000 * elapsed / num_steps, 'threads': torch.get_num_threads(),
          'version': torch.__version__}
