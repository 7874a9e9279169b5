"""TabM: k MLPs sharing their weights, on piecewise-linear embeddings of the numbers.

For tables, after two papers: Gorishniy, Rubachev and Babenko, "On Embeddings
for Numerical Features in Tabular Deep Learning" (2022), and Gorishniy et al.,
"TabM: Advancing Tabular Deep Learning with Parameter-Efficient Ensembling"
(ICLR 2025). Written here for Flax linen from the papers' descriptions.

- Each numeric feature (a feature with bins: trainkit/data/statistics.py
  fits them as quantiles of the training rows) becomes a vector of
  `embedding_size`: an affine map of its standardised value plus a learned
  map of its piecewise-linear code, one entry per bin (1 for the bins below
  the value, the fraction of its own bin, 0 above). The learned map starts
  at zero, so training starts from the affine embedding alone. Other
  features (one-hot levels, missing indicators) enter as they are.
- `members` MLPs share every kernel (BatchEnsemble): member i's layer is
  ((x * r_i) @ W) * s_i + b_i, with r_i of random signs in the first layer
  and ones elsewhere, so the members start apart and cost k small vectors
  a layer. Every member has its own head: the outputs carry a member axis
  ([batch, members, ...]), which trainkit/tasks/ensemble.py trains on (the
  mean of the members' losses) and averages for everything else.

The bins are constants of the module, so every export holds them.
"""

from typing import Any
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from trainkit.models import mlp

# PyTorch's Linear init, U(+-1/sqrt(fan_in)), which TabM's recipe is tuned with.
_uniform = nn.initializers.variance_scaling(1 / 3, 'fan_in', 'uniform')


def code_tables(bins: Sequence[Sequence[float]]) -> tuple:
  """(left, width, low, high) [features, bins]: a bin's code is clip((x - left) / width, low, high).

  A feature's first bin is open below and its last open above (values
  beyond the training range extend them linearly); padding bins give 0.
  """
  size = max(len(edges) - 1 for edges in bins)
  left = np.zeros((len(bins), size), np.float32)
  width = np.ones((len(bins), size), np.float32)
  low = np.zeros((len(bins), size), np.float32)
  high = np.zeros((len(bins), size), np.float32)
  for f, edges in enumerate(bins):
    edges = np.asarray(edges, np.float64)
    n = len(edges) - 1
    left[f, :n], width[f, :n] = edges[:-1], np.diff(edges)
    high[f, :n] = 1.0
    low[f, 0], high[f, n - 1] = -np.inf, np.inf
    if n > 1:
      high[f, 0], low[f, n - 1] = 1.0, 0.0
  return left, width, low, high


def piecewise_linear_code(x, bins) -> jax.Array:
  """The piecewise-linear code [batch, features, max bins] of `x` [batch, features]."""
  left, width, low, high = code_tables(bins)
  return jnp.clip((x[..., None] - left) / width, low, high)


class NumericEmbeddings(nn.Module):
  """[batch, features] -> [batch, features, size]: affine of the value + map of its code."""
  bins: tuple
  size: int

  @nn.compact
  def __call__(self, raw, scaled):
    code = piecewise_linear_code(raw, self.bins)
    features, bins = code.shape[1:]
    init = nn.initializers.uniform(2.0)  # Then shifted to U(-1, 1) and scaled below.
    bound = 1.0 / np.sqrt(self.size)
    weight = self.param('weight', lambda k, s: (init(k, s) - 1.0) * bound,
                        (features, self.size))
    bias = self.param('bias', lambda k, s: (init(k, s) - 1.0) * bound, (features, self.size))
    piecewise = self.param('piecewise', nn.initializers.zeros, (features, bins, self.size))
    return (scaled[..., None] * weight + bias
            + jnp.einsum('bft,ftd->bfd', code, piecewise))


