"""Orbax checkpoints of the train state plus a small JSON of loop counters.

Each checkpoint `WORKDIR/checkpoints/<step>/` holds two items: `state` (the
train state as a plain state dict: params, batch_stats, optimizer state, step)
and `meta` (JSON: epoch, accumulated wall time, loop counters, ...). The
manager keeps the latest `keep_checkpoints` plus the best by the validation
`best_metric` (trainkit/tasks/selection.py); without a validation split no
checkpoint carries metrics, and none is best.

Orbax writes each checkpoint to a temporary directory and renames it when
complete, so a process killed mid-save leaves no half checkpoint under a step
number. `meta` also holds a CRC32 of the state's bytes, checked on restore: a
checkpoint damaged later (truncated or missing files) is detected, moved to
`WORKDIR/broken_checkpoints/` and the run falls back to the previous one.
"""

import json
import os
import shutil
import zlib

from absl import logging
import flax
import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from trainkit import errors
from trainkit import tasks
from trainkit.tasks import selection
from trainkit.workdirs import layout as workdir_lib

# The checkpoint item holding a streamed input's Grain iterator state.
INPUT_ITEM = 'input'


class CheckpointMismatchError(ValueError):
  """A checkpoint whose structure does not fit the configured train state."""


class BrokenCheckpointError(ValueError):
  """A checkpoint that cannot be read back as it was written."""


# What Orbax reads of every checkpoint when a manager opens the folder.
_MANAGER_FILES = ('_CHECKPOINT_METADATA', os.path.join('metrics', 'metrics'))


def _unreadable(directory) -> dict:
  """{step: (path, why)} of the checkpoints whose files a manager reads do not read back."""
  found = {}
  names = os.listdir(directory) if os.path.isdir(directory) else []
  for name in (n for n in names if n.isdigit()):
    for item in _MANAGER_FILES:
      path = os.path.join(directory, name, item)
      if not os.path.lexists(path):
        continue
      try:
        with open(path, 'rb') as f:
          if not isinstance(json.loads(f.read()), dict):
            raise ValueError('not a JSON object')
      except (OSError, ValueError) as e:
        found[int(name)] = (path, type(e).__name__)
        break
  return found


def readable_steps(workdir: str) -> list:
  """The steps of `workdir`'s checkpoints whose files a manager reads do read back."""
  broken = _unreadable(workdir_lib.checkpoint_dir(workdir))
  return [step for step in workdir_lib.checkpoint_steps(workdir) if step not in broken]


def create_manager(directory, keep_checkpoints: int, streamed: bool = False,
                   best_metric: str | None = None,
                   set_aside: bool = False) -> ocp.CheckpointManager:
  """A manager that saves asynchronously and keeps latest-N plus the best.

  `streamed`: checkpoints also hold the Grain iterator state of the input.
  `best_metric`: of the epochs' evaluation on the validation split, ranked
  in its direction (selection.py); None (no validation split): no
  checkpoint is ranked or kept as the best.

  A checkpoint whose metadata or metrics do not read back (Orbax would fail
  to open the folder) is moved to the workdir's broken_checkpoints with
  `set_aside` (a training run, which falls back to the previous one), and is
  otherwise a BrokenCheckpointError naming the file.
  """
  for step, (path, why) in sorted(_unreadable(directory).items()):
    if not set_aside:
      raise BrokenCheckpointError(
          f'{path} cannot be read ({why}); a training run in the workdir sets checkpoint '
          f'{step} aside and goes on from the one before')
    _set_aside(os.path.dirname(os.fspath(directory)), directory, step, f'{path}: {why}',
               'resuming from the latest one left')
  policies = [checkpoint_managers.LatestN(n=keep_checkpoints)]
  metric = None
  if best_metric:
    metric = lambda metrics: selection.checkpoint_score(best_metric, metrics)
    policies.append(checkpoint_managers.BestN(get_metric_fn=metric, n=1,
                                              keep_checkpoints_without_metrics=False))
  handlers = {'state': ocp.StandardCheckpointHandler(), 'meta': ocp.JsonCheckpointHandler()}
  if streamed:
    import grain  # pylint: disable=g-import-not-at-top
    handlers[INPUT_ITEM] = grain.checkpoint.CheckpointHandler()
  return ocp.CheckpointManager(
      directory,
      options=ocp.CheckpointManagerOptions(
          preservation_policy=checkpoint_managers.AnyPreservationPolicy(policies),
          enable_async_checkpointing=True,
          # Without best_fn, Orbax writes no metrics to disk and best_step()
          # is the latest: the best would be forgotten by a resumed run.
          best_fn=metric, best_mode='max'),
      item_handlers=handlers)


