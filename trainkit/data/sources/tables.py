"""The table source: a CSV or Parquet file's columns as features, a target and weights.

`dataset='data.csv'` (or `.parquet`, or a folder of Parquet files) with
`target_column` naming what to predict. Features are `feature_columns`, or
every other column bar `id_columns` (carried to predictions),
`weight_column` (per-row sample weights) and `split_column`. The named
splits are the values of `split_column`, or one split 'train' of every row,
in file order or, with `split_seed >= 0`, shuffled by that seed (stratified
by class for a categorical target: any slice holds the classes in about
their overall proportions); the configured splits select from them with the
split syntax ('train[:80%]').

The columns become features by an encoding fitted on the training split's
rows alone (`Column`), kept in the workdir's model.json so eval, predict and
export apply it alike: a number or boolean is one feature, its missing
values filled with the training mean, plus a 0/1 missing indicator when
training rows miss it; a string column is one-hot over its most frequent
`max_categories` training levels plus one 'other' feature (rarer, unseen
and missing levels). `normalization='per_feature'` then standardises every
feature with the training statistics, inside the model.
"""

import codecs
import dataclasses
import difflib
import re

from absl import logging
import numpy as np

from trainkit import errors
from trainkit import tasks
from trainkit.data.sources import base
from trainkit.data.sources import split_syntax
from trainkit.data.sources import table_files
from trainkit.data.sources import table_formats

OTHER = '<other>'
# Rows encoded at a time when a whole split is read.
_CHUNK = 65_536


# Whole-number labels from 0 are classes 0..max: past this many, an id or a date.
_MOST_CLASSES = 2**20


