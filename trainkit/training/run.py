"""One run's bookkeeping around the training loop, in its workdir.

`Run` holds what belongs to one workdir: its checkpoint manager, its saves
(trainkit/training/saves.py) and the loop counters saved with each
checkpoint (`meta`), the non-finite step tracker, the metric averager and
logger. `loop.train_loop` calls it to checkpoint and to report metrics, and
at the end to write the summary, for a lone run and for each member of a
vmapped group alike.
"""

import copy
import importlib
import os
import threading
import time

from absl import logging
import jax

from trainkit import models
from trainkit import tasks
from trainkit.checkpoints import manager as checkpointing
from trainkit.checkpoints import warm_start
from trainkit.runtime import preemption
from trainkit.tasks import selection
from trainkit.tracking import metric_logs as metric_logging
from trainkit.tracking import mlflow_run as tracking
from trainkit.tracking import progress
from trainkit.training import cadence
from trainkit.training import divergence
from trainkit.training import evaluation
from trainkit.training import finished_run
from trainkit.training import model_summary
from trainkit.training import optimizers
from trainkit.training import plateaus
from trainkit.training import saves as saves_lib
from trainkit.training import state as state_lib
from trainkit.workdirs import config_history
from trainkit.workdirs import full_disk
from trainkit.workdirs import layout as workdir_lib


# How a stop_reason of max_steps begins (Run.after_epoch writes it).
_BUDGET = 'max_steps='


def _trained_digest(workdir: str) -> str:
  """The backbone source digest model.json holds ('' for none, or no readable file)."""
  try:
    return workdir_lib.ModelSpec.read(workdir).module_digest
  except (FileNotFoundError, ValueError):
    return ''


def _record_input_mode(meta: dict, config, streamed: bool) -> None:
  """Records how the input is read, warning where the checkpoint's epochs read it otherwise.

  input_mode='auto' chooses by the machine's memory; the two modes read an
  epoch's rows in other orders.
  """
  now = 'stream' if streamed else 'device'
  if meta.setdefault('input_mode', now) != now:
    logging.warning(
        "input_mode=%r reads the training rows as %r, the checkpoint's epochs read them as %r: "
        'from here the rows come in another order than an uninterrupted run\'s, and its '
        "figures differ; give input_mode='%s' to resume as it ran", config.input_mode, now,
        meta['input_mode'], meta['input_mode'])
    meta['input_mode'] = now


def _lift_stops(meta: dict, config, step: int) -> None:
  """Drops a restored stop that the config, changed since, would not make.

  That of max_steps, if the continued budget goes past `step`; an early
  stop, if the patience is now longer (plateaus.lift_early_stop). Whether
  the config was changed by this run or by one killed before its first
  save: config.json holds it either way.
  """
  if str(meta.get('stop_reason')).startswith(_BUDGET) and not 0 < config.max_steps <= step:
    del meta['stop_reason']
  plateaus.lift_early_stop(config, meta)


