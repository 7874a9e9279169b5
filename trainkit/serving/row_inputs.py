"""The rows a trained model predicts, read as it was trained on: nothing reshaped or guessed.

Arrays (a model trained on an .npz file or a generator): an `.npy` or `.npz`
array of shape [rows, *input shape] or [rows, features], or text rows
(`.csv`, `.tsv`, `.txt`, also compressed) of exactly `features` numbers
each. A row of another width is refused, naming it. A text file's first
line is a header when `--header=yes`, or, with `--header=auto` (the
default), when it holds anything that is not a number; a first line of the
column numbers alone (`0,1,...`, as pandas writes an unnamed frame) could be
either, and is refused until `--header` says which.

Tables (a model trained on a table): a text or Parquet table whose header
names the model's columns (model.json). Each column is read as the kind the
model was trained on (a string column stays text even where a file's
values all look like numbers), id columns exactly as written.
"""

import csv
import io
import os
import zipfile

import numpy as np

from trainkit import errors
from trainkit.data.sources import table_files
from trainkit.data.sources import table_formats
from trainkit.data.sources import tables

ARRAY_SUFFIXES = ('.npy', '.npz')
SUFFIXES = ARRAY_SUFFIXES + table_formats.SUFFIXES
HEADERS = ('auto', 'yes', 'no')


def _label(path: str) -> str:
  """How a refusal names the input file `path`: as the flag that gave it."""
  return f'--input={path!r}'


def refuse(path: str, why: str):
  """Raises the one-line refusal of the input file `path`."""
  refuse_as(_label(path), why)


def refuse_as(label: str, why: str):
  """Raises the one-line refusal of an input the caller knows as `label`."""
  raise errors.ConfigError(f'{label}: {why}')


def _text_lines(path: str, fmt: table_formats.TextFormat) -> list:
  """[(line number, fields)] of a text file's lines but blank ones."""
  encoding = ('utf-8-sig' if fmt.encoding.lower().replace('_', '-') in ('utf-8', 'utf8')
              else fmt.encoding)
  try:
    with table_formats.open_text(path) as f:
      text = f.read().decode(encoding)
  except (OSError, ValueError) as e:  # Not text, or not in this encoding.
    refuse(path, f'cannot be read as {fmt.encoding} text ({type(e).__name__}); set '
           'table_encoding to its encoding')
  sep = table_formats.separator(path, fmt)
  # A blank line is no row; a line of empty fields (',,') is one, refused as not numbers.
  return [(n, row) for n, row in enumerate(csv.reader(io.StringIO(text), delimiter=sep), 1)
          if row]


def has_header(path: str, first: list, header: str) -> bool:
  """Whether the first line `first` is a header, by the rule the module docstring states."""
  if header != 'auto':
    return header == 'yes'
  if not all(table_formats.is_number(cell) for cell in first):
    return True
  if [cell.strip() for cell in first] == [str(i) for i in range(len(first))]:
    refuse(path, f'its first line ({",".join(first)}) may be column numbers or a row; '
           'say which with --header=yes or --header=no')
  return False


def _text_rows(path: str, features: int, header: str, fmt) -> tuple:
  lines = _text_lines(path, fmt)
  if not lines:
    refuse(path, 'holds no rows')
  skip = has_header(path, lines[0][1], header)
  body = lines[1:] if skip else lines
  if not body:
    refuse(path, 'holds a header and no rows')
  rows = np.empty((len(body), features), np.float64)
  for r, (n, cells) in enumerate(body):
    if len(cells) != features:
      refuse(path, f'line {n} holds {len(cells)} values; the model takes rows of '
             f'{features} features')
    for j, cell in enumerate(cells):
      try:
        rows[r, j] = float(cell)
      except ValueError:
        refuse(path, f'line {n}, value {j + 1} is {cell!r}, not a number')
  return rows, (lines[0][0] if skip else None)


def _parquet_rows(path: str, features: int) -> np.ndarray:
  """A Parquet file's columns as rows: exactly `features` columns of numbers."""
  from pyarrow import parquet as pq  # pylint: disable=g-import-not-at-top
  try:
    table = pq.read_table(path)
  except (OSError, ValueError) as e:
    refuse(path, f'cannot be read as a Parquet table ({type(e).__name__})')
  if table.num_columns != features:
    refuse(path, f'has {table.num_columns} columns; the model takes rows of {features} features')
  columns = []
  for name in table.column_names:
    try:
      columns.append(table_formats.numbers(table[name].combine_chunks(), 'float'))
    except table_formats.Unsupported as e:
      refuse(path, f'column {name!r} {e}')
  return np.stack(columns, axis=1) if columns else np.zeros((0, features))


def _array(path: str):
  try:
    loaded = np.load(path, allow_pickle=False)
    if isinstance(loaded, np.ndarray):  # A .npy file.
      return loaded
    with loaded:
      names = loaded.files
      if 'x' in names or len(names) == 1:
        return loaded['x' if 'x' in names else names[0]]
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
    refuse(path, f'cannot be read as an array of numbers ({type(e).__name__})')
  refuse(path, f"has several arrays and none named 'x' ({', '.join(names)})")


def read_rows(path: str, input_shape: tuple, header: str = 'auto',
              fmt: table_formats.TextFormat | None = None, dtype: str = 'float32') -> tuple:
  """(rows [n, *input_shape] as `dtype`, the header's line number or None) of `path`.

  Refused in one line: a row of another width or shape than the model's
  input, a value that is not a number, NaN or infinity, or one that the
  model's input dtype cannot hold as it is (0.5 for uint8 pixels).
  """
  if not os.path.isfile(path):
    refuse(path, 'no such file')
  features = int(np.prod(input_shape))
  if path.lower().endswith(ARRAY_SUFFIXES):
    return array_rows(_label(path), _array(path), input_shape, dtype), None
  if path.lower().endswith(table_formats.PARQUET_SUFFIXES):
    rows, header_line = _parquet_rows(path, features), None
  else:
    rows, header_line = _text_rows(path, features, header, fmt or table_formats.TextFormat())
  return _checked(_label(path), rows.reshape(len(rows), *input_shape), dtype), header_line


