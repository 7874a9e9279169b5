"""The runs a training loop drives, as one: their reports, checkpoints and epoch ends.

The loop trains one state for all of them through a program (one run, or a
vmapped group). `Members` turns what the loop hands it at fixed points (after
a device call, at a checkpoint, after an epoch's evaluation, at the end) into
each run's own bookkeeping (trainkit/training/run.py: divergence, logs,
plateaus and early stopping, checkpoints, tracking) and the progress display.
A run that diverged or stopped early is no longer alive: it trains, saves and
logs no further.
"""

import os
import time

from absl import logging
import jax
import numpy as np

from trainkit.data import calls
from trainkit.tracking import progress as progress_lib
from trainkit.training import cadence
from trainkit.workdirs import config_history


def _mean(metrics: list) -> dict:
  """The members' metrics averaged, for the progress display (a lone run's as they are)."""
  if len(metrics) == 1:  # Averaging one copies each array, twice an epoch of a small table.
    return metrics[0]
  return jax.tree.map(lambda *x: np.mean(x, axis=0), *metrics)


class Members:
  """The runs of one loop, each at the same step, and the program holding their state."""

  def __init__(self, runs: list, program, plan):
    """`plan`: the loop's timetable (cadence.Plan), told of every save."""
    self.runs, self.program, self.plan = runs, program, plan
    config = runs[0].config
    self.config, self.steps_per_epoch = config, runs[0].spec.steps_per_epoch
    # Shown to the end max_steps sets, if sooner: not "epoch 3/1000".
    self._shown_epochs = cadence.planned_epochs(config, self.steps_per_epoch)
    self.show = progress_lib.Progress(
        style=config.progress, num_epochs=self._shown_epochs,
        steps_per_epoch=self.steps_per_epoch, batch_size=config.batch_size * len(runs),
        every_s=config.progress_every_s)
    self._pending = None  # The last call's (first step, steps, metrics), reported later.
    self._input_states = [None] * len(runs)
    self._epoch_start = (0.0, 0)

  def take_state(self):
    """The runs' restored states, stacked as the program holds them (the only copy)."""
    state = self.program.stack([run.state for run in self.runs])
    for run in self.runs:
      run.state = None
    return state

  def open(self, step: int, total_steps: int) -> None:
    """Opens the runs' logs and says what the loop will do."""
    for run in self.runs:
      # A group's members would interleave unnamed scalar lines in the log.
      run.open_logs(log_scalars=self.show.style != 'bar' and len(self.runs) == 1)
    if step >= total_steps or not self.alive():
      logging.info('Training already finished at step %d (%s); re-evaluating only.', step,
                   self.runs[0].stop_reason or f'{self.config.num_epochs} epochs')
      if step >= self._shown_epochs * self.steps_per_epoch:
        self._warn_idle_changes(step)
    else:
      logging.info('Training from step %d to %d (%d steps per epoch).', step,
                   self._shown_epochs * self.steps_per_epoch, self.steps_per_epoch)

  def _warn_idle_changes(self, step: int) -> None:
    """Warns of a resume's changes that act on steps alone where none is left to train.

    Recorded at the last step (the history says so), not refused: a sweep
    continues its unfinished members with them.
    """
    for run in self.runs:
      idle = {k: v for k, v in (run.config_changes or {}).items()
              if k in config_history.STEPS_ONLY}
      if idle:
        logging.warning('--workdir=%r (checkpoint at step %d) has trained every epoch of its '
                        'config (%d): %s trains no step (raise num_epochs or max_steps with it '
                        'to train on)', run.workdir, step, self._shown_epochs,
                        config_history.listed(idle))

  def alive(self) -> list:
    """The indices of the runs still training."""
    return [i for i, run in enumerate(self.runs) if run.alive]

  def calls(self, data, epoch: int, spans: list, length: int):
    """Each call's (steps, [batches per run]): each run's own data order (its seed).

    A streamed input resumes from the state its checkpoint saved.
    """
    for per_run in zip(*[calls.train_calls(data, run.config, epoch, spans, length,
                                           run.input_state) for run in self.runs]):
      self._input_states = [input_state for _, _, input_state in per_run]
      yield per_run[0][0], [batches for _, batches, _ in per_run]

  def steps(self, num_steps: int) -> list:
    """The steps each run trains in a call: none once it is no longer alive."""
    return [num_steps if run.alive else 0 for run in self.runs]

  def after_call(self, first: int, num_steps: int, metrics) -> None:
    """Takes a call's metrics; reports the previous call's, which is done by now.

    Checking the previous call's metrics (not this one's) lets the host
    prepare the next input while this call runs.
    """
    self.flush()
    self._pending = (first, num_steps, metrics)

  def flush(self) -> None:
    """Checks the pending call's steps for divergence, then reports them."""
    if self._pending is None:
      return
    (first, num_steps, metrics), self._pending = self._pending, None
    metrics = jax.device_get(metrics)  # Its steps are done by now: the epoch's rate so far.
    started, first_step = self._epoch_start
    rate = (first + num_steps - first_step) / max(time.perf_counter() - started, 1e-9)
    shown = []
    for i in self.alive():
      own = jax.tree.map(lambda x: x[:num_steps], self.program.member(metrics, i))  # pylint: disable=cell-var-from-loop
      if self.runs[i].log_train(first, own, rate):
        shown.append(own)
    if shown:
      self.show.update(first + num_steps, num_steps, _mean(shown))

  def checkpoint(self, step: int, state, eval_metrics=None, which=None) -> None:
    """Saves the alive runs (or `which`), never a state whose steps diverged."""
    self.flush()
    saved = self.alive() if which is None else which
    for i in saved:
      self.runs[i].saves.save(step, self.program.member(state, i),
                              eval_metrics and eval_metrics[i], self._input_states[i])
    if saved:
      self.plan.saved()  # Its minimum interval counts from here.

  def where(self) -> str:
    """Where an interrupted loop's checkpoints are, for its closing line."""
    if len(self.runs) == 1:
      return self.runs[0].checkpoint_dir
    return os.path.commonpath([os.path.abspath(run.workdir) for run in self.runs])

  def start_epoch(self, epoch: int, step: int) -> None:
    self._epoch_start = (time.perf_counter(), step)
    self.show.start_epoch(epoch, step)

  def end_epoch(self, epoch: int, step: int, state, eval_metrics: list,
                stopping: bool = False):
    """Logs the epoch's evaluation, steps plateaus and early stopping, checkpoints.

    An epoch not due a save is held if it is a run's best so far
    (saves.Saves.hold_if_best); `stopping` (a signal's stop) saves it as if due.

    Returns the state, with a new peak learning rate where a plateau set one;
    the checkpoint saves the decisions with the state they changed.
    """
    evaluated = self.alive()
    for i in evaluated:
      self.runs[i].log_eval(step, eval_metrics[i])
      rate = self.runs[i].after_epoch(epoch + 1, eval_metrics[i])
      if rate is not None:
        state = self.program.set_learning_rate(state, i, rate)
    due = self.plan.epoch_checkpoint_due(epoch) or stopping  # And where a run stopped early.
    saved = [i for i in evaluated if due or not self.runs[i].alive]
    self.checkpoint(step, state, eval_metrics, saved)
    for i in (i for i in evaluated if i not in saved):
      self.runs[i].saves.hold_if_best(step, self.program.member(state, i), eval_metrics[i],
                                self._input_states[i])
    self._log_epoch(epoch, step, [eval_metrics[i] for i in evaluated], evaluated)
    return state

  def _log_epoch(self, epoch: int, step: int, eval_metrics: list, evaluated: list) -> None:
    started, first_step = self._epoch_start
    epoch_s = time.perf_counter() - started
    for i in evaluated:
      self.runs[i].log_epoch(step, {
          'wall_s': epoch_s, 'steps_per_s': (step - first_step) / epoch_s,
          'examples_per_s': (step - first_step) * self.config.batch_size / epoch_s})
    shown = _mean(eval_metrics)
    self.show.end_epoch(step, shown)
    if self.show.style == 'off':
      logging.info('Epoch %d/%d: eval %s (%.2f s).', epoch + 1, self._shown_epochs,
                   ', '.join(f'{k} {v:.4f}' for k, v in shown.items()), epoch_s)

  def log_eval(self, step: int, eval_metrics: list) -> None:
    """Logs an evaluation of the runs that end with a summary (all but the diverged)."""
    for i, run in enumerate(self.runs):
      if run.diverged is None:
        run.log_eval(step, eval_metrics[i])

  def close(self, error: BaseException | None) -> None:
    """Finishes pending saves and flushes logs: also on divergence or interruption."""
    for run in self.runs:
      run.close(error)

  def finish(self, state, data, eval_metrics: list) -> list:
    """Each run's summary (None for a run that diverged)."""
    summaries = []
    for i, run in enumerate(self.runs):
      own = self.program.member(state, i)
      summaries.append(run.finish(own, data, eval_metrics[i], int(own.step))
                       if run.diverged is None else None)
    return summaries
