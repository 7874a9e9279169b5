"""Predictions for rows of features: `--mode=predict --input=ROWS.npy|.npz|.csv|.parquet`.

The rows are read as the model was trained on (trainkit/serving/row_inputs.py):
arrays of exactly the model's input width, or a table with the training's
feature columns, by name, encoded as in training (model.json); its id
columns are carried to the output as written, and a level of a string
column without a one-hot column of its own (one training never saw, or
one past `max_categories`) counts as 'other' and is reported. Every
prediction is written to a CSV (`--output`, default
`<input>_predictions.csv`; one line per row, `row` its place among the
input's rows from 0, then one column per value: a class and its
probabilities, a binary task's `prob_<positive class>`; a mean and std-dev;
a mixture's weights, means and std-devs, its mean and its most likely
value), and the first rows are returned as a short table to print. Image
files go through trainkit/serving/predict_images.py's `predict_files` instead.
"""

import csv
import os

import numpy as np

from trainkit import errors
from trainkit.data import pipeline as input_pipeline
from trainkit.data.sources import table_formats
from trainkit.serving import restore as restore_lib
from trainkit.serving import row_inputs as prediction_inputs
from trainkit.training import evaluation
from trainkit.training import optimizers
from trainkit.workdirs import full_disk
from trainkit.workdirs import layout as workdir_lib

SUFFIXES = prediction_inputs.SUFFIXES
_SHOWN_ROWS = 10


def takes_rows(inputs) -> bool:
  """Whether `inputs` is one file of feature rows (not image files)."""
  return len(inputs) == 1 and inputs[0].lower().endswith(SUFFIXES)


def _columns(name: str, values: np.ndarray) -> dict:
  """{column name: values [rows]} of one prediction [rows, ...]."""
  flat = values.reshape(len(values), -1)
  if flat.shape[1] == 1:
    return {name: flat[:, 0]}
  return {f'{name}_{i}': flat[:, i] for i in range(flat.shape[1])}


def predictions(state, config, spec, rows: np.ndarray, ids: dict) -> dict:
  """{column: values [rows]}: the predictions file's columns (ids first) of `rows` as read.

  `state` holds the parameters to evaluate with (optimizers.params_for_eval).
  """
  batches = input_pipeline.stack_eval_batches(
      {'x': rows, 'y': np.zeros(len(rows), np.int32)}, config.eval_batch_size)
  mask = batches['mask'].reshape(-1)
  predicted = evaluation.predict_steps(state, {'x': batches['x']})
  columns = {}
  shown_as = state.task.prediction_names(spec.class_names)
  for name in (n for n in state.task.PREDICTIONS if n in predicted):
    values = np.asarray(predicted[name])
    columns.update(_columns(shown_as.get(name, name),
                            values.reshape(mask.size, *values.shape[2:])[mask]))
  if spec.class_names and 'class' in columns:  # A table's classes by their names.
    names = (np.asarray([int(n) for n in spec.class_names], np.int64) if spec.numeric_classes
             else np.asarray(spec.class_names, object))  # As the labels were: 1, not '1'.
    columns['class'] = names[columns['class']]
  clash = sorted(set(ids) & ({'row'} | set(columns)))
  if clash:  # One column would overwrite the other in the file.
    raise errors.ConfigError(
        f'id_columns: {clash[0]!r} is also a column the predictions are written in '
        f'(row, {", ".join(columns)}); rename it in the table')
  return {**{k: np.asarray(v, object) for k, v in ids.items()}, **columns}


def predict_rows(config, workdir: str, path: str, checkpoint: str = 'latest',
                 output: str = '', header: str = 'auto') -> tuple:
  """Predicts every row of `path`; returns (the CSV written, a table of the first rows).

  `output`: where to write (default: `<input>_predictions.csv` beside it).
  `header`: for text rows of a model trained on arrays, whether the first
  line is a header ('yes', 'no', or 'auto': prediction_inputs states the
  rule). A table's header names its columns.
  """
  if header not in prediction_inputs.HEADERS:
    raise errors.ConfigError(f'--header={header!r}: must be one of auto, yes, no')
  out = output or os.path.splitext(path)[0] + '_predictions.csv'
  if output or os.path.exists(path):  # Else the input's own refusal comes first.
    _check_output(workdir, path, out)
  state, _, spec = restore_lib.restore(config, workdir, checkpoint)
  ids, unseen, header_line = {}, {}, None
  if spec.columns:
    if header == 'no':
      prediction_inputs.refuse(path, 'a model trained on a table reads its columns by name: '
                               'the file needs its header line (--header=no is for arrays)')
    rows, ids, unseen = prediction_inputs.read_table(config, spec, path)
  else:
    rows, header_line = prediction_inputs.read_rows(
        path, spec.input_shape, header, table_formats.TextFormat.of(config), spec.input_dtype)
  state = optimizers.params_for_eval(state)  # The averaged parameters, if kept.
  columns = predictions(state, config, spec, rows, ids)
  # Whole or not at all: a kill or a full disk leaves an earlier file as it was.
  with full_disk.writing('the predictions', out), workdir_lib.replaced(out, newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['row', *columns])
    for i in range(len(rows)):
      writer.writerow([i, *(_text(v[i]) for v in columns.values())])
  table = _table(columns, len(rows))
  if header_line is not None:
    table += (f'\nline {header_line} of {os.path.basename(path)} is a header; row 0 is the '
              'first line after it')
  if unseen:
    table += '\n' + prediction_inputs.unseen_note(unseen)
  return out, table


def _check_output(workdir: str, path: str, out: str) -> None:
  """Refuses `out` in one line, before any work, where the CSV cannot or must not go."""
  where = os.path.dirname(os.path.abspath(out))
  if not os.path.isdir(where) or not os.access(where, os.W_OK):
    raise errors.ConfigError(f'--output={out!r}: {where} is not a folder this process can '
                             'write in')
  if os.path.isdir(out):
    raise errors.ConfigError(f'--output={out!r}: is a folder; name the CSV file to write')
  if os.path.exists(out) and os.path.exists(path) and os.path.samefile(out, path):
    raise errors.ConfigError(f'--output={out!r}: is the input; name another file')
  if (os.path.isdir(workdir) and os.path.samefile(where, workdir)
      and os.path.basename(out) in workdir_lib.FILES):
    raise errors.ConfigError(f'--output={out!r}: is one of the workdir\'s own records; '
                             'name another file')


def _text(value, exact: bool = True) -> str:
  """A cell: exact (the shortest text that reads back as the same float32) or to 6 digits."""
  if isinstance(value, str):
    return value
  if np.issubdtype(np.asarray(value).dtype, np.integer):
    return str(int(value))
  return str(np.float32(value)) if exact else f'{value:.6g}'


def _table(columns: dict, rows: int) -> str:
  """The first rows as an aligned text table (every column when they fit, else the first ones)."""
  names = ['row', *columns][:9]
  cells = [[str(i), *(_text(columns[n][i], exact=False) for n in names[1:])]
           for i in range(min(rows, _SHOWN_ROWS))]
  widths = [max(len(n), *(len(c[j]) for c in cells)) for j, n in enumerate(names)]
  lines = ['  '.join(n.rjust(w) for n, w in zip(names, widths))]
  lines += ['  '.join(c.rjust(w) for c, w in zip(cell, widths)) for cell in cells]
  if rows > _SHOWN_ROWS or len(columns) + 1 > len(names):
    lines.append(f'({rows} rows, {len(columns)} columns in all)')
  return '\n'.join(lines)
