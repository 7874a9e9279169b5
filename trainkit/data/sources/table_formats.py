"""Table files as Arrow batches: CSV and other delimited text (plain or compressed) and Parquet.

The rules a user can rely on (docs/tables_and_arrays.md):

- Files: `.csv`, `.tsv` and `.txt` text, each also compressed (`.gz`,
  `.bz2`, `.zst`, `.lz4`), and `.parquet`/`.pq` files or a folder of them.
- Text: the first line is the header. The separator is `table_separator`,
  or, when that is '', a tab for `.tsv` files and otherwise whichever of
  `,` `;` tab `|` the header line holds most of (outside quotes). The
  encoding is `table_encoding` (UTF-8 by default; a byte-order mark is
  skipped). An empty field is a missing value.
- Kinds: a column's kind is inferred from the whole file, not its first
  block: a column whose later rows do not fit the kind of its first ones is
  read again as the wider kind (integer -> float -> string).
- Numbers are integers, floats and decimals; booleans are numbers 0/1;
  dates and timestamps are numbers too: days since 1970-01-01 (UTC), with
  the time of day as a fraction. A column of any other type (lists, bytes,
  times of day, ...) or integers too large for a float's 53 bits is
  refused only if it is used.
"""

import dataclasses
import os
import re

import numpy as np

from trainkit.data.sources import base

TEXT_SUFFIXES = ('.csv', '.tsv', '.txt')
COMPRESSED_SUFFIXES = ('.gz', '.bz2', '.zst', '.lz4')
PARQUET_SUFFIXES = ('.parquet', '.pq')
SUFFIXES = tuple(s + c for s in TEXT_SUFFIXES for c in ('', *COMPRESSED_SUFFIXES)
                 ) + PARQUET_SUFFIXES
SEPARATORS = (',', ';', '\t', '|')
# Bytes a CSV block holds.
_CSV_BLOCK = 16 << 20
_PARQUET_ROWS = 65_536
# What a column read as one kind is read as when later rows do not fit it.
# Any other type is read as text.
_WIDER = {'int64': 'double', 'null': 'double'}
_PER_DAY = {'s': 86_400, 'ms': 86_400_000, 'us': 86_400_000_000, 'ns': 86_400_000_000_000}


@dataclasses.dataclass(frozen=True)
class TextFormat:
  """How delimited text is read: its separator ('' = detect) and encoding."""
  separator: str = ''
  encoding: str = 'utf-8'

  @classmethod
  def of(cls, config) -> 'TextFormat':
    return cls(config.get('table_separator', ''), config.get('table_encoding', 'utf-8'))


class Unsupported(ValueError):
  """A column whose values cannot become numbers or strings (why, in a phrase)."""


class Infinite(Unsupported):
  """A number column holding an infinite value."""


class Wider(Exception):
  """Text rows that do not fit the kind inferred for column `name`: read it as `type`."""

  def __init__(self, name: str, type_name: str):
    super().__init__(name, type_name)
    self.name, self.type_name = name, type_name


def is_number(text: str) -> bool:
  """Whether `text` reads as a number."""
  try:
    float(text)
  except ValueError:
    return False
  return True


def is_text(path: str) -> bool:
  """Whether `path` is a text table (not Parquet) by its suffix."""
  return path.lower().endswith(SUFFIXES) and not path.lower().endswith(PARQUET_SUFFIXES)


def open_text(path: str):
  """A text file's bytes as a stream, decompressed as its suffix says."""
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  return pa.input_stream(path, compression='detect')


def separator(path: str, fmt: TextFormat) -> str:
  """The separator of the text file `path`: configured, a tab for .tsv, else detected."""
  if fmt.separator:
    return fmt.separator
  stem = path.lower()
  for c in COMPRESSED_SUFFIXES:
    stem = stem.removesuffix(c)
  if stem.endswith('.tsv'):
    return '\t'
  with open_text(path) as f:
    head = f.read(1 << 16)
  line = head.split(b'\n', 1)[0].decode(fmt.encoding, errors='replace')
  line = re.sub(r'"[^"]*"', '', line)  # Quoted names may hold any separator.
  counts = {s: line.count(s) for s in SEPARATORS}
  best = max(counts, key=counts.get)
  return best if counts[best] else ','


