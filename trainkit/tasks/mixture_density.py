"""Mixture density networks: k Gaussian components and a softmax gate per input.

For inverse problems, where one input has several valid targets, a mixture
puts probability on each branch instead of regressing to their mean (between
the branches, where there is no data). Trained on the mixture's negative
log-likelihood in a stable form: the gate as log-softmax, the components'
log-densities summed in log space (log-sum-exp), std-devs floored by a
softplus (regression.positive_std), so no component can collapse onto a point.
Targets are standardised like regression's; metrics are in their own units:
the NLL and the RMSE of the mixture's mean.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp

from trainkit import errors
from trainkit.tasks import base
from trainkit.tasks import losses
from trainkit.tasks import regression


@dataclasses.dataclass(frozen=True)
class MixtureDensity(base.Task):
  """`num_components` Gaussians over the target (diagonal), mixed by a softmax gate."""
  targets: regression.Targets
  num_components: int = 5
  SCALES_TARGETS = True  # The model predicts (y - mean) / std of the training split.
  # What `predict` returns, in the order a predictions file shows it.
  PREDICTIONS = ('weights', 'means', 'stds', 'mean', 'mode')

  @classmethod
  def metrics(cls, config) -> tuple:
    del config
    return ('loss', 'nll', 'rmse')

  @classmethod
  def curves(cls, config) -> tuple:
    del config
    return ('nll', 'rmse')

  @classmethod
  def check_fields(cls, config) -> None:
    errors.require(isinstance(config.num_components, int)
                   and not isinstance(config.num_components, bool)
                   and config.num_components >= 1, 'num_components', config.num_components,
                   "must be an integer >= 1 (the mixture's Gaussian components)")

  @classmethod
  def create(cls, config, spec) -> 'MixtureDensity':
    return cls(regression.Targets.of(spec), config.num_components)

  def for_training(self, config) -> 'MixtureDensity':
    del config  # Its objective is its own.
    return self

  def head(self, x, dense):
    k, size = self.num_components, self.targets.size
    # Each component's mean and raw scale, as the seed's [batch, k, 2] for a
    # scalar target; then the gate's logits [batch, k].
    components = dense(k * 2 * size)(x).astype(jnp.float32).reshape(-1, k, 2, size)
    logits = dense(k)(x).astype(jnp.float32)
    return {'mean': components[:, :, 0], 'std': regression.positive_std(components[:, :, 1]),
            'logits': logits}

  @staticmethod
  def _log_likelihood(y, mean, std, logits):
    """Log p(y) per example: y [batch, size], components [batch, k, size]."""
    component = -regression.gaussian_nll(y[:, None, :], mean, std).sum(-1)
    return jax.nn.logsumexp(jax.nn.log_softmax(logits, -1) + component, axis=-1)

  def objective(self, outputs, y, weights=None):
    """The mixture's mean NLL; with sample weights, their weighted mean."""
    z = self.targets.standardised(y)
    log_likelihood = self._log_likelihood(z, outputs['mean'], outputs['std'], outputs['logits'])
    if weights is None:
      return -jnp.mean(log_likelihood)
    return losses.weighted_mean(-log_likelihood, weights.astype(jnp.float32))

  def train_metrics(self, outputs, y, loss) -> dict:
    """The batch's NLL in the targets' units (its loss is in standardised ones)."""
    del outputs, y
    return {'nll': loss + self.targets.log_scale()}

  def _original(self, outputs):
    mean, std = self.targets.original(outputs['mean'], outputs['std'])
    weights = jax.nn.softmax(outputs['logits'], -1)
    return mean, std, weights

  def eval_sums(self, outputs, y, mask) -> dict:
    y_flat = self.targets.flat(y)
    mean, std, weights = self._original(outputs)
    nll = -self._log_likelihood(y_flat, mean, std, outputs['logits'])
    mixture_mean = jnp.einsum('bk,bks->bs', weights, mean)
    return {'nll_sum': jnp.sum(nll * mask),
            'squared_error_sum': jnp.sum(jnp.square(mixture_mean - y_flat) * mask[:, None])}

  def eval_values(self, outputs, y) -> dict:
    del outputs, y  # Every metric is a sum.
    return {}

  def metrics_from_sums(self, sums, count: int, values: dict) -> dict:
    del values
    nll = float(sums['nll_sum']) / count
    rmse = math.sqrt(float(sums['squared_error_sum']) / (count * self.targets.size))
    return {'loss': nll, 'nll': nll, 'rmse': rmse}

  def predict(self, outputs) -> dict:
    """The mixture: weights, means and std-devs; its mean, and its most likely value.

    The most likely value is taken among the components' means (the mixture's
    density is highest at or near one of them unless components overlap).
    """
    mean, std, weights = self._original(outputs)
    log_density = jax.vmap(  # At each component mean, of the whole mixture.
        lambda m, s, w, at: jax.nn.logsumexp(
            jnp.log(w) - regression.gaussian_nll(at[:, None, :], m[None], s[None]).sum(-1),
            axis=-1))(mean, std, weights, mean)
    best = jnp.argmax(log_density, -1)
    mode = jnp.take_along_axis(mean, best[:, None, None], axis=1)[:, 0]
    return {'weights': weights, 'means': self.targets.unflat(mean),
            'stds': self.targets.unflat(std),
            'mean': self.targets.unflat(jnp.einsum('bk,bks->bs', weights, mean)),
            'mode': self.targets.unflat(mode)}

  def prediction_names(self, class_names) -> dict:
    """Names a predictions file gives `predict`'s outputs, where not their own."""
    del class_names
    return {}

  def serving(self, outputs) -> dict:
    """What an exported model serves: the mixture and its summaries, in the targets' units."""
    return self.predict(outputs)
