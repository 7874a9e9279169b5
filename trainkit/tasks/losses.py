"""Training objectives, by the name `config.loss` gives them."""

import jax
import jax.numpy as jnp
import optax


def cross_entropy(logits, labels):
  """Per-example softmax cross-entropy with integer labels."""
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def class_mean_cross_entropy(logits, labels):
  """The JAX docs' -mean(one_hot * log_softmax): cross-entropy / classes."""
  return cross_entropy(logits, labels).mean() / logits.shape[-1]


def batch_normalized_cross_entropy(logits, labels):
  """"JAX in Action" ch. 2: one logsumexp over the whole batch, not per example.

  Then -mean(one_hot * log_preds) over classes and examples, as the book does.
  """
  log_preds = logits - jax.nn.logsumexp(logits)
  one_hot = jax.nn.one_hot(labels, logits.shape[-1])
  return -jnp.mean(one_hot * log_preds)


def weighted_mean(per_example, weights):
  """sum(w * loss) / sum(w): weights scale examples, not the loss's overall size."""
  return jnp.sum(per_example * weights) / jnp.maximum(jnp.sum(weights), 1e-12)


def example_weights(labels, class_weights: tuple, sample_weights=None):
  """Per-example weights: the class's weight (if given) times the row's (if given); or None."""
  weights = None
  if class_weights:
    weights = jnp.asarray(class_weights, jnp.float32)[labels]
  if sample_weights is not None:
    sample_weights = sample_weights.astype(jnp.float32)
    weights = sample_weights if weights is None else weights * sample_weights
  return weights


LOSSES = {
    'cross_entropy': lambda logits, labels: cross_entropy(logits, labels).mean(),
    'class_mean_cross_entropy': class_mean_cross_entropy,
    'batch_normalized_cross_entropy': batch_normalized_cross_entropy,
}
