"""Predictions for rows of features: `--mode=predict --input=ROWS.npy|.npz|.csv`.

For a model trained on arrays (any task): the rows are read, shaped as the
model's inputs and predicted in eval batches; every prediction is written to
a CSV beside the input (`<input>_predictions.csv`, one line per row, one
column per value: a class and its probabilities; a mean and std-dev; a
mixture's weights, means and std-devs, its mean and its most likely value),
and the first rows are returned as a short table to print. Image files go
through trainkit/inference.py's `predict_files` instead.
"""

import csv
import os

import numpy as np

import input_pipeline
from trainkit import config_checks
from trainkit import evaluation
from trainkit import inference
from trainkit import optimizers

SUFFIXES = ('.npy', '.npz', '.csv')
_SHOWN_ROWS = 10


def takes_rows(inputs) -> bool:
  """Whether `inputs` is one file of feature rows (not image files)."""
  return len(inputs) == 1 and inputs[0].lower().endswith(SUFFIXES)


def _refuse(path: str, why: str):
  raise config_checks.ConfigError(f'--input={path!r}: {why}')


def read_rows(path: str, input_shape: tuple) -> np.ndarray:
  """The feature rows of `path`, shaped [rows, *input_shape]; refused in one line if unfit."""
  if not os.path.isfile(path):
    _refuse(path, 'no such file')
  try:
    if path.lower().endswith('.csv'):
      with open(path) as f:
        lines = [row for row in csv.reader(f) if row]
      try:
        float(lines[0][0])
      except (ValueError, IndexError):
        lines = lines[1:]  # A header.
      rows = np.asarray(lines, np.float64)
    else:
      loaded = np.load(path, allow_pickle=False)
      if isinstance(loaded, np.ndarray):  # A .npy file.
        rows = loaded
      else:
        with loaded:
          if 'x' not in loaded.files and len(loaded.files) != 1:
            _refuse(path, f"has several arrays and none named 'x' ({', '.join(loaded.files)})")
          rows = loaded['x' if 'x' in loaded.files else loaded.files[0]]
  except (OSError, ValueError, IndexError) as e:
    _refuse(path, f'cannot be read as rows of numbers ({type(e).__name__})')
  features = int(np.prod(input_shape))
  if rows.ndim == 0 or rows.size == 0 or rows.size % features:
    _refuse(path, f'holds {rows.size} numbers, not rows of {features} features (the model '
            f'takes inputs of shape {tuple(input_shape)})')
  rows = rows.reshape(-1, *input_shape)
  if rows.dtype.kind == 'f' and not np.isfinite(rows).all():
    _refuse(path, 'holds NaN or infinite values')
  return rows


def _columns(name: str, values: np.ndarray) -> dict:
  """{column name: values [rows]} of one prediction [rows, ...]."""
  flat = values.reshape(len(values), -1)
  if flat.shape[1] == 1:
    return {name: flat[:, 0]}
  return {f'{name}_{i}': flat[:, i] for i in range(flat.shape[1])}


def predict_rows(config, workdir: str, path: str, checkpoint: str = 'latest') -> tuple:
  """Predicts every row of `path`; returns (the CSV written, a table of the first rows)."""
  state, _, spec = inference.restore(config, workdir, checkpoint)
  rows = read_rows(path, spec.input_shape).astype(spec.input_dtype)
  state = optimizers.params_for_eval(state)  # The averaged parameters, if kept.
  batches = input_pipeline.stack_eval_batches(
      {'x': rows, 'y': np.zeros(len(rows), np.int32)}, config.eval_batch_size)
  mask = batches['mask'].reshape(-1)
  predicted = evaluation.predict_steps(state, {'x': batches['x']})
  columns = {}
  for name in (n for n in state.task.PREDICTIONS if n in predicted):
    values = np.asarray(predicted[name])
    columns.update(_columns(name, values.reshape(mask.size, *values.shape[2:])[mask]))
  out = os.path.splitext(path)[0] + '_predictions.csv'
  with open(out, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['row', *columns])
    for i in range(len(rows)):
      writer.writerow([i, *(_text(v[i]) for v in columns.values())])
  return out, _table(columns, len(rows))


def _text(value) -> str:
  return str(int(value)) if np.issubdtype(np.asarray(value).dtype, np.integer) else f'{value:.6g}'


def _table(columns: dict, rows: int) -> str:
  """The first rows as an aligned text table (every column when they fit, else the first ones)."""
  names = ['row', *columns][:9]
  cells = [[str(i), *(_text(columns[n][i]) for n in names[1:])]
           for i in range(min(rows, _SHOWN_ROWS))]
  widths = [max(len(n), *(len(c[j]) for c in cells)) for j, n in enumerate(names)]
  lines = ['  '.join(n.rjust(w) for n, w in zip(names, widths))]
  lines += ['  '.join(c.rjust(w) for c, w in zip(cell, widths)) for cell in cells]
  if rows > _SHOWN_ROWS or len(columns) + 1 > len(names):
    lines.append(f'({rows} rows, {len(columns)} columns in all)')
  return '\n'.join(lines)