class Run:
  """One run's workdir: checkpoints, loop counters, divergence and logs.

  Created before any file is written: it opens the checkpoint manager and
  restores the latest usable checkpoint (`state`, `step`). `open_logs` then
  writes the config and model spec and opens the metric logs; the loop
  reports to it and checkpoints through it; `close` ends the saves and logs,
  and `finish` writes the summary.
  """

  def __init__(self, config, workdir: str, spec: workdir_lib.ModelSpec, state,
               streamed: bool = False, config_changes: dict | None = None,
               epoch_hook=None, tracker=None):
    """Restores the latest checkpoint of `workdir` into `state`'s structure.

    `streamed`: the input is streamed, and its state is checkpointed too.
    `config_changes`: what this resume changes of the workdir's config
    (config_history.check_resume); recorded when the logs open.
    `epoch_hook(epoch, metrics)`: called with each epoch's evaluation; a
    string it returns stops the run there, as early stopping does (a
    search's pruner: trainkit/search/optuna_search.py). `tracker`: the workdir's MLflow run
    if started already (tracking.start), else started with the logs.
    """
    self.config, self.workdir, self.spec = config, workdir, spec
    self._epoch_hook = epoch_hook
    self.checkpoint_dir = workdir_lib.checkpoint_dir(workdir)
    self.best_metric = selection.best_metric(config)
    self.metrics = tasks.metrics(config)  # The task's, in the summary's order.
    state = self._restore(state, streamed, config_changes)
    _record_input_mode(self.meta, config, streamed)
    self.state, self.step = state, int(state.step)
    self.tracker = divergence.NonFiniteTracker(
        config.nan_policy, config.nan_skip_limit, self.meta.get('skipped_steps', 0),
        self.meta.get('nonfinite_in_a_row', 0))
    self.averager = metric_logging.StepAverager(config.log_every_steps, self.meta.get('window'))
    self.learning_rate_fn = optimizers.create_learning_rate_fn(config, spec.steps_per_epoch)
    self.diverged = None  # The Diverged error that stopped this run, if any.
    # Where epochs are held between saves, the best saved copy is kept too.
    self.saves = saves_lib.Saves(self.manager, self.checkpoint_dir, self.best_metric,
                                 keeps_best=cadence.holds_epochs(config), meta_at=self._meta_at)
    # The best checkpoint (selection.py) and its evaluation, known once closed.
    self.best_step, self.best_metrics = None, None
    self._logger = None
    # The MLflow run (trainkit/tracking/mlflow_run.py), if tracked: opened with the logs.
    self._tracker = tracker
    self._is_writer = jax.process_index() == 0  # Of the files besides checkpoints.
    self._wall_before, self._start = self.meta['train_wall_s'], time.perf_counter()

  def _restore(self, state, streamed: bool, config_changes: dict | None):
    """Opens the manager and restores the latest usable checkpoint into `state`; returns it.

    Sets the loop counters it saved (`meta`), a streamed input's position
    and the config changes this resume makes (None for a new run). A new run
    with `init_from` is warm-started here: the one place that knows whether
    anything was restored.
    """
    config = self.config
    self.manager = checkpointing.create_manager(self.checkpoint_dir,
                                                config.keep_checkpoints, streamed,
                                                self.best_metric, set_aside=True)
    self.meta = {'train_wall_s': 0.0}
    try:
      # A warm start's source is checked before a broken checkpoint is set
      # aside: a run that can neither resume nor start is refused untouched.
      restored = checkpointing.restore_latest(
          self.manager, state, self.workdir, streamed,
          before_new_run=(lambda: warm_start.check_source(config.init_from))
          if config.init_from else None)
      if not restored and config.init_from:
        # A new run (also one whose checkpoints were all broken and set
        # aside) starts from init_from's parameters.
        state = state_lib.warm_started(config, state)
    except Exception:
      self.manager.close()
      raise
    # A streamed input's position in the restored checkpoint (else None).
    self.input_state = None
    self.config_changes = config_changes if restored else None
    if not restored:
      return state
    state, self.meta, restored_step = restored
    self.input_state = self.meta.pop(checkpointing.INPUT_ITEM, None)
    logging.info('Restored checkpoint %s/%d.', self.checkpoint_dir, restored_step)
    # The config and the plateaus so far decide the hyperparameters, not the
    # checkpoint: a change killed before its first save resumes changed too.
    state = state.replace(opt_state=optimizers.with_hyperparams(
        state.opt_state, config, plateaus.lr_scale(self.meta)))
    if config_changes:
      logging.warning('Training on from step %d with changes to the config: %s.',
                      restored_step, config_changes)
    models.note_module_change(config.model, _trained_digest(self.workdir),
                              self.spec.module_digest)
    _lift_stops(self.meta, config, restored_step)
    return state

  @property
  def alive(self) -> bool:
    """False once the run diverged or stopped early: it trains, saves and logs no further."""
    return self.diverged is None and self.stop_reason is None

  @property
  def stop_reason(self) -> str | None:
    """Why the run stopped before its last epoch (early stopping), or None."""
    return self.meta.get('stop_reason')

  def after_epoch(self, epoch: int, metrics: dict) -> float | None:
    """Steps the plateau and early-stopping state; a new peak learning rate, or None.

    Decided before the epoch's checkpoint, which saves the decisions.
    """
    scale = plateaus.reduce_on_plateau(self.config, self.meta, metrics)
    if scale is not None:
      logging.warning('Validation loss on a plateau after epoch %d: learning rate x %g.',
                      epoch, scale)
    reason = plateaus.early_stop(self.config, self.meta, metrics, epoch)
    steps = epoch * self.spec.steps_per_epoch
    if not reason and self.config.get('max_steps', 0) and steps >= self.config.max_steps:
      reason = f'{_BUDGET}{self.config.max_steps} reached at epoch {epoch} ({steps} steps)'
    if not reason and self._epoch_hook:
      reason = self._epoch_hook(epoch, metrics)
    if reason:
      logging.warning('Stopping: %s.', reason)
      self.meta['stop_reason'] = reason
    return None if scale is None else self.config.learning_rate * scale

  def open_logs(self, log_scalars: bool) -> None:
    """Writes the config and model spec and opens the metric logs.

    Lines past the restored checkpoint are from work the resume redoes, and
    are dropped. `log_scalars`: the train scalars also go to the text log, a
    line per window; an epoch's evaluation and times are on its progress
    line (trainkit/tracking/progress.py), not logged again.
    """
    os.makedirs(self.workdir, exist_ok=True)
    if self._is_writer:
      with full_disk.writing('the config', self.workdir):
        if self.config_changes:
          config_history.record(self.workdir, self.step, self.config_changes)
        workdir_lib.write_json(os.path.join(self.workdir, workdir_lib.CONFIG),
                               self.config.to_dict())
        self.spec.write(self.workdir)
        path = os.path.join(self.workdir, model_summary.SUMMARY_FILE)
        if not os.path.exists(path):  # The model cannot change in a workdir.
          workdir_lib.write_text(path, model_summary.table(self.config, self.spec,
                                                           flops=False))
      with open(path) as f:
        logging.info('Model summary (%s):\n%s', path, f.read())
    if self.config.plots and self._is_writer:
      # matplotlib takes most of a second to import: done while training runs.
      threading.Thread(target=importlib.import_module, args=('trainkit.tracking.plots',),
                       daemon=True).start()
    if self._is_writer and tracking.names(self.config):
      self._tracker = self._tracker or tracking.start(self.config, self.workdir)
      self._tracker.open(self.step, self.config_changes)
    self._logger = metric_logging.MetricLogger(
        self.workdir, resume_step=self.step, log_train_scalars=log_scalars, tracker=self._tracker)
    self._logger.write_hparams(metric_logging.flat_hparams(self.config),
                               [f'eval_{m}' for m in self.metrics] + ['train_loss'])
    self._start = time.perf_counter()

  def wall_s(self) -> float:
    """Training wall time, including earlier runs of this workdir."""
    return self._wall_before + time.perf_counter() - self._start

  def log_train(self, first_step: int, metrics: dict, steps_per_s: float) -> bool:
    """Takes per-step metrics of steps first_step+1...; False if they diverged."""
    try:
      self.tracker.update(first_step, metrics)
    except divergence.Diverged as e:
      self.diverged = e
      return False
    for at, averaged in self.averager.add(first_step, metrics):
      # The schedule's rate times the plateaus' cuts so far: the rate the steps had.
      averaged['learning_rate'] = self.learning_rate_fn(at - 1) * plateaus.lr_scale(self.meta)
      averaged['steps_per_s'] = steps_per_s
      self._logger.write(at, 'train', averaged)
    return True

  def log_eval(self, step: int, metrics: dict) -> None:
    # A finished run evaluated again (killed before its summary) has logged this
    # one already, unless another validation split makes it another.
    if 'validation_split' in (self.config_changes or {}) or not self._logger.logged(
        step, 'eval'):
      self._logger.write(step, 'eval', metrics)

  def log_epoch(self, step: int, metrics: dict) -> None:
    self._logger.write(step, 'epoch', metrics)

  def _meta_at(self, step: int) -> dict:
    """The loop counters a checkpoint of `step` saves, as of now (a copy)."""
    self.meta.update(epoch=step // self.spec.steps_per_epoch, train_wall_s=self.wall_s(),
                     window=self.averager.window(), **self.tracker.state())
    return copy.deepcopy(self.meta)

  def close(self, error: BaseException | None = None) -> None:
    """Waits for pending saves and closes the manager and the logs.

    `error`: what ended the training loop, if it did not end well; a run
    that ends here (an error, or its divergence) ends its tracking too, the
    others end it in `finish`. A best epoch held from before a divergence
    is saved: the best checkpoint is the best of the good epochs.
    """
    self.saves.close(diverged=self.diverged is not None, failed=error is not None)
    self.best_step, self.best_metrics = checkpointing.best(self.manager, self.best_metric)
    self.manager.close()
    if self._logger:
      self._logger.close()
    if self._tracker and (error is not None or self.diverged):
      why = error if error is not None else self.diverged
      self._tracker.set_tags({'stop_reason': f'{type(why).__name__}: {why}'[:5000]})
      self._tracker.end('KILLED' if isinstance(why, preemption.Interrupted) else 'FAILED')

  def _test_figures(self, state, data, eval_metrics: dict, step: int) -> dict:
    """The test split's figures, of the final checkpoint and of the best.

    With a validation split, the test split is evaluated here only, once per
    checkpoint reported. Without one the epochs were evaluated on the test
    split: the final figures are those, and no checkpoint is called best by
    them (that would be choosing on the test split).
    """
    if data.validation is None:
      return {f'test_{name}': eval_metrics[name] for name in self.metrics}
    batch = self.config.eval_batch_size
    final = evaluation.evaluate(state, data, batch)
    best = final
    kept = self.saves.best_copy(self.best_step)
    if kept is not None and self.best_step != step:
      best = evaluation.evaluate(kept, data, batch)
    elif self.best_step is not None and self.best_step != step:
      manager = checkpointing.create_manager(self.checkpoint_dir, self.config.keep_checkpoints,
                                             best_metric=self.best_metric)
      try:
        best_state, _ = checkpointing.restore(manager, self.best_step, state)
      finally:
        manager.close()
      best = evaluation.evaluate(best_state, data, batch)
    return {**{f'test_{name}': final[name] for name in self.metrics},
            **{f'best_test_{name}': best[name] for name in self.metrics}}

  def finish(self, state, data, eval_metrics: dict, step: int) -> dict:
    """Writes summary.json (and, if configured, the plots); returns the summary.

    `eval_*` are the epochs' evaluation split's (`eval_split`: the validation
    split, or the test split without one), of the final checkpoint, and
    `best_eval_*` of the best (by `best_metric`, None without a validation
    split); `test_*` the test split's, of the final checkpoint, and
    `best_test_*` of the best.
    """
    wall = self.meta['train_wall_s']  # As of the last checkpoint.
    summary = {
        'eval_split': self.config.validation_split or self.config.test_split,
        **{f'eval_{name}': eval_metrics[name] for name in self.metrics},
        'best_metric': self.best_metric,
        'best_step': self.best_step,
        **{f'best_{name}': (self.best_metrics or {}).get(name)
           for name in map(selection.key, self.metrics)},
        **self._test_figures(state, data, eval_metrics, step),
        'step': step,
        'epoch': step / self.spec.steps_per_epoch,
        'train_wall_s': wall,
        'examples_per_s': step * self.config.batch_size / wall if wall else 0.0,
        'skipped_steps': self.tracker.skipped,
        'stop_reason': self.stop_reason or 'completed',
    }
    if self._is_writer:
      with full_disk.writing(workdir_lib.SUMMARY, self.workdir):
        workdir_lib.write_json(os.path.join(self.workdir, workdir_lib.SUMMARY), summary)
    drawn = step == self.step and finished_run.plots_drawn(self.config, self.workdir)
    if self.config.plots and not drawn:
      # Imported here: matplotlib costs a second that runs without plots skip.
      from trainkit.tracking import plots  # pylint: disable=g-import-not-at-top
      predictions = evaluation.test_predictions(  # Every process takes part.
          state, data, self.config.eval_batch_size)
      if self._is_writer:
        directory = os.path.join(self.workdir, workdir_lib.PLOTS)
        try:
          with full_disk.writing('the plots', directory):
            plots.write_run_plots(self.workdir, predictions, self.config)
        except full_disk.DiskFull:
          # None half-written is drawn.
          for name in workdir_lib.PLOT_FILES[tasks.of(self.config).PLOTS]:
            if os.path.exists(os.path.join(directory, name)):
              os.remove(os.path.join(directory, name))
          raise
    if self._tracker:
      self._track_summary(summary, step)
    logging.info('%s', progress.run_summary(summary, self.workdir, self.best_step,
                                            self.config.plots, self.metrics,
                                            self._tracker and self._tracker.shown_uri()))
    return summary

  def _track_summary(self, summary: dict, step: int) -> None:
    """The summary's figures and files to the MLflow run, which ends there."""
    self._tracker.log_metrics(step, {
        k: v for k, v in summary.items() if k not in ('step', 'epoch')
        and isinstance(v, (int, float)) and not isinstance(v, bool)})
    self._tracker.set_tags({k: v for k, v in summary.items() if isinstance(v, str)})
    self._tracker.log_artifacts([os.path.join(self.workdir, name) for name in (
        workdir_lib.SUMMARY, workdir_lib.CONFIG, model_summary.SUMMARY_FILE,
        workdir_lib.PLOTS)])
    self._tracker.end('FINISHED')
