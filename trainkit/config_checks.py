"""Checks of the config, the workdir and the data before any work is done.

Each failure is a `ConfigError` with a one-line message naming the field and
the offending value; `main.py` prints it without a traceback.
"""

import codecs
import difflib
import math
import os
import re

import numpy as np

import input_pipeline
import models
from trainkit import divergence
from trainkit import losses
from trainkit import optimizers
from trainkit import progress
from trainkit import tasks
from trainkit import tracking
from trainkit import training_statistics
from trainkit.tasks import regression
from trainkit import workdir as workdir_lib


class ConfigError(ValueError):
  """A config value, workdir or dataset that the run cannot use."""


def suggest(value, choices) -> str:
  """' (did you mean 'x'?)' for the nearest of `choices`, or ''."""
  close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
  return f' (did you mean {close[0]!r}?)' if close else ''


def _get(config, field):
  for part in field.split('.'):
    config = config[part]
  return config


def _one_of(config, field, choices):
  value = _get(config, field)
  if value not in choices:
    raise ConfigError(f'{field}={value!r} is not one of: {", ".join(choices)}'
                      f'{suggest(value, choices)}')


def _require(ok: bool, field: str, value, why: str):
  if not ok:
    raise ConfigError(f'{field}={value!r}: {why}')


_NUMBERS = ('learning_rate', 'momentum', 'weight_decay', 'grad_clip_norm',
            'warmup_epochs', 'end_lr_factor', 'decay_rate', 'decay_epochs',
            'model.batchnorm_momentum', 'model.init_scale', 'progress_every_s')


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
  """Raises ConfigError for the first invalid field of `config`."""
  for field, value in _leaves(config):  # No field can train on inf or NaN.
    _require(not isinstance(value, float) or math.isfinite(value), field,
             _get(config, field), 'must be a finite number')
  for field in _NUMBERS:  # Config files can set any type; flags cannot.
    value = _get(config, field)
    _require(isinstance(value, (int, float)) and not isinstance(value, bool),
             field, value, 'must be a number')
  _one_of(config, 'optimizer', optimizers.OPTIMIZERS)
  _one_of(config, 'schedule', optimizers.SCHEDULES)
  _one_of(config, 'normalization', training_statistics.NORMALIZATIONS)
  _one_of(config, 'loss', tuple(losses.LOSSES))
  _one_of(config, 'model.activation', tuple(models.ACTIVATIONS))
  _one_of(config, 'model.kernel_init', models.KERNEL_INITS)
  _one_of(config, 'input_mode', input_pipeline.INPUT_MODES)
  _one_of(config, 'dtype', models.DTYPES)
  _one_of(config, 'nan_policy', divergence.NAN_POLICIES)
  _one_of(config, 'progress', progress.STYLES)
  _require(config.progress_every_s > 0, 'progress_every_s', config.progress_every_s,
           'must be > 0')
  _require(isinstance(config.plots, bool), 'plots', config.plots, 'must be True or False')
  for name in tracking.names(config):
    _require(name in tracking.TRACKERS, 'trackers', config.trackers,
             f"{name!r} is not a tracker (there are: '', {', '.join(tracking.TRACKERS)})")
  problem = tracking.uri_problem(config.mlflow_uri)
  _require(problem is None, 'mlflow_uri', config.mlflow_uri, problem)
  _require(isinstance(config.mlflow_experiment, str) and config.mlflow_experiment.strip(),
           'mlflow_experiment', config.mlflow_experiment, 'must name an experiment')
  profile = tuple(config.profile_steps)
  _require(profile == () or (len(profile) == 2 and all(
      isinstance(s, int) and not isinstance(s, bool) for s in profile)
      and 1 <= profile[0] <= profile[1]), 'profile_steps', profile,
           'must be () or (first, last) with 1 <= first <= last')
  for field in ('batch_size', 'eval_batch_size', 'num_epochs', 'log_every_steps',
                'checkpoint_every_epochs',
                'keep_checkpoints', 'nan_skip_limit', 'grad_accumulation_steps'):
    _require(isinstance(config[field], int) and config[field] >= 1, field,
             config[field], 'must be a positive integer')
  for field in ('train_split', 'test_split'):
    _require(isinstance(config[field], str) and config[field], field, config[field],
             "must name a split in TFDS split syntax (e.g. 'train[:55000]')")
  _require(isinstance(config.validation_split, str), 'validation_split',
           config.validation_split, "must be a split in TFDS split syntax or '' (none)")
  _one_of(config, 'task', tasks.NAMES)
  _one_of(config, 'regression_loss', regression.LOSSES)
  _require(isinstance(config.num_components, int) and not isinstance(config.num_components, bool)
           and config.num_components >= 1, 'num_components', config.num_components,
           'must be an integer >= 1 (the mixture\'s Gaussian components)')
  _require(isinstance(config.threshold, float) and 0.0 < config.threshold < 1.0, 'threshold',
           config.threshold, 'must be a probability strictly between 0 and 1')
  try:
    weights = training_statistics.parse_class_weight(config.class_weight)
  except (ValueError, TypeError, AttributeError):
    raise ConfigError(f'class_weight={config.class_weight!r}: must be \'\', \'balanced\' or '
                      "one weight >= 0 per class, e.g. '1,5'") from None
  if weights:
    _require(config.task in ('classification', 'binary'), 'class_weight', config.class_weight,
             f'weighs classes; task={config.task!r} has none')
    _require(config.task == 'binary' or config.loss == 'cross_entropy', 'class_weight',
             config.class_weight, f"weighs the cross-entropy; loss={config.loss!r} has no "
             "weighted form (use loss='cross_entropy')")
  if config.weight_column:
    _require(config.loss == 'cross_entropy' or config.task != 'classification', 'weight_column',
             config.weight_column, f"weighs examples in the cross-entropy; loss={config.loss!r} "
             "has no weighted form (use loss='cross_entropy')")
  for field in ('target_column', 'weight_column', 'split_column', 'positive_class'):
    _require(isinstance(config[field], str), field, config[field], "must be a column name or ''")
  _require(not config.positive_class or config.task == 'binary', 'positive_class',
           config.positive_class, f'names the class a binary task predicts; task={config.task!r}')
  _require(isinstance(config.table_separator, str) and len(config.table_separator) <= 1,
           'table_separator', config.table_separator, "must be one character, or '' (detect)")
  try:
    codecs.lookup(config.table_encoding)
  except (LookupError, TypeError):
    raise ConfigError(f'table_encoding={config.table_encoding!r}: not an encoding Python '
                      "knows (e.g. 'utf-8', 'latin-1', 'cp1252')") from None
  _require(isinstance(config.split_seed, int) and config.split_seed >= -1, 'split_seed',
           config.split_seed, 'must be an integer >= 0, or -1 (rows as stored)')
  _require(isinstance(config.max_categories, int) and config.max_categories >= 0,
           'max_categories', config.max_categories, 'must be an integer >= 0')
  reported = tasks.metrics(config)
  for field in ('best_metric', 'early_stopping_metric'):
    _require(config[field] in reported, field, config[field],
             f'is not a metric task={config.task!r} reports (it reports: '
             f'{", ".join(reported)}){suggest(config[field], reported)}')
  for field in ('init_from', 'init_exclude'):
    _require(isinstance(config[field], str), field, config[field], "must be a string ('' = none)")
  if config.init_exclude:
    try:
      re.compile(config.init_exclude)
    except re.error as e:
      raise ConfigError(
          f'init_exclude={config.init_exclude!r}: not a regular expression ({e})') from None
  for field in ('early_stopping_patience', 'plateau_patience'):
    _require(isinstance(config[field], int) and config[field] >= 0, field, config[field],
             'must be an integer >= 0 (0 = off)')
  _require(isinstance(config.early_stopping_min_delta, (int, float))
           and config.early_stopping_min_delta >= 0, 'early_stopping_min_delta',
           config.early_stopping_min_delta, 'must be >= 0')
  _require(isinstance(config.plateau_min_delta, (int, float)) and config.plateau_min_delta > 0,
           'plateau_min_delta', config.plateau_min_delta, 'must be > 0')
  _require(isinstance(config.plateau_factor, (int, float)) and 0 < config.plateau_factor < 1,
           'plateau_factor', config.plateau_factor, 'must be in (0, 1)')
  _require(isinstance(config.cache_dir, str), 'cache_dir', config.cache_dir,
           "must be a folder or '' (no caches)")
  cache = os.path.expanduser(config.cache_dir)
  _require(not config.cache_dir or not os.path.exists(cache) or os.path.isdir(cache),
           'cache_dir', config.cache_dir, "is not a folder (give a folder, or '' for no caches)")
  for field in ('checkpoint_every_steps', 'steps_per_call', 'input_workers'):
    _require(isinstance(config[field], int) and config[field] >= 0, field,
             config[field], 'must be an integer >= 0')
  _require(config.learning_rate > 0, 'learning_rate', config.learning_rate,
           'must be > 0')
  for field in ('weight_decay', 'grad_clip_norm', 'warmup_epochs', 'end_lr_factor'):
    _require(config[field] >= 0, field, config[field], 'must be >= 0')
  _require(0 <= config.momentum < 1, 'momentum', config.momentum, 'must be in [0, 1)')
  _require(isinstance(config.ema_decay, (int, float)) and 0 <= config.ema_decay < 1,
           'ema_decay', config.ema_decay, 'must be in [0, 1) (0 = off)')
  _require(0 < config.decay_rate <= 1, 'decay_rate', config.decay_rate,
           'must be in (0, 1]')
  _require(config.decay_epochs > 0, 'decay_epochs', config.decay_epochs, 'must be > 0')
  if config.schedule == 'warmup_cosine':
    _require(config.warmup_epochs < config.num_epochs, 'warmup_epochs',
             config.warmup_epochs, f'must be < num_epochs={config.num_epochs}')
  model = config.model
  sizes = tuple(model.hidden_sizes)
  _require(all(isinstance(s, int) and s >= 1 for s in sizes),
           'model.hidden_sizes', sizes, 'must be positive integers')
  rates = tuple(model.dropout_rates)
  _require(len(rates) in (0, len(sizes)), 'model.dropout_rates', rates,
           f'needs one rate per hidden layer ({len(sizes)})')
  _require(all(0 <= r < 1 for r in rates), 'model.dropout_rates', rates,
           'each rate must be in [0, 1)')
  _require(0 <= model.batchnorm_momentum < 1, 'model.batchnorm_momentum',
           model.batchnorm_momentum, 'must be in [0, 1)')
  _require(model.init_scale > 0, 'model.init_scale', model.init_scale, 'must be > 0')
  if config.manual_dir is not None:
    _require(os.path.isdir(config.manual_dir), 'manual_dir', config.manual_dir,
             'is not a directory')


