"""CSV and Parquet files read once, by blocks, into memory-mapped columns keyed by their content.

pyarrow reads a CSV file block by block and Parquet files row group by row
group, so converting a table holds one block at a time, whatever the file's
size. The table becomes one row-major float64 matrix [rows, columns]:
numbers and booleans as they are (NaN where a value is missing), strings as
codes into the column's levels in order of first appearance (-1 where
missing). Row-major, because training reads random rows: a row is one run of
bytes, one positional read. The matrix is written once under
`CACHE_DIR/tables/<name>-<hash>/`, the hash being that of the files' bytes
(and the format's version), so a changed file is converted again (its stale
copy removed) and a stale copy is never read; later commands read rows from it with `pread` (no
mapping: a process reading random rows all epoch long holds only what it
reads). With no cache dir the matrix is held in memory.
"""

import glob
import hashlib
import json
import os
import shutil
import tempfile

import numpy as np

from trainkit.sources import base

# Bump when the layout of the converted columns changes.
_FORMAT = 3
_META = 'meta.json'
_ROWS = 'rows.bin'
SUFFIXES = ('.csv', '.parquet', '.pq')
# Bytes a CSV block holds (its column types are inferred from the first).
_CSV_BLOCK = 16 << 20
_PARQUET_ROWS = 65_536
# Rows copied at a time when whole columns are read (a table's rows are
# contiguous: a column is read by reading every row).
_CHUNK_ROWS = 65_536


def is_table(dataset: str) -> bool:
  """Whether `dataset` names a CSV or Parquet file, or a folder of Parquet files."""
  path = os.path.expanduser(dataset)
  return dataset.lower().endswith(SUFFIXES) or (
      os.path.isdir(path) and bool(_parquet_files(path)))


def _parquet_files(folder: str) -> list:
  return sorted(p for suffix in ('.parquet', '.pq')
                for p in glob.glob(os.path.join(folder, f'*{suffix}')))


def files(dataset: str) -> list:
  """The files of `dataset`, in reading order; DataError if there are none."""
  path = os.path.expanduser(dataset)
  if os.path.isdir(path):
    found = _parquet_files(path)
    if not found:
      raise base.DataError(f'dataset={dataset!r}: a folder with no .parquet files')
    return found
  if not os.path.isfile(path):
    raise base.DataError(f'dataset={dataset!r}: no such file')
  return [path]


def _blocks(dataset: str, paths: list):
  """The table as RecordBatches, one CSV block or Parquet row group at a time."""
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  from pyarrow import csv as pa_csv  # pylint: disable=g-import-not-at-top
  from pyarrow import parquet as pq  # pylint: disable=g-import-not-at-top
  schema = None
  for path in paths:
    try:
      if path.lower().endswith('.csv'):
        # An empty field is a missing value, as a Parquet null: the formats agree.
        reader = pa_csv.open_csv(
            path, read_options=pa_csv.ReadOptions(block_size=_CSV_BLOCK),
            convert_options=pa_csv.ConvertOptions(strings_can_be_null=True))
        batches = iter(reader)
      else:
        # Unbuffered column reads: pre-buffering keeps every row group read so
        # far in Arrow's pool (measured: 837 MB at 2,000,000 rows against 260).
        batches = pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20).iter_batches(
            batch_size=_PARQUET_ROWS)
      for batch in batches:
        if schema is None:
          schema = batch.schema
          names = [f.name for f in schema]
          repeated = sorted({n for n in names if names.count(n) > 1})
          if repeated:
            raise base.DataError(f'dataset={dataset!r}: duplicate column names: '
                                 f'{", ".join(map(repr, repeated))}')
        elif batch.schema.names != schema.names:
          raise base.DataError(f'dataset={dataset!r}: {os.path.basename(path)} has columns '
                               f'{batch.schema.names}, the first file {schema.names}')
        yield batch
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as e:
      first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      raise base.DataError(f'dataset={dataset!r}: {os.path.basename(path)} cannot be read '
                           f'as a table ({first})') from None
  if schema is None:
    raise base.DataError(f'dataset={dataset!r}: holds no rows')