def array_rows(label: str, rows: np.ndarray, input_shape: tuple,
               dtype: str = 'float32') -> np.ndarray:
  """An array of rows ([n, *input_shape], or [n, features]) as the model takes them.

  Refused in one line that starts with `label` (`--input='rows.npy'`, or the
  Python API's `x`), as read_rows refuses a file's.
  """
  features = int(np.prod(input_shape))
  if rows.dtype.kind not in 'biuf':
    refuse_as(label, f'holds {rows.dtype} values, not numbers')
  fits = rows.ndim >= 1 and (rows.shape[1:] in (tuple(input_shape), (features,))
                             or (rows.ndim == 1 and features == 1))
  if fits and not len(rows):
    refuse_as(label, 'holds no rows')
  if not fits:
    one_row = rows.shape == tuple(input_shape)  # A row without the rows' axis.
    refuse_as(label, f'holds an array of shape {rows.shape}; the model takes rows of shape '
              f'{tuple(input_shape)}' + (f' (or of {features} features)'
                                         if len(input_shape) > 1 else '')
              + ('; a single row needs a leading axis of 1 (x[None])' if one_row else ''))
  return _checked(label, rows.reshape(len(rows), *input_shape), dtype)


def _checked(label: str, rows: np.ndarray, dtype: str) -> np.ndarray:
  """`rows` as `dtype`, refused where a value is not finite or does not fit it."""
  if rows.dtype.kind == 'f' and not np.isfinite(rows).all():
    row = int(np.argwhere(~np.isfinite(rows.reshape(len(rows), -1)))[0][0])
    refuse_as(label, f'holds NaN or infinite values (the first in row {row})')
  if np.dtype(dtype).kind == 'f' and rows.dtype.itemsize > np.dtype(dtype).itemsize:
    # Past the model's float type, a value would reach it as infinite.
    huge = np.abs(rows.reshape(len(rows), -1)) > np.finfo(dtype).max
    if huge.any():
      refuse_as(label, f'holds values beyond {np.dtype(dtype).name}\'s range (the first in '
                f'row {int(np.argwhere(huge)[0][0])})')
  return _as_dtype(label, rows, np.dtype(dtype))


def _as_dtype(label: str, rows: np.ndarray, dtype: np.dtype) -> np.ndarray:
  """`rows` as `dtype`; refused where that would change a value (not where it rounds floats)."""
  if dtype.kind in 'iu':
    info = np.iinfo(dtype)
    whole = rows.dtype.kind in 'biu' or np.array_equal(rows, np.round(rows))
    if not whole or rows.min() < info.min or rows.max() > info.max:
      refuse_as(label, f'holds values that are not whole numbers from {info.min} to '
                f'{info.max}; the model takes {dtype.name} inputs (as it was trained on)')
  return rows.astype(dtype)


def unseen_note(unseen: dict) -> str:
  """The line that tells of read_table's unseen levels: columns and how many rows each."""
  return ('levels unseen in training or past max_categories (encoded as other): '
          + ', '.join(f'{name} in {count} rows' for name, count in unseen.items()))


def read_table(config, spec, path: str, named: str = '') -> tuple:
  """(features [rows, F], {id column: texts}, {column: rows with an unseen level}) of a table.

  Every column as the kind model.json records; refused in one line: a
  missing feature or id column, or values of another kind than training saw.
  A refusal names the input `named` (the Python API's `x`), else `--input=PATH`.
  """
  def no(why: str):
    refuse_as(named or _label(path), why)

  if not os.path.isfile(path) or not path.lower().endswith(table_files.SUFFIXES):
    no('a model trained on a table predicts a table file (.csv, .tsv, .parquet, ...)')
  columns = [tables.Column.from_tuple(c) for c in spec.columns]
  try:
    read = table_formats.read_whole(path, table_formats.TextFormat.of(config),
                                    {c.name: c.kind for c in columns},
                                    tuple(config.id_columns))
  except table_formats.Unsupported as e:
    no(str(e))
  for name in [c.name for c in columns] + list(config.id_columns):
    if name not in read:
      which = 'id column' if name in config.id_columns else 'column'
      no(f'has no {which} {name!r} (the model takes: {", ".join(c.name for c in columns)})')
  values, codes_of, unseen = [], [], {}
  for column in columns:
    given = read[column.name]
    if column.kind != 'string':
      try:
        values.append(table_formats.numbers(given, column.kind))
      except table_formats.Infinite as e:
        no(f'column {column.name!r} {e}')
      except table_formats.Unsupported as e:
        no(f'column {column.name!r} {e}; the model was trained on {column.kind} values there')
      codes_of.append(None)
      continue
    encoded = given.dictionary_encode()
    codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int32)
    positions = column.positions(encoded.dictionary.to_pylist())
    count = int(np.sum((codes >= 0) & (positions[np.clip(codes, 0, None)] < 0)))
    if count:
      unseen[column.name] = count
    values.append(codes)
    codes_of.append(positions)
  ids = {name: table_formats.texts(read[name]) for name in config.id_columns}
  if not len(values[0]):
    no('holds a header and no rows')
  return tables.encode(columns, values, codes_of), ids, unseen
