"""Metrics to TensorBoard (tensorboardX, no TensorFlow), the log and `metrics.jsonl`."""

import collections
import json
import os
import threading
import time

from absl import logging
import jax
import ml_collections
import numpy as np

from trainkit import errors
from trainkit.workdirs import full_disk
from trainkit.workdirs import layout as workdir_lib


# Seconds between flushes of the TensorBoard event file to disk, as
# tensorboardX's own writer flushes by default.
_FLUSH_S = 10.0


class EventFile:
  """A TensorBoard event file in tensorboardX's format, written every `_FLUSH_S` seconds.

  tensorboardX's SummaryWriter hands every event through a multiprocessing
  queue to two threads of its own. A small table logs a few events an
  epoch, hundreds of epochs a second, and those threads waking for each one
  took the training thread's turn at the interpreter (docs/benchmarks.md,
  speed round, eighth part). Here the caller builds the event and queues
  it in memory; one thread wakes every `_FLUSH_S` seconds to write what is
  queued and flush the file (to disk: tensorboardX's flush syncs), so the
  training thread never waits for the file.
  """

  def __init__(self, workdir: str):
    # Imported here: a tenth of a second that eval, predict and export never need.
    from tensorboardX import event_file_writer  # pylint: disable=g-import-not-at-top
    from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top
    self._event, self._session_log = event_pb2.Event, event_pb2.SessionLog
    self.directory = workdir
    # events.out.tfevents.<time>.<host>, the name SummaryWriter gives it, then
    # the time in ns: a file opened in the same second (a quick resume) had
    # the same name and replaced the first; TensorBoard reads them in name order.
    self._writer = event_file_writer.EventsWriter(
        os.path.join(workdir, 'events'), filename_suffix=f'.{time.time_ns()}')
    self._queued = collections.deque()
    self._closing = threading.Event()
    self._flusher = threading.Thread(target=self._flush_every, name='event_file_flush',
                                     daemon=True)
    self._flusher.start()

  def add(self, summary, step: int | None = None, wall_time: float | None = None) -> None:
    """Queues `summary` (a tensorboardX Summary proto) at `step` (at `wall_time`, or now)."""
    event = self._event(summary=summary, wall_time=wall_time or time.time())
    if step is not None:
      event.step = step
    self._queued.append(event)

  def add_session_start(self, step: int) -> None:
    """Queues a session start at `step` (TensorBoard drops what it read at or past it)."""
    start = self._session_log(status=self._session_log.START)
    self._queued.append(self._event(session_log=start, step=step, wall_time=time.time()))

  def _write_queued(self) -> None:
    while self._queued:
      self._writer.write_event(self._queued.popleft())
    self._writer.flush()

  def _flush_every(self) -> None:
    while not self._closing.wait(_FLUSH_S):
      try:
        self._write_queued()
      except OSError:  # A full disk: close() writes what is left and says so.
        return

  def close(self) -> None:
    """Stops the thread, writes what is queued and closes the file; again: nothing."""
    if self._closing.is_set():
      return
    self._closing.set()
    self._flusher.join()
    self._write_queued()
    self._writer.close()


