"""Image files classified by a trained workdir's model (--mode=predict on images)."""

import os
from typing import NamedTuple

import numpy as np

from trainkit import errors
from trainkit import tasks
from trainkit.serving import restore as restore_lib
from trainkit.serving import row_inputs
from trainkit.training import evaluation
from trainkit.training import optimizers
from trainkit.workdirs import layout as workdir_lib


def _digit_images():
  """trainkit/serving/digit_images.py, imported to read images.

  It imports Pillow, which no other mode needs.
  """
  from trainkit.serving import digit_images  # pylint: disable=g-import-not-at-top
  return digit_images


def _input_files(paths) -> list:
  """The image files named, a folder standing for the images in it."""
  files = []
  for path in paths:
    if os.path.isdir(path):
      suffixes = _digit_images().suffixes()
      files += sorted(os.path.join(path, f) for f in os.listdir(path)
                      if f.lower().endswith(suffixes))
    elif os.path.exists(path):
      files.append(path)
    else:
      raise errors.ConfigError(f'--input={path!r} does not exist')
  if not files:
    raise errors.ConfigError(f'--input={list(paths)!r} names no image files')
  return files


def _check_takes_images(config, workdir: str, path: str) -> None:
  """Refuses images for a model that does not classify grey images (before restoring it)."""
  try:
    spec = workdir_lib.ModelSpec.read(workdir)
  except FileNotFoundError:
    return  # restore says what the folder lacks.
  shape = tuple(spec.input_shape)
  if (len(shape) == 3 and shape[2] == 1 and spec.input_dtype == 'uint8'
      and 'probs' in tasks.of(config).PREDICTIONS):
    return
  raise errors.ConfigError(
      f'--input={path!r}: an image, but the model of --workdir={workdir!r} does not classify '
      f'grey images (it takes rows of shape {shape}, {spec.input_dtype}); give rows as one '
      f'{"/".join(row_inputs.SUFFIXES)} file')


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
  _check_takes_images(config, workdir, files[0])
  state, _, spec = restore_lib.restore(config, workdir, checkpoint)
  state = optimizers.params_for_eval(state)  # The averaged parameters, if kept.
  digit_images = _digit_images()
  digits, problems = [], []
  for path in files:
    try:
      digits.append(digit_images.load_digit(path, spec.input_shape))
      problems.append(None if digits[-1] is not None else NO_DIGIT)
    except digit_images.UnreadableImage as e:
      digits.append(None)
      problems.append(str(e).removeprefix(f'{path}: '))
  found = [d for d in digits if d is not None]
  # Indexed on the host: indexing the device array loads a program of its own.
  probs = iter(np.asarray(evaluation.predict_steps(
      state, {'x': np.stack(found)[None]})['probs'])[0]
               if found else [])
  results = []
  for path, digit, problem in zip(files, digits, problems):
    p = next(probs) if digit is not None else None
    results.append(Prediction(path, None, None, None, problem) if p is None else
                   Prediction(path, int(p.argmax()), float(p.max()), p))
  return results
