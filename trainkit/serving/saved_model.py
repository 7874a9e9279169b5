"""A trained workdir's model as a TensorFlow SavedModel (--mode=export, the default format)."""

import glob
import os
import shutil

from absl import logging
import jax

from trainkit import errors
from trainkit import extras
from trainkit.data.sources import host_tensorflow
from trainkit.serving import restore as restore_lib
from trainkit.training import optimizers
from trainkit.workdirs import layout as workdir_lib
from trainkit.workdirs import lock as workdir_lock


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
  extras.require('--format=savedmodel', 'tensorflow', 'orbax.export')
  from orbax import export as oex  # pylint: disable=g-import-not-at-top
  tf = host_tensorflow.tensorflow()

  with workdir_lock.hold(workdir, 'export'):
    return _export(tf, oex, config, workdir, checkpoint)


def _export(tf, oex, config, workdir: str, checkpoint: str) -> str:
  """export_saved_model's work, under the workdir's lock."""
  state, step, spec = restore_lib.restore(config, workdir, checkpoint)
  state = optimizers.params_for_eval(state)  # The averaged parameters, if kept.
  variables = {'params': state.params, 'batch_stats': state.batch_stats}
  apply_fn = state.apply_fn

  task = state.task

  def serve(variables, inputs):
    return task.serving(apply_fn(variables, inputs, train=False))

  directory = os.path.join(os.path.abspath(workdir), workdir_lib.EXPORT)
  # Written beside the old export and swapped in whole: a model TF cannot
  # convert, or a kill while writing, leaves the old one as it was. What a
  # killed export left beside it goes (the workdir's lock is held).
  for stale in glob.glob(f'{glob.escape(directory)}.tmp-*') + glob.glob(
      f'{glob.escape(directory)}.old-*'):
    shutil.rmtree(stale, ignore_errors=True)
  temporary = f'{directory}.tmp-{os.getpid()}'
  try:
    with errors.converting('savedmodel', 'jax2tf', 'jax'):
      module = oex.JaxModule(jax.device_get(variables), serve, trainable=False,
                             input_polymorphic_shape='(b, ...)')
      oex.ExportManager(module, [oex.ServingConfig(
          'serving_default',
          input_signature=[tf.TensorSpec([None, *spec.input_shape],
                                         tf.as_dtype(spec.input_dtype), name=spec.input_name)],
          tf_postprocessor=lambda outputs: dict(outputs))]).save(temporary)
    _swap(temporary, directory)
  finally:
    shutil.rmtree(temporary, ignore_errors=True)
  logging.info('Exported checkpoint %d to %s.', step, directory)
  return directory


def _swap(new: str, directory: str) -> None:
  """Puts folder `new` where `directory` is, the old one removed once the new one is in place."""
  old = f'{directory}.old-{os.getpid()}'
  if os.path.exists(directory):
    os.rename(directory, old)
  os.rename(new, directory)
  shutil.rmtree(old, ignore_errors=True)
