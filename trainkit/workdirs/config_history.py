"""A trained workdir's config is its contract: a resume with another config.

`WORKDIR/config.json` is the config its latest checkpoint was trained with, and
`WORKDIR/config_history.jsonl` lists every change accepted on a resume, one
line each: {"step", "time", "changes": {field: [old, new]}}. Undoing the
changes from the last line up gives the config the run started with, so the
two files always say how every step was trained.

A resume whose config differs from config.json is refused before any work,
with one line listing each difference. Fields fall in three kinds:

  OPERATIONAL   where data and caches are, progress, logging, checkpoint
                cadence, eval batch, call length: they never change what is
                trained, and may differ freely (config.json takes the new ones);
  CONTINUABLE   the length of training, the optimizer's hyperparameters and
                schedule, the input mode and the non-finite policy: a resume
                with `--continue_with_changes` trains on with the new values
                from the restored step (the schedule is the new config's, at
                that step) and records them in the history;
  the rest      batch size, dataset, seed, model, optimizer, loss, dtype, ...:
                they decide what the checkpoint's step and arrays mean, and
                stay refused; such a run needs a new workdir.

The inference modes (eval, predict, export, summary) read a checkpoint with
the config given; they are refused where it would rebuild another model
(INFERENCE fields), and eval where it would evaluate it on other rows or
another target (EVALUATION fields).
"""

import json
import os
import time


from trainkit import errors
from trainkit.workdirs import layout as workdir_lib

HISTORY = workdir_lib.HISTORY

# Operational fields that cannot change what a finished run reports either:
# where caches are, how progress is shown, how often a run saves. A finished
# workdir's re-run with other values stands (trainkit/training/finished_run.py).
UNREPORTED = ('cache_dir', 'input_workers', 'progress', 'progress_every_s', 'profile_steps',
              'checkpoint_every_steps', 'checkpoint_every_epochs', 'checkpoint_min_interval_s',
              'steps_per_call', 'log_every_steps')
OPERATIONAL = UNREPORTED + (
    'data_dir', 'manual_dir', 'plots', 'keep_checkpoints', 'eval_batch_size', 'test_split',
    'allow_split_overlap', 'trackers', 'mlflow_uri', 'mlflow_experiment')
CONTINUABLE = ('num_epochs', 'max_steps', 'learning_rate', 'weight_decay', 'momentum',
               'grad_clip_norm', 'schedule', 'warmup_epochs', 'end_lr_factor',
               'decay_rate', 'decay_epochs', 'staircase', 'input_mode', 'nan_policy',
               'nan_skip_limit', 'validation_split', 'test_split', 'best_metric',
               'early_stopping_patience', 'early_stopping_metric',
               'early_stopping_min_delta', 'plateau_patience', 'plateau_factor',
               'plateau_min_delta')
# The continuable fields that act only on steps yet to train: on a run that has
# trained every epoch of its config they change config.json and nothing else
# (trainkit/training/members.py warns; a sweep still continues its unfinished members).
STEPS_ONLY = ('learning_rate', 'weight_decay', 'momentum', 'grad_clip_norm', 'schedule',
              'warmup_epochs', 'end_lr_factor', 'decay_rate', 'decay_epochs', 'staircase',
              'input_mode', 'nan_policy', 'nan_skip_limit', 'plateau_patience',
              'plateau_factor', 'plateau_min_delta')
# What a checkpoint is read as, in every mode: its model and head. The last
# is a prefix: every field of the model section.
INFERENCE = ('dataset', 'dtype', 'task', 'regression_loss', 'num_components', 'positive_class',
             'normalization', 'model.')
# What an evaluation reads besides: the same rows of the dataset as its test
# split, and the same column as the target (a generated dataset's draw too).
EVALUATION = ('target_column', 'feature_columns', 'split_column', 'split_seed')
SYNTHETIC_EVALUATION = ('data_seed', 'synthetic_examples')


def _flat(tree: dict, prefix: str = '') -> dict:
  out = {}
  for key, value in tree.items():
    # A backbone's arguments are one value: a key added or dropped is a change.
    if isinstance(value, dict) and prefix + key != 'model.args':
      out.update(_flat(value, f'{prefix}{key}.'))
    else:
      out[prefix + key] = value
  return out


def _as_json(config) -> dict:
  """The config as config.json holds it (tuples as lists)."""
  return json.loads(json.dumps(config.to_dict()))


def differences(stored: dict, config) -> dict:
  """{dotted field: (old, new)} where `config` differs from a stored config.

  Fields one side lacks (a config.json written by another version of the
  program) are not compared.
  """
  old, new = _flat(stored), _flat(_as_json(config))
  return {k: (old[k], new[k]) for k in sorted(old.keys() & new.keys()) if old[k] != new[k]}


