"""What to do when a step's loss or gradient is not finite (`nan_policy`).

The train step never applies a non-finite update (the state keeps its values,
the step counter moves on) and reports per step whether it was finite. This
tracker reads those flags on the host: 'stop' ends the run at the first one,
'skip' counts them and ends the run after `nan_skip_limit` in a row.
"""

import numpy as np
from trainkit import errors

NAN_POLICIES = ('stop', 'skip')


class Diverged(Exception):
  """Training produced a non-finite loss or gradient."""


class NonFiniteTracker:
  """Counts non-finite steps; raises Diverged when the policy says stop."""

  def __init__(self, policy: str, limit: int, skipped: int = 0, in_a_row: int = 0):
    self.policy, self.limit = policy, limit
    self.skipped, self.in_a_row = skipped, in_a_row  # Restored from checkpoints.

  def update(self, first_step: int, metrics: dict) -> None:
    """Takes per-step metrics ('finite', 'loss', 'grad_norm') of steps first_step+1...

    Raises:
      Diverged: naming the step and its values, when the run must stop.
    """
    for i, finite in enumerate(np.asarray(metrics['finite'])):
      if finite:
        self.in_a_row = 0
        continue
      self.skipped += 1
      self.in_a_row += 1
      if self.policy == 'stop' or self.in_a_row >= self.limit:
        why = ("nan_policy='stop'" if self.policy == 'stop' else
               f"{self.in_a_row} non-finite steps in a row, nan_skip_limit={self.limit}")
        raise Diverged(
            f'training diverged at step {first_step + i + 1}: '
            f'loss={float(metrics["loss"][i])}, '
            f'grad_norm={float(metrics["grad_norm"][i])} ({why}). '
            'Try a lower learning_rate or a grad_clip_norm.')

  def state(self) -> dict:
    return {'skipped_steps': self.skipped, 'nonfinite_in_a_row': self.in_a_row}


def check_config(config) -> None:
  """Refuses a nan_policy or skip limit that is not one."""
  errors.one_of(config, 'nan_policy', NAN_POLICIES)
  errors.positive_integers(config, ('nan_skip_limit',))
