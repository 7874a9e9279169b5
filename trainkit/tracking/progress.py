"""What a person watching a run sees: per-epoch progress and a closing summary.

On a terminal each epoch gets a live tqdm bar, left on screen when the epoch
ends (as Keras `fit` does). Elsewhere (CI, a log file) the same tqdm line is
written as a plain log line at most every `every_s` seconds and at the end of
each epoch. Either way tqdm does the timing: the epoch's average rate (which,
as Keras shows it, includes the first call's compilation) and ETA; the run's
ETA is the remaining train steps at that rate.
"""

import contextlib
import os
import sys
import time

from absl import logging

from trainkit import errors
from trainkit import tasks
from trainkit.tasks import metric_catalogue as metrics_lib

STYLES = ('auto', 'bar', 'log', 'off')
_TIMES = '[{elapsed}<{remaining}, {rate_fmt}{postfix}]'
_BAR = '{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} ' + _TIMES
_LINE = '{desc} {n_fmt}/{total_fmt} steps ({percentage:.0f}%) ' + _TIMES


# Per-step figures the bar leaves out: the logs have them.
_NOT_SHOWN = {'grad_norm', 'finite'}


def _tqdm():
  """tqdm, imported when a training run draws its first bar.

  Eval, predict and export never draw one; the import costs them nearly a
  tenth of a second.
  """
  import tqdm  # pylint: disable=g-import-not-at-top
  return tqdm


class _LogLines:
  """A file for tqdm that turns each refresh into one absl log line."""

  def write(self, text: str) -> None:
    text = text.strip('\r\n ')
    if text:
      logging.info('%s', text)

  def flush(self) -> None:
    pass


class _AboveTheBar:
  """A stream for the log handler that prints above the live bar."""

  def write(self, text: str) -> None:
    _tqdm().tqdm.write(text.rstrip('\n'), file=sys.stderr)

  def flush(self) -> None:
    sys.stderr.flush()


def resolve_style(style: str) -> str:
  """'auto' is 'bar' on a terminal or in a notebook (a Jupyter kernel), and 'log' otherwise.

  A notebook's output cell redraws tqdm's line in place, as a terminal does.
  """
  if style != 'auto':
    return style
  terminal = sys.stderr.isatty() and os.environ.get('TERM') != 'dumb'
  return 'bar' if terminal or 'ipykernel' in sys.modules else 'log'


class Progress:
  """Progress of one run, fed with the metrics of each finished device call."""

  def __init__(self, *, style: str, num_epochs: int, steps_per_epoch: int,
               batch_size: int, every_s: float = 30.0):
    self.style = resolve_style(style)
    self._num_epochs, self._steps_per_epoch = num_epochs, steps_per_epoch
    self._batch_size, self._every_s = batch_size, every_s
    self._bar = None
    self._sums = {}

  @property
  def steps_per_s(self) -> float:
    """The current epoch's steps per second so far (0 before its first call)."""
    if not self._bar:
      return 0.0
    info = self._bar.format_dict  # tqdm's own figures, as its line shows them.
    return (info['n'] - info['initial']) / info['elapsed'] if info['elapsed'] else 0.0

  def start_epoch(self, epoch: int, step: int) -> None:
    """Opens the bar of `epoch` (0-based) at global `step` (> 0 on resume)."""
    self.close()
    self._sums = {}
    self._shown = time.monotonic()
    if self.style == 'off':
      return
    bar = self.style == 'bar'
    self._bar = _tqdm().tqdm(
        total=self._steps_per_epoch, initial=step - epoch * self._steps_per_epoch,
        desc=f'Epoch {epoch + 1}/{self._num_epochs}', unit='step',
        file=sys.stderr if bar else _LogLines(), dynamic_ncols=bar,
        # Never on its own: a line is drawn after its postfix is set.
        mininterval=float('inf'), maxinterval=float('inf'),
        delay=0 if bar else 1e-6,  # A log line at 0 % says nothing.
        # A log line is written by end_epoch, not again by close.
        bar_format=_BAR if bar else _LINE, leave=bar)

  def update(self, step: int, num_steps: int, metrics: dict) -> None:
    """Adds a call's `num_steps` steps, ending at global `step`.

    `metrics` holds per-step arrays; the bar shows their running epoch means.
    """
    if not self._bar:
      return
    for key in metrics.keys() - _NOT_SHOWN:
      total, count = self._sums.get(key, (0.0, 0))
      self._sums[key] = (total + float(metrics[key].sum()), count + num_steps)
    self._bar.update(num_steps)
    self._set_postfix(step)
    now = time.monotonic()
    if self.style == 'bar':
      due = now - self._shown >= 0.1
    else:  # The epoch's last line is end_epoch's, with the evaluation.
      due = self._bar.n < self._bar.total and now - self._shown >= self._every_s
    if due:
      self._bar.refresh()
      self._shown = now

  def _set_postfix(self, step: int, eval_metrics: dict | None = None) -> None:
    mean = {k: total / max(count, 1) for k, (total, count) in self._sums.items()}
    rate = self.steps_per_s
    remaining = self._num_epochs * self._steps_per_epoch - step
    shown = sorted(mean, key=lambda k: k != 'loss')  # The loss first.
    parts = [f'{metrics_lib.short(k)}={figure(k, mean[k])}' for k in shown]
    parts.append(f'{rate * self._batch_size:,.0f} ex/s')
    if eval_metrics:
      parts += [f'eval_{metrics_lib.short(k)}={figure(k, eval_metrics[k])}'
                for k in sorted(eval_metrics, key=lambda k: k != 'loss')]
    elif rate and remaining:
      parts.append(f'run ETA {_tqdm().tqdm.format_interval(remaining / rate)}')
    self._bar.set_postfix_str(', '.join(parts), refresh=False)

  def end_epoch(self, step: int, eval_metrics: dict) -> None:
    """Shows the epoch's evaluation on its bar and leaves the bar on screen."""
    if self._bar:
      self._set_postfix(step, eval_metrics)
      if self.style != 'bar':
        self._bar.refresh()
      self.close()

  def close(self) -> None:
    if self._bar:
      self._bar.close()  # A bar stays on screen with its last figures.
      self._bar = None

  @contextlib.contextmanager
  def logs_above_bar(self):
    """While the bar is live, absl log lines print above it, not through it."""
    handler = logging.get_absl_handler().python_handler
    if self.style != 'bar':
      yield
      return
    stream = handler.stream
    handler.setStream(_AboveTheBar())
    try:
      yield
    finally:
      self.close()
      handler.setStream(stream)