def _text_reader(path: str, fmt: TextFormat, column_types: dict, include=None):
  from pyarrow import csv as pa_csv  # pylint: disable=g-import-not-at-top
  return pa_csv.open_csv(
      open_text(path),
      read_options=pa_csv.ReadOptions(block_size=_CSV_BLOCK, encoding=fmt.encoding),
      parse_options=_parse_options(path, fmt),
      # An empty field is a missing value, as a Parquet null: the formats agree.
      convert_options=pa_csv.ConvertOptions(
          strings_can_be_null=True, column_types=column_types,
          include_columns=include or []))


def _parse_options(path: str, fmt: TextFormat):
  from pyarrow import csv as pa_csv  # pylint: disable=g-import-not-at-top
  # Quoted values may hold line breaks (free-text columns).
  return pa_csv.ParseOptions(delimiter=separator(path, fmt), newlines_in_values=True)


def _conversion_error(error, names) -> tuple | None:
  """(column name, type, value) of pyarrow's CSV conversion error, or None for another."""
  found = re.search(r'CSV column #(\d+): CSV conversion error to (.+?): invalid value (.*)',
                    str(error))
  if not found or int(found.group(1)) >= len(names):
    return None
  return names[int(found.group(1))], found.group(2), found.group(3)


def _wider(error, names) -> 'Wider | None':
  found = _conversion_error(error, names)
  if not found or found[1] == 'string':
    return None
  return Wider(found[0], _WIDER.get(found[1], 'string'))


def batches(dataset: str, paths: list, fmt: TextFormat, column_types=None, include=None):
  """The table as RecordBatches, one text block or Parquet row group at a time.

  `column_types` ({name: pyarrow type}) fixes text columns' types. Raises
  `Wider` when a text column's later rows do not fit its inferred type, a
  DataError naming the file for anything else unreadable.
  """
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  from pyarrow import parquet as pq  # pylint: disable=g-import-not-at-top
  schema = None
  for path in paths:
    names = []
    try:
      if is_text(path):
        reader = _text_reader(path, fmt, column_types or {}, include)
        names = reader.schema.names
        stream = iter(reader)
      else:
        # Unbuffered column reads: pre-buffering keeps every row group read so
        # far in Arrow's pool (measured: 837 MB at 2,000,000 rows against 260).
        stream = pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20).iter_batches(
            batch_size=_PARQUET_ROWS, columns=include)
      for batch in stream:
        if schema is None:
          schema = batch.schema
          _check_names(dataset, schema.names)
        elif batch.schema.names != schema.names:
          raise base.DataError(f'dataset={dataset!r}: {os.path.basename(path)} has columns '
                               f'{batch.schema.names}, the first file {schema.names}')
        yield batch
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError, UnicodeDecodeError) as e:
      wider = _wider(e, names)
      if wider is not None:
        raise wider from None
      first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      raise base.DataError(f'dataset={dataset!r}: {os.path.basename(path)} cannot be read '
                           f'as a table ({first})') from None
  if schema is None:
    raise base.DataError(f'dataset={dataset!r}: holds no rows')


def parquet_types(paths: list) -> dict:
  """{name: the first type other than null} of the Parquet files' columns, from their footers.

  A file can hold a column with no value (pandas writes an all-missing
  column as type null); its kind is the one a later file gives it.
  """
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  from pyarrow import parquet as pq  # pylint: disable=g-import-not-at-top
  types = {}
  for path in paths:
    if is_text(path):
      continue
    try:
      schema = pq.read_schema(path)
    except (pa.ArrowInvalid, OSError):
      continue  # Refused naming the file when its rows are read.
    for field in schema:
      if not pa.types.is_null(field.type):
        types.setdefault(field.name, field.type)
  return types


def _check_names(dataset: str, names: list) -> None:
  repeated = sorted({n for n in names if names.count(n) > 1})
  if repeated:
    raise base.DataError(f'dataset={dataset!r}: duplicate column names: '
                         f'{", ".join(map(repr, repeated))}')