def check_workdir(workdir: str) -> None:
  """The workdir must be a writable directory or creatable as one.

  Each file and folder a run keeps there must be of its kind
  (workdir.check_kinds).
  """
  path = os.path.abspath(workdir)
  if os.path.exists(path):
    _require(os.path.isdir(path), '--workdir', workdir, 'is not a directory')
    _require(os.access(path, os.W_OK | os.X_OK), '--workdir', workdir,
             'is not writable')
    workdir_lib.check_kinds(path)
  else:
    parent = os.path.dirname(path)
    while not os.path.exists(parent):
      parent = os.path.dirname(parent)
    _require(os.path.isdir(parent) and os.access(parent, os.W_OK), '--workdir',
             workdir, f'cannot be created in {parent}')


def check_data(config, data) -> None:
  """The data must suit the task and the scaling, the batch the split and the devices.

  The batch must fit the training split and split evenly over the devices.
  """
  if config.task == 'classification':
    found = ('integer targets that are not all class labels 0..K-1 (some are negative)'
             if data.num_classes == 0 and np.dtype(data.target_dtype).kind in 'iu' else
             'real-valued targets (use task=\'regression\' or \'mixture_density\')'
             if data.num_classes == 0 else f'{data.num_classes} class')
    _require(data.num_classes >= 2, 'task', config.task,
             f'needs integer class labels (at least 2 classes); dataset={config.dataset!r} '
             f'has {found}')
  _require(not config.positive_class or data.class_names, 'positive_class',
           config.positive_class, f"names a class of a table's target; dataset="
           f'{config.dataset!r} has unnamed classes (the positive one is class 1)')
  if config.task == 'binary':
    _require(data.num_classes == 2, 'task', config.task,
             f'needs labels 0 and 1; dataset={config.dataset!r} has '
             + (f'{data.num_classes} classes' if data.num_classes else
                'targets that are not class labels'))
  weights = training_statistics.parse_class_weight(config.class_weight)
  if weights and weights != 'balanced':
    _require(len(weights) == data.num_classes, 'class_weight', config.class_weight,
             f'gives {len(weights)} weights; dataset={config.dataset!r} has '
             f'{data.num_classes} classes')
  _require(config.normalization != 'unit' or data.input_dtype == 'uint8', 'normalization',
           config.normalization, f'divides uint8 pixels by 255; dataset={config.dataset!r} '
           f"has {data.input_dtype} features (use 'per_feature')")
  _require(config.batch_size <= data.num_train, 'batch_size', config.batch_size,
           f'is larger than the training split ({data.num_train} examples)')
  _require(config.batch_size % data.mesh.size == 0, 'batch_size', config.batch_size,
           f'is not divisible by the {data.mesh.size} devices (each takes an equal '
           'share of the global batch)')
