"""Tasks: what the model predicts from the backbone's features, and how it is judged.

A task is one small module holding a frozen dataclass with one interface:

- `metrics(config)` (a classmethod): the names of the evaluation metrics, each
  ranked in its direction (trainkit/selection.py); 'loss' is always one.
- `head(features, dense)`: the output layers on the MLP backbone (`dense(n)`
  makes a Dense layer of n units), returning the task's outputs.
- `objective(outputs, targets, weights=None)`: the training loss of a
  batch, a scalar (with per-example weights, their weighted mean);
  `for_training(config)` the task with the objective `config` chooses.
- `train_metrics(outputs, targets, loss)`: batch means logged beside the loss
  (`loss`: the objective the step computed).
- `eval_sums(outputs, targets, mask)`: sums over the unmasked examples, so an
  evaluation counts every example once however it is batched and sharded;
  `eval_values(outputs, targets)` per-example values for metrics that are
  not sums (ROC-AUC: every score; {} for none); `metrics_from_sums(sums,
  count, values)` turns the totals and the values of every example into the
  metrics.
- `predict(outputs)`: predictions in the targets' own units, as arrays;
  `PREDICTIONS` names them in the order a predictions file shows them.
- `serving(outputs)`: the dict of arrays an exported model returns;
  `prediction_names(class_names)` the names a predictions file gives
  `predict`'s outputs where not their own (a binary task's probability
  names its class).

`config.task` names it; `create(config, spec)` builds it with what the data
told the model spec (classes, target shape and scaling). The loop,
checkpoints, sweeps and searches see only metric names and directions.
"""

from trainkit.tasks import binary
from trainkit.tasks import classification
from trainkit.tasks import mixture_density
from trainkit.tasks import regression

TASKS = {
    'classification': classification.Classification,
    'binary': binary.Binary,
    'regression': regression.Regression,
    'mixture_density': mixture_density.MixtureDensity,
}
NAMES = tuple(TASKS)


def metrics(config) -> tuple:
  """The evaluation metrics `config`'s task reports, in the summary's order."""
  return TASKS[config.get('task', 'classification')].metrics(config)


def takes_classes(config) -> bool:
  """Whether `config`'s task predicts classes (its targets are labels, not real values)."""
  return TASKS[config.get('task', 'classification')].CLASSES


def create(config, spec):
  """The task of `config`, for the data `spec` (a workdir.ModelSpec) describes."""
  return TASKS[config.get('task', 'classification')].create(config, spec)
