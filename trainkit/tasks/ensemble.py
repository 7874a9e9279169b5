"""A task's k-member form: k heads trained together, judged and served by their mean.

An ensemble model (trainkit/models/tabular.py) ends in one head of the task
per member, so its outputs carry a member axis after the batch one
([batch, k, ...]). `Ensemble` is the task to such a model: it trains on the
mean of the k members' own losses, each member's loss on the whole batch (a
loss of their mean prediction would let them lean on each other), and hands
every other method of the task the members' mean prediction, which each task
defines in its units (`mean_of_members`: the mean of probabilities for
classes, of values for regression). Metrics, predictions and exports are
therefore the task's own, of that mean.
"""

import dataclasses

import jax
import jax.numpy as jnp

from trainkit.tasks import base


def _members_first(outputs):
  return jax.tree.map(lambda x: jnp.moveaxis(x, 1, 0), outputs)


@dataclasses.dataclass(frozen=True)
class Ensemble(base.Task):
  """`task` of a model with `size` members (outputs [batch, size, ...])."""
  task: base.Task
  size: int

  @property
  def PREDICTIONS(self) -> tuple:  # noqa: N802  The task's class attribute, of an instance.
    return self.task.PREDICTIONS

  def for_training(self, config) -> 'Ensemble':
    return dataclasses.replace(self, task=self.task.for_training(config))

  def head(self, x, dense):
    return self.task.head(x, dense)

  def mean(self, outputs):
    """The members' mean prediction, in the task's own outputs."""
    return self.task.mean_of_members(outputs)

  def objective(self, outputs, targets, weights=None):
    """The mean over members of each member's loss on the batch."""
    per_member = jax.vmap(lambda o: self.task.objective(o, targets, weights))(
        _members_first(outputs))
    return jnp.mean(per_member)

  def train_metrics(self, outputs, targets, loss) -> dict:
    return self.task.train_metrics(self.mean(outputs), targets, loss)

  def eval_sums(self, outputs, targets, mask) -> dict:
    return self.task.eval_sums(self.mean(outputs), targets, mask)

  def eval_values(self, outputs, targets) -> dict:
    return self.task.eval_values(self.mean(outputs), targets)

  def metrics_from_sums(self, sums, count: int, values: dict) -> dict:
    return self.task.metrics_from_sums(sums, count, values)

  def predict(self, outputs) -> dict:
    return self.task.predict(self.mean(outputs))

  def prediction_names(self, class_names) -> dict:
    return self.task.prediction_names(class_names)

  def serving(self, outputs) -> dict:
    return self.task.serving(self.mean(outputs))
