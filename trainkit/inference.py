"""Using a trained workdir: evaluate a checkpoint, classify image files, export.

Each mode rebuilds the model from the workdir's config (the one given on the
command line) and `model.json`, and restores a checkpoint chosen by
`--checkpoint`: 'latest', 'best' (by the validation `best_metric`, trainkit/selection.py)
or a step number.
"""

import os
from typing import NamedTuple

from absl import logging
import jax
import numpy as np

from trainkit import checkpointing
from trainkit import config_checks
from trainkit import config_history
from trainkit import digit_images
from trainkit import evaluation
from trainkit import full_disk
from trainkit import host_tensorflow
from trainkit import optimizers
import input_pipeline
from trainkit import parallel
from trainkit import selection
from trainkit import tasks
from trainkit import trained_data
from trainkit import workdir as workdir_lib
from trainkit import workdir_lock
import train



def restore(config, workdir: str, checkpoint: str = 'latest'):
  """The train state of checkpoint `checkpoint` of `workdir`.

  Returns:
    (state, step, spec).
  """
  config_checks.validate(config)
  if os.path.isdir(workdir):
    workdir_lib.check_kinds(workdir)
  config_history.check_inference(config, workdir)
  try:
    spec = workdir_lib.ModelSpec.read(workdir)
  except FileNotFoundError:
    raise config_checks.ConfigError(
        f'--workdir={workdir!r} has no {workdir_lib.MODEL_SPEC}: not a workdir a '
        'training run has written (train first)') from None
  directory = workdir_lib.checkpoint_dir(workdir)
  if not os.path.isdir(directory):  # Refused before a manager would create the folder.
    raise config_checks.ConfigError(
        f'--checkpoint={checkpoint!r}: {directory} has no checkpoint (train first)')
  # "best" as the run chose it: by the metric and split of its own config.
  best_metric = selection.best_metric(config_history.stored(workdir) or config)
  manager = checkpointing.create_manager(directory, config.keep_checkpoints,
                                         best_metric=best_metric)
  try:
    step = checkpointing.choose_step(manager, checkpoint, best_metric,
                                     f'--checkpoint={checkpoint!r}')
    state = train.create_state(config, spec)
    checkpointing.check_compatible(manager, step, state)
    state, _ = checkpointing.restore(manager, step, state)
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
    raise config_checks.ConfigError(f'--workdir={workdir!r} does not exist (train first)')
  with workdir_lock.hold(workdir, 'eval'):
    state, step, spec = restore(config, workdir, checkpoint)
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


def _input_files(paths) -> list:
  """The image files named, a folder standing for the images in it."""
  files = []
  for path in paths:
    if os.path.isdir(path):
      files += sorted(os.path.join(path, f) for f in os.listdir(path)
                      if f.lower().endswith(digit_images.SUFFIXES))
    elif os.path.exists(path):
      files.append(path)
    else:
      raise config_checks.ConfigError(f'--input={path!r} does not exist')
  if not files:
    raise config_checks.ConfigError(f'--input={list(paths)!r} names no image files')
  return files


class Prediction(NamedTuple):
  """One input file's prediction: its class and probabilities, or why there are none."""
  path: str
  label: int | None
  probability: float | None
  probs: np.ndarray | None
  problem: str | None = None  # 'no digit', or why the file could not be read.


NO_DIGIT = 'no digit found (the image is blank or one colour)'


def predict_files(config, workdir: str, paths, checkpoint: str = 'latest') -> list:
  """Classifies image files; returns a Prediction per file, in order.

  A file with no digit in it, or that cannot be read as an image, gets no
  class and its `problem`; the others are classified all the same.
  """
  files = _input_files(paths)
  state, _, spec = restore(config, workdir, checkpoint)
  state = optimizers.params_for_eval(state)  # The averaged parameters, if kept.
  digits, problems = [], []
  for path in files:
    try:
      digits.append(digit_images.load_digit(path, spec.input_shape))
      problems.append(None if digits[-1] is not None else NO_DIGIT)
    except digit_images.UnreadableImage as e:
      digits.append(None)
      problems.append(str(e).removeprefix(f'{path}: '))
  found = [d for d in digits if d is not None]
  probs = iter(np.asarray(evaluation.predict_steps(
      state, {'x': np.stack(found)[None]})['probs'][0])
               if found else [])
  results = []
  for path, digit, problem in zip(files, digits, problems):
    p = next(probs) if digit is not None else None
    results.append(Prediction(path, None, None, None, problem) if p is None else
                   Prediction(path, int(p.argmax()), float(p.max()), p))
  return results


def export_saved_model(config, workdir: str, checkpoint: str = 'latest') -> str:
  """Writes a TF SavedModel of the trained model; returns its directory.

  Its `serving_default` signature takes a batch of inputs as stored (the
  batch size is free): `images` [batch, H, W, C] uint8 as TFDS yields them,
  or `features` [batch, ...] of any other data. It returns the task's
  serving outputs: {'scores': class probabilities [batch, num_classes]} for
  a classifier, {'mean', 'std'} for a regression, the mixture's {'weights',
  'means', 'stds', 'mean', 'mode'} for a mixture density network, in the
  targets' own units. Input scaling and target units are inside the model,
  so a TF-only server needs no processing of its own.
  """
  from orbax import export as oex  # pylint: disable=g-import-not-at-top
  tf = host_tensorflow.tensorflow()

  with workdir_lock.hold(workdir, 'export'):
    return _export(tf, oex, config, workdir, checkpoint)


def _export(tf, oex, config, workdir: str, checkpoint: str) -> str:
  """export_saved_model's work, under the workdir's lock."""
  state, step, spec = restore(config, workdir, checkpoint)
  state = optimizers.params_for_eval(state)  # The averaged parameters, if kept.
  variables = {'params': state.params, 'batch_stats': state.batch_stats}
  apply_fn = state.apply_fn

  task = state.task

  def serve(variables, inputs):
    return task.serving(apply_fn(variables, inputs, train=False))

  module = oex.JaxModule(jax.device_get(variables), serve, trainable=False,
                         input_polymorphic_shape='(b, ...)')
  manager = oex.ExportManager(module, [oex.ServingConfig(
      'serving_default',
      input_signature=[tf.TensorSpec([None, *spec.input_shape],
                                     tf.as_dtype(spec.input_dtype), name=spec.input_name)],
      tf_postprocessor=lambda outputs: dict(outputs))])
  directory = os.path.join(os.path.abspath(workdir), workdir_lib.EXPORT)
  manager.save(directory)
  logging.info('Exported checkpoint %d to %s.', step, directory)
  return directory