def kind(type_) -> str:
  """'integer', 'float', 'bool', 'date' or 'string' of a pyarrow type (Unsupported: none)."""
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  t = type_.value_type if pa.types.is_dictionary(type_) else type_
  if pa.types.is_integer(t):
    return 'integer'
  if pa.types.is_floating(t) or pa.types.is_decimal(t) or pa.types.is_null(t):
    return 'float'  # A null column: no value in the first block (text) or anywhere.
  if pa.types.is_boolean(t):
    return 'bool'
  if pa.types.is_date(t) or pa.types.is_timestamp(t):
    return 'date'
  if pa.types.is_string(t) or pa.types.is_large_string(t):
    return 'string'
  if pa.types.is_binary(t) or pa.types.is_large_binary(t):
    raise Unsupported('holds text that is not UTF-8 (set table_encoding to the '
                      "file's encoding, e.g. 'latin-1')")
  raise Unsupported(f'holds {t} values (numbers, booleans, dates and strings are read)')


def numbers(column, kind_: str, first_row: int = 0) -> np.ndarray:
  """float64 values of a numeric, boolean or date column (NaN where missing).

  Dates and timestamps: days since 1970-01-01 (UTC). Unsupported: integers
  that a float cannot hold exactly, infinite values (no statistic or
  encoding has a place for them) and values past float32's range (the
  features' type), or values of another kind. `first_row`:
  the file's row of the column's first value (rows count from 0, as
  predictions number them), for the message.
  """
  values = _numbers(column, kind_)
  if kind_ == 'bool':  # Given as numbers (a DataFrame's 0/1 ints): those two only.
    other = np.flatnonzero(~np.isnan(values) & (values != 0) & (values != 1))
    if other.size:
      raise Unsupported(f'holds {values[other[0]]:g} (row {first_row + other[0]}), not a '
                        'boolean (true/false or 1/0)')
  infinite = np.flatnonzero(np.isinf(values))
  if infinite.size:
    raise Infinite(f'holds an infinite value ({values[infinite[0]]:g}, the first in row '
                   f'{first_row + infinite[0]})')
  # The features are float32: a larger value would reach the model as infinite.
  huge = np.flatnonzero(np.abs(values) > np.finfo(np.float32).max)
  if huge.size:
    raise Infinite(f'holds a value beyond float32\'s range ({values[huge[0]]:g}, the first in '
                   f'row {first_row + huge[0]})')
  return values


def _numbers(column, kind_: str) -> np.ndarray:
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  import pyarrow.compute as pc  # pylint: disable=g-import-not-at-top
  if pa.types.is_dictionary(column.type):
    column = column.dictionary_decode()
  t = column.type
  try:
    if kind_ == 'date' and pa.types.is_timestamp(t):
      days = column.cast(pa.int64()).to_numpy(zero_copy_only=False).astype(np.float64)
      values = days / _PER_DAY[t.unit]
      return np.where(column.is_null().to_numpy(zero_copy_only=False), np.nan, values)
    if kind_ == 'date' and pa.types.is_date(t):
      column = column.cast(pa.date32()).cast(pa.int32())
    elif kind_ == 'date' and not pa.types.is_null(t):
      raise Unsupported(f'mixes dates and {t} values')
    if pa.types.is_integer(column.type):
      limit = 2**53
      if len(column) and (pc.max(pc.abs(column)).as_py() or 0) > limit:
        raise Unsupported('holds integers beyond 2**53, which a float cannot hold exactly')
    return pc.fill_null(column.cast(pa.float64()), float('nan')).to_numpy(zero_copy_only=False)
  except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
    raise Unsupported(f'mixes numbers and {t} values') from None


