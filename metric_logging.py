"""Metrics to TensorBoard and the log (clu) and to `metrics.jsonl`."""

import json
import os

from clu import metric_writers
import jax


class MetricLogger:
  """Writes each logged event to every sink; only process 0 writes files."""

  def __init__(self, workdir: str):
    self._is_writer = jax.process_index() == 0
    self._writer = metric_writers.create_default_writer(
        workdir, just_logging=not self._is_writer, asynchronous=True)
    self._jsonl = (open(os.path.join(workdir, 'metrics.jsonl'), 'a')
                   if self._is_writer else None)

  def write_hparams(self, hparams: dict) -> None:
    self._writer.write_hparams(hparams)

  def write(self, step: int, split: str, metrics: dict) -> None:
    """Logs `metrics` of `split` ('train' or 'eval') at `step`."""
    metrics = {k: float(v) for k, v in metrics.items()}
    self._writer.write_scalars(step, {f'{split}_{k}': v for k, v in metrics.items()})
    if self._jsonl:
      self._jsonl.write(json.dumps({'step': step, 'split': split,
                                    'metrics': metrics}) + '\n')

  def close(self) -> None:
    self._writer.close()
    if self._jsonl:
      self._jsonl.close()
