"""Stop cleanly on SIGTERM, Ctrl-C or SLURM's SIGUSR2: finish the call, checkpoint, exit.

The first signal only sets a flag that the training loop reads between device
calls (in a multi-process run the processes then agree, so a signal to any one
stops them all at the same step); a second Ctrl-C (or SIGTERM) exits at once.
"""

import contextlib
import os
import signal
import sys
import threading

from absl import logging

# SIGUSR2: what a SLURM job is sent before its time limit (--signal=USR2@120,
# as the search launcher asks: trainkit/search/launch.py).
_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2)


class Interrupted(Exception):
  """Training stopped on a signal after saving a checkpoint of `step`.

  `signum` is None in a process of a multi-process run that stopped because
  another one received the signal; it exits as if sent SIGTERM.
  """

  def __init__(self, signum: int | None, step: int, directory: str):
    self.signum, self.step = signum, step
    # The shell's convention: 143, 130.
    self.exit_status = 128 + (signum or signal.SIGTERM)
    cause = (f'by {signal.Signals(signum).name}' if signum
             else 'with the other processes (one of them received a signal)')
    super().__init__(
        f'stopped {cause} at step {step}; checkpoint saved in {directory}. Run the '
        'same command to continue.')


class StopRequest:
  """Set by the first SIGTERM/SIGINT/SIGUSR2; read by the training loop."""

  def __init__(self):
    self.signum = None

  def __bool__(self):
    return self.signum is not None

  def _handle(self, signum, frame):
    del frame
    if self.signum is not None:
      print(f'{signal.Signals(signum).name} again: exiting now without a checkpoint.',
            file=sys.stderr, flush=True)
      os._exit(128 + signum)  # pylint: disable=protected-access
    self.signum = signum
    logging.warning('%s received: saving a checkpoint after the current call, then '
                    'exiting (send it again to exit at once).',
                    signal.Signals(signum).name)


@contextlib.contextmanager
def stop_on_signals():
  """Yields a StopRequest that SIGTERM/SIGINT/SIGUSR2 set while the block runs.

  Handlers can only be installed from the main thread; elsewhere the request
  is never set and signals keep their previous behaviour.
  """
  request = StopRequest()
  if threading.current_thread() is not threading.main_thread():
    yield request
    return
  previous = {s: signal.signal(s, request._handle) for s in _SIGNALS}  # pylint: disable=protected-access
  try:
    yield request
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)
