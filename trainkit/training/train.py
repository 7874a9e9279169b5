"""Training of a run in its workdir: `train_and_evaluate`, the entry point.

`main.py`, the tests and the Python API call it. It refuses what it must
before the workdir is touched, loads the data, builds the state and hands
the run to the loop (trainkit/training/loop.py). The math lives in pure,
jitted functions (trainkit/training/step.py, evaluation.py).
"""

import sys

import jax
import ml_collections

from trainkit.checkpoints import warm_start
from trainkit.data import pipeline as input_pipeline
from trainkit.data import trained_data
from trainkit.runtime import parallel
from trainkit.tracking import mlflow_run as tracking
from trainkit.training import compile_ahead
from trainkit.training import config_checks
from trainkit.training import finished_run
from trainkit.training import loop
from trainkit.training import programs
from trainkit.training import run as runs_lib
from trainkit.training import state as state_lib
from trainkit.workdirs import config_history
from trainkit.workdirs import layout as workdir_lib
from trainkit.workdirs import lock as workdir_lock


def check_before_work(config, workdir: str, continue_with_changes: bool = False) -> dict:
  """Everything that can refuse a run of `config` in `workdir` before it is touched.

  Returns what a resume changes of the workdir's config (config_history).
  """
  config_checks.validate(config)
  workdir_lib.check_workdir(workdir)
  warm_start.check(config, workdir)
  changes = config_history.check_resume(config, workdir, continue_with_changes)
  config_checks.check_new_run(config, workdir)
  trained_data.check(config, workdir, 'resume')
  return changes


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       data: input_pipeline.Data | None = None,
                       continue_with_changes: bool = False, epoch_hook=None):
  """Trains (or resumes training) in `workdir` and evaluates after each epoch.

  Args:
    config: the run's config (see configs/default.py).
    workdir: where checkpoints, logs and the summary go; a workdir with
      checkpoints resumes from its latest, with the config it was trained
      with (trainkit/workdirs/config_history.py).
    data: input_pipeline.create_datasets(config), when several runs share it
      (as a sweep's members do); loaded here otherwise.
    continue_with_changes: a resume may change the continuable fields
      (more epochs, a new learning rate, ...); they are recorded.
    epoch_hook: optional `(epoch, eval_metrics) -> str | None`, called after
      each epoch's evaluation; a string stops the run there with that
      `stop_reason` (a search's pruner, trainkit/search/optuna_search.py).

  Returns:
    (final train state, summary dict as written to `summary.json`).

  Raises:
    trainkit.training.divergence.Diverged: a non-finite step ended the run (nan_policy).
    trainkit.workdirs.lock.WorkdirBusy: another run holds the workdir.
  """
  changes = check_before_work(config, workdir, continue_with_changes)
  # Data given (a sweep's) is checked against the config below, as ever.
  finished = None if changes or data is not None else finished_run.already_finished(config, workdir)
  if finished:
    return finished
  # MLflow's import, in a process of its own, runs while the data loads.
  tracker = tracking.start(config, workdir) if jax.process_index() == 0 else None
  try:
    with workdir_lock.hold(workdir):
      if data is None:
        # A finished workdir only re-evaluates: there is nothing to compile ahead.
        with compile_ahead.while_loading(
            config, bool(changes) or not config_history.finished_summary(workdir, config)):
          data = input_pipeline.create_datasets(config)
      config_checks.check_data(config, data)
      config_checks.check_new_run_data(config, data, workdir)
      spec = state_lib.model_spec(config, data)
      # Replicated on every device; every process builds the same values.
      state = parallel.replicate(state_lib.create_state(config, spec), data.mesh)
      run = runs_lib.Run(config, workdir, spec, state, streamed=data.mode == 'stream',
                         config_changes=changes, epoch_hook=epoch_hook, tracker=tracker)
      state, (summary,) = loop.train_loop([run], programs.MeshSteps(data.mesh), data)
  finally:
    if tracker:  # Ended already, unless refused before it opened or failed after.
      tracker.end('FAILED' if sys.exc_info()[1] else None)
  if run.diverged:
    raise run.diverged
  return state, summary
