"""A finished workdir run again with its own config: its summary stands.

Re-running the command that trained a workdir to its end changes nothing:
the same checkpoint evaluated on the same data (a table's or arrays' file
checked by digest before this; a TFDS dataset read from the same folders)
gives the same figures, bit for bit, with the same program on the same
machine. So the run restores its final
checkpoint, says so, and returns the summary.json it wrote, without
loading data or compiling anything. `--mode=eval` evaluates a checkpoint
again on purpose. Anything that could give a different result (another
test split or evaluation batch, plots missing, MLflow tracking, another
data folder, several processes, a checkpoint that fails its checks) takes
the ordinary path, which re-evaluates and writes the summary again.
"""

import os

from absl import logging
import jax

from trainkit import tasks
from trainkit.checkpoints import manager as checkpointing
from trainkit.runtime import parallel
from trainkit.tracking import progress
from trainkit.training import state as state_lib
from trainkit.workdirs import config_history
from trainkit.workdirs import layout as workdir_lib
from trainkit.workdirs import lock as workdir_lock


def plots_drawn(config, workdir: str) -> bool:
  """Whether the workdir holds every plot its task draws."""
  directory = os.path.join(workdir, workdir_lib.PLOTS)
  return all(os.path.exists(os.path.join(directory, name))
             for name in workdir_lib.PLOT_FILES[tasks.of(config).PLOTS])


def _summary(config, workdir: str) -> dict | None:
  """The summary a re-run of `config` would write again, or None if it might differ."""
  if jax.process_count() > 1 or config.trackers:
    return None
  stored = config_history.stored(workdir)
  summary = config_history.finished_summary(workdir, config, stored)
  if summary is None:
    return None
  if set(config_history.differences(stored, config)) - set(config_history.UNREPORTED):
    return None
  steps = workdir_lib.checkpoint_steps(workdir)
  if not steps or steps[-1] != summary.get('step'):
    return None
  if config.plots and not plots_drawn(config, workdir):
    return None
  if not _whole_lines(os.path.join(workdir, workdir_lib.METRICS)):
    return None  # The ordinary path keeps the whole records and writes the file again.
  wanted = ('step', 'epoch', 'train_wall_s', 'examples_per_s',
            *(f'eval_{name}' for name in tasks.metrics(config)))
  if not all(isinstance(summary.get(key), (int, float)) for key in wanted):
    return None  # Not one this version writes: written again.
  return summary


def _whole_lines(path: str) -> bool:
  """Whether every line of a JSON-lines file is a whole record (none cut or garbled)."""
  try:
    with open(path, 'rb') as f:
      text = f.read()
  except OSError:
    return False
  lines = text.split(b'\n')
  return lines[-1] == b'' and len(workdir_lib.read_records(path)) == len(lines) - 1


def _final_state(config, workdir: str, step: int):
  spec = workdir_lib.ModelSpec.read(workdir)
  manager = checkpointing.create_manager(workdir_lib.checkpoint_dir(workdir),
                                         config.keep_checkpoints)
  try:
    # Replicated over every device, as the run that trained it left it.
    return parallel.replicate(state_lib.restored(config, spec, manager, step),
                              parallel.create_mesh())
  finally:
    manager.close()


def already_finished(config, workdir: str):
  """(final train state, summary) of a workdir `config` finished already, or None.

  None: the run must go the ordinary way (see the module's docstring).
  """
  if not os.path.exists(os.path.join(workdir, workdir_lib.SUMMARY)):
    return None  # Not finished: no lock taken, nothing read.
  with workdir_lock.hold(workdir):  # Read while no other run of it writes there.
    summary = _summary(config, workdir)
    if summary is None:
      return None
    try:
      state = _final_state(config, workdir, summary['step'])
    except (checkpointing.BrokenCheckpointError, checkpointing.CheckpointMismatchError,
            workdir_lib.WorkdirError, FileNotFoundError):
      # The ordinary path sets a broken checkpoint aside, writes model.json
      # again, or refuses.
      return None
  logging.info('%s finished training already with this config (%s); its summary.json '
               'stands (--mode=eval evaluates a checkpoint again).\n%s', workdir,
               summary.get('stop_reason', 'completed'),
               progress.run_summary(summary, workdir, summary.get('best_step'),
                                    config.plots, tasks.metrics(config)))
  return state, summary
