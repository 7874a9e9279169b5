"""The MLP: a backbone of Dense layers, and the task's head on it (trainkit/tasks)."""

import functools
from typing import Any
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from trainkit import errors

ACTIVATIONS = {
    'relu': nn.relu,
    'gelu': nn.gelu,
    'swish': nn.swish,
    'silu': nn.silu,
    'tanh': nn.tanh,
    'sigmoid': nn.sigmoid,
    'elu': nn.elu,
    'leaky_relu': nn.leaky_relu,
}
KERNEL_INITS = ('lecun_normal', 'normal')
DTYPES = ('float32', 'bfloat16')  # Compute dtypes of the layers.


class Dropout(nn.Module):
  """Flax's `nn.Dropout`, with a keep probability that may be a traced value.

  Named like it, so its dropout keys (the module path folded in) and masks
  are the same. Kept units are multiplied by 1 / keep rather than divided by
  keep: XLA rewrites a division by a traced scalar one way alone and another
  under vmap, and a sweep member trained in a vmapped group must compute what
  it computes alone.
  """

  @nn.compact
  def __call__(self, x, keep_prob, *, deterministic: bool):
    if deterministic:
      return x
    mask = jax.random.bernoulli(self.make_rng('dropout'), keep_prob, x.shape)
    return jax.lax.select(mask, x * (1 / jnp.asarray(keep_prob, x.dtype)), jnp.zeros_like(x))


def keep_probabilities(rates, num_layers: int) -> tuple:
  """1 - rate for each of `num_layers` hidden layers (no rates: no dropout).

  In double precision on the host, as nn.Dropout computes it (in float32 on
  the device, 1 - rate differs in the last bit for rates above one half).
  """
  return tuple(1.0 - float(rate) for rate in tuple(rates) or (0.0,) * num_layers)


def keep_probs(model_config) -> jax.Array:
  """The keep probabilities of the `config.model` section, as the train state holds them."""
  # Rounded to float32 on the host: placing a numpy array runs no program (an
  # eager conversion loads one, a few ms in every process).
  return jax.device_put(np.asarray(keep_probabilities(model_config.dropout_rates,
                                                     len(model_config.hidden_sizes)), np.float32))


def scaled_inputs(x, shift, scale, dtype) -> jax.Array:
  """`(x - shift) / scale` of inputs as stored, flattened to [batch, features], as `dtype`.

  `shift` and `scale` are numbers, or one per input feature.
  """
  x = x.reshape((x.shape[0], -1)).astype(jnp.float32)
  shift, scale = (s if isinstance(s, (int, float)) else jnp.asarray(s, jnp.float32)
                  for s in (shift, scale))
  return ((x - shift) / scale).astype(dtype)


class MLP(nn.Module):
  """Flatten -> [Dense -> activation -> Dropout -> BatchNorm] * n -> the task's head.

  Takes inputs as stored (e.g. uint8 images) and applies `(x - input_shift) /
  input_scale` itself, so the host ships compact integers and an exported model
  needs no separate preprocessing. The shift and scale are numbers, or one
  per input feature (a tuple as long as a flattened input).

  `head` is the task (trainkit/tasks): `head.head(features, dense)` adds its
  output layers and returns its outputs; a classifier's is one Dense layer of
  class logits.

  A hidden layer whose `dropout_rates` entry is 0 has no dropout. In training,
  `keep_probs` (1 - rate per hidden layer, see `keep_probabilities`) may be
  given as values instead of the rates: the train step passes the train
  state's, so one compiled step serves every rate of a sweep or search.
  """

  hidden_sizes: Sequence[int]
  head: Any
  activation: Callable[[jnp.ndarray], jnp.ndarray] = nn.relu
  dropout_rates: Sequence[float] = ()
  use_batchnorm: bool = True
  batchnorm_momentum: float = 0.9
  kernel_init: str = 'lecun_normal'
  init_scale: float = 0.01
  input_shift: float | tuple = 0.0
  input_scale: float | tuple = 255.0
  dtype: Any = jnp.float32  # Compute dtype; parameters stay float32.

  @nn.compact
  def __call__(self, x, *, train: bool, keep_probs=None):
    x = scaled_inputs(x, self.input_shift, self.input_scale, self.dtype)
    if self.kernel_init == 'normal':
      # The JAX docs' init draws biases from the same normal as the kernels.
      init = nn.initializers.normal(self.init_scale)
      dense = functools.partial(nn.Dense, kernel_init=init, bias_init=init,
                                dtype=self.dtype)
    else:
      dense = functools.partial(nn.Dense, dtype=self.dtype)
    rates = tuple(self.dropout_rates) or (0.0,) * len(self.hidden_sizes)
    if keep_probs is None:
      keep_probs = keep_probabilities(rates, len(self.hidden_sizes))
    for i, (size, rate) in enumerate(zip(self.hidden_sizes, rates)):
      x = dense(size)(x)
      x = self.activation(x)
      if rate > 0:
        x = Dropout()(x, keep_probs[i], deterministic=not train)
      if self.use_batchnorm:
        x = nn.BatchNorm(use_running_average=not train,
                         momentum=self.batchnorm_momentum, dtype=self.dtype)(x)
    return self.head.head(x, dense)


def create_model(model_config, head, input_shift=0.0, input_scale=255.0, dtype='float32'):
  """Builds the MLP from the `config.model` section (`dtype`: compute dtype).

  `head`: the task (trainkit/tasks) whose output layers end the model.
  """
  return MLP(
      hidden_sizes=tuple(model_config.hidden_sizes),
      head=head,
      activation=ACTIVATIONS[model_config.activation],
      dropout_rates=tuple(model_config.dropout_rates),
      use_batchnorm=model_config.use_batchnorm,
      batchnorm_momentum=model_config.batchnorm_momentum,
      kernel_init=model_config.kernel_init,
      init_scale=model_config.init_scale,
      input_shift=input_shift,
      input_scale=input_scale,
      dtype=jnp.dtype(dtype),
  )


def check_config(config) -> None:
  """Refuses the `config.model` fields (and the compute dtype) the MLP cannot be built from."""
  errors.numbers(config, ('model.batchnorm_momentum', 'model.init_scale'))
  errors.one_of(config, 'model.activation', tuple(ACTIVATIONS))
  errors.one_of(config, 'model.kernel_init', KERNEL_INITS)
  errors.one_of(config, 'dtype', DTYPES)
  model = config.model
  sizes = tuple(model.hidden_sizes)
  errors.require(all(isinstance(s, int) and s >= 1 for s in sizes),
                 'model.hidden_sizes', sizes, 'must be positive integers')
  rates = tuple(model.dropout_rates)
  errors.require(len(rates) in (0, len(sizes)), 'model.dropout_rates', rates,
                 f'needs one rate per hidden layer ({len(sizes)})')
  errors.require(all(0 <= r < 1 for r in rates), 'model.dropout_rates', rates,
                 'each rate must be in [0, 1)')
  errors.require(0 <= model.batchnorm_momentum < 1, 'model.batchnorm_momentum',
                 model.batchnorm_momentum, 'must be in [0, 1)')
  errors.require(model.init_scale > 0, 'model.init_scale', model.init_scale, 'must be > 0')
