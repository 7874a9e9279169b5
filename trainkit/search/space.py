"""What a sweep file's `get_search()` declares: the space, the budget, the strategy.

A search space maps dotted config fields to `Float`, `Int` or `Categorical`
dimensions. A scalar drawn for a tuple field (`model.dropout_rates`) is given
to every element, so one rate can be searched for all layers. Everything is
checked against the base config (the bounds and every choice build a valid
config) before any trial starts.
"""

import dataclasses
import math

import numpy as np

from trainkit import errors
from trainkit import models
from trainkit import tasks
from trainkit.search import sweeps
from trainkit.tasks import metric_catalogue as metrics_lib
from trainkit.tasks import selection


@dataclasses.dataclass(frozen=True)
class Float:
  """A real value in [low, high]; `log`: drawn on a log scale; `grid`: points for a grid."""
  low: float
  high: float
  log: bool = False
  step: float | None = None
  grid: int = 3

  def suggest(self, trial, name: str) -> float:
    return trial.suggest_float(name, self.low, self.high, log=self.log, step=self.step)

  def grid_values(self) -> list:
    space = np.geomspace if self.log else np.linspace
    return _on_steps(space(self.low, self.high, self.grid), self.low, self.high, self.step, float)

  def extremes(self) -> list:
    """The bounds, and a value between them that a field of whole numbers refuses."""
    inside = (np.geomspace if self.log else np.linspace)(self.low, self.high, 7)[3] * 1.01
    return [self.low, self.high, *_on_steps([inside], self.low, self.high, self.step, float)]

  def check(self, name: str) -> None:
    _check(self.low < self.high, name, f'low={self.low!r} must be < high={self.high!r}')
    _check(not self.log or self.low > 0, name, f'log=True needs low > 0, got {self.low!r}')
    _check(self.grid >= 1, name, f'grid={self.grid!r} must be >= 1')
    _check_step(self, name)


@dataclasses.dataclass(frozen=True)
class Int:
  """An integer in [low, high] (both included)."""
  low: int
  high: int
  log: bool = False
  step: int = 1
  grid: int = 3

  def suggest(self, trial, name: str) -> int:
    return trial.suggest_int(name, self.low, self.high, log=self.log, step=self.step)

  def grid_values(self) -> list:
    space = np.geomspace if self.log else np.linspace
    return _on_steps(space(self.low, self.high, self.grid), self.low, self.high, self.step, int)

  def extremes(self) -> list:
    return [self.low, self.high]

  def check(self, name: str) -> None:
    _check(self.low < self.high, name, f'low={self.low!r} must be < high={self.high!r}')
    _check(not self.log or self.low > 0, name, f'log=True needs low > 0, got {self.low!r}')
    _check(self.grid >= 1, name, f'grid={self.grid!r} must be >= 1')
    _check_step(self, name)


def _on_steps(points, low, high, step, kind) -> list:
  """The grid's points on the values a trial can draw: low + k * step, within [low, high]."""
  if step is None:
    return sorted({kind(p) for p in points})
  top = math.floor((high - low) / step + 1e-9)
  return sorted({kind(round(low + min(top, round((p - low) / step)) * step, 12))
                 for p in points})


def _check_step(dim, name: str) -> None:
  """Optuna's rules for a step: positive, and not on a log scale (it would refuse mid-search)."""
  default = 1 if isinstance(dim, Int) else None
  if dim.step == default:
    return
  _check(dim.step is not None and dim.step > 0, name, f'step={dim.step!r} must be > 0')
  _check(not dim.log, name, f'step={dim.step!r} cannot be used with log=True')


@dataclasses.dataclass(frozen=True)
class Categorical:
  """One of `choices` (numbers, strings, booleans or None: what Optuna stores)."""
  choices: tuple

  def suggest(self, trial, name: str):
    return trial.suggest_categorical(name, list(self.choices))

  def grid_values(self) -> list:
    return list(self.choices)

  def extremes(self) -> list:
    return list(self.choices)

  def check(self, name: str) -> None:
    _check(len(self.choices) > 0, name, 'choices must not be empty')
    for choice in self.choices:
      _check(choice is None or isinstance(choice, (bool, int, float, str)), name,
             f'choice {choice!r} is not a number, string, boolean or None')


SAMPLERS = ('tpe', 'random', 'qmc', 'grid')
# Each worker's own: changed on a running search, they are not another search.
PER_WORKER = ('heartbeat_s', 'grace_s', 'max_retry')
PRUNERS = ('hyperband', 'successive_halving', 'median', 'none')
METRICS = tuple(metrics_lib.CATALOGUE)


