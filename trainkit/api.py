"""The Python API: train from a config, and use a trained workdir, with no flags.

  import trainkit
  result = trainkit.train('default', '/tmp/mnist', overrides={'num_epochs': 1})
  model = trainkit.load('/tmp/mnist')
  model.predict(images)['class']

`train` makes the call `main.py` makes (resume, locks, the same refusals);
`load` reads a workdir as data: its config.json and model.json as JSON, its
checkpoint through Orbax. Nothing in a workdir is run or unpickled. Every
refusal raises `Refused`, whose message is the command line's `error:` line.
"""

import collections
import contextlib
import dataclasses
import io
import os
import shutil
import tempfile
import warnings
import zipfile

import ml_collections
import numpy as np

from trainkit import cli
from trainkit import configs
from trainkit import errors
from trainkit.runtime import preemption
from trainkit.serving import predict_rows
from trainkit.serving import restore as restore_lib
from trainkit.serving import row_inputs
from trainkit.training import model_summary
from trainkit.training import optimizers
from trainkit.training import train as train_lib
from trainkit.workdirs import lock as workdir_lock
from trainkit.workdirs import config_history
from trainkit.workdirs import layout as workdir_lib


class UnseenLevelsWarning(UserWarning):
  """Rows predicted with a string level training never saw (encoded as other)."""


class Refused(Exception):
  """What the command line refuses with one `error:` line; `exit_status` is its status."""

  def __init__(self, message: str, exit_status: int):
    super().__init__(message)
    self.exit_status = exit_status


# The command line's words in a refusal, as a Python caller says them.
_AS_CALLED = (('run with --continue_with_changes', 'call with continue_with_changes=True'),
              ('--continue_with_changes', 'continue_with_changes=True'),
              ('give --config (and train it first)', 'train it first'),
              ('--checkpoint=', 'checkpoint='), ('--workdir=', 'workdir='))


@contextlib.contextmanager
def _refusals(renamed: dict | None = None):
  """The library's refusals as `Refused` (an interruption stays what it is).

  `renamed`: {text: what the caller calls it}, e.g. the file in-memory data
  became, which the caller never named.
  """
  try:
    yield
  except preemption.Interrupted:
    raise
  except Exception as e:  # pylint: disable=broad-except
    status = cli.exit_status(e)
    if status is None:
      raise
    message = str(e)
    for text, called in (*(renamed or {}).items(), *_AS_CALLED):
      message = message.replace(text, called)
    raise Refused(message, status) from e


@dataclasses.dataclass(frozen=True)
class Trained:
  """What `train` returns: the run's summary.json as a dict, and its workdir."""
  summary: dict
  workdir: str

  def load(self, checkpoint: str | int = 'latest') -> 'Model':
    return load(self.workdir, checkpoint)


def _config(config, overrides: dict | None) -> ml_collections.ConfigDict:
  """A copy of `config` (a ConfigDict, a file or a shipped name) with `overrides` set."""
  if isinstance(config, (str, os.PathLike)):
    name = os.fspath(config)
    try:
      config = configs.load(name)
    except Exception as e:  # pylint: disable=broad-except  # Whatever the file raised.
      raise Refused(f'config={name!r}: {errors.raised(e)}', cli.EXIT_BAD_INPUT) from e
  if not isinstance(config, ml_collections.ConfigDict):
    raise Refused(f'config={type(config).__name__}: give a ConfigDict, a config file\'s path '
                  "or a shipped config's name ('default', 'table', ...)", cli.EXIT_BAD_INPUT)
  config = ml_collections.ConfigDict(config.to_dict())  # Ours to change.
  config.lock()
  if not isinstance(overrides or {}, dict):
    raise Refused(f'overrides={type(overrides).__name__}: give a dict of dotted fields, '
                  "{'model.hidden_sizes': (64,)}", cli.EXIT_BAD_INPUT)
  for field, value in (overrides or {}).items():
    if not isinstance(field, str):
      raise Refused(f'overrides: the field {field!r} is not a dotted name '
                    "('learning_rate', 'model.hidden_sizes')", cli.EXIT_BAD_INPUT)
    *parents, name = field.split('.')
    node = config
    for parent in parents:
      node = node[parent] if parent in node and hasattr(node[parent], 'items') else None
      if node is None:
        break
    if node is None or name not in node:
      raise Refused(f'unknown config field {field!r} in the overrides', cli.EXIT_BAD_INPUT)
    if isinstance(node[name], ml_collections.ConfigDict) and node[name] and field != 'model.args':
      # Set whole, a section would lose the fields the value does not name
      # (model.args, a backbone's arguments, is one value: set whole).
      raise Refused(f'overrides: {field!r} is a section; set its fields one by one '
                    f'({field}.{next(iter(node[name]))!s}: ...)', cli.EXIT_BAD_INPUT)
    try:
      node[name] = _plain(value)
    except TypeError as e:
      raise Refused(f'{field}={value!r}: {e}', cli.EXIT_BAD_INPUT) from None
  return config