def training_differences(stored: dict, config) -> dict:
  """differences() in what is trained: the operational fields may differ freely.

  The one comparison of configs: a resume, a finished sweep member and a
  search worker joining a study all use it.
  """
  # Without a validation split the epochs are evaluated on the test split, which
  # then decides the best checkpoint and early stopping as validation_split does.
  by_test = not stored.get('validation_split', True) or not config.validation_split
  return {k: v for k, v in differences(stored, config).items()
          if k not in OPERATIONAL or (k == 'test_split' and by_test)}


def _switched_transforms(changed: dict, optimizer: str | None) -> dict:
  """The continuable changes that add or drop an optimizer transform (0 <-> non-zero).

  Gradient clipping, and weight decay but for adamw's own, are in the
  optimizer's chain only when non-zero (trainkit/training/optimizers.py).
  """
  fields = ('grad_clip_norm',) + (('weight_decay',) if optimizer != 'adamw' else ())
  return {k: (old, new) for k, (old, new) in changed.items()
          if k in fields and (old == 0) != (new == 0)}


def _latest_step(workdir: str) -> int | None:
  steps = workdir_lib.checkpoint_steps(workdir)
  return steps[-1] if steps else None


def stored(workdir: str) -> dict | None:
  """The config `workdir` was trained with (its config.json), or None if it has none.

  A config.json that cannot be read as a config is refused in one line: the
  workdir no longer says how its checkpoints were trained.
  """
  path = os.path.join(workdir, workdir_lib.CONFIG)
  try:
    with open(path) as f:
      config = json.load(f)
  except FileNotFoundError:
    return None
  except (OSError, ValueError) as e:
    raise errors.ConfigError(
        f'{path} cannot be read as a config ({errors.raised(e)}); the workdir no longer says '
        'how it was trained: restore the file, or use another --workdir') from None
  if not isinstance(config, dict):
    raise errors.ConfigError(
        f'{path} holds a JSON {type(config).__name__}, not a config; the workdir no '
        'longer says how it was trained: restore the file, or use another --workdir')
  if isinstance(config.get('dataset'), str):
    config['dataset'] = workdir_lib.held_data(workdir, config['dataset'])
  return config


def _tuples(value):
  """JSON's lists as the tuples a config holds, all the way down."""
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  if isinstance(value, list):
    return tuple(_tuples(v) for v in value)
  return value


def _set(config, stored: dict) -> None:
  """`config`'s fields set from `stored` (nested; a field this version lacks is left out)."""
  for key, value in stored.items():
    if key not in config:
      continue
    if isinstance(value, dict) and hasattr(config[key], 'items') and key != 'args':
      _set(config[key], value)
    else:
      config[key] = value


def workdir_config(workdir: str, defaults):
  """The config `workdir` was trained with, over `defaults` (a ConfigDict), locked.

  What a trained workdir is used with when no config is given: its own,
  read as data (JSON), never run. Fields added since it was trained take
  their defaults. The operational fields that point at the training machine
  and do not exist here (a manual_dir, a cache_dir) are dropped, and it
  tracks nothing. Refused in one line when it has none.
  """
  config = stored(workdir)
  if config is None:
    raise errors.ConfigError(
        f'--workdir={workdir!r} holds no {workdir_lib.CONFIG}: it was never trained; '
        'give --config (and train it first)')
  defaults = defaults.copy_and_resolve_references()
  defaults.unlock()
  _set(defaults, _tuples(config))
  if defaults.get('manual_dir') and not os.path.isdir(os.path.expanduser(defaults.manual_dir)):
    defaults.manual_dir = None
  if defaults.get('cache_dir') and os.path.exists(os.path.expanduser(defaults.cache_dir)) and (
      not os.path.isdir(os.path.expanduser(defaults.cache_dir))):
    defaults.cache_dir = ''
  defaults.trackers = ''
  defaults.lock()
  return defaults


def listed(changes: dict) -> str:
  """{field: (old, new)} as one line: `field old -> new, ...`."""
  return ', '.join(f'{k} {json.dumps(old)} -> {json.dumps(new)}'
                   for k, (old, new) in changes.items())


