"""Model selection: the one notion of "best", a validation metric and its direction.

The best checkpoint of a run (the one Orbax keeps, `--checkpoint=best`,
`init_from=W:best`), the best member of a sweep and the objective of a search
are all `best_metric` of the epochs' evaluation on the validation split,
ranked in that metric's direction. Without a validation split the epochs are
evaluated on the test split, and nothing is chosen by it: no checkpoint is
ranked, there is no best step, and `best` is refused.
"""

import math

from trainkit.tasks import metric_catalogue as metrics_lib

# The metric that ranks runs unless a config says (configs/default.py's best_metric).
DEFAULT = 'accuracy'


def key(metric: str) -> str:
  """The name of `metric` among a checkpoint's and a summary's figures: 'eval_<metric>'."""
  return f'eval_{metric}'


def direction(metric: str) -> str:
  """'maximize' or 'minimize' (Optuna's words)."""
  return 'maximize' if metrics_lib.get(metric).higher_is_better else 'minimize'


def score(metric: str, value) -> float:
  """`value` of `metric` on one scale where higher is better; a missing or NaN value is worst."""
  if value is None or not isinstance(value, (int, float)) or math.isnan(value):
    return -math.inf
  return float(value) if metrics_lib.get(metric).higher_is_better else -float(value)


def checkpoint_score(metric: str, figures: dict) -> float:
  """A checkpoint's rank by `metric` from the figures saved with it (key(metric)'s)."""
  return score(metric, figures.get(key(metric)))


def best_metric(config) -> str | None:
  """The metric that chooses a run's best checkpoint; None without a validation split.

  `config`: a ConfigDict, or a trained workdir's config.json as a dict.
  """
  if not config.get('validation_split'):
    return None
  return config.get('best_metric', DEFAULT)


def no_best(where: str) -> str:
  """Why `where` has no best checkpoint, for a one-line refusal."""
  return (f'{where} has no best checkpoint: it was trained without a validation split, '
          'and no checkpoint is chosen by the test split (use latest or a step)')