class MetricLogger:
  """Writes each logged event to every sink; only process 0 writes files."""

  def __init__(self, workdir: str, resume_step: int = 0, log_train_scalars: bool = False,
               tracker=None):
    """Appends to `workdir`'s logs, dropping JSON lines after `resume_step`.

    `log_train_scalars`: each 'train' write is also a line of the text log
    (an epoch's evaluation is on its progress line); every write goes to
    TensorBoard and metrics.jsonl. `tracker`: an MLflow run
    (trainkit/tracking/mlflow_run.py) that gets every event too.
    """
    self._is_writer = jax.process_index() == 0
    self._log_train_scalars = log_train_scalars
    self._tracker = tracker
    self._jsonl = None
    self._kept = set()  # (step, split) of the records kept from before.
    kept = []
    if self._is_writer:
      path = os.path.join(workdir, workdir_lib.METRICS)
      if os.path.exists(path):
        # Whole records up to the checkpoint only (a line cut short or
        # garbled goes too), written anew whole or not at all: a kill or a
        # full disk here leaves the history as it was.
        kept = [r for r in workdir_lib.read_records(path)
                if isinstance(r.get('step'), int) and r['step'] <= resume_step]
        self._kept = {(r['step'], r.get('split')) for r in kept}
        with full_disk.writing(workdir_lib.METRICS, path):
          workdir_lib.write_text(path, ''.join(json.dumps(r) + '\n' for r in kept))
      self._jsonl = open(path, 'a')
    # Last, as its thread must be closed: the event file's format is
    # TensorBoard's (its reader is what the tests read it with).
    self._events = EventFile(workdir) if self._is_writer else None
    if self._events:
      from tensorboardX.proto import summary_pb2  # pylint: disable=g-import-not-at-top
      self._summary = summary_pb2.Summary
      self._restart_events(kept)

  def _restart_events(self, kept: list) -> None:
    """Starts the event file with the history the checkpoint covers.

    TensorBoard drops what it read before a session start at step 0 (the
    first it sees marks the first session): the points an earlier process
    wrote past the checkpoint, twice once redone, go, and the history is the
    kept records', with none of those it held in memory at a kill missing.
    """
    self._events.add_session_start(0)
    for record in kept:
      if isinstance(record.get('metrics'), dict):
        named = {f'{record.get("split")}_{k}': v for k, v in record['metrics'].items()}
        self._events.add(self._scalars(named), record['step'], record.get('time'))

  def _scalars(self, named: dict):
    """One event's summary of every scalar of a write ({tag: value}), as TensorBoard reads them."""
    return self._summary(value=[self._summary.Value(tag=tag, simple_value=value)
                                for tag, value in named.items()])

  def write_hparams(self, hparams: dict, metrics=()) -> None:
    """The config as TensorBoard hparams (its HPARAMS tab), in the run's event file.

    `metrics`: the tags of the scalars the tab shows beside them (it shows
    only those it is given).
    """
    if self._events:
      # The summaries of the hparams plugin, written straight into this
      # run's file (tensorboardX's add_hparams would open another run).
      from tensorboardX import summary as tb_summary  # pylint: disable=g-import-not-at-top
      for proto in tb_summary.hparams(hparams, dict.fromkeys(metrics, 0.0)):
        self._events.add(proto)

  def logged(self, step: int, split: str) -> bool:
    """Whether the workdir's history, as resumed, holds `split`'s record of `step`."""
    return (step, split) in self._kept

  def write(self, step: int, split: str, metrics: dict) -> None:
    """Logs `metrics` of `split` ('train', 'eval', 'epoch') at `step`."""
    metrics = {k: float(v) for k, v in metrics.items()}
    named = {f'{split}_{k}': v for k, v in metrics.items()}
    if self._log_train_scalars and split == 'train':
      logging.info('[%d] %s', step, ', '.join(f'{k}={v:.6g}' for k, v in named.items()))
    if self._tracker:
      self._tracker.log_metrics(step, named)
    if self._jsonl:
      with full_disk.writing(workdir_lib.METRICS, self._jsonl.name):
        full_disk.ensure_space(self._jsonl.name, 2**16, workdir_lib.METRICS)
        # One event holding every scalar of the write, as TensorBoard reads
        # them: a twentieth of the host time of an add_scalar per scalar.
        self._events.add(self._scalars(named), step)
        self._jsonl.write(json.dumps({'step': step, 'split': split, 'time': time.time(),
                                      'metrics': metrics}) + '\n')
        self._jsonl.flush()  # A kill must not lose lines a checkpoint covers.

  def close(self) -> None:
    """Writes the queued TensorBoard events and closes the files (again: nothing)."""
    try:
      if self._events:
        with full_disk.writing('TensorBoard events', self._events.directory):
          self._events.close()
    finally:
      if self._jsonl:
        self._jsonl.close()


class StepAverager:
  """Averages per-step metrics over windows that end at multiples of `every`.

  A step dropped as non-finite (nan_policy='skip': its 'finite' is 0) counts
  in the window's `finite` share only: its NaN made the whole window's loss NaN.
  """

  def __init__(self, every: int, window: dict | None = None):
    """`window`: the open window a checkpoint saved (`window()`), to resume it."""
    self._every = every
    window = window or {'sums': {}, 'count': 0}
    self._sums, self._count = dict(window['sums']), window['count']
    self._kept = window.get('kept', self._count)  # Saved before skipped steps were left out.

  def window(self) -> dict:
    """The open window's sums and count, exact as JSON.

    A checkpoint keeps them, so a resumed run logs the averages an
    uninterrupted one does.
    """
    return {'sums': {k: float(v) for k, v in self._sums.items()}, 'count': self._count,
            'kept': self._kept}

  def add(self, first_step: int, per_step: dict) -> list:
    """Takes metrics of steps first_step+1, first_step+2, ... (arrays [n]).

    Returns:
      [(step, averages)] for each window completed by these steps.
    """
    per_step = {k: np.asarray(v, np.float64) for k, v in jax.device_get(per_step).items()}
    done = []
    for i in range(len(next(iter(per_step.values())))):
      kept = bool('finite' not in per_step or per_step['finite'][i] > 0)
      for key, values in per_step.items():
        self._sums[key] = self._sums.get(key, 0.0) + (values[i] if kept or key == 'finite'
                                                      else 0.0)
      self._count += 1
      self._kept += int(kept)  # A Python int: the checkpoint keeps the window as JSON.
      if (first_step + i + 1) % self._every == 0:
        done.append((first_step + i + 1, {
            k: s / (self._count if k == 'finite' else self._kept) if self._kept or k == 'finite'
            else float('nan') for k, s in self._sums.items()}))
        self._sums, self._count, self._kept = {}, 0, 0
    return done


def flat_hparams(config) -> dict:
  """The config as {'a.b': value} with TensorBoard-friendly values."""
  flat = {}
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      flat.update({f'{key}.{k}': v for k, v in flat_hparams(value).items()})
    else:
      flat[key] = value if isinstance(value, (int, float, str, bool)) else str(value)
  return flat


def check_config(config) -> None:
  """Refuses a logging interval or plots switch that is not one."""
  errors.require(isinstance(config.plots, bool), 'plots', config.plots, 'must be True or False')
  errors.positive_integers(config, ('log_every_steps',))