def _plain(value):
  """NumPy scalars (a loop over np.logspace) as Python's, inside tuples and lists too."""
  if isinstance(value, np.generic):
    return value.item()
  if isinstance(value, (tuple, list)):
    return type(value)(_plain(v) for v in value)
  if isinstance(value, dict):  # model.args
    return {k: _plain(v) for k, v in value.items()}
  return value


def train(config, workdir: str, *, data: dict | None = None,
          overrides: dict | None = None, model=None,
          continue_with_changes: bool = False) -> Trained:
  """Trains (or resumes) a run of `config` in `workdir`; returns its summary and workdir.

  Args:
    config: a ConfigDict, a config file's path, or a shipped config's name
      ('default', 'table', ...).
    workdir: the run's folder; one with checkpoints resumes, as the command does.
    data: optional in-memory splits, {'train': ..., 'test': ..., 'validation':
      ... (optional)}: each an (x, y) pair of arrays, or each a pandas
      DataFrame of a table (with `target_column` among its columns). They are
      kept in WORKDIR/data/, named by their contents, and become
      `config.dataset`: a resume must give the same data.
    overrides: {dotted field: value} set on a copy of `config`.
    model: a Flax linen module (class or instance) or NNX module class to
      train as the backbone (docs/models.md): recorded in the config as its
      import path, with a linen instance's fields as its arguments. It must
      be importable by that path to be used again in another process.
    continue_with_changes: a resume may change the continuable fields (more
      epochs, a new learning rate, ...), as --continue_with_changes allows.

  Raises:
    Refused: what the command line refuses (its message is the `error:` line),
      before anything is written.
  """
  workdir = _checked_call(workdir, data, overrides)
  renamed = {}
  with _refusals(renamed):
    config = _config(config, overrides)
    if model is not None:
      config.model.module, args = _module_fields(model)
      if args is not None:  # A class keeps the arguments the config gives it.
        config.model.args = args
    written = None
    if data is not None:
      path, contents = _in_memory(config, workdir, data)
      renamed[f'dataset={path!r}'] = 'data'  # A file the caller never named.
      # Everything that can refuse the run does so before the data is written
      # (a resume's digest check reads the file already there: the same path).
      train_lib.check_before_work(config, workdir, continue_with_changes)
      if not os.path.exists(path):
        written = (path, not os.path.exists(workdir))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        workdir_lib.write_bytes(path, contents)
    try:
      _, summary = train_lib.train_and_evaluate(config, workdir,
                                                continue_with_changes=continue_with_changes)
    except ValueError:  # A refusal of the data itself: the workdir as it was.
      if written and not workdir_lib.checkpoint_steps(workdir):
        _remove_data(workdir, *written)
      raise
  return Trained(summary, workdir)


