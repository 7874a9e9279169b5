"""Orbax checkpoints of the train state plus a small JSON of loop counters.

Each checkpoint `WORKDIR/checkpoints/<step>/` holds two items: `state` (the
train state as a plain state dict: params, batch_stats, optimizer state, step)
and `meta` (JSON: epoch, best eval accuracy, accumulated wall time, ...). The
manager keeps the latest `keep_checkpoints` plus the best by eval accuracy.
"""

import flax
import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

BEST_METRIC = 'eval_accuracy'


class CheckpointMismatchError(ValueError):
  """A checkpoint whose structure does not fit the configured train state."""


def create_manager(directory, keep_checkpoints: int) -> ocp.CheckpointManager:
  """A manager that saves asynchronously and keeps latest-N plus the best."""
  policy = checkpoint_managers.AnyPreservationPolicy([
      checkpoint_managers.LatestN(n=keep_checkpoints),
      checkpoint_managers.BestN(
          get_metric_fn=lambda metrics: metrics[BEST_METRIC], n=1,
          keep_checkpoints_without_metrics=False),
  ])
  return ocp.CheckpointManager(
      directory,
      options=ocp.CheckpointManagerOptions(
          preservation_policy=policy, enable_async_checkpointing=True),
      item_handlers={'state': ocp.StandardCheckpointHandler(),
                     'meta': ocp.JsonCheckpointHandler()})


def _flat_shapes(tree):
  flat = flax.traverse_util.flatten_dict(tree, sep='/') if tree else {}
  return {k: (tuple(v.shape), np.dtype(v.dtype).name) for k, v in flat.items()}


def check_compatible(manager: ocp.CheckpointManager, step: int, state) -> None:
  """Raises CheckpointMismatchError naming how checkpoint `step` differs."""
  saved = manager.item_metadata(step)['state']
  saved = _flat_shapes(saved.tree if hasattr(saved, 'tree') else saved)
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


def save(manager: ocp.CheckpointManager, step: int, state, meta: dict,
         metrics: dict | None = None) -> None:
  """Starts an asynchronous save; `metrics` rank it for keep-the-best."""
  manager.save(
      step,
      args=ocp.args.Composite(
          state=ocp.args.StandardSave(flax.serialization.to_state_dict(state)),
          meta=ocp.args.JsonSave(meta)),
      metrics=metrics, force=True)


def restore(manager: ocp.CheckpointManager, step: int, state):
  """Restores checkpoint `step` into the structure of `state`.

  Returns:
    (state, meta).
  """
  target = jax.tree.map(ocp.utils.to_shape_dtype_struct,
                        flax.serialization.to_state_dict(state))
  restored = manager.restore(
      step,
      args=ocp.args.Composite(state=ocp.args.StandardRestore(target),
                              meta=ocp.args.JsonRestore()))
  return (flax.serialization.from_state_dict(state, restored['state']),
          restored['meta'])
