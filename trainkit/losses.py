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


LOSSES = {
    'cross_entropy': lambda logits, labels: cross_entropy(logits, labels).mean(),
    'class_mean_cross_entropy': class_mean_cross_entropy,
    'batch_normalized_cross_entropy': batch_normalized_cross_entropy,
}