def _checked_call(workdir, data, overrides) -> str:
  """`train`'s workdir as a str; refused: one that is no path, or overrides data= sets."""
  if not isinstance(workdir, (str, os.PathLike)):
    raise Refused(f'workdir={workdir!r}: give the run\'s folder as a path', cli.EXIT_BAD_INPUT)
  named = sorted(set(overrides or {}) & set(_DATA_SPLIT_FIELDS)) if isinstance(
      overrides, dict) else []
  if data is not None and named:
    raise Refused(f'overrides: {", ".join(named)} with data=: the data\'s keys are its '
                  "splits (give a validation split as data['validation'])",
                  cli.EXIT_BAD_INPUT)
  return os.fspath(workdir)


def _remove_data(workdir: str, path: str, made_workdir: bool) -> None:
  """Removes data `train` wrote for a run refused, and the workdir if it made it for that."""
  os.remove(path)
  folder = os.path.dirname(path)
  if not os.listdir(folder):
    os.rmdir(folder)
  if made_workdir and set(os.listdir(workdir)) <= {workdir_lock.LOCK_FILE}:
    shutil.rmtree(workdir, ignore_errors=True)


def _module_fields(model) -> tuple:
  """(import path, constructor arguments) of a module class or linen instance."""
  cls = model if isinstance(model, type) else type(model)
  path = f'{cls.__module__}:{cls.__qualname__}'
  if '<locals>' in cls.__qualname__:
    raise Refused(f'model={cls.__qualname__}: a class made inside a function cannot be '
                  'imported again to read the workdir; define it at the top level of a module',
                  cli.EXIT_BAD_INPUT)
  if cls.__module__ == '__main__':
    warnings.warn(f'model {cls.__qualname__} is defined in __main__ (a notebook or the script '
                  f'run), so config.json records {path!r}: only a process that defines it again '
                  'can read the workdir, not main.py --mode=eval|predict|export. Define it in '
                  'a module to hand the workdir on.', UserWarning, stacklevel=3)
  if isinstance(model, type):
    return path, None
  if not hasattr(cls, '__dataclass_fields__'):
    raise Refused(f'model={cls.__qualname__}(...): give an NNX module as its class (its '
                  "arguments in overrides={'model.args': ...}); an instance cannot be recorded",
                  cli.EXIT_BAD_INPUT)
  # The fields set to other than their defaults: what config.json records.
  fields = {}
  for f, spec in cls.__dataclass_fields__.items():
    value = _plain(getattr(model, f))
    if f in ('parent', 'name') or value is spec.default:
      continue
    if isinstance(value, np.ndarray) or hasattr(value, '__array__'):
      raise Refused(f'model={cls.__qualname__}: its field {f!r} holds an array; config.json '
                    'records plain values (numbers, strings, tuples)', cli.EXIT_BAD_INPUT)
    if value != spec.default:
      fields[f] = value
  return path, fields


_SPLIT = '__split__'  # The column a DataFrame's rows name their split in.
# What in-memory data sets itself: an override of them would be dropped.
_DATA_SPLIT_FIELDS = ('dataset', 'train_split', 'validation_split', 'test_split', 'split_column')


def _in_memory(config, workdir: str, data: dict) -> tuple:
  """(path, bytes) of in-memory splits as a file in WORKDIR/data/; points `config` at it."""
  pairs = isinstance(data, dict) and all(isinstance(v, tuple) and len(v) == 2
                                         for v in data.values())
  frames = isinstance(data, dict) and all(hasattr(v, 'columns') for v in data.values())
  if not (pairs or frames) or set(data) - {'train', 'validation', 'test'} or not (
      {'train', 'test'} <= set(data)):
    raise Refused(f'data={sorted(data) if isinstance(data, dict) else type(data).__name__!r}: '
                  'give a dict of train and test splits (optionally validation), each an '
                  '(x, y) pair of arrays, or each a DataFrame', cli.EXIT_BAD_INPUT)
  if pairs and any(hasattr(v[0], 'columns') for v in data.values()):
    # As arrays its column names would be dropped, and a reordered frame predicted silently.
    raise Refused("data: an (x, y) pair with x a DataFrame; give each split as one DataFrame "
                  "with the target among its columns (and set target_column), so its "
                  'columns are recorded and checked by name', cli.EXIT_BAD_INPUT)
  if pairs:
    contents, suffix = _npz({f'{k}_{split}': _numbers(f"data[{split!r}]'s {k}", v)
                             for split, pair in data.items()
                             for k, v in zip(('x', 'y'), pair)}), 'npz'
  else:
    contents, suffix = _parquet(data), 'parquet'
    config.split_column = _SPLIT
  config.dataset = workdir_lib.data_file(workdir, suffix, contents)
  config.train_split, config.test_split = 'train', 'test'
  config.validation_split = 'validation' if 'validation' in data else ''
  return config.dataset, contents


