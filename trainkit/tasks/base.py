"""What every task shares: the defaults of the parts of the interface most tasks leave be."""

from trainkit import errors


class Task:
  """A task's defaults: real-valued targets, drawn as values; nothing more to check.

  A task overrides what differs (trainkit/tasks/__init__.py lists the whole
  interface).
  """
  CLASSES = False  # Targets are class labels (else real values).
  SCALES_TARGETS = False  # The model predicts (y - mean) / std of the training split.
  POSITIVE_CLASS = False  # A table's positive_class names one of its classes.
  PLOTS = 'values'  # The kind of plots drawn of its test predictions.
  AVERAGES_MEMBERS = False  # Has `mean_of_members`: an ensemble model may end in it.

  def mean_of_members(self, outputs):
    """The mean prediction of members' outputs [batch, members, ...], in the task's outputs."""
    raise NotImplementedError(f'{type(self).__name__} does not average ensemble members')

  @classmethod
  def check_fields(cls, config) -> None:
    """Refuses its own fields' bad values, whatever the config's task."""
    del config

  @classmethod
  def check_config(cls, config) -> None:
    """Refuses other fields that do not fit it, when it is the config's task."""
    del config

  @classmethod
  def check_data(cls, config, data) -> None:
    """Refuses data it cannot learn (non-numeric targets are refused as a table is read)."""
    del config, data


def one_label_each(config, data) -> None:
  """Refuses targets of shape [n, 1] or wider: the loss would broadcast them against every row."""
  shape = tuple(data.target_shape)
  errors.require(shape == (), 'task', config.task,
                 f'needs one label per example; dataset={config.dataset!r} has targets of '
                 f'shape {shape} each (give y of shape [n], e.g. y.reshape(-1) or y[:, 0])')