@dataclasses.dataclass(frozen=True)
class Search:
  """A search: what `get_search()` in a sweep file returns.

  Each trial trains the base config (its `num_epochs` is the budget of one
  trial) with the values drawn for `space`, and reports its validation
  `metric` after every epoch; the objective is the trial's best epoch.
  """
  space: dict  # {dotted config field: Float | Int | Categorical}.
  num_trials: int = 20  # Trials in the study (with sampler='grid': the grid's size).
  # A validation metric of the base config's task, ranked in its direction
  # (trainkit/tasks/metric_catalogue.py): an accuracy is maximised, a loss minimised, ...
  metric: str = selection.DEFAULT
  sampler: str = 'tpe'  # 'tpe', 'random', 'qmc' or 'grid' (every point, queued).
  startup_trials: int = 10  # TPE: trials drawn at random before it models the results.
  pruner: str = 'hyperband'  # 'hyperband', 'successive_halving', 'median' or 'none'.
  min_epochs: int = 1  # The pruners' first rung: no trial is stopped before it.
  reduction_factor: int = 3  # Hyperband / successive halving: 1/factor go on per rung.
  seed: int = 0  # The sampler's seed.
  heartbeat_s: int = 30  # A running trial's worker records that it lives this often...
  grace_s: int = 120  # ...and a trial not heard of for this long is failed and retried.
  max_retry: int = 3  # Retries of a trial whose worker died (it resumes its checkpoint).

  def check(self, base) -> None:
    """ConfigError naming the first bad setting, or a space value the config refuses."""
    _check(isinstance(self.space, dict) and self.space, 'space',
           'must be a non-empty dict of {config field: Float | Int | Categorical}')
    for name, dim in self.space.items():
      _check(isinstance(dim, (Float, Int, Categorical)), name,
             f'{dim!r} is not a Float, Int or Categorical')
      dim.check(name)
    for field, choices in (('sampler', SAMPLERS), ('pruner', PRUNERS), ('metric', METRICS)):
      value = getattr(self, field)
      if value not in choices:
        raise errors.ConfigError(
            f'search {field}={value!r} is not one of: {", ".join(choices)}'
            f'{errors.suggest(value, choices)}')
    _check(isinstance(self.seed, int) and self.seed >= 0, 'seed',
           f'{self.seed!r} must be an integer >= 0')
    for field in ('num_trials', 'min_epochs', 'heartbeat_s', 'max_retry'):
      _check(getattr(self, field) >= (0 if field == 'max_retry' else 1), field,
             f'{getattr(self, field)!r} is too small')
    _check(self.reduction_factor >= 2, 'reduction_factor', f'{self.reduction_factor!r} < 2')
    _check(self.grace_s > self.heartbeat_s, 'grace_s',
           f'{self.grace_s!r} must exceed heartbeat_s={self.heartbeat_s!r}')
    if not base.validation_split:
      raise errors.ConfigError(
          "search: validation_split='' but a search ranks its trials on a validation "
          'split (ranked on the test split, its test figures would be overfitted); '
          "set one, e.g. --config.validation_split='train[55000:]'")
    reported = tasks.metrics(base)
    _check(self.metric in reported, 'metric',
           f'{self.metric!r} is not a metric task={base.task!r} reports (it reports: '
           f'{", ".join(reported)})')
    _check(self.min_epochs <= base.num_epochs, 'min_epochs',
           f'{self.min_epochs!r} exceeds the trials\' num_epochs={base.num_epochs}')
    # Every bound and choice must make a config the trainer accepts, as a new run.
    models.check_new_run(base)
    for name, dim in self.space.items():
      # A number drawn for a tuple field sets every element: of none, it sets nothing.
      current = errors.field_or_none(base, name)
      # A choice is a scalar too (Categorical takes no tuples): spread over no layer.
      _check(current != (), name,
             f"the base config's {name} is () (no layer to set); give it one value a layer")
      _check(not (isinstance(dim, Float) and type(current) is int), name,
             f'a Float for a field of whole numbers ({current!r}); search it with Int')
      for value in dim.extremes():
        models.check_new_run(trial_config(base, {name: value}, self.metric))

  def queue(self) -> list:
    """The trials' fixed values, in order: the grid's points, or num_trials empty."""
    if self.sampler != 'grid':
      return [{} for _ in range(self.num_trials)]
    names = list(self.space)
    return sweeps.product(**{n.replace('.', '__'): self.space[n].grid_values()
                             for n in names})

  def describe(self) -> dict:
    """A JSON-ready record of the search (stored with the study, compared on rejoin)."""
    out = dataclasses.asdict(self)
    out['space'] = {name: {'type': type(dim).__name__, **dataclasses.asdict(dim)}
                    for name, dim in self.space.items()}
    return out


def _check(ok: bool, name: str, why: str) -> None:
  if not ok:
    raise errors.ConfigError(f'search {name}: {why}')


def overrides(base, params: dict) -> dict:
  """The dotted config overrides for drawn `params` (scalars spread over tuple fields)."""
  out = {}
  for name, value in params.items():
    current = errors.field_or_none(base, name)
    if isinstance(current, tuple) and not isinstance(value, tuple):
      value = tuple(type(c)(value) if isinstance(c, float) else value for c in current)
    elif isinstance(current, int) and isinstance(value, float) and value == math.floor(value):
      value = int(value)
    out[name] = value
  return out


def trial_config(base, params: dict, metric: str):
  """The config of a trial: `base` with `params` set and the search's metric as best."""
  config = sweeps.member_config(base, overrides(base, params))
  config.best_metric = metric  # The checkpoint kept as best is the one the search ranks.
  return config


def load_search(path: str, module) -> Search | None:
  """The Search of sweep file `path` (its get_search()), or None if it has none."""
  if not hasattr(module, 'get_search'):
    return None
  search = sweeps.called(path, 'get_search', module.get_search)
  if not isinstance(search, Search):
    raise errors.ConfigError(
        f'--config={path!r}: get_search() must return a trainkit.search.space.Search')
  return search