def best(manager: ocp.CheckpointManager, best_metric: str | None) -> tuple:
  """(step, saved figures) of the best checkpoint by `best_metric` (the manager's), or (None, None).

  None without a metric (no validation split), or when no checkpoint has it
  (saved by an older version ranking by another metric). Orbax reads the
  figures from disk at each ask: this reads them once.
  """
  step = manager.best_step() if best_metric else None
  if step is None:
    return None, None
  metrics = manager.metrics(step) or {}
  return (step, metrics) if selection.key(best_metric) in metrics else (None, None)


def best_step(manager: ocp.CheckpointManager, best_metric: str | None) -> int | None:
  """The step of the best checkpoint by `best_metric`, or None (see `best`)."""
  return best(manager, best_metric)[0]


def choose_step(manager: ocp.CheckpointManager, which, best_metric: str | None,
                what: str) -> int:
  """The step `which` names: 'latest', 'best' or a step number (int or digits).

  `what` names the choice in the one-line ConfigError a missing one raises
  (e.g. "--checkpoint='best'").
  """
  steps = sorted(manager.all_steps())
  if which == 'latest':
    step = steps[-1] if steps else None
  elif which == 'best':
    step = best_step(manager, best_metric)
    if step is None and steps:
      raise errors.ConfigError(selection.no_best(f'{what}: {manager.directory}'))
  elif str(which).isdigit() and int(which) in steps:
    step = int(which)
  else:
    raise errors.ConfigError(
        f'{what} is not latest, best or one of the steps in {manager.directory}: {steps}')
  if step is None:
    raise errors.ConfigError(f'{what}: {manager.directory} has no checkpoint')
  return step


def _flat_shapes(tree):
  flat = flax.traverse_util.flatten_dict(tree, sep='/') if tree else {}
  return {k: (tuple(v.shape), np.dtype(v.dtype).name) for k, v in flat.items()}


def check_compatible(manager: ocp.CheckpointManager, step: int, state) -> None:
  """Raises CheckpointMismatchError naming how checkpoint `step` differs."""
  try:
    saved = manager.item_metadata(step)['state']
  except (KeyError, OSError, ValueError) as e:
    raise BrokenCheckpointError(f'unreadable metadata ({type(e).__name__})') from e
  saved = _flat_shapes(saved.tree if hasattr(saved, 'tree') else saved)
  if not saved:
    raise BrokenCheckpointError('no array metadata')
  wanted = _flat_shapes(flax.serialization.to_state_dict(state))
  where = f'{manager.directory}/{step}'
  # Parameters first: they say most plainly which config field differs.
  order = lambda k: (not k.startswith('params/'), k)
  missing = sorted(set(wanted) - set(saved), key=order)
  extra = sorted(set(saved) - set(wanted), key=order)
  if missing or extra:
    parts = []
    if missing:
      parts.append(f'config expects {missing[0]}' +
                   (f' (+{len(missing) - 1} more)' if len(missing) > 1 else ''))
    if extra:
      parts.append(f'checkpoint has {extra[0]}' +
                   (f' (+{len(extra) - 1} more)' if len(extra) > 1 else ''))
    raise CheckpointMismatchError(
        f'checkpoint {where} does not fit the config (other model layers or '
        f'optimizer?): {"; ".join(parts)}. Use another --workdir or the '
        'config it was trained with.')
  for key in sorted(wanted, key=order):
    if wanted[key] != saved[key]:
      raise CheckpointMismatchError(
          f'checkpoint {where} does not fit the config: {key} is '
          f'{saved[key][0]} {saved[key][1]} in the checkpoint but '
          f'{wanted[key][0]} {wanted[key][1]} for this config. Use another '
          '--workdir or the config it was trained with.')