def check_resume(config, workdir: str, continue_with_changes: bool = False) -> dict:
  """Refuses a resume of a trained `workdir` with a config it was not trained with.

  Returns:
    The continuable changes to record ({field: (old, new)}; empty when the
    configs agree, or when the workdir has no checkpoint yet).

  Raises:
    errors.ConfigError: with one line naming each differing field.
  """
  step = _latest_step(workdir)
  trained = stored(workdir) if step is not None else None
  if trained is None:
    return {}
  changed = training_differences(trained, config)
  if not changed:
    return {}
  fixed = {k: v for k, v in changed.items() if k not in CONTINUABLE}
  where = f'--workdir={workdir!r} (checkpoint at step {step})'
  switched = _switched_transforms(changed, trained.get('optimizer'))
  if switched:
    raise errors.ConfigError(
        f'{where} was trained with another config: {listed(switched)} turns an optimizer '
        'transform on or off, which changes what its checkpoints hold; these can change '
        'between non-zero values only (or use another --workdir)')
  if fixed:
    raise errors.ConfigError(
        f'{where} was trained with another config: {listed(fixed)} cannot change '
        'in a trained workdir (they decide what its checkpoints mean); give its '
        f'values (see {workdir_lib.CONFIG} there) or use another --workdir')
  if not continue_with_changes:
    raise errors.ConfigError(
        f'{where} was trained with another config: {listed(changed)}; run with '
        f'--continue_with_changes to train on with these from step {step} '
        f'(recorded in {HISTORY}), or give its values, or use another --workdir')
  epochs = changed.get('num_epochs')
  try:
    steps_per_epoch = workdir_lib.ModelSpec.read(workdir).steps_per_epoch
  except (OSError, ValueError, TypeError):
    steps_per_epoch = None  # Then the run itself finds it has nothing left to train.
  if epochs and steps_per_epoch and epochs[1] * steps_per_epoch < step:
    raise errors.ConfigError(
        f'num_epochs={epochs[1]}: {where} has trained {step / steps_per_epoch:g} '
        'epochs already')
  budget = changed.get('max_steps')
  if budget and 0 < budget[1] < step:
    raise errors.ConfigError(f'max_steps={budget[1]}: {where} has trained {step} steps already')
  return changed


def check_inference(config, workdir: str, evaluates: bool = False) -> dict | None:
  """Refuses to read `workdir`'s checkpoints as another model than it trained.

  `evaluates`: on its data too (--mode=eval), so also on other rows or
  another target than it was trained and tested with. Returns the config it
  was trained with (config.json as stored), or None.
  """
  trained = stored(workdir)
  if trained is None:
    return None
  fields = INFERENCE
  if evaluates:
    fields += EVALUATION + (SYNTHETIC_EVALUATION if str(config.dataset).startswith('synthetic:')
                            else ())
  changed = {k: v for k, v in differences(trained, config).items()
             if k in fields or k.startswith(INFERENCE[-1])}
  if changed:
    raise errors.ConfigError(
        f'--workdir={workdir!r} was trained with another model or data: '
        f'{listed(changed)}; give its values (see {workdir_lib.CONFIG} there)')
  return trained


def record(workdir: str, step: int, changes: dict) -> None:
  """Appends the changes a resume at `step` made to the history.

  After a line cut short (a kill, a full disk), the new one starts on a line
  of its own.
  """
  path = os.path.join(workdir, HISTORY)
  cut = os.path.exists(path) and os.path.getsize(path) and not workdir_lib.ends_a_line(path)
  with open(path, 'a') as f:
    f.write('\n' if cut else '')
    f.write(json.dumps({'step': step, 'time': time.time(),
                        'changes': {k: list(v) for k, v in changes.items()}}) + '\n')


def finished_summary(workdir: str, config, trained: dict | None = None) -> dict | None:
  """The workdir's summary.json if it finished training with this config, else None.

  Configs compare as a resume compares them: where data and caches are,
  progress and the like may differ. A summary that cannot be read is None:
  a run there re-evaluates its final checkpoint and writes it again.
  `trained`: the workdir's stored config, if the caller read it already.
  """
  trained = trained if trained is not None else stored(workdir)
  if trained is None or training_differences(trained, config):
    return None
  summary = workdir_lib.read_summary(workdir)
  finished = summary and isinstance(summary.get('epoch'), (int, float)) and (
      summary['epoch'] >= config.num_epochs
      or summary.get('stop_reason', 'completed') != 'completed')
  # A run writes config.json as it starts and summary.json as it ends: an
  # older summary is of another config (a changed run stopped before its end).
  if finished and _mtime_ns(workdir, workdir_lib.SUMMARY) < _mtime_ns(workdir,
                                                                       workdir_lib.CONFIG):
    return None
  return summary if finished else None


def _mtime_ns(workdir: str, name: str) -> int:
  return os.stat(os.path.join(workdir, name)).st_mtime_ns
