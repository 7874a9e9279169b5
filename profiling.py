"""A jax.profiler trace of a configured range of train steps.

The loop calls `before_call(step)` before dispatching the call that starts
after global step `step`, and `after_call(step, state)` once it is dispatched.
Calls end at the range's bounds, so the trace holds exactly the device calls
of steps first..last (and the host work around them).
"""

import os

from absl import logging
import jax


class StepTracer:
  """Starts and stops one trace around steps `first`..`last` (1-based)."""

  def __init__(self, profile_steps, workdir: str):
    self.bounds = tuple(profile_steps)
    self.logdir = os.path.join(os.path.abspath(workdir), 'profile')
    self._active = False

  def call_ends(self) -> tuple:
    """Global steps at which a device call must end for an exact range."""
    return (self.bounds[0] - 1, self.bounds[1]) if self.bounds else ()

  def before_call(self, step: int) -> None:
    if self.bounds and not self._active and step == self.bounds[0] - 1:
      jax.profiler.start_trace(self.logdir)
      self._active = True
      logging.info('Profiling steps %d-%d into %s.', *self.bounds, self.logdir)

  def after_call(self, step: int, state) -> None:
    """Stops the trace once the call reaching `step` has run on the device."""
    if self._active and step >= self.bounds[1]:
      jax.block_until_ready(state)
      self.stop()

  def stop(self) -> None:
    if self._active:
      jax.profiler.stop_trace()
      self._active = False