def check_new_run(config, data) -> None:
  """Refuses, for a run that starts training, what a table's encoding would carry silently.

  Row numbers as a feature (an unnamed column: R's write.csv, pandas'
  to_csv), and a column of amounts taken as classes. Only there: a workdir
  trained before these checks resumes as it was.
  """
  if not data.columns:
    return
  named = [Column.from_tuple(c).name for c in data.columns]
  for name in named if not config.feature_columns else ():
    if not name or re.fullmatch(r'Unnamed: \d+|__index_level_\d+__', name):
      raise base.DataError(
          f'dataset={config.dataset!r}: column {name!r} has no name: row numbers, as R and '
          'pandas write them? Set id_columns to carry it into predictions, or '
          'feature_columns to the columns to learn from')
  rows = data.num_train + data.num_validation + data.num_test
  if len(data.class_names) > max(1000, rows // 5):
    raise base.DataError(
        f'dataset={config.dataset!r}: target_column={config.target_column!r} makes '
        f'{len(data.class_names):,} classes of {rows:,} rows: too many for '
        f'task={config.task!r}; for amounts or counts set task={tasks.of_real_values()[0]!r}')


def _split_name(value: float) -> str:
  """A number split value's name: a whole number as written (20200101), else its exact text."""
  return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(float(value))


@dataclasses.dataclass(frozen=True)
class Column:
  """How one table column becomes features (fitted on training rows)."""
  name: str
  kind: str  # 'integer', 'float', 'bool', 'date' (days since 1970-01-01 UTC) or 'string'.
  fill: float = 0.0  # Numbers: the training mean, for missing values.
  indicator: bool = False  # Numbers: a missing-value feature follows.
  levels: tuple = ()  # Strings: the one-hot levels (then one for OTHER).

  def features(self) -> list:
    """The names of the features this column becomes."""
    if self.kind == 'string':
      return [f'{self.name}={level}' for level in (*self.levels, OTHER)]
    return [self.name] + ([f'{self.name}:missing'] if self.indicator else [])

  def positions(self, source_levels) -> np.ndarray:
    """A source's string codes -> one-hot positions: [position of source_levels[c]], -1 = OTHER."""
    position = {level: j for j, level in enumerate(self.levels)}
    return np.array([position.get(level, -1) for level in source_levels] or [-1], np.int64)

  def as_tuple(self) -> tuple:
    """(name, kind, fill, indicator, levels): as model.json keeps it."""
    return (self.name, self.kind, self.fill, self.indicator, tuple(self.levels))

  @classmethod
  def from_tuple(cls, values) -> 'Column':
    name, kind, fill, indicator, levels = values
    return cls(name, kind, float(fill), bool(indicator), tuple(levels))


def encode(columns: list, values: list, codes_of: list) -> np.ndarray:
  """Features float32 [n, F] of rows given as one array per column.

  `values[i]` holds column i's values: float64 with NaN for missing numbers;
  for strings, int32 codes into the source's levels, mapped through
  `codes_of[i]` (`Column.positions`: source code -> one-hot position; -1,
  a missing value or out of range is OTHER).
  """
  n = len(values[0]) if values else 0
  parts = []
  for i, column in enumerate(columns):
    v = values[i]
    if column.kind == 'string':
      table = codes_of[i]
      position = np.where((v >= 0) & (v < len(table)), table[np.clip(v, 0, None)], -1)
      position = np.where(position < 0, len(column.levels), position)
      one_hot = np.zeros((n, len(column.levels) + 1), np.float32)
      one_hot[np.arange(n), position] = 1.0
      parts.append(one_hot)
    else:
      v = np.asarray(v, np.float64)
      missing = np.isnan(v)
      parts.append(np.where(missing, column.fill, v).astype(np.float32)[:, None])
      if column.indicator:
        parts.append(missing.astype(np.float32)[:, None])
  return np.concatenate(parts, axis=1) if parts else np.zeros((n, 0), np.float32)


def _nearest(name: str, names: list) -> str:
  close = difflib.get_close_matches(name, names, n=3)
  return f' (did you mean {", ".join(map(repr, close))}?)' if close else (
      f' (it has: {", ".join(map(repr, names[:12]))}{", ..." if len(names) > 12 else ""})')


class TableRecords(base.Records):
  """Rows `order` of a converted table, encoded: {'x', 'y'} (and 'w' with weights).

  Picklable: a worker process gets the fitted encoding and the row orders,
  and reads the converted file itself (or a copy of a table held in memory).
  """

  def __init__(self, source: 'TableSource', order: np.ndarray):
    self._source, self.order = source, order

  def __len__(self):
    return len(self.order)

  def read(self, indices) -> dict:
    return self._source.encode_rows(self.order[np.asarray(indices, np.int64)])


class TableSource(base.Source):
  """A CSV or Parquet table, its encoding fitted on the rows of `config.train_split`.

  With `fitted` (a trained workdir's model.json: its `columns` and
  `class_names`) the stored encoding is used as it is, never fitted again.
  """

  def __init__(self, config, fitted=None):
    super().__init__(config.dataset)
    self._config = config
    self._fitted = fitted
    self._loaded = None

  # The table, its columns and its splits, worked out once.

  def _load(self) -> dict:
    if self._loaded is None:
      self._loaded = self._prepare()
    return self._loaded

  def _prepare(self) -> dict:
    config = self._config
    meta, arrays = table_files.load(config.dataset, config.cache_dir,
                                    table_formats.TextFormat.of(config))
    names, kinds = meta['names'], meta['kinds']
    index = {name: i for i, name in enumerate(names)}

    def column(field, name, used=True):
      if name not in index:
        self.refuse(f'{field}={name!r} is not a column' + _nearest(name, names))
      if used and name in meta.get('problems', {}):
        self.refuse(f'{field}: column {name!r} {meta["problems"][name]}')
      return index[name]

    if not config.target_column:
      self.refuse('a table needs target_column, the column to predict (it has: '
                  f'{", ".join(map(repr, names[:12]))})')
    target = column('target_column', config.target_column)
    ids = [column('id_columns', n, used=False) for n in config.id_columns]
    weight = column('weight_column', config.weight_column) if config.weight_column else None
    split = column('split_column', config.split_column) if config.split_column else None
    used = {target, *ids, *([weight] if weight is not None else []),
            *([split] if split is not None else [])}
    features = self._features(column, names, used)
    whole = [i for i in (target, weight, split) if i is not None]
    taken = dict(zip(whole, arrays.take(whole)))
    y, classes = self._target(names[target], kinds[target], taken[target],
                              meta['levels'][target])
    w = None
    if weight is not None:
      w = taken[weight]
      if kinds[weight] == 'string' or np.isnan(w).any() or (w < 0).any():
        self.refuse(f'weight_column={names[weight]!r} must hold numbers >= 0, none missing')
      w = w.astype(np.float32)
    splits = self._named_splits(taken.get(split), meta, split,
                                y if classes is not None else None)
    if self._fitted is None:
      size_of = lambda name: len(self._split(splits, name))
      is_train = np.zeros(meta['rows'], bool)
      for name, lo, hi in split_syntax.split_ranges(config.train_split, size_of):
        is_train[self._split(splits, name)[lo:hi]] = True
      self._note_unread(splits)
      encoding = self._fit(arrays, meta, features, is_train)
    else:
      encoding = self._stored(meta, features, classes)
    # A source code -> one-hot position table per string feature.
    codes_of = [col.positions(meta['levels'][i]) if col.kind == 'string' else None
                for i, col in zip(features, encoding)]
    return {'meta': meta, 'arrays': arrays, 'features': features, 'encoding': encoding,
            'codes_of': codes_of, 'y': y, 'w': w, 'classes': classes, 'splits': splits,
            'target': target}

  def _features(self, column, names: list, used: set) -> list:
    """The feature columns' indices: as configured, or the stored ones, or every other."""
    config = self._config
    if self._fitted is not None:
      return [column('model.json columns', Column.from_tuple(c).name)
              for c in self._fitted.columns]
    if config.feature_columns:
      features = [column('feature_columns', n) for n in config.feature_columns]
      for i in features:
        if i in used:
          self.refuse(f'feature_columns: {names[i]!r} is also the target, an id, the weight '
                      'or the split column')
    else:
      features = [column('feature_columns (every other column; name the ones to use)', names[i])
                  for i in range(len(names)) if i not in used]
    if not features:
      self.refuse('no feature columns are left besides the target, ids, weight and split')
    return features

  def _stored(self, meta, features: list, classes) -> list:
    """The encoding model.json keeps, each column checked against the file's kind."""
    encoding = [Column.from_tuple(c) for c in self._fitted.columns]
    for i, col in zip(features, encoding):
      if (meta['kinds'][i] == 'string') != (col.kind == 'string'):
        self.refuse(f'column {col.name!r} holds {meta["kinds"][i]} values; the model was '
                    f'trained on {col.kind} values there')
    if tuple(classes or ()) != tuple(self._fitted.class_names):
      self.refuse(f'target_column={self._config.target_column!r} has the classes '
                  f'{list(classes or ())[:10]}; the model was trained on '
                  f'{list(self._fitted.class_names)[:10]}')
    return encoding

  def _target(self, name, kind, values, levels):
    """(targets, class names or None): classes for a task of classes, else real values."""
    missing = (values < 0) if kind == 'string' else np.isnan(values)
    if missing.any():
      self.refuse(f'target_column={name!r} has {int(missing.sum())} missing values '
                  f'(the first in row {int(np.argmax(missing))})')
    values = np.asarray(values)
    if not tasks.takes_classes(self._config):
      if kind == 'string':
        # Numbers stored as text (a Parquet string column): their values, not their codes.
        parsed = np.array([float(level) if table_formats.is_number(level) else np.nan
                           for level in levels], np.float64)
        rows = np.flatnonzero(~np.isfinite(parsed)[values])
        shown = ', '.join(f'{levels[values[r]]!r} (row {r})' for r in rows[:3])
        if len(rows):
          self.refuse(f'target_column={name!r} must hold numbers for task='
                      f'{self._config.task!r}; it holds text: {shown}'
                      + (f' and {len(rows) - 3} more' if len(rows) > 3 else ''))
        values = parsed[values]
      y, classes = values.astype(np.float32), None
    elif kind == 'string':
      names = sorted(levels)
      rank = np.argsort(np.argsort(levels))  # Code -> its name's place in sorted order.
      y, classes = rank[values].astype(np.int32), tuple(names)
    # Whole numbers are classes however they are stored (a CSV's 151 is a
    # Parquet file's 151.0): the formats read alike.
    elif np.array_equal(values, np.round(values)) and np.abs(values).max() < 2**31:
      y, classes = self._whole_number_classes(name, values.astype(np.int64))
    else:
      y, classes = values.astype(np.float32), None
    if len(np.unique(y)) < 2:
      only = classes[int(y[0])] if classes else f'{float(y[0]):g}'
      self.refuse(f'target_column={name!r} holds one value only ({only!r})')
    if classes and self._config.positive_class:
      y, classes = self._positive_last(name, y, classes)
    return y, classes

  def _whole_number_classes(self, name, values):
    """(class indices, names) of whole-number labels.

    Labels from 0 are classes 0..max, as ever (a trained workdir's classes
    stay what they were). Negative labels (-1/1), and those of a task with a
    positive class (1/2), were refused: their classes are the values found,
    in numeric order, as a string target's are its sorted levels.
    """
    if values.min() >= 0 and not tasks.of(self._config).POSITIVE_CLASS:
      if values.max() >= _MOST_CLASSES:  # Ids or dates: billions of names before any check.
        self.refuse(f'target_column={name!r} holds whole numbers up to {int(values.max()):,}: '
                    f'as classes 0..max, too many; for amounts, ids or dates set '
                    f'task={tasks.of_real_values()[0]!r}')
      return values.astype(np.int32), tuple(str(c) for c in range(int(values.max()) + 1))
    found = np.unique(values)
    return np.searchsorted(found, values).astype(np.int32), tuple(str(c) for c in found)

  def _positive_last(self, name, y, classes):
    """The configured positive class made the last (class 1 of a binary task)."""
    positive = self._config.positive_class
    if positive not in classes:
      self.refuse(f'positive_class={positive!r} is not a class of target_column={name!r} '
                  f'(it has: {", ".join(map(repr, classes[:12]))})')
    order = [c for c in classes if c != positive] + [positive]
    new_index = np.array([order.index(c) for c in classes], np.int32)
    return new_index[y], tuple(order)

  def _named_splits(self, split_values, meta, split, labels) -> dict:
    """{split name: row indices}, in file order or shuffled by split_seed."""
    rows = np.arange(meta['rows'])
    seed = self._config.split_seed
    if seed >= 0:
      rng = np.random.default_rng(seed)
      if labels is None:
        rows = rng.permutation(meta['rows'])
      else:  # Each class spread evenly over the order: slices keep the proportions.
        place = np.empty(meta['rows'])
        for c in np.unique(labels):
          members = np.flatnonzero(labels == c)
          place[rng.permutation(members)] = (np.arange(len(members)) + rng.random(
              len(members))) / len(members)
        rows = np.argsort(place, kind='stable')
    rows = rows.astype(np.int32 if meta['rows'] < 2**31 else np.int64)  # Half the memory.
    if split is None:
      return {'train': rows}
    values = split_values[rows]
    if meta['kinds'][split] == 'string':
      levels = meta['levels'][split]
      return {levels[c]: rows[values == c] for c in np.unique(values) if c >= 0}
    return {_split_name(v): rows[values == v] for v in np.unique(values[~np.isnan(values)])}

  def _note_unread(self, splits: dict) -> None:
    """Warns of a split column's splits that no split reads (the splits left at 'train[:70%]'?)."""
    config = self._config
    specs = {f: config[f] for f in ('train_split', 'validation_split', 'test_split') if config[f]}
    read = set().union(*(split_syntax.names(spec) for spec in specs.values()))
    unread = [f'{name!r} ({len(rows):,} rows)' for name, rows in splits.items()
              if name not in read]
    if config.split_column and unread:
      logging.warning('split_column=%r has rows that no split reads: %s; %s', config.split_column,
                      ', '.join(unread), ', '.join(f'{f}={v!r}' for f, v in specs.items()))

  def _split(self, splits: dict, name: str) -> np.ndarray:
    if name not in splits:
      self.refuse(f'has no split {name!r} (it has: {", ".join(map(repr, splits))})')
    return splits[name]

  def _fit(self, arrays, meta, features: list, is_train) -> list:
    """The encoding of each feature column, from the training rows alone (one pass)."""
    names, kinds, levels = meta['names'], meta['kinds'], meta['levels']
    present = dict.fromkeys(features, False)  # Any value, in any row.
    sums, counts, missing = ({i: 0.0 for i in features}, {i: 0 for i in features},
                             dict.fromkeys(features, False))
    level_counts = {i: np.zeros(len(levels[i]), np.int64) for i in features
                    if kinds[i] == 'string'}
    for lo, block in arrays.chunks():
      train = is_train[lo:lo + len(block)]
      for i in features:
        if kinds[i] == 'string':
          codes = block[:, i].astype(np.int64)
          present[i] |= bool((codes >= 0).any())
          level_counts[i] += np.bincount(codes[train & (codes >= 0)],
                                         minlength=len(levels[i]))
          continue
        values = block[train, i]
        gap = np.isnan(values)
        present[i] |= not bool(np.isnan(block[:, i]).all())
        sums[i] += float(values[~gap].sum())
        counts[i] += int((~gap).sum())
        missing[i] |= bool(gap.any())
    encoding = []
    for i in features:
      if not present[i]:
        self.refuse(f'column {names[i]!r} has no values (all missing)')
      if kinds[i] == 'string':
        seen = level_counts[i]
        order = sorted((-seen[c], levels[i][c]) for c in range(len(seen)) if seen[c])
        encoding.append(Column(names[i], kinds[i], levels=tuple(
            level for _, level in order[:self._config.max_categories])))
        continue
      if not counts[i]:
        self.refuse(f'column {names[i]!r} has no values in train_split='
                    f'{self._config.train_split!r} (all missing)')
      encoding.append(Column(names[i], kinds[i], fill=sums[i] / counts[i],
                             indicator=missing[i]))
    return encoding

  # The interface.

  def encode_rows(self, rows: np.ndarray) -> dict:
    """{'x', 'y'} (and 'w') of table rows `rows`."""
    t = self._load()
    values = t['arrays'].rows(rows, t['features'])
    out = {'x': encode(t['encoding'], values, t['codes_of']), 'y': t['y'][rows]}
    if t['w'] is not None:
      out['w'] = t['w'][rows]
    return out

  def fields(self) -> dict:
    t = self._load()
    return {'num_classes': len(t['classes'] or ()), 'input_dtype': 'float32',
            'input_shape': (sum(len(c.features()) for c in t['encoding']),),
            'target_shape': (), 'target_dtype': t['y'].dtype.name,
            'columns': tuple(c.as_tuple() for c in t['encoding']),
            'class_names': tuple(t['classes'] or ()), 'fingerprint': t['meta']['digest'],
            # Classes that are a number column's values (not a string column's levels).
            'numeric_classes': bool(t['classes']) and t['meta']['kinds'][t['target']] != 'string'}

  def records(self, split: str) -> TableRecords:
    t = self._load()
    return TableRecords(self, self._split(t['splits'], split))

  def arrays(self, split: str) -> dict:
    records = self.records(split)
    parts = [records.read(range(lo, min(lo + _CHUNK, len(records))))
             for lo in range(0, len(records), _CHUNK)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

  def fingerprint(self) -> str:
    """The digest of the table's files' bytes (no conversion needed)."""
    if self._loaded is not None:
      return self._loaded['meta']['digest']
    return table_files.digest(table_files.files(self.dataset))

  def nbytes(self) -> int:
    t = self._load()
    features = self.fields()['input_shape'][0]
    return t['meta']['rows'] * (4 * features + 4 + (4 if t['w'] is not None else 0))


def check_config(config) -> None:
  """Refuses a table's column fields, text format and split settings that cannot be."""
  for name in ('target_column', 'weight_column', 'split_column', 'positive_class'):
    errors.require(isinstance(config[name], str), name, config[name],
                   "must be a column name or ''")
  errors.require(isinstance(config.table_separator, str) and len(config.table_separator) <= 1,
                 'table_separator', config.table_separator,
                 "must be one character, or '' (detect)")
  try:
    codecs.lookup(config.table_encoding)
  except (LookupError, TypeError):
    raise errors.ConfigError(f'table_encoding={config.table_encoding!r}: not an encoding Python '
                             "knows (e.g. 'utf-8', 'latin-1', 'cp1252')") from None
  errors.require(isinstance(config.split_seed, int) and config.split_seed >= -1, 'split_seed',
                 config.split_seed, 'must be an integer >= 0, or -1 (rows as stored)')
  errors.counts(config, ('max_categories',))
