"""Using a trained workdir: evaluate a checkpoint, classify image files, export.

Each mode rebuilds the model from the workdir's config (the one given on the
command line) and `model.json`, and restores a checkpoint chosen by
`--checkpoint`: 'latest', 'best' (by eval accuracy) or a step number.
"""

import os
import warnings

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
from PIL import ImageOps

from trainkit import checkpointing
from trainkit import config_checks
from trainkit import config_history
from trainkit import data_sources
from trainkit import evaluation
from trainkit import full_disk
from trainkit import optimizers
import input_pipeline
from trainkit import parallel
from trainkit import selection
from trainkit import workdir as workdir_lib
from trainkit import workdir_lock
import train

_IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg')


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
    state, step, _ = restore(config, workdir, checkpoint)
    data = input_pipeline.create_datasets(config)
    state = parallel.replicate(state, data.mesh)
    metrics = evaluation.evaluate(state, data, config.eval_batch_size)
    result = {'eval_accuracy': metrics['accuracy'], 'eval_loss': metrics['loss'],
              'step': step, 'checkpoint': checkpoint, 'split': config.test_split,
              'num_examples': data.num_test}
    if jax.process_index() == 0:
      with full_disk.writing(workdir_lib.EVAL, workdir):
        workdir_lib.write_json(os.path.join(workdir, workdir_lib.EVAL), result)
  return result


def load_digit(path: str, shape=(28, 28, 1)) -> np.ndarray | None:
  """An image file as an MNIST-style uint8 array: a light digit on black.

  Any size or colour mode. A light background (a digit drawn dark on
  white, as people do) is inverted. The digit's bounding box is scaled to fit
  20x20, keeping its aspect ratio, and centred by its centre of mass in the
  28x28 frame, as MNIST's digits were. None when the image has no ink (blank,
  or one colour): there is no digit to classify.
  """
  try:
    with warnings.catch_warnings():
      # Past PIL's limit (89 M pixels) an image is refused before it is decoded.
      warnings.simplefilter('error', Image.DecompressionBombWarning)
      with Image.open(path) as image:
        image = ImageOps.exif_transpose(image).convert('L')
  except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
    raise config_checks.ConfigError(
        f'--input={path!r} is too large to decode safely ({e}); scale it down '
        'first') from None
  except (OSError, ValueError) as e:
    raise config_checks.ConfigError(
        f'--input={path!r} is not a readable PNG or JPEG image ({e})') from e
  pixels = np.asarray(image, np.float32)
  background = np.median(np.concatenate(
      [pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]]))
  if background > 127:
    pixels, background = 255 - pixels, 255 - background
  pixels = np.clip(pixels - background, 0, None)
  if pixels.max() > 0:
    pixels *= 255 / pixels.max()
  ink = pixels > 0.2 * 255
  height, width = shape[0], shape[1]
  box = int(round(min(height, width) * 20 / 28))
  if not ink.any():
    return None
  rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
  crop = pixels[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
  scale = box / max(crop.shape)
  size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
  digit = np.asarray(Image.fromarray(crop.astype(np.uint8)).resize(
      size, Image.Resampling.LANCZOS), np.float32)
  # Thin strokes on a big canvas fade when shrunk: bring the ink back to full.
  digit = np.clip(digit, 0, None) * (255 / max(digit.max(), 1e-6))
  # Centre of mass to the frame's centre, as MNIST's preparation did.
  mass = digit.sum() or 1.0
  cy = (digit.sum(1) * np.arange(digit.shape[0])).sum() / mass
  cx = (digit.sum(0) * np.arange(digit.shape[1])).sum() / mass
  top = int(np.clip(round(height / 2 - cy), 0, height - digit.shape[0]))
  left = int(np.clip(round(width / 2 - cx), 0, width - digit.shape[1]))
  frame = np.zeros((height, width), np.float32)
  frame[top:top + digit.shape[0], left:left + digit.shape[1]] = digit
  return np.clip(frame, 0, 255).astype(np.uint8).reshape(shape)


def _input_files(paths) -> list:
  """The image files named, a folder standing for the images in it."""
  files = []
  for path in paths:
    if os.path.isdir(path):
      files += sorted(os.path.join(path, f) for f in os.listdir(path)
                      if f.lower().endswith(_IMAGE_SUFFIXES))
    elif os.path.exists(path):
      files.append(path)
    else:
      raise config_checks.ConfigError(f'--input={path!r} does not exist')
  if not files:
    raise config_checks.ConfigError(f'--input={list(paths)!r} names no image files')
  return files


def predict_files(config, workdir: str, paths, checkpoint: str = 'latest') -> list:
  """Classifies image files; returns [(path, class, probability, probs)].

  An image with no digit in it gets (path, None, None, None).
  """
  files = _input_files(paths)
  state, _, spec = restore(config, workdir, checkpoint)
  state = optimizers.params_for_eval(state)  # The averaged parameters, if kept.
  digits = [load_digit(f, spec.image_shape) for f in files]
  found = [d for d in digits if d is not None]
  probs = iter(np.asarray(evaluation.predict_steps(state, {'image': np.stack(found)[None]})[0])
               if found else [])
  results = []
  for path, digit in zip(files, digits):
    p = next(probs) if digit is not None else None
    results.append((path, None, None, None) if p is None else
                   (path, int(p.argmax()), float(p.max()), p))
  return results


def export_saved_model(config, workdir: str, checkpoint: str = 'latest') -> str:
  """Writes a TF SavedModel of the classifier; returns its directory.

  Its `serving_default` signature takes uint8 images [batch, H, W, C] (as
  TFDS yields them; the batch size is free) and returns {'scores': class
  probabilities [batch, num_classes]}. Scaling happens inside the model, so
  a TF-only server needs no preprocessing of its own.
  """
  from orbax import export as oex  # pylint: disable=g-import-not-at-top
  tf = data_sources.tensorflow()

  with workdir_lock.hold(workdir, 'export'):
    return _export(tf, oex, config, workdir, checkpoint)


def _export(tf, oex, config, workdir: str, checkpoint: str) -> str:
  """export_saved_model's work, under the workdir's lock."""
  state, step, spec = restore(config, workdir, checkpoint)
  state = optimizers.params_for_eval(state)  # The averaged parameters, if kept.
  variables = {'params': state.params, 'batch_stats': state.batch_stats}
  apply_fn = state.apply_fn

  def scores(variables, images):
    logits = apply_fn(variables, images, train=False)
    return jax.nn.softmax(logits.astype(jnp.float32))

  module = oex.JaxModule(jax.device_get(variables), scores, trainable=False,
                         input_polymorphic_shape='(b, ...)')
  manager = oex.ExportManager(module, [oex.ServingConfig(
      'serving_default',
      input_signature=[tf.TensorSpec([None, *spec.image_shape], tf.uint8,
                                     name='images')],
      tf_postprocessor=lambda probs: {'scores': probs})])
  directory = os.path.join(os.path.abspath(workdir), workdir_lib.EXPORT)
  manager.save(directory)
  logging.info('Exported checkpoint %d to %s.', step, directory)
  return directory
