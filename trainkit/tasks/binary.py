"""Binary classification: one logit for P(y = 1); log loss, ROC-AUC, PR-AUC, accuracy.

ROC-AUC and PR-AUC are not sums over examples: the evaluation keeps every
example's logit (`eval_values`) and computes them exactly on the host, ties
included, as scikit-learn's `roc_auc_score` (the Mann-Whitney statistic,
average ranks for ties) and `average_precision_score` (the precision at
each distinct score, weighted by the recall it adds). The logit ranks the
examples, not the sigmoid, which rounds large logits to a tie at 1.0.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

from trainkit import errors
from trainkit.tasks import base
from trainkit.tasks import losses


def roc_auc(labels, scores) -> float:
  """P(a positive scores above a negative), ties counted half; NaN with one class only."""
  labels, scores = np.asarray(labels).reshape(-1) == 1, np.asarray(scores, np.float64).ravel()
  positives = int(labels.sum())
  negatives = labels.size - positives
  if not positives or not negatives:
    return float('nan')
  _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
  ranks = (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]  # 1-based, ties averaged.
  return float((ranks[labels].sum() - positives * (positives + 1) / 2.0)
               / (positives * negatives))


def average_precision(labels, scores) -> float:
  """Average precision: the sum over distinct scores of recall gained x precision."""
  labels, scores = np.asarray(labels).reshape(-1) == 1, np.asarray(scores, np.float64).ravel()
  positives = int(labels.sum())
  if not positives:
    return float('nan')
  _, inverse = np.unique(-scores, return_inverse=True)
  true_positives = np.cumsum(np.bincount(inverse, weights=labels))
  predicted = np.cumsum(np.bincount(inverse))
  recall = true_positives / positives
  return float(np.sum(np.diff(recall, prepend=0.0) * true_positives / predicted))


@dataclasses.dataclass(frozen=True)
class Binary(base.Task):
  """A logit per example, trained on (weighted) sigmoid cross-entropy; labels 0 and 1."""
  threshold: float = 0.5  # P(y = 1) at and above which an example is predicted 1.
  class_weights: tuple = ()  # The weights of classes 0 and 1 in the loss; () = none.
  CLASSES = True  # Targets are class labels (else real values).
  POSITIVE_CLASS = True  # A table's positive_class names its class 1.
  PLOTS = 'classes'  # Drawn as two classes: a confusion matrix.
  # What `predict` returns, in the order a predictions file shows it.
  PREDICTIONS = ('class', 'prob')

  @classmethod
  def curves(cls, config) -> tuple:
    del config
    return ('loss', 'accuracy')

  @classmethod
  def check_fields(cls, config) -> None:
    errors.require(isinstance(config.threshold, float) and 0.0 < config.threshold < 1.0,
                   'threshold', config.threshold,
                   'must be a probability strictly between 0 and 1')

  @classmethod
  def check_data(cls, config, data) -> None:
    """Labels 0 and 1."""
    errors.require(data.num_classes == 2, 'task', config.task,
                   f'needs labels 0 and 1; dataset={config.dataset!r} has '
                   + (f'{data.num_classes} classes' if data.num_classes else
                      'targets that are not class labels'))

  @classmethod
  def class_probabilities(cls, predictions: dict) -> dict:
    """The predictions as two classes' probabilities, P(y = 0) and P(y = 1), for the plots."""
    prob = np.asarray(predictions['prob'], np.float32)
    return {**predictions, 'probs': np.stack([1 - prob, prob], -1)}

  @classmethod
  def metrics(cls, config) -> tuple:
    del config
    return ('roc_auc', 'pr_auc', 'log_loss', 'accuracy', 'loss')

  @classmethod
  def create(cls, config, spec) -> 'Binary':
    return cls(threshold=float(config.threshold), class_weights=tuple(spec.class_weights))

  def for_training(self, config) -> 'Binary':
    del config  # Its objective is its own.
    return self

  def head(self, x, dense):
    return dense(1)(x).astype(jnp.float32)[..., 0]

  AVERAGES_MEMBERS = True

  def mean_of_members(self, logits):
    """The logit of the members' mean P(y = 1), from log-probabilities (no rounding to 0 or 1)."""
    log_members = jnp.log(float(logits.shape[1]))
    log_p = jax.nn.logsumexp(jax.nn.log_sigmoid(logits), axis=1) - log_members
    log_q = jax.nn.logsumexp(jax.nn.log_sigmoid(-logits), axis=1) - log_members
    return log_p - log_q

  def _cross_entropy(self, logits, labels):
    return optax.sigmoid_binary_cross_entropy(logits, labels.astype(jnp.float32))

  def _predicted(self, logits):
    return (jax.nn.sigmoid(logits) >= self.threshold).astype(jnp.int32)

  def objective(self, logits, labels, weights=None):
    weights = losses.example_weights(labels, self.class_weights, weights)
    per_example = self._cross_entropy(logits, labels)
    return jnp.mean(per_example) if weights is None else losses.weighted_mean(
        per_example, weights)

  def train_metrics(self, logits, labels, loss) -> dict:
    del loss
    return {'accuracy': jnp.mean(self._predicted(logits) == labels)}

  def eval_sums(self, logits, labels, mask) -> dict:
    # Unweighted, whatever the training weights: figures compare across configs.
    return {'loss_sum': jnp.sum(self._cross_entropy(logits, labels) * mask),
            'correct': jnp.sum((self._predicted(logits) == labels) * mask)}

  def eval_values(self, logits, labels) -> dict:
    return {'logit': logits, 'label': labels}

  def metrics_from_sums(self, sums, count: int, values: dict) -> dict:
    log_loss = float(sums['loss_sum']) / count
    return {'loss': log_loss, 'log_loss': log_loss, 'accuracy': float(sums['correct']) / count,
            'roc_auc': roc_auc(values['label'], values['logit']),
            'pr_auc': average_precision(values['label'], values['logit'])}

  def predict(self, logits) -> dict:
    return {'class': self._predicted(logits), 'prob': jax.nn.sigmoid(logits)}

  def prediction_names(self, class_names) -> dict:
    """The probability's column names the class it is of: P(y = 1), 'prob_<class 1>'."""
    return {'prob': f'prob_{class_names[1] if len(class_names) == 2 else 1}'}

  def serving(self, logits) -> dict:
    """What an exported model serves: the predicted class and P(y = 1)."""
    return self.predict(logits)
