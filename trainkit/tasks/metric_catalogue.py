"""Every metric a task reports, declared once: its direction and how it is shown.

The tasks name their metrics (trainkit/tasks/*.py); everything else (model
selection, the progress bar, the closing lines, the plots, sweep and search
tables) reads how to rank and show a metric from here, by name, and names
none itself.
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Metric:
  """A metric's name, direction and display."""
  name: str
  higher_is_better: bool
  title: str  # As a plot titles it.
  percent: bool = False  # Shown as a percentage (0.9812 -> 98.12%).
  short: str = ''  # Its name where room is short (the progress bar); '' = its name.

  @property
  def short_name(self) -> str:
    return self.short or self.name


# A metric ranks and reads the same way whichever task reports it.
_ALL = (
    Metric('loss', False, 'Loss'),
    Metric('accuracy', True, 'Accuracy', percent=True, short='acc'),
    Metric('log_loss', False, 'Log loss'),
    Metric('roc_auc', True, 'ROC-AUC'),
    Metric('pr_auc', True, 'PR-AUC'),
    Metric('nll', False, 'NLL'),
    Metric('mse', False, 'MSE'),
    Metric('rmse', False, 'RMSE'),
    Metric('mae', False, 'MAE'),
    Metric('r2', True, 'R2'),
)
CATALOGUE = {metric.name: metric for metric in _ALL}


def get(name: str) -> Metric:
  """The declaration of metric `name` (KeyError for a name no task reports)."""
  return CATALOGUE[name]


def percent(name: str) -> bool:
  """Whether metric `name` reads as a percentage (False for a figure no task declares)."""
  return name in CATALOGUE and CATALOGUE[name].percent


def short(name: str) -> str:
  """Metric `name` where room is short (a figure no task declares: as it is)."""
  return CATALOGUE[name].short_name if name in CATALOGUE else name