def _numbers(label: str, values) -> np.ndarray:
  """`values` as an array of numbers; refused in one line if they are not one."""
  try:
    array = np.asarray(values)
  except ValueError as e:  # Rows of different lengths.
    raise Refused(f'{label}: cannot be an array ({e})', cli.EXIT_BAD_INPUT) from None
  if array.dtype.kind not in 'biuf':
    raise Refused(f'{label}: holds {array.dtype} values, not numbers', cli.EXIT_BAD_INPUT)
  return array


def _npz(arrays: dict) -> bytes:
  """The arrays as .npz bytes, the same for the same arrays (no time stamps)."""
  buffer = io.BytesIO()
  with zipfile.ZipFile(buffer, 'w') as archive:
    for name, value in sorted(arrays.items()):
      entry = io.BytesIO()
      np.lib.format.write_array(entry, np.ascontiguousarray(value), allow_pickle=False)
      archive.writestr(zipfile.ZipInfo(name + '.npy', date_time=(1980, 1, 1, 0, 0, 0)),
                       entry.getvalue())
  return buffer.getvalue()


def _parquet(data: dict) -> bytes:
  """The DataFrames as one Parquet file's bytes, with a column naming each row's split."""
  import pandas as pd  # pylint: disable=g-import-not-at-top  # The caller has it.
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  columns = list(data['train'].columns)
  for split, frame in data.items():
    # One table: a column one split lacks would be read as missing in all its rows.
    theirs, ours = set(frame.columns), set(columns)
    missing = [c for c in columns if c not in theirs]
    extra = [c for c in frame.columns if c not in ours]
    if missing or extra:
      raise Refused(f"data[{split!r}]: has other columns than data['train']: "
                    + '; '.join(f'{what} {", ".join(map(repr, names))}' for what, names in
                                (('lacks', missing), ('adds', extra)) if names),
                    cli.EXIT_BAD_INPUT)
  frames = [frame.assign(**{_SPLIT: split}) for split, frame in data.items()]
  try:
    table = pa.Table.from_pandas(pd.concat(frames, ignore_index=True), preserve_index=False)
    sink = pa.BufferOutputStream()
    pq.write_table(table.replace_schema_metadata(None), sink)
  except (ValueError, TypeError, pa.ArrowException) as e:  # Numbers mixed with text, ...
    raise Refused(f'data: {"; ".join(map(str, e.args))}', cli.EXIT_BAD_INPUT) from None
  return sink.getvalue().to_pybytes()


def _write_frame(x, path: str, used: list) -> None:
  """The `used` columns of DataFrame `x` as a Parquet file; refused in one line if they cannot be.

  Other columns are left out unread, as a predictions file's are.
  """
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  if not all(hasattr(x, name) for name in ('columns', 'dtypes', 'iloc')):
    raise errors.ConfigError(f'x: a model trained on a table predicts a pandas DataFrame of its '
                             f'columns, not {type(x).__name__}')
  used = set(used)  # Names as the table had them: pyarrow writes every label as text.
  names = collections.Counter(str(c) for c in x.columns if str(c) in used)
  repeated = sorted(name for name, count in names.items() if count > 1)
  if repeated:  # Which one the model takes is a guess; pyarrow's message lists every column.
    raise errors.ConfigError(f'x: has more than one column named {", ".join(map(repr, repeated))}')
  try:
    table = pa.Table.from_pandas(x[[c for c in x.columns if str(c) in used]],
                                 preserve_index=False)
    pq.write_table(table, path)
  except (ValueError, TypeError, pa.ArrowException) as e:  # Numbers mixed with text, ...
    raise errors.ConfigError(f'x: {"; ".join(map(str, e.args))}') from None


