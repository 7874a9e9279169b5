"""When things happen in a run: its epochs, its device calls, its checkpoints.

A `Plan` holds the loop's timetable, a function of the config and the data:
which steps each device call trains, and after which steps and epochs a
checkpoint is due. Calls never cross a checkpoint step, so checkpoints land
on exactly the steps configured. With `checkpoint_min_interval_s` the clock
has a say too: a step or epoch due a save is saved only once that many
seconds have passed since the last save (the last epoch always is).
"""

import time

from trainkit import errors
from trainkit.data import calls
from trainkit.data import pipeline as input_pipeline
from trainkit.runtime import parallel

# The clock checkpoint_min_interval_s is measured on (tests set their own).
_now = time.monotonic


def call_spans(first: int, epoch_start: int, steps_per_epoch: int,
               steps_per_call: int, checkpoint_every_steps: int,
               extra_ends=()) -> list:
  """Splits the steps from `first` to the epoch's end into (start, stop) calls.

  Positions are relative to the epoch. A call ends every `steps_per_call`
  steps of the epoch (0: one call for the rest of the epoch) and at every
  global step that is a multiple of `checkpoint_every_steps`, so checkpoints
  land on exactly the steps configured, and at the global steps `extra_ends`.
  """
  ends = set(range(steps_per_call, steps_per_epoch, steps_per_call)
             if steps_per_call else ())
  if checkpoint_every_steps:
    offset = -epoch_start % checkpoint_every_steps
    ends.update(range(offset or checkpoint_every_steps, steps_per_epoch,
                      checkpoint_every_steps))
  ends.update(e - epoch_start for e in extra_ends)
  ends = sorted(e for e in ends if first < e < steps_per_epoch) + [steps_per_epoch]
  return list(zip([first] + ends[:-1], ends))


def call_length(config, data: input_pipeline.Data, steps_per_epoch: int,
                steps_per_call: int | None = None) -> int:
  """Steps per device call, padding included: one compiled length per run.

  Calls never cross a checkpoint step. `steps_per_call`: calls.steps_per_call's, if known.
  """
  if steps_per_call is None:
    steps_per_call = calls.steps_per_call(config, data)
  return min(steps_per_call or steps_per_epoch,
             config.checkpoint_every_steps or steps_per_epoch, steps_per_epoch)


def planned_epochs(config, steps_per_epoch: int) -> int:
  """The epochs a run is shown to go to: num_epochs, or fewer where max_steps ends it sooner.

  A budget of steps ends a run at the end of the epoch that reaches it.
  """
  if config.get('max_steps', 0):
    return min(config.num_epochs, -(-config.max_steps // steps_per_epoch))
  return config.num_epochs


class Plan:
  """The timetable of runs that share every config field that shapes the loop."""

  def __init__(self, config, steps_per_epoch: int, data: input_pipeline.Data):
    self.num_epochs = config.num_epochs
    self.steps_per_epoch = steps_per_epoch
    self.total_steps = config.num_epochs * steps_per_epoch
    self._steps_per_call = calls.steps_per_call(config, data)
    self.length = call_length(config, data, steps_per_epoch, self._steps_per_call)
    self._every_steps = config.checkpoint_every_steps
    self._every_epochs = config.checkpoint_every_epochs
    self._min_interval_s = config.checkpoint_min_interval_s
    self._saved_at = _now()  # The loop's start counts as a save.

  def epochs(self, step: int) -> range:
    """The epochs left to train from global step `step`."""
    return range(step // self.steps_per_epoch, self.num_epochs)

  def spans(self, epoch: int, step: int, extra_ends=()) -> list:
    """The (start, stop) of each device call from `step` to the end of `epoch`."""
    start = epoch * self.steps_per_epoch
    return call_spans(step - start, start, self.steps_per_epoch, self._steps_per_call,
                      self._every_steps, extra_ends)

  def checkpoint_due(self, step: int) -> bool:
    """Whether `step`, inside an epoch, is one that checkpoint_every_steps saves.

    And, with checkpoint_min_interval_s, whether that long has passed since the last save.
    """
    return bool(self._every_steps and step % self.steps_per_epoch
                and step % self._every_steps == 0) and self._interval_passed()

  def epoch_checkpoint_due(self, epoch: int) -> bool:
    """Whether the end of `epoch` (0-based) is saved: every checkpoint_every_epochs-th, the last.

    A save costs more than an epoch of a small model; with
    checkpoint_min_interval_s, one so due waits that long after the last
    (the last epoch does not).
    """
    if epoch + 1 == self.num_epochs:
      return True
    return (epoch + 1) % self._every_epochs == 0 and self._interval_passed()

  def saved(self) -> None:
    """Restarts checkpoint_min_interval_s: the loop has just saved (members.Members.checkpoint)."""
    self._saved_at = _now()

  def _interval_passed(self) -> bool:
    # Any process's clock decides for all: they save together or not at all.
    return not self._min_interval_s or parallel.any_process(
        _now() - self._saved_at >= self._min_interval_s)


def holds_epochs(config) -> bool:
  """Whether epochs go unsaved, the best of them held between saves (Saves.hold_if_best)."""
  return config.checkpoint_every_epochs > 1 or config.checkpoint_min_interval_s > 0


def check_config(config) -> None:
  """Refuses epochs, batches, call lengths and checkpoint intervals that are not counts."""
  errors.positive_integers(config, ('batch_size', 'eval_batch_size', 'num_epochs',
                                    'checkpoint_every_epochs'))
  errors.counts(config, ('checkpoint_every_steps', 'steps_per_call', 'max_steps'))
  errors.numbers(config, ('checkpoint_min_interval_s',))
  errors.require(config.checkpoint_min_interval_s >= 0, 'checkpoint_min_interval_s',
                 config.checkpoint_min_interval_s, 'is negative (seconds; 0 = none)')


def check_data(config, data: input_pipeline.Data) -> None:
  """The batch must fit the training split and split evenly over the devices."""
  errors.require(config.batch_size <= data.num_train, 'batch_size', config.batch_size,
                 f'is larger than the training split ({data.num_train} examples)')
  errors.require(config.batch_size % data.mesh.size == 0, 'batch_size', config.batch_size,
                 f'is not divisible by the {data.mesh.size} devices (each takes an equal '
                 'share of the global batch)')
  # The schedules span max_steps: a warmup must end before it, an update fit in it.
  if config.max_steps:
    errors.require(config.max_steps >= config.grad_accumulation_steps, 'max_steps',
                   config.max_steps, f'is fewer than one update of grad_accumulation_steps='
                   f'{config.grad_accumulation_steps}')
    warmup = config.warmup_epochs * (data.num_train // config.batch_size)
    errors.require(config.schedule != 'warmup_cosine' or warmup < config.max_steps,
                   'max_steps', config.max_steps,
                   f'ends before the warmup of warmup_epochs={config.warmup_epochs} '
                   f'({warmup:g} steps)')