def figure(metric: str, value, precise: bool = False) -> str:
  """A metric's value as a person reads it: in per cent where declared so, else to 4 decimals.

  `precise`: two more digits (--mode=eval's line).
  """
  if value is None:
    return 'n/a'
  digits = 4 if precise else 2
  return f'{value:.{digits}%}' if metrics_lib.percent(metric) else f'{value:.{digits + 2}f}'


def figures(summary: dict, prefix: str, metrics, percent_only_first: bool = False) -> str:
  """'<metric> 98.12%, loss 0.0601': the summary's `prefix`+metric figures, in order.

  `percent_only_first`: the first figure without its name when it is a
  percentage (98.12% reads as the task's first metric), as the test line's
  best-checkpoint part shows it.
  """
  parts = []
  for i, metric in enumerate(metrics):
    value = figure(metric, summary.get(prefix + metric))
    unnamed = percent_only_first and i == 0 and metrics_lib.percent(metric)
    parts.append(value if unnamed else f'{metric} {value}')
  return ', '.join(parts)


def run_summary(summary: dict, workdir: str, best_step: int | None,
                plots: bool = True, metrics: tuple | None = None,
                mlflow_uri: str | None = None) -> str:
  """The closing lines of a run: results, speed and where things were written.

  `metrics`: the task's metric names (trainkit/tasks), in the order shown
  (default: the default task's).
  `mlflow_uri`: the run's MLflow store, if tracked (trainkit/tracking/mlflow_run.py).
  """
  workdir = os.path.abspath(workdir)
  metrics = metrics or tasks.metrics({})
  best = (f'; best by {summary["best_metric"]} at step {best_step}: '
          f'{figures(summary, "best_eval_", metrics)}' if best_step is not None else '')
  lines = [
      f'Finished {summary["epoch"]:g} epochs, {summary["step"]} steps, in '
      f'{summary["train_wall_s"]:.1f} s of training '
      f'({summary["examples_per_s"]:,.0f} examples/s).',
      *([f'  validation     {figures(summary, "eval_", metrics)} '
         f'({summary["eval_split"]}, final){best}',
         f'  test           {figures(summary, "test_", metrics)} (final); '
         f'{figures(summary, "best_test_", metrics, percent_only_first=True)} '
         '(best checkpoint)']
        if 'best_test_' + metrics[0] in summary else
        [f'  test {metrics[0]}  {figure(metrics[0], summary["eval_" + metrics[0]])}'
         + ''.join(f', {m} {figure(m, summary["eval_" + m])}' for m in metrics[1:])
         + ' (no validation split: no checkpoint is chosen by it)']),
      f'  checkpoints    {os.path.join(workdir, "checkpoints")}',
      f'  plots          {os.path.join(workdir, "plots") if plots else "off (config.plots)"}',
      f'  metrics        {os.path.join(workdir, "metrics.jsonl")}, summary.json',
      f'  TensorBoard    tensorboard --logdir {workdir}',
  ]
  if mlflow_uri:
    lines.append(f'  MLflow         mlflow ui --backend-store-uri {mlflow_uri}'
                 if mlflow_uri.startswith('sqlite:') else f'  MLflow         {mlflow_uri}')
  if summary.get('skipped_steps'):
    lines.insert(2, f'  skipped        {summary["skipped_steps"]} non-finite steps')
  return '\n'.join(lines)


def check_config(config) -> None:
  """Refuses a progress style or interval that is not one."""
  errors.numbers(config, ('progress_every_s',))
  errors.one_of(config, 'progress', STYLES)
  errors.require(config.progress_every_s > 0, 'progress_every_s', config.progress_every_s,
                 'must be > 0')
