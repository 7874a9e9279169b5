"""Predictions for rows of features: `--mode=predict --input=ROWS.npy|.npz|.csv|.parquet`.

For a model trained on arrays (any task): the rows are read, shaped as the
model's inputs and predicted in eval batches. For a model trained on a table
the input is a table (CSV or Parquet) with the training's feature columns,
by name, encoded as in training (model.json); its id columns are carried to
the output, and a level of a string column that training never saw counts
as 'other' and is reported. Every prediction is written to a CSV
(`--output`, default `<input>_predictions.csv`; one line per row, one column
per value: a class and its probabilities; a mean and std-dev; a mixture's
weights, means and std-devs, its mean and its most likely value), and the
first rows are returned as a short table to print. Image files go through
trainkit/inference.py's `predict_files` instead.
"""

import csv
import os

import numpy as np

import input_pipeline
from trainkit import config_checks
from trainkit import evaluation
from trainkit import inference
from trainkit import optimizers
from trainkit import sources
from trainkit.sources import table_files
from trainkit.sources import tables

SUFFIXES = ('.npy', '.npz', '.csv', '.parquet', '.pq')
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


def read_table(config, spec, path: str) -> tuple:
  """(features [rows, F], {id column: texts}, {column: rows with an unseen level}) of a table.

  Refused in one line: a missing feature or id column, or a column whose
  values are not of the kind training saw (numbers or strings).
  """
  if not os.path.isfile(path) or not path.lower().endswith(table_files.SUFFIXES):
    _refuse(path, 'a model trained on a table predicts a CSV or Parquet table')
  try:
    meta, arrays = table_files.load(path, '')
  except sources.DataError as e:
    _refuse(path, str(e).split(': ', 1)[-1])
  index = {name: i for i, name in enumerate(meta['names'])}
  columns = [tables.Column.from_tuple(c) for c in spec.columns]
  values, codes_of, unseen = [], [], {}
  for column in columns:
    if column.name not in index:
      _refuse(path, f'has no column {column.name!r} (the model takes: '
              f'{", ".join(c.name for c in columns)})')
    i = index[column.name]
    kind, given = meta['kinds'][i], arrays[i]
    empty = kind != 'string' and np.isnan(given).all()  # No values: any kind.
    if (kind == 'string') != (column.kind == 'string') and not empty:
      _refuse(path, f'column {column.name!r} holds {kind} values; the model was trained '
              f'on {column.kind} values there')
    if column.kind != 'string':
      values.append(given)
      codes_of.append(None)
      continue
    codes = given if not empty else np.full(meta['rows'], -1, np.int32)
    positions = column.positions(meta['levels'][i] or [])
    count = int(np.sum((codes >= 0) & (positions[np.clip(codes, 0, None)] < 0)))
    if count:
      unseen[column.name] = count
    values.append(codes)
    codes_of.append(positions)
  ids = {}
  for name in config.id_columns:
    if name not in index:
      _refuse(path, f'has no id column {name!r} (config.id_columns)')
    i = index[name]
    ids[name] = ([meta['levels'][i][c] if c >= 0 else '' for c in arrays[i]]
                 if meta['kinds'][i] == 'string' else
                 [_number(v, meta['kinds'][i]) for v in arrays[i]])
  return tables.encode(columns, values, codes_of), ids, unseen


def _number(value: float, kind: str) -> str:
  if np.isnan(value):
    return ''
  return str(int(value)) if kind in ('integer', 'bool') else f'{value:.10g}'


def predict_rows(config, workdir: str, path: str, checkpoint: str = 'latest',
                 output: str = '') -> tuple:
  """Predicts every row of `path`; returns (the CSV written, a table of the first rows).

  `output`: where to write (default: `<input>_predictions.csv` beside it).
  """
  state, _, spec = inference.restore(config, workdir, checkpoint)
  ids, unseen = {}, {}
  if spec.columns:
    rows, ids, unseen = read_table(config, spec, path)
  else:
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
  if spec.class_names and 'class' in columns:  # A table's classes by their names.
    columns['class'] = np.asarray(spec.class_names, object)[columns['class']]
  out = output or os.path.splitext(path)[0] + '_predictions.csv'
  columns = {**{k: np.asarray(v, object) for k, v in ids.items()}, **columns}
  with open(out, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['row', *columns])
    for i in range(len(rows)):
      writer.writerow([i, *(_text(v[i]) for v in columns.values())])
  table = _table(columns, len(rows))
  if unseen:
    table += '\nlevels training never saw (encoded as other): ' + ', '.join(
        f'{name} in {count} rows' for name, count in unseen.items())
  return out, table


def _text(value) -> str:
  if isinstance(value, str):
    return value
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