def _digest(state_dict) -> int:
  """CRC32 over every array's bytes, in a fixed (flattened-key) order."""
  crc = 0
  # One transfer for the whole tree rather than one per array.
  flat = flax.traverse_util.flatten_dict(jax.device_get(state_dict), sep='/')
  for key in sorted(flat):
    crc = zlib.crc32(np.ascontiguousarray(flat[key]).tobytes(), crc)
  return crc


class _GrainState:
  """A Grain iterator's state as of one step, for Grain's Orbax handler.

  The handler asks its item for `get_state()` when it writes (and calls
  `set_state` and `start_prefetch` when it reads); the live iterator is
  already further on by then, so the state is taken at the step and kept here.
  """

  def __init__(self, state: dict | None = None):
    self.state = state

  def get_state(self) -> bytes:
    return json.dumps(self.state).encode()

  def set_state(self, state: bytes) -> None:
    self.state = json.loads(state)

  def start_prefetch(self) -> None:
    pass


def _input_file(manager, step: int) -> str:
  """Where Grain's handler keeps this process's iterator state."""
  return os.path.join(manager.directory, str(step), INPUT_ITEM,
                      f'process_{jax.process_index()}-of-{jax.process_count()}.json')


def save(manager: ocp.CheckpointManager, step: int, state, meta: dict,
         metrics: dict | None = None, input_state: dict | None = None) -> None:
  """Starts an asynchronous save; `metrics` rank it for keep-the-best.

  `input_state` (streamed input, see calls.train_calls) is saved
  with it: its Grain iterator state through Grain's Orbax handler, one file
  per process, and where that iterator stands in the meta.
  """
  state_dict = flax.serialization.to_state_dict(state)
  items = {}
  if input_state is not None:
    import grain  # pylint: disable=g-import-not-at-top
    input_state = dict(input_state)
    items[INPUT_ITEM] = grain.checkpoint.CheckpointSave(_GrainState(input_state.pop('grain')))
    meta = {**meta, INPUT_ITEM: input_state}
  manager.save(
      step,
      args=ocp.args.Composite(
          state=ocp.args.StandardSave(state_dict),
          meta=ocp.args.JsonSave({**meta, 'state_crc32': _digest(state_dict)}), **items),
      metrics=metrics, force=True)


def _restore_target(leaf, device) -> jax.ShapeDtypeStruct:
  """Where a leaf is restored: as its array lies, else whole on `device` (a sharding).

  A sharding named for every leaf spares Orbax reading the checkpoint's
  metadata again (check_compatible read it) to find one.
  """
  target = ocp.utils.to_shape_dtype_struct(leaf)
  if getattr(target, 'sharding', None) is not None:
    return target
  return jax.ShapeDtypeStruct(target.shape, target.dtype, sharding=device)


