"""Classification: class logits, cross-entropy, accuracy."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from trainkit import errors
from trainkit.tasks import base
from trainkit.tasks import losses


@dataclasses.dataclass(frozen=True)
class Classification(base.Task):
  """`num_classes` logits; trained on `config.loss`, judged by cross-entropy and accuracy."""
  num_classes: int
  objective_name: str = 'cross_entropy'  # A key of losses.LOSSES.
  class_weights: tuple = ()  # Each class's weight in the training loss; () = none.
  CLASSES = True  # Targets are class labels (else real values).
  PLOTS = 'classes'  # A confusion matrix (and the worst errors of images).
  # What `predict` returns, in the order a predictions file shows it.
  PREDICTIONS = ('class', 'probs')

  @classmethod
  def curves(cls, config) -> tuple:
    del config
    return ('loss', 'accuracy')

  @classmethod
  def check_fields(cls, config) -> None:
    errors.one_of(config, 'loss', tuple(losses.LOSSES))

  @classmethod
  def check_config(cls, config) -> None:
    """Class and example weights weigh the cross-entropy, which only it has."""
    for name, what in (('class_weight', 'the'), ('weight_column', 'examples in the')):
      errors.require(not config[name] or config.loss == 'cross_entropy', name, config[name],
                     f'weighs {what} cross-entropy; loss={config.loss!r} has no weighted form '
                     "(use loss='cross_entropy')")

  @classmethod
  def check_data(cls, config, data) -> None:
    """Integer class labels 0..K-1 of at least two classes."""
    found = ('integer targets that are not all class labels 0..K-1 (some are negative)'
             if data.num_classes == 0 and np.dtype(data.target_dtype).kind in 'iu' else
             'real-valued targets (use task=\'regression\' or \'mixture_density\')'
             if data.num_classes == 0 else f'{data.num_classes} class')
    errors.require(data.num_classes >= 2, 'task', config.task,
                   f'needs integer class labels (at least 2 classes); '
                   f'dataset={config.dataset!r} has {found}')

  @classmethod
  def metrics(cls, config) -> tuple:
    del config
    return ('accuracy', 'loss')

  @classmethod
  def create(cls, config, spec) -> 'Classification':
    return cls(num_classes=spec.num_classes, objective_name=config.loss,
               class_weights=tuple(spec.class_weights))

  def for_training(self, config) -> 'Classification':
    """This task with `config`'s training objective (config.loss)."""
    return dataclasses.replace(self, objective_name=config.loss)

  def head(self, x, dense):
    # Losses and softmax in float32 whatever the compute dtype.
    return dense(self.num_classes)(x).astype(jnp.float32)

  AVERAGES_MEMBERS = True

  def mean_of_members(self, logits):
    """The members' mean class probabilities, as logits (their logarithms)."""
    return (jax.nn.logsumexp(jax.nn.log_softmax(logits, -1), axis=1)
            - jnp.log(float(logits.shape[1])))

  def objective(self, logits, labels, weights=None):
    """config.loss; with class or sample weights, their weighted mean cross-entropy."""
    weights = losses.example_weights(labels, self.class_weights, weights)
    if weights is None:
      return losses.LOSSES[self.objective_name](logits, labels)
    return losses.weighted_mean(losses.cross_entropy(logits, labels), weights)

  def train_metrics(self, logits, labels, loss) -> dict:
    del loss
    return {'accuracy': jnp.mean(jnp.argmax(logits, -1) == labels)}

  def eval_sums(self, logits, labels, mask) -> dict:
    # Evaluation reports standard cross-entropy whatever the training
    # objective, so losses compare across configs.
    return {'loss_sum': jnp.sum(losses.cross_entropy(logits, labels) * mask),
            'correct': jnp.sum((jnp.argmax(logits, -1) == labels) * mask)}

  def eval_values(self, logits, labels) -> dict:
    del logits, labels  # Every metric is a sum.
    return {}

  def metrics_from_sums(self, sums, count: int, values: dict) -> dict:
    del values
    return {'loss': float(sums['loss_sum']) / count,
            'accuracy': float(sums['correct']) / count}

  @classmethod
  def class_probabilities(cls, predictions: dict) -> dict:
    """The predictions as the plots take them: each class's probability, 'probs'."""
    return predictions

  def predict(self, logits) -> dict:
    return {'class': jnp.argmax(logits, -1), 'probs': jax.nn.softmax(logits.astype(jnp.float32))}

  def prediction_names(self, class_names) -> dict:
    """Names a predictions file gives `predict`'s outputs, where not their own."""
    del class_names
    return {}

  def serving(self, logits) -> dict:
    """What an exported classifier serves: {'scores': class probabilities}."""
    return {'scores': jax.nn.softmax(logits.astype(jnp.float32))}

