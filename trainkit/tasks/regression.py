"""Regression: real-valued targets (a scalar or any shape), a Gaussian or a point head.

The model predicts in standardised target units (training-split mean and
std-dev per target element, kept in the workdir's model.json), which keeps
the loss well scaled whatever the targets' units; every metric is reported in
the targets' own units. With `regression_loss='nll'` the head predicts a mean
and a std-dev per target element (softplus, floored, so it cannot collapse to
zero) and trains on the Gaussian negative log-likelihood; with 'mse' it
predicts the mean alone.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from trainkit import errors
from trainkit.tasks import base
from trainkit.tasks import losses

LOSSES = ('nll', 'mse')
# The least std-dev the Gaussian head predicts, in standardised units: the
# likelihood of a point the head fits exactly stays finite.
MIN_STD = 1e-3
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def gaussian_nll(y, mean, std):
  """-log N(y | mean, std^2), elementwise."""
  return _HALF_LOG_2PI + jnp.log(std) + 0.5 * jnp.square((y - mean) / std)


def positive_std(raw):
  """A std-dev from an unconstrained output: softplus, at least MIN_STD."""
  return jax.nn.softplus(raw) + MIN_STD


@dataclasses.dataclass(frozen=True)
class Targets:
  """A target's shape and its standardisation (per element, original units)."""
  shape: tuple
  shift: tuple
  scale: tuple

  @classmethod
  def of(cls, spec) -> 'Targets':
    return cls(tuple(spec.target_shape), tuple(spec.target_shift), tuple(spec.target_scale))

  @property
  def size(self) -> int:
    return math.prod(self.shape)

  def flat(self, y):
    """Targets [batch, ...] as float32 [batch, size]."""
    return y.reshape(y.shape[0], self.size).astype(jnp.float32)

  def standardised(self, y):
    return (self.flat(y) - jnp.asarray(self.shift)) / jnp.asarray(self.scale)

  def original(self, mean, std=None):
    """Standardised means (and std-devs), last axis the target's elements, in original units."""
    mean = mean * jnp.asarray(self.scale) + jnp.asarray(self.shift)
    return mean if std is None else (mean, std * jnp.asarray(self.scale))

  def log_scale(self) -> float:
    """What standardising adds to a density's log per example: sum of log std-devs."""
    return float(np.sum(np.log(self.scale)))

  def unflat(self, values):
    """[batch, ..., size] -> [batch, ..., *shape]."""
    return values.reshape(*values.shape[:-1], *self.shape)

  def spread_sums(self, y, mask) -> dict:
    """Sums of the targets' deviations from the training mean, for R^2."""
    deviation = (self.flat(y) - jnp.asarray(self.shift)) * mask[:, None]
    return {'deviation_sum': deviation.sum(0), 'deviation_sq_sum': jnp.square(deviation).sum(0)}


def r2(sums, count: int) -> float:
  """R^2 per target element from sums of squared errors and deviations, averaged.

  As scikit-learn's r2_score (uniform average over outputs).
  """
  total = (np.asarray(sums['deviation_sq_sum'], np.float64)
           - np.square(np.asarray(sums['deviation_sum'], np.float64)) / count)
  squared_errors = np.asarray(sums['squared_error_sum'], np.float64)
  return float(np.mean(1.0 - squared_errors / np.maximum(total, np.finfo(np.float64).tiny)))