def read_whole(path: str, fmt: TextFormat, kinds: dict, text_columns: tuple) -> dict:
  """{name: pyarrow Array} of the columns of one file that `kinds` and `text_columns` name.

  Each read as the kind `kinds` gives it ('string', 'integer', 'float',
  'bool', 'date') and `text_columns` as text, exactly as written; names the
  file lacks are left out. Unsupported: a value that is not of its kind.
  """
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  from pyarrow import parquet as pq  # pylint: disable=g-import-not-at-top
  wanted = list(dict.fromkeys([*kinds, *text_columns]))
  names = []  # The file's columns, once known: conversion errors name them by position.
  try:
    if is_text(path):
      names = _text_reader(path, fmt, {}).schema.names
      table = _read_text(path, fmt, [n for n in wanted if n in names], kinds, text_columns)
    else:
      names = pq.ParquetFile(path).schema_arrow.names
      table = pq.read_table(path, columns=[n for n in wanted if n in names])
  except (pa.ArrowInvalid, pa.ArrowTypeError, OSError, UnicodeDecodeError) as e:
    found = _conversion_error(e, names)
    if found:
      name, type_name, value = found
      expected = {'double': 'a number', 'bool': 'a boolean'}.get(type_name, type_name)
      raise Unsupported(f'column {name!r} holds {value}, not {expected}') from None
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise Unsupported(f'cannot be read as a table ({first})') from None
  # Which of two columns of a name the model takes is a guess: refused, as training does.
  repeated = sorted({n for n in wanted if names.count(n) > 1})
  if repeated:
    raise Unsupported(f'has more than one column named {", ".join(map(repr, repeated))}')
  return {name: _as_read(name, table[name], kinds.get(name), name in text_columns)
          for name in table.column_names}


def _read_text(path: str, fmt: TextFormat, present: list, kinds: dict, text_columns: tuple):
  """The columns `present` of a text file: features as training read them, text as written."""
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  from pyarrow import csv as pa_csv  # pylint: disable=g-import-not-at-top
  forced = {'string': pa.string(), 'integer': pa.float64(), 'float': pa.float64(),
            'bool': pa.bool_()}
  types = {n: pa.string() if n in text_columns else forced[kinds[n]]
           for n in present if n in text_columns or kinds[n] in forced}

  def read(columns, **options):
    return pa_csv.read_csv(
        open_text(path), read_options=pa_csv.ReadOptions(encoding=fmt.encoding),
        parse_options=_parse_options(path, fmt),
        convert_options=pa_csv.ConvertOptions(
            column_types={n: types[n] for n in columns if n in types},
            include_columns=columns, **options))
  # Features as training read them (an empty field, 'NA', ... missing); the
  # text columns exactly as written ('NA' is an id), read apart.
  features = [n for n in present if n in kinds and n not in text_columns]
  # (No columns would mean every column to pyarrow.)
  table = read(features, strings_can_be_null=True) if features else pa.table({})
  texts_read = [n for n in present if n in text_columns]
  if texts_read:
    as_written = read(texts_read, strings_can_be_null=False, quoted_strings_can_be_null=False)
    for name in texts_read:  # Never among the features.
      table = table.append_column(name, as_written[name])
  return table


def _as_read(name: str, chunked, kind: str | None, as_text: bool):
  """One column as predict reads it: a string column as strings (or refused), others as they are."""
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  try:
    column = chunked.combine_chunks()
  except pa.ArrowInvalid:  # Over 2 GB of text in one column.
    column = chunked.cast(pa.large_string()).combine_chunks()
  if pa.types.is_dictionary(column.type):
    column = column.dictionary_decode()
  if (as_text or kind == 'string') and pa.types.is_integer(column.type):
    column = column.cast(pa.string())  # A Parquet file's numbers for a text column.
  if kind == 'string' and pa.types.is_null(column.type):
    column = column.cast(pa.string())
  # Large strings stay large: a column over 2 GB cannot be cast back.
  if kind == 'string' and not (pa.types.is_string(column.type)
                               or pa.types.is_large_string(column.type)):
    raise Unsupported(f'column {name!r} holds {column.type} values; the model was trained '
                      'on string values there')
  return column


def texts(column) -> list:
  """A column's values as text, exactly as written where it was text ('' where missing)."""
  def text(v):
    if v is None:
      return ''
    if isinstance(v, float) and v.is_integer() and abs(v) < 2**53:
      return str(int(v))
    return str(v)
  return [text(v) for v in column.to_pylist()]