def _kind(dataset: str, field) -> str:
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  t = field.type
  if pa.types.is_dictionary(t):
    t = t.value_type
  if pa.types.is_integer(t):
    return 'integer'
  if pa.types.is_floating(t):
    return 'float'
  if pa.types.is_boolean(t):
    return 'bool'
  if pa.types.is_string(t) or pa.types.is_large_string(t):
    return 'string'
  if pa.types.is_null(t):  # A column with no value in its first block.
    return 'float'
  raise base.DataError(f'dataset={dataset!r}: column {field.name!r} holds {t} values '
                       '(numbers, booleans and strings are read)')


class Columns:
  """A converted table: `columns[i]` is column i (float64, or int32 codes for strings).

  Held in memory (`matrix`), or read from the converted file with positional
  reads (`path`): no mapping, so a process that reads random rows all epoch
  long holds only the rows it is reading, while the kernel's page cache,
  shared by every process, keeps the file.
  """

  def __init__(self, kinds: list, num_rows: int, matrix: np.ndarray | None = None,
               path: str | None = None):
    self.kinds, self.num_rows, self.matrix, self.path = kinds, num_rows, matrix, path
    self._file = None

  def __getstate__(self):  # A worker process opens the file itself.
    return {**self.__dict__, '_file': None}

  def __len__(self):
    return len(self.kinds)

  def _typed(self, values, i):
    return values.astype(np.int32) if self.kinds[i] == 'string' else values

  def _fd(self) -> int:
    if self._file is None:
      self._file = os.open(self.path, os.O_RDONLY)
    return self._file

  def _span(self, lo: int, hi: int) -> np.ndarray:
    """Rows lo to hi [hi - lo, columns], copied."""
    if self.matrix is not None:
      return np.array(self.matrix[lo:hi])
    row = len(self.kinds) * 8
    data = os.pread(self._fd(), (hi - lo) * row, lo * row)
    return np.frombuffer(data, np.float64).reshape(hi - lo, len(self.kinds))

  def __getitem__(self, i: int) -> np.ndarray:
    return self.take([i])[0]

  def chunks(self):
    """(first row, the rows [chunk, columns]) over the table, a chunk at a time."""
    for lo in range(0, self.num_rows, _CHUNK_ROWS):
      yield lo, self._span(lo, min(lo + _CHUNK_ROWS, self.num_rows))

  def take(self, which) -> list:
    """Whole columns `which`, read in one pass by chunks of rows."""
    parts = [[] for _ in which]
    for _, block in self.chunks():
      for part, i in zip(parts, which):
        part.append(block[:, i].copy())  # Not a view: it would keep the whole chunk.
    return [self._typed(np.concatenate(p) if p else np.zeros(0), i)
            for p, i in zip(parts, which)]

  def rows(self, rows, which) -> list:
    """Columns `which` of rows `rows`: one positional read per row (a row is one run of bytes)."""
    rows = np.asarray(rows, np.int64)
    if self.matrix is not None:
      block = self.matrix[rows]
    else:
      fd, row = self._fd(), len(self.kinds) * 8
      data = b''.join([os.pread(fd, row, r * row) for r in rows.tolist()])
      block = np.frombuffer(data, np.float64).reshape(len(rows), len(self.kinds))
    return [self._typed(block[:, i], i) for i in which]


class _Writer:
  """Appends the converted blocks, row-major, to a file or to memory."""

  def __init__(self, folder: str | None):
    self.parts, self.handle = [], None
    if folder is not None:
      self.handle = open(os.path.join(folder, _ROWS), 'wb')  # pylint: disable=consider-using-with

  def add(self, block: np.ndarray) -> None:
    if self.handle is None:
      self.parts.append(block)
    else:
      self.handle.write(block.tobytes())

  def close(self) -> None:
    if self.handle is not None:
      self.handle.close()


