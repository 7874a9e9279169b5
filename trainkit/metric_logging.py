"""Metrics to TensorBoard and the log (clu) and to `metrics.jsonl`."""

import json
import os
import time

from clu import metric_writers
import jax
import ml_collections
import numpy as np

from trainkit import workdir as workdir_lib


class MetricLogger:
  """Writes each logged event to every sink; only process 0 writes files."""

  def __init__(self, workdir: str, resume_step: int = 0, log_scalars: bool = True):
    """Appends to `workdir`'s logs, dropping JSON lines after `resume_step`.

    `log_scalars=False` keeps scalars out of the text log (a progress bar
    shows them), leaving TensorBoard and metrics.jsonl.
    """
    self._is_writer = jax.process_index() == 0
    writers = [metric_writers.LoggingWriter()] if log_scalars else []
    if self._is_writer:
      writers.append(metric_writers.SummaryWriter(workdir))
    self._writer = metric_writers.AsyncMultiWriter(writers)
    self._jsonl = None
    if self._is_writer:
      path = os.path.join(workdir, workdir_lib.METRICS)
      if os.path.exists(path):
        with open(path) as f:
          kept = [line for line in f if json.loads(line)['step'] <= resume_step]
        with open(path, 'w') as f:
          f.writelines(kept)
      self._jsonl = open(path, 'a')

  def write_hparams(self, hparams: dict) -> None:
    self._writer.write_hparams(hparams)

  def write(self, step: int, split: str, metrics: dict) -> None:
    """Logs `metrics` of `split` ('train', 'eval', 'epoch') at `step`."""
    metrics = {k: float(v) for k, v in metrics.items()}
    self._writer.write_scalars(step, {f'{split}_{k}': v for k, v in metrics.items()})
    if self._jsonl:
      self._jsonl.write(json.dumps({'step': step, 'split': split, 'time': time.time(),
                                    'metrics': metrics}) + '\n')
      self._jsonl.flush()  # A kill must not lose lines a checkpoint covers.

  def close(self) -> None:
    self._writer.close()
    if self._jsonl:
      self._jsonl.close()


class StepAverager:
  """Averages per-step metrics over windows that end at multiples of `every`."""

  def __init__(self, every: int):
    self._every = every
    self._sums, self._count = {}, 0

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
