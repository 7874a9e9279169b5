"""Table files read once, by blocks, into memory-mapped columns keyed by their content.

The files and how they are read: trainkit/data/sources/table_formats.py.

pyarrow reads a text file block by block and Parquet files row group by row
group, so converting a table holds one block at a time, whatever the file's
size. The table becomes one row-major float64 matrix [rows, columns]:
numbers, booleans and dates as numbers (NaN where a value is missing), strings as
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

from trainkit.data.sources import base
from trainkit.data.sources import table_formats

# Bump when the layout of the converted columns, or what conversion refuses, changes
# (7: a Parquet column without values in its first file takes a later file's kind).
_FORMAT = 7
_META = 'meta.json'
_ROWS = 'rows.bin'
SUFFIXES = table_formats.SUFFIXES
# digest()'s results, by the files' (path, size, modification time).
_DIGESTS = {}
# Rows copied at a time when whole columns are read (a table's rows are
# contiguous: a column is read by reading every row).
_CHUNK_ROWS = 65_536


def is_table(dataset: str) -> bool:
  """Whether `dataset` names a text or Parquet table file, or a folder of Parquet files."""
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


def _convert_into(dataset: str, paths: list, folder: str | None,
                  fmt: table_formats.TextFormat) -> tuple:
  """Converts every block; returns (meta, in-memory columns or None).

  A text column whose later rows do not fit the kind its first block gave
  is read again, from the start, as the wider kind.
  """
  column_types = {}
  while True:
    writer = _Writer(folder)
    try:
      return _convert_blocks(dataset, paths, writer, fmt, column_types)
    except table_formats.Wider as wider:
      if wider.name in column_types and str(column_types[wider.name]) == wider.type_name:
        raise base.DataError(f'dataset={dataset!r}: column {wider.name!r} cannot be read '
                             f'as {wider.type_name}') from None
      import pyarrow as pa  # pylint: disable=g-import-not-at-top
      column_types[wider.name] = pa.type_for_alias(wider.type_name)
    finally:
      writer.close()


def _convert_blocks(dataset, paths, writer, fmt, column_types) -> tuple:
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  import pyarrow.compute as pc  # pylint: disable=g-import-not-at-top
  kinds, levels, problems, rows = None, None, {}, 0
  typed = None  # Parquet: each column's type in the first file that has values in it.
  for batch in table_formats.batches(dataset, paths, fmt, column_types):
    names = batch.schema.names
    if kinds is None:
      kinds = []
      if any(pa.types.is_null(field.type) for field in batch.schema):
        typed = table_formats.parquet_types(paths)
      for field in batch.schema:
        try:
          kinds.append(table_formats.kind(
              typed.get(field.name, field.type) if pa.types.is_null(field.type) else field.type))
        except table_formats.Unsupported as e:
          kinds.append('unsupported')
          problems[field.name] = str(e)
      levels = [{} if k == 'string' else None for k in kinds]
    block = np.full((batch.num_rows, len(kinds)), np.nan)
    for i, column in enumerate(batch.columns):
      if kinds[i] == 'unsupported':
        continue
      if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
      if kinds[i] == 'string':
        if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)
                or pa.types.is_null(column.type)):
          kinds[i], problems[names[i]] = 'unsupported', f'mixes strings and {column.type} values'
          continue
        # The block's own levels, mapped onto the column's: one Python step per level.
        encoded = column.cast(pa.string()).dictionary_encode()
        table = levels[i]
        mapping = np.array([table.setdefault(v, len(table))
                            for v in encoded.dictionary.to_pylist()] + [-1], np.int32)
        index = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False)
        block[:, i] = mapping[index]  # Index -1 (missing) picks the -1 at the end.
      else:
        try:
          block[:, i] = table_formats.numbers(column, kinds[i], rows)
        except table_formats.Unsupported as e:
          kinds[i], problems[names[i]] = 'unsupported', str(e)
    writer.add(block)
    rows += batch.num_rows
  meta = {'format': _FORMAT, 'names': names, 'kinds': kinds, 'rows': rows,
          'levels': [None if t is None else list(t) for t in levels], 'problems': problems}
  memory = None if writer.handle is not None else Columns(
      kinds, rows,
      np.concatenate(writer.parts) if writer.parts else np.zeros((0, len(kinds))))
  return meta, memory


def digest(paths: list) -> str:
  """A fingerprint of the files' bytes (what a workdir records it was trained on).

  Read once per process while the files' sizes and modification times stay
  as they were: a resume checks it, then loading the table keys its cache by it.
  """
  stamps = tuple((p, os.stat(p).st_size, os.stat(p).st_mtime_ns) for p in paths)
  if stamps not in _DIGESTS:
    sha = hashlib.sha256()
    for path in paths:
      with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 22), b''):  # pylint: disable=cell-var-from-loop
          sha.update(chunk)
    _DIGESTS[stamps] = sha.hexdigest()[:16]
  return _DIGESTS[stamps]


def _cache_key(content: str, fmt: table_formats.TextFormat) -> str:
  """The converted copy's key: the bytes, how they are read, and the conversion's version."""
  return hashlib.sha256(f'{_FORMAT}:{fmt.separator!r}:{fmt.encoding!r}:{content}'.encode()
                        ).hexdigest()[:16]


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


def load(dataset: str, cache_dir: str, fmt: table_formats.TextFormat | None = None) -> tuple:
  """(meta, columns) of the table `dataset`: converted once, then read from the copy.

  meta: {'names', 'kinds' ('integer', 'float', 'bool' or 'string'), 'rows',
  'levels' (a string column's levels, by code), 'problems' ({name: why the
  column cannot be used}, its kind 'unsupported'), 'digest' (of the bytes)};
  columns: a `Columns`.
  """
  fmt = fmt or table_formats.TextFormat()
  paths = files(dataset)
  content = digest(paths)
  if not cache_dir:
    meta, columns = _convert_into(dataset, paths, None, fmt)
    return {**meta, 'digest': content}, columns
  key = _cache_key(content, fmt)
  root = os.path.join(os.path.expanduser(cache_dir), 'tables')
  where = os.path.abspath(os.path.expanduser(dataset))
  stem = (os.path.basename(os.path.normpath(dataset)).replace('.', '_') + '-'
          + hashlib.sha256(where.encode()).hexdigest()[:8])  # The file, wherever it is.
  folder = os.path.join(root, f'{stem}-{key}')
  cached = _read_cached(folder)
  if cached is not None:
    return cached
  try:
    os.makedirs(root, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=root, prefix='.incomplete-')
  except OSError:  # Not writable: no cache.
    meta, columns = _convert_into(dataset, paths, None, fmt)
    return {**meta, 'digest': content}, columns
  try:
    meta, _ = _convert_into(dataset, paths, tmp, fmt)
    meta['digest'] = content
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