def restore(manager: ocp.CheckpointManager, step: int, state, streamed: bool = False):
  """Restores checkpoint `step` into the structure of `state`.

  `streamed` (a manager made with it): also the input's Grain iterator state,
  in meta[INPUT_ITEM], if it was saved by as many processes.

  Returns:
    (state, meta).
  """
  first = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])  # This process's.
  target = jax.tree.map(lambda leaf: _restore_target(leaf, first),
                        flax.serialization.to_state_dict(state))
  try:
    restored = manager.restore(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardRestore(target),
                                meta=ocp.args.JsonRestore()))
  except Exception as e:  # Orbax/TensorStore raise many kinds.  pylint: disable=broad-except
    raise BrokenCheckpointError(errors.raised(e)[:250]) from e
  meta = dict(restored['meta'])
  if meta.pop('state_crc32', None) != _digest(restored['state']):
    raise BrokenCheckpointError('the arrays read back differ from those saved (CRC32)')
  if streamed and INPUT_ITEM in meta and os.path.exists(_input_file(manager, step)):
    import grain  # pylint: disable=g-import-not-at-top
    try:
      grain_state = manager.restore(step, args=ocp.args.Composite(**{
          INPUT_ITEM: grain.checkpoint.CheckpointRestore(_GrainState())}))[INPUT_ITEM]
      meta[INPUT_ITEM] = {**meta[INPUT_ITEM], 'grain': grain_state.state}
    except (OSError, ValueError) as e:
      raise BrokenCheckpointError(f'unreadable input state ({type(e).__name__})') from e
  else:
    # Saved by another number of processes, or none: the input starts from
    # the step by index instead (the same batches, see input_pipeline).
    meta.pop(INPUT_ITEM, None)
  return flax.serialization.from_state_dict(state, restored['state']), meta


def read_state_dict(manager: ocp.CheckpointManager, step: int) -> dict:
  """Checkpoint `step`'s train state as saved (a state dict of host arrays), CRC-checked.

  For a state of another structure than this config's (a warm start that
  changes the head): no target is given, the arrays come back as saved.
  """
  try:
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()))
  except Exception as e:  # Orbax/TensorStore raise many kinds.  pylint: disable=broad-except
    raise BrokenCheckpointError(errors.raised(e)[:250]) from e
  state = jax.device_get(restored['state'])
  if restored['meta'].get('state_crc32') != _digest(state):
    raise BrokenCheckpointError('the arrays read back differ from those saved (CRC32)')
  return state


def _set_aside(workdir: str, directory, step: int, error, then: str) -> None:
  """Moves broken checkpoint `step` to `workdir/broken_checkpoints/`, with a warning.

  By process 0 alone: every process finds it broken and goes on without it,
  and a second move of the one folder failed (the others then waited forever).
  """
  if jax.process_index() > 0:
    return
  aside = os.path.join(workdir, workdir_lib.BROKEN_CHECKPOINTS)
  os.makedirs(aside, exist_ok=True)
  target = os.path.join(aside, str(step))
  while os.path.exists(target):
    target += '_'
  shutil.move(os.path.join(os.fspath(directory), str(step)), target)
  logging.warning('Checkpoint %s/%d is broken (%s); moved to %s; %s.', directory, step, error,
                  target, then)


def restore_latest(manager: ocp.CheckpointManager, state, workdir: str,
                   streamed: bool = False, before_new_run=None):
  """Restores the latest readable checkpoint, setting broken ones aside.

  Broken checkpoints newer than the one restored are moved to
  `workdir/broken_checkpoints/` (only once a good one is found, or none is
  left), with a warning naming both. A checkpoint that does not fit the config
  raises CheckpointMismatchError before anything is moved; so does
  `before_new_run()`, called where broken ones would be set aside and none
  is usable, whatever it raises (a run that cannot start anew).

  Returns:
    (state, meta, step), or None when there is no usable checkpoint.
  """
  broken, found = [], None
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      check_compatible(manager, step, state)
      found = (*restore(manager, step, state, streamed), step)
      break
    except BrokenCheckpointError as e:
      broken.append((step, e))
  if found is None and broken and before_new_run is not None:
    before_new_run()
  for step, error in broken:
    _set_aside(workdir, manager.directory, step, error,
               f'falling back to checkpoint {found[2]}' if found else
               'no earlier checkpoint is usable: starting as a new run')
  if broken:
    manager.reload()
  return found


def check_config(config, reported: tuple) -> None:
  """Refuses a checkpoint count, or a best_metric the task does not report (`reported`)."""
  errors.positive_integers(config, ('keep_checkpoints',))
  tasks.require_reported(config, 'best_metric', reported)
