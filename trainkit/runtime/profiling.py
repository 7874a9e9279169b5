"""A jax.profiler trace of a configured range of train steps.

The loop calls `before_call(step)` before dispatching the call that starts
after global step `step`, and `after_call(step, state)` once it is dispatched.
Calls end at the range's bounds, so the trace holds exactly the device calls
of steps first..last (and the host work around them). A sweep's vmapped group
is traced once, and each member's workdir gets a copy of that trace (it is
the program that trained the member).
"""

import os
import shutil

from absl import logging
import jax

from trainkit import errors
from trainkit.workdirs import layout as workdir_lib


class StepTracer:
  """Starts and stops one trace around steps `first`..`last` (1-based)."""

  def __init__(self, profile_steps, workdirs: list):
    self.bounds = tuple(profile_steps)
    self.logdirs = [os.path.join(os.path.abspath(w), workdir_lib.PROFILE) for w in workdirs]
    self._active = False

  def call_ends(self) -> tuple:
    """Global steps at which a device call must end for an exact range."""
    return (self.bounds[0] - 1, self.bounds[1]) if self.bounds else ()

  def before_call(self, step: int) -> None:
    if self.bounds and not self._active and step == self.bounds[0] - 1:
      jax.profiler.start_trace(self.logdirs[0])
      self._active = True
      logging.info('Profiling steps %d-%d into %s.', *self.bounds, self.logdirs[0])

  def after_call(self, step: int, state) -> None:
    """Stops the trace once the call reaching `step` has run on the device."""
    if self._active and step >= self.bounds[1]:
      jax.block_until_ready(state)
      self.stop()

  def stop(self) -> None:
    """Ends the trace, if one is running, and copies it to the other workdirs."""
    if self._active:
      jax.profiler.stop_trace()
      self._active = False
      for logdir in self.logdirs[1:]:
        shutil.copytree(self.logdirs[0], logdir, dirs_exist_ok=True)


def check_config(config) -> None:
  """Refuses profile_steps that are not () or (first, last)."""
  profile = tuple(config.profile_steps)
  errors.require(profile == () or (len(profile) == 2 and all(
      isinstance(s, int) and not isinstance(s, bool) for s in profile)
      and 1 <= profile[0] <= profile[1]), 'profile_steps', profile,
                 'must be () or (first, last) with 1 <= first <= last')