@dataclasses.dataclass(frozen=True)
class Regression(base.Task):
  """A Gaussian (mean, std-dev) or point (mean) prediction per target element."""
  targets: Targets
  loss: str = 'nll'  # One of LOSSES.
  SCALES_TARGETS = True  # The model predicts (y - mean) / std of the training split.
  # What `predict` returns (the std-dev with the 'nll' head), in file order.
  PREDICTIONS = ('mean', 'std')

  @classmethod
  def metrics(cls, config) -> tuple:
    nll = ('nll',) if config.get('regression_loss', 'nll') == 'nll' else ()
    return ('loss', *nll, 'mse', 'rmse', 'mae', 'r2')

  @classmethod
  def curves(cls, config) -> tuple:
    return ('nll' if config.get('regression_loss', 'nll') == 'nll' else 'mse', 'rmse')

  @classmethod
  def check_fields(cls, config) -> None:
    errors.one_of(config, 'regression_loss', LOSSES)

  @classmethod
  def create(cls, config, spec) -> 'Regression':
    return cls(Targets.of(spec), config.regression_loss)

  def for_training(self, config) -> 'Regression':
    del config  # Its objective is its own.
    return self

  def head(self, x, dense):
    size = self.targets.size
    outputs = {'mean': dense(size)(x).astype(jnp.float32)}
    if self.loss == 'nll':
      outputs['std'] = positive_std(dense(size)(x).astype(jnp.float32))
    return outputs

  AVERAGES_MEMBERS = True

  def mean_of_members(self, outputs):
    """The members' mean; with std-devs, their mixture's (mean variance + variance of means)."""
    mean = jnp.mean(outputs['mean'], axis=1)
    if 'std' not in outputs:
      return {'mean': mean}
    variance = jnp.mean(jnp.square(outputs['std']), axis=1) + jnp.var(outputs['mean'], axis=1)
    return {'mean': mean, 'std': jnp.sqrt(variance)}

  def objective(self, outputs, y, weights=None):
    """The batch's mean loss; with sample weights, their weighted mean."""
    z = self.targets.standardised(y)
    if self.loss == 'mse':
      if weights is None:
        return jnp.mean(jnp.square(outputs['mean'] - z))
      per_example = jnp.mean(jnp.square(outputs['mean'] - z), -1)
    else:
      per_example = gaussian_nll(z, outputs['mean'], outputs['std']).sum(-1)
      if weights is None:
        return jnp.mean(per_example)
    return losses.weighted_mean(per_example, weights.astype(jnp.float32))

  def train_metrics(self, outputs, y, loss) -> dict:
    """The batch's NLL or MSE in the targets' units (its loss is in standardised ones)."""
    if self.loss == 'nll':
      return {'nll': loss + self.targets.log_scale()}
    return {'mse': jnp.mean(jnp.square(self.targets.original(outputs['mean'])
                                       - self.targets.flat(y)))}

  def eval_sums(self, outputs, y, mask) -> dict:
    y_flat = self.targets.flat(y)
    mean = self.targets.original(outputs['mean'])
    error = mean - y_flat
    sums = {'squared_error_sum': (jnp.square(error) * mask[:, None]).sum(0),
            'absolute_error_sum': jnp.sum(jnp.abs(error) * mask[:, None]),
            **self.targets.spread_sums(y, mask)}
    if self.loss == 'nll':
      mean, std = self.targets.original(outputs['mean'], outputs['std'])
      sums['nll_sum'] = jnp.sum(gaussian_nll(y_flat, mean, std).sum(-1) * mask)
    return sums

  def eval_values(self, outputs, y) -> dict:
    del outputs, y  # Every metric is a sum.
    return {}

  def metrics_from_sums(self, sums, count: int, values: dict) -> dict:
    del values
    elements = count * self.targets.size
    mse = float(np.sum(sums['squared_error_sum'], dtype=np.float64)) / elements
    metrics = {'mse': mse, 'rmse': math.sqrt(mse),
               'mae': float(sums['absolute_error_sum']) / elements, 'r2': r2(sums, count)}
    if self.loss == 'nll':
      metrics['nll'] = float(sums['nll_sum']) / count
    metrics['loss'] = metrics['nll'] if self.loss == 'nll' else mse
    return metrics

  def predict(self, outputs) -> dict:
    if self.loss == 'mse':
      return {'mean': self.targets.unflat(self.targets.original(outputs['mean']))}
    mean, std = self.targets.original(outputs['mean'], outputs['std'])
    return {'mean': self.targets.unflat(mean), 'std': self.targets.unflat(std)}

  def prediction_names(self, class_names) -> dict:
    """Names a predictions file gives `predict`'s outputs, where not their own."""
    del class_names
    return {}

  def serving(self, outputs) -> dict:
    """What an exported model serves: its predictions, in the targets' units."""
    return self.predict(outputs)
