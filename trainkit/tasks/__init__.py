"""Tasks: what the model predicts from the backbone's features, and how it is judged.

A task is one small module holding a frozen dataclass with one interface:

- `metrics(config)` (a classmethod): the names of the evaluation metrics, each
  ranked in its direction (trainkit/tasks/selection.py); 'loss' is always one.
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

A task also declares what the rest of the trainer asks of it by attribute:
`CLASSES` (its targets are class labels), `SCALES_TARGETS` (the model
predicts standardised targets, so the training split's target statistics go
into the model spec), `POSITIVE_CLASS` (a table's `positive_class` names one
of its classes), `PLOTS` (the kind of plots drawn of its test predictions:
'classes' or 'values', with `class_probabilities(predictions)` for the
former); `curves(config)` the two metrics its learning curves show;
`check_fields(config)` checks its own fields whatever the task, and
`check_config(config)`, `check_data(config, data)` refuse what the chosen
task cannot train on. Its metrics' directions and display are
declared in trainkit/tasks/metric_catalogue.py.

`config.task` names it; `create(config, spec)` builds it with what the data
told the model spec (classes, target shape and scaling). The loop,
checkpoints, sweeps and searches see only metric names and directions.
"""

from trainkit import errors
from trainkit.tasks import base
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


DEFAULT = 'classification'  # The task of a config (or an old workdir's) that names none.


def of(config):
  """The task class `config` names (a ConfigDict, or a workdir's config.json as a dict)."""
  return TASKS[config.get('task', DEFAULT)]


def metrics(config) -> tuple:
  """The evaluation metrics `config`'s task reports, in the summary's order."""
  return of(config).metrics(config)


def takes_classes(config) -> bool:
  """Whether `config`'s task predicts classes (its targets are labels, not real values)."""
  return of(config).CLASSES


def of_real_values() -> tuple:
  """The tasks whose targets are real values, not classes (for a refusal to name)."""
  return tuple(name for name, task in TASKS.items() if not task.CLASSES)


def scales_targets(config) -> bool:
  """Whether `config`'s model predicts standardised targets (real values)."""
  return of(config).SCALES_TARGETS


def create(config, spec):
  """The task of `config`, for the data `spec` (a workdir.ModelSpec) describes."""
  return of(config).create(config, spec)


def check_config(config) -> tuple:
  """Refuses the task's fields that cannot be; returns the metrics the task reports.

  Every task's own fields are checked whatever the task, so no bad value
  waits unnoticed in a config; then the chosen task checks how the others
  fit it.
  """
  errors.one_of(config, 'task', NAMES)
  for task in TASKS.values():
    task.check_fields(config)
  chosen = of(config)
  errors.require(chosen.CLASSES or not config.class_weight, 'class_weight',
                 config.class_weight, f'weighs classes; task={config.task!r} has none')
  errors.require(not config.positive_class or chosen.POSITIVE_CLASS, 'positive_class',
                 config.positive_class,
                 f'names the class a binary task predicts; task={config.task!r}')
  chosen.check_config(config)
  return chosen.metrics(config)


def require_reported(config, field: str, reported: tuple) -> None:
  """Refuses `config.<field>` unless it names one of the metrics the task reports."""
  value = config[field]
  errors.require(value in reported, field, value,
                 f'is not a metric task={config.task!r} reports (it reports: '
                 f'{", ".join(reported)}){errors.suggest(value, reported)}')


def check_data(config, data) -> None:
  """Refuses data the task cannot learn (labels it does not take, unnamed classes)."""
  errors.require(not config.positive_class or data.class_names, 'positive_class',
                 config.positive_class, f"names a class of a table's target; dataset="
                 f'{config.dataset!r} has unnamed classes (the positive one is class 1)')
  of(config).check_data(config, data)
  if of(config).CLASSES:  # A label per example: [n, 1] labels would broadcast in the loss.
    base.one_label_each(config, data)

