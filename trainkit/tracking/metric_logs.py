"""Metrics to TensorBoard (tensorboardX, no TensorFlow), the log and `metrics.jsonl`."""

import json
import os
import time

from absl import logging
import jax
import ml_collections
import numpy as np

from trainkit import errors
from trainkit.workdirs import full_disk
from trainkit.workdirs import layout as workdir_lib


# TensorBoard events waiting for tensorboardX's writer thread, at most.
_EVENT_QUEUE = 1000


class MetricLogger:
  """Writes each logged event to every sink; only process 0 writes files."""

  def __init__(self, workdir: str, resume_step: int = 0, log_scalars: bool = True,
               tracker=None):
    """Appends to `workdir`'s logs, dropping JSON lines after `resume_step`.

    `log_scalars=False` keeps scalars out of the text log (a progress bar
    shows them), leaving TensorBoard and metrics.jsonl. `tracker`: an MLflow
    run (trainkit/tracking/mlflow_run.py) that gets every event too.
    """
    self._is_writer = jax.process_index() == 0
    self._log_scalars = log_scalars
    self._tracker = tracker
    # tensorboardX writes the event file from its own thread; its format is
    # TensorBoard's (its reader is what the tests read it with). Imported here:
    # a tenth of a second that eval, predict and export never need. Its queue
    # holds 10 events by default, and a full queue makes every event wait for
    # that thread: a small table logs a few each epoch, hundreds of epochs.
    import tensorboardX  # pylint: disable=g-import-not-at-top
    from tensorboardX.proto import summary_pb2  # pylint: disable=g-import-not-at-top
    self._summary = summary_pb2.Summary
    self._events = (tensorboardX.SummaryWriter(workdir, flush_secs=10, max_queue=_EVENT_QUEUE)
                    if self._is_writer else None)
    self._jsonl = None
    self._kept = set()  # (step, split) of the records kept from before.
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

  def write_hparams(self, hparams: dict) -> None:
    """The config as TensorBoard hparams (its HPARAMS tab), in the run's event file."""
    if self._events:
      # The summaries of the hparams plugin, written straight into this
      # run's file (tensorboardX's add_hparams would open another run).
      from tensorboardX import summary as tb_summary  # pylint: disable=g-import-not-at-top
      for proto in tb_summary.hparams(hparams, {}):
        self._events.file_writer.add_summary(proto)

  def logged(self, step: int, split: str) -> bool:
    """Whether the workdir's history, as resumed, holds `split`'s record of `step`."""
    return (step, split) in self._kept

  def write(self, step: int, split: str, metrics: dict) -> None:
    """Logs `metrics` of `split` ('train', 'eval', 'epoch') at `step`."""
    metrics = {k: float(v) for k, v in metrics.items()}
    named = {f'{split}_{k}': v for k, v in metrics.items()}
    if self._log_scalars:
      logging.info('[%d] %s', step, ', '.join(f'{k}={v:.6g}' for k, v in named.items()))
    if self._events:
      # One event holding every scalar of the write, as TensorBoard reads
      # them: a twentieth of the host time of an add_scalar per scalar.
      self._events.file_writer.add_summary(self._summary(value=[
          self._summary.Value(tag=tag, simple_value=value)
          for tag, value in named.items()]), step)
    if self._tracker:
      self._tracker.log_metrics(step, named)
    if self._jsonl:
      with full_disk.writing(workdir_lib.METRICS, self._jsonl.name):
        # tensorboardX's thread would fail with tracebacks of its own.
        full_disk.ensure_space(self._jsonl.name, 2**16, workdir_lib.METRICS)
        self._jsonl.write(json.dumps({'step': step, 'split': split, 'time': time.time(),
                                      'metrics': metrics}) + '\n')
        self._jsonl.flush()  # A kill must not lose lines a checkpoint covers.

  def close(self) -> None:
    if self._events:
      self._events.close()
    if self._jsonl:
      self._jsonl.close()


class StepAverager:
  """Averages per-step metrics over windows that end at multiples of `every`."""

  def __init__(self, every: int, window: dict | None = None):
    """`window`: the open window a checkpoint saved (`window()`), to resume it."""
    self._every = every
    window = window or {'sums': {}, 'count': 0}
    self._sums, self._count = dict(window['sums']), window['count']

  def window(self) -> dict:
    """The open window's sums and count, exact as JSON.

    A checkpoint keeps them, so a resumed run logs the averages an
    uninterrupted one does.
    """
    return {'sums': {k: float(v) for k, v in self._sums.items()}, 'count': self._count}

  def add(self, first_step: int, per_step: dict) -> list:
    """Takes metrics of steps first_step+1, first_step+2, ... (arrays [n]).

    Returns:
      [(step, averages)] for each window completed by these steps.
    """
    per_step = {k: np.asarray(v, np.float64) for k, v in jax.device_get(per_step).items()}
    done = []
    for i in range(len(next(iter(per_step.values())))):
      for key, values in per_step.items():
        self._sums[key] = self._sums.get(key, 0.0) + values[i]
      self._count += 1
      if (first_step + i + 1) % self._every == 0:
        done.append((first_step + i + 1,
                     {k: s / self._count for k, s in self._sums.items()}))
        self._sums, self._count = {}, 0
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