def _convert_into(dataset: str, paths: list, folder: str | None) -> tuple:
  """Converts every block; returns (meta, in-memory columns or None)."""
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  import pyarrow.compute as pc  # pylint: disable=g-import-not-at-top
  writer = _Writer(folder)
  kinds, levels, rows = None, None, 0
  try:
    for batch in _blocks(dataset, paths):
      if kinds is None:
        kinds = [_kind(dataset, f) for f in batch.schema]
        levels = [{} if k == 'string' else None for k in kinds]
      block = np.empty((batch.num_rows, len(kinds)), np.float64)
      for i, column in enumerate(batch.columns):
        if pa.types.is_dictionary(column.type):
          column = column.dictionary_decode()
        if kinds[i] == 'string':
          if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)
                  or pa.types.is_null(column.type)):
            raise base.DataError(f'dataset={dataset!r}: column {batch.schema.names[i]!r} '
                                 f'mixes strings and {column.type} values')
          # The block's own levels, mapped onto the column's: one Python step per level.
          encoded = column.cast(pa.string()).dictionary_encode()
          table = levels[i]
          mapping = np.array([table.setdefault(v, len(table))
                              for v in encoded.dictionary.to_pylist()] + [-1], np.int32)
          index = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False)
          block[:, i] = mapping[index]  # Index -1 (missing) picks the -1 at the end.
        else:
          try:
            values = pc.fill_null(column.cast(pa.float64()), float('nan'))
          except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise base.DataError(
                f'dataset={dataset!r}: column {batch.schema.names[i]!r} mixes numbers '
                f'and {column.type} values') from None
          block[:, i] = values.to_numpy(zero_copy_only=False)
      writer.add(block)
      rows += batch.num_rows
      names = batch.schema.names
  finally:
    writer.close()
  meta = {'format': _FORMAT, 'names': names, 'kinds': kinds, 'rows': rows,
          'levels': [None if t is None else list(t) for t in levels]}
  memory = None if folder else Columns(
      kinds, rows,
      np.concatenate(writer.parts) if writer.parts else np.zeros((0, len(kinds))))
  return meta, memory


def _digest(paths: list) -> str:
  sha = hashlib.sha256(str(_FORMAT).encode())
  for path in paths:
    with open(path, 'rb') as f:
      for chunk in iter(lambda: f.read(1 << 22), b''):  # pylint: disable=cell-var-from-loop
        sha.update(chunk)
  return sha.hexdigest()[:16]


def _open_columns(folder: str, meta: dict) -> Columns:
  return Columns(meta['kinds'], meta['rows'], path=os.path.join(folder, _ROWS))


def _read_cached(folder: str) -> tuple | None:
  try:
    with open(os.path.join(folder, _META)) as f:
      meta = json.load(f)
    if meta.get('format') != _FORMAT:
      return None
    size = os.path.getsize(os.path.join(folder, _ROWS))
  except (OSError, ValueError, KeyError, TypeError):  # Damaged: converted again.
    return None
  if size != meta['rows'] * len(meta['kinds']) * 8:
    return None
  return meta, _open_columns(folder, meta)


def load(dataset: str, cache_dir: str) -> tuple:
  """(meta, columns) of the table `dataset`: converted once, then read from the copy.

  meta: {'names', 'kinds' ('integer', 'float', 'bool' or 'string'), 'rows',
  'levels' (a string column's levels, by code)}; columns: a `Columns`.
  """
  paths = files(dataset)
  if not cache_dir:
    return _convert_into(dataset, paths, None)
  root = os.path.join(os.path.expanduser(cache_dir), 'tables')
  where = os.path.abspath(os.path.expanduser(dataset))
  stem = (os.path.basename(os.path.normpath(dataset)).replace('.', '_') + '-'
          + hashlib.sha256(where.encode()).hexdigest()[:8])  # The file, wherever it is.
  folder = os.path.join(root, f'{stem}-{_digest(paths)}')
  cached = _read_cached(folder)
  if cached is not None:
    return cached
  try:
    os.makedirs(root, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=root, prefix='.incomplete-')
  except OSError:  # Not writable: no cache.
    return _convert_into(dataset, paths, None)
  try:
    meta, _ = _convert_into(dataset, paths, tmp)
    with open(os.path.join(tmp, _META), 'w') as f:
      json.dump(meta, f)
    if os.path.lexists(folder):  # A damaged copy.
      shutil.rmtree(folder, ignore_errors=True)
    os.rename(tmp, folder)
  except OSError:  # Another process put it there first.
    shutil.rmtree(tmp, ignore_errors=True)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  else:  # Conversions of the file's earlier contents are stale for good.
    for old in glob.glob(os.path.join(root, f'{stem}-*')):
      if old != folder:
        shutil.rmtree(old, ignore_errors=True)
  cached = _read_cached(folder)
  if cached is None:
    raise base.DataError(f'dataset={dataset!r}: its converted copy in {folder} cannot be read')
  return cached