class EnsembleDense(nn.Module):
  """A Dense layer of `members` members sharing one kernel: x [batch, members, in]."""
  features: int
  members: int
  random_signs: bool = False  # The first layer's: the members start apart.

  @nn.compact
  def __call__(self, x):
    inputs = x.shape[-1]
    if self.random_signs:
      signs = lambda k, s: jax.random.rademacher(k, s, jnp.float32)
      r = self.param('input_scale', signs, (self.members, inputs))
    else:
      r = self.param('input_scale', nn.initializers.ones, (self.members, inputs))
    kernel = self.param('kernel', _uniform, (inputs, self.features))
    s = self.param('output_scale', nn.initializers.ones, (self.members, self.features))
    # One bias drawn, the same for every member at the start.
    bias = self.param('bias', lambda k, shape: jnp.broadcast_to(
        (jax.random.uniform(k, shape[1:]) * 2 - 1) / np.sqrt(inputs), shape),
                      (self.members, self.features))
    return (x * r) @ kernel * s + bias


class MemberDense(nn.Module):
  """A Dense layer of each member's own: x [batch, members, in] -> [batch, members, features]."""
  features: int

  @nn.compact
  def __call__(self, x):
    members, inputs = x.shape[-2:]
    kernel = self.param('kernel', lambda k, s: jax.vmap(lambda kk: _uniform(kk, s[1:]))(
        jax.random.split(k, s[0])), (members, inputs, self.features))
    bias = self.param('bias', lambda k, s: (jax.random.uniform(k, s) * 2 - 1) / np.sqrt(inputs),
                      (members, self.features))
    return jnp.einsum('bki,kio->bko', x, kernel) + bias


class TabM(nn.Module):
  """Numeric embeddings -> `members` BatchEnsemble MLPs -> a head per member."""
  head: Any
  hidden_sizes: Sequence[int]
  members: int
  bins: tuple  # Per input feature its bin edges, () for a feature not embedded.
  embedding_size: int = 16
  dropout_rates: Sequence[float] = ()
  input_shift: float | tuple = 0.0
  input_scale: float | tuple = 1.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool, keep_probs=None):
    raw = x.reshape((x.shape[0], -1)).astype(jnp.float32)
    scaled = mlp.scaled_inputs(x, self.input_shift, self.input_scale, jnp.float32)
    embedded = [i for i, edges in enumerate(self.bins) if len(edges) >= 2]
    if embedded and self.embedding_size:
      others = [i for i in range(raw.shape[1]) if i not in set(embedded)]
      vectors = NumericEmbeddings(tuple(self.bins[i] for i in embedded), self.embedding_size)(
          raw[:, embedded], scaled[:, embedded])
      h = jnp.concatenate([vectors.reshape(x.shape[0], -1), scaled[:, others]], -1)
    else:
      h = scaled
    h = jnp.broadcast_to(h[:, None].astype(self.dtype),
                         (h.shape[0], self.members, h.shape[1]))
    rates = tuple(self.dropout_rates) or (0.0,) * len(self.hidden_sizes)
    if keep_probs is None:
      keep_probs = mlp.keep_probabilities(rates, len(self.hidden_sizes))
    for i, (size, rate) in enumerate(zip(self.hidden_sizes, rates)):
      h = nn.relu(EnsembleDense(size, self.members, random_signs=i == 0)(h))
      if rate > 0:
        h = mlp.Dropout()(h, keep_probs[i], deterministic=not train)
    # The task's output layers, each member's own: outputs [batch, members, ...].
    return self.head.head(h.astype(jnp.float32), MemberDense)


def create_model(model_config, head, bins: tuple, input_shift=0.0, input_scale=1.0,
                 dtype='float32') -> TabM:
  """TabM from the `config.model` section; `bins` from the model spec (per feature)."""
  return TabM(head=head, hidden_sizes=tuple(model_config.hidden_sizes),
              members=model_config.members, bins=bins,
              embedding_size=model_config.embedding_size,
              dropout_rates=tuple(model_config.dropout_rates), input_shift=input_shift,
              input_scale=input_scale, dtype=jnp.dtype(dtype))
