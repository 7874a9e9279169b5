"""Checks of the config and the data before any work is done, by the fields' owners.

Each module that owns config fields checks them (`check_config`): the task
its own, the model its own, the optimizer module, the input pipeline and its
sources, the checkpoints, the trackers... This module only runs them, in a
fixed order, and the checks no single owner has: that no field is inf or
NaN. Each failure is an `errors.ConfigError` with a one-line message naming
the field and the offending value; the command line prints it without a
traceback.
"""

import copy
import math

import ml_collections

from trainkit import errors
from trainkit import models
from trainkit import tasks
from trainkit.checkpoints import manager as checkpoints
from trainkit.checkpoints import warm_start
from trainkit.data import pipeline as input_pipeline
from trainkit.data import sources
from trainkit.data import statistics as training_statistics
from trainkit.runtime import profiling
from trainkit.tracking import metric_logs
from trainkit.tracking import mlflow_run
from trainkit.tracking import progress
from trainkit.training import cadence
from trainkit.training import divergence
from trainkit.training import optimizers
from trainkit.training import plateaus
from trainkit.workdirs import layout as workdir_lib

# The owners of config fields, each checking its own.
# The loop's counts come first: other owners compare with them (warmup_epochs
# with num_epochs).
_OWNERS = (cadence, optimizers, training_statistics, models, input_pipeline, divergence,
           progress, metric_logs, mlflow_run, profiling, warm_start)


def _leaves(config, prefix: str = ''):
  """(dotted field, value) of every leaf of `config`, tuple elements included."""
  for key, value in config.items():
    if hasattr(value, 'items'):
      yield from _leaves(value, f'{prefix}{key}.')
    elif isinstance(value, (tuple, list)):
      yield from ((f'{prefix}{key}', v) for v in value)
    else:
      yield f'{prefix}{key}', value


def validate(config) -> None:
  """Raises errors.ConfigError for the first invalid field of `config`."""
  for field, value in _leaves(config):  # No field can train on inf or NaN.
    errors.require(not isinstance(value, float) or math.isfinite(value), field,
                   errors.field(config, field), 'must be a finite number')
  for owner in _OWNERS:
    owner.check_config(config)
  reported = tasks.check_config(config)
  checkpoints.check_config(config, reported)
  plateaus.check_config(config, reported)


def overridden(base, overrides: dict):
  """A copy of `base` with `overrides` set; ConfigError names a bad field."""
  config = copy.deepcopy(base)  # Keeps field types and placeholders.
  for dotted, value in overrides.items():
    *path, last = dotted.split('.')
    node = config
    for part in path:
      if not isinstance(node.get(part), ml_collections.ConfigDict):
        raise errors.ConfigError(f'unknown config field {dotted!r}')
      node = node[part]
    if last not in node:
      hint = errors.suggest(last, list(node.keys()))
      raise errors.ConfigError(f'unknown config field {dotted!r}{hint}')
    if isinstance(node[last], tuple) and isinstance(value, list):
      value = tuple(value)
    try:
      node[last] = value
    except TypeError as e:
      raise errors.ConfigError(
          f'{dotted}={value!r}: {str(e).splitlines()[0]}') from e
  validate(config)
  models.check_overridden(config, overrides)
  return config


def check_new_run(config, workdir: str) -> None:
  """What only a run that starts training in `workdir` (no checkpoint yet) is refused.

  A workdir trained before such a check holds the config it was trained with,
  and is resumed, evaluated and served as it is.
  """
  if not workdir_lib.checkpoint_steps(workdir):
    models.check_new_run(config)


def check_new_run_data(config, data, workdir: str) -> None:
  """What only a run that starts training in `workdir` is refused of its data."""
  if not workdir_lib.checkpoint_steps(workdir):
    sources.check_new_run(config, data)


def check_data(config, data) -> None:
  """The data must suit the task and the scaling, the batch the split and the devices."""
  tasks.check_data(config, data)
  training_statistics.check_data(config, data)
  cadence.check_data(config, data)
  models.check_data(config, data)
