"""A trained workdir's model restored, and a checkpoint of it evaluated.

The model is rebuilt from the workdir's config (the one given on the command
line) and `model.json`, and a checkpoint chosen by `--checkpoint` restored:
'latest', 'best' (by the validation `best_metric`, trainkit/tasks/selection.py)
or a step number. Every serving mode starts here.
"""

import os

from absl import logging
import jax

from trainkit import errors
from trainkit import models
from trainkit import tasks
from trainkit.checkpoints import manager as checkpointing
from trainkit.data import pipeline as input_pipeline
from trainkit.data import trained_data
from trainkit.runtime import parallel
from trainkit.tasks import selection
from trainkit.training import config_checks
from trainkit.training import evaluation
from trainkit.training import state as state_lib
from trainkit.workdirs import config_history
from trainkit.workdirs import full_disk
from trainkit.workdirs import layout as workdir_lib
from trainkit.workdirs import lock as workdir_lock
def restore(config, workdir: str, checkpoint: str = 'latest', evaluates: bool = False):
  """The train state of checkpoint `checkpoint` of `workdir`.

  `evaluates`: on the workdir's data too (config_history.check_inference).

  Returns:
    (state, step, spec).
  """
  config_checks.validate(config)
  if os.path.isdir(workdir):
    workdir_lib.check_kinds(workdir)
  trained = config_history.check_inference(config, workdir, evaluates)
  try:
    spec = workdir_lib.ModelSpec.read(workdir)
  except FileNotFoundError:
    raise errors.ConfigError(
        f'--workdir={workdir!r} has no {workdir_lib.MODEL_SPEC}: not a workdir a '
        'training run has written (train first)') from None
  models.note_module_change(config.model, spec.module_digest,
                            models.module_digest(config.model))
  directory = workdir_lib.checkpoint_dir(workdir)
  if not os.path.isdir(directory):  # Refused before a manager would create the folder.
    raise errors.ConfigError(
        f'--checkpoint={checkpoint!r}: {directory} has no checkpoint (train first)')
  # "best" as the run chose it: by the metric and split of its own config.
  best_metric = selection.best_metric(trained or config)
  manager = checkpointing.create_manager(directory, config.keep_checkpoints,
                                         best_metric=best_metric)
  try:
    step = checkpointing.choose_step(manager, checkpoint, best_metric,
                                     f'--checkpoint={checkpoint!r}')
    state = state_lib.restored(config, spec, manager, step)
  finally:
    manager.close()
  logging.info('Restored %s/%d.', directory, step)
  return state, step, spec


def evaluate_checkpoint(config, workdir: str, checkpoint: str = 'latest',
                        split: str = '') -> dict:
  """Evaluates a checkpoint on `split` (default: the test split); writes eval.json.

  Holds the workdir's lock (it writes there): refused while a run trains in it.
  """
  if split:  # Evaluated where the test split would be.
    config = config.copy_and_resolve_references()
    config.test_split, config.validation_split = split, ''
  if not os.path.isdir(workdir):
    raise errors.ConfigError(f'--workdir={workdir!r} does not exist (train first)')
  with workdir_lock.hold(workdir, 'eval'):
    state, step, spec = restore(config, workdir, checkpoint, evaluates=True)
    trained_data.check(config, workdir, 'eval')
    data = input_pipeline.create_datasets(config, fitted=spec)
    state = parallel.replicate(state, data.mesh)
    metrics = evaluation.evaluate(state, data, config.eval_batch_size)
    result = {**{f'eval_{name}': metrics[name] for name in tasks.metrics(config)},
              'step': step, 'checkpoint': checkpoint, 'split': config.test_split,
              'num_examples': data.num_test}
    if jax.process_index() == 0:
      with full_disk.writing(workdir_lib.EVAL, workdir):
        workdir_lib.write_json(os.path.join(workdir, workdir_lib.EVAL), result)
  return result