class Model:
  """A trained workdir's model, restored from one checkpoint (see `load`)."""

  def __init__(self, workdir: str, checkpoint: str | int = 'latest'):
    self.workdir = workdir
    self.checkpoint = str(checkpoint)
    with _refusals():
      self.config = config_history.workdir_config(workdir, configs.load('default'))
      state, self.step, self.spec = restore_lib.restore(self.config, workdir, self.checkpoint)
    self._state = optimizers.params_for_eval(state)

  @property
  def input_spec(self) -> dict:
    """What the model takes: its input shape and dtype, a table's columns and ids, the classes."""
    return {'input_shape': self.spec.input_shape, 'input_dtype': self.spec.input_dtype,
            'columns': [column[0] for column in self.spec.columns],
            'id_columns': list(self.config.id_columns) if self.spec.columns else [],
            'class_names': list(self.spec.class_names)}

  @property
  def summary(self) -> str:
    """The model as a table (what --mode=summary prints)."""
    return model_summary.table(self.config, self.spec)

  @property
  def results(self) -> dict | None:
    """The run's summary.json, if it finished (else None)."""
    return workdir_lib.read_summary(self.workdir)

  def predict(self, x) -> dict:
    """Predictions of rows, images or a table's rows, as --mode=predict writes them.

    `x`: an array of rows ([rows, *input shape] or [rows, features]); or, for
    a model trained on a table, a pandas DataFrame with its feature columns
    and its id columns (`input_spec`; other columns are not read). Returns
    {column: values [rows]}: the predictions file's columns (a table's ids
    first), the very numbers it holds. Levels of a string column unseen in
    training are encoded as other, as the command does, with a
    UnseenLevelsWarning naming the columns and rows.
    """
    with _refusals(), tempfile.TemporaryDirectory() as folder:
      if self.spec.columns:
        path = os.path.join(folder, 'rows.parquet')
        _write_frame(x, path, self.input_spec['columns'] + self.input_spec['id_columns'])
        # Refusals name x, as the caller knows it, not the file it passed through.
        rows, ids, unseen = row_inputs.read_table(self.config, self.spec, path, named='x')
        if unseen:
          warnings.warn(f'x: {row_inputs.unseen_note(unseen)}', UnseenLevelsWarning,
                        stacklevel=2)
      else:
        rows = row_inputs.array_rows('x', np.asarray(x), self.spec.input_shape,
                                     self.spec.input_dtype)
        ids = {}
      return predict_rows.predictions(self._state, self.config, self.spec, rows, ids)

  def evaluate(self, split: str = '') -> dict:
    """--mode=eval: the figures of a split of the training data (default: the test split).

    Of the checkpoint this model holds (`step`), however the workdir's
    latest or best has moved since. Writes eval.json into the workdir, as
    the command does.
    """
    with _refusals():
      return restore_lib.evaluate_checkpoint(self.config, self.workdir, str(self.step), split)

  def export(self, export_format: str = 'jax') -> str:
    """--mode=export: 'jax', 'onnx' or 'savedmodel', of this model's step; returns the folder."""
    if export_format not in ('jax', 'onnx', 'savedmodel'):
      raise Refused(f'export_format={export_format!r}: one of jax, onnx, savedmodel',
                    cli.EXIT_BAD_INPUT)
    with _refusals():
      return cli.export(self.config, self.workdir, str(self.step), export_format)


def load(workdir: str, checkpoint: str | int = 'latest') -> Model:
  """The model of trained `workdir` at `checkpoint` ('latest', 'best' or a step).

  Its own config.json says how it was trained; nothing of the workdir is run.
  """
  return Model(workdir, checkpoint)
