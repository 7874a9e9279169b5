"""What a run's workdir holds: every file's name, and the model spec.

Light on purpose (no JAX): report.py reads workdirs with it alone.
"""

import contextlib
import dataclasses
import hashlib
import json
import os
import re

from trainkit import errors

CONFIG = 'config.json'  # The resolved config.
HISTORY = 'config_history.jsonl'  # Config changes accepted on resumes.
MODEL_SPEC = 'model.json'  # What rebuilds the model besides config and checkpoint.
MODEL_SUMMARY = 'model_summary.txt'  # The model as a table.
LOCK = '.lock'  # The run's OS lock (trainkit/workdirs/lock.py).
CHECKPOINTS = 'checkpoints'
BROKEN_CHECKPOINTS = 'broken_checkpoints'
METRICS = 'metrics.jsonl'
SUMMARY = 'summary.json'
EVAL = 'eval.json'  # --mode=eval.
PLOTS = 'plots'
# In PLOTS: the test predictions, and what a run draws from them.
PREDICTIONS = 'predictions.npz'
# What a run draws, by the kind of plots its task declares (tasks' PLOTS): of
# classes, a confusion matrix and the worst errors (drawn of images only, so a
# run on features draws its plots again when run again); of real values,
# predicted against true at the least (1-D data adds its fits).
PLOT_FILES = {'classes': ('learning_curves.png', 'confusion_matrix.png', 'worst_errors.png',
                          PREDICTIONS),
              'values': ('learning_curves.png', 'predicted_vs_true.png', PREDICTIONS)}
PROFILE = 'profile'
# In-memory data the Python API trained on, named by its contents: DATA/<kind>-<digest>.<kind>.
DATA = 'data'
_HELD = re.compile(r'(npz|parquet)-[0-9a-f]{16}\.(npz|parquet)')
EXPORT = os.path.join('export', 'saved_model')  # --mode=export.
# What a run reads back or rewrites in place: each must be of its kind.
FILES = (CONFIG, HISTORY, MODEL_SPEC, MODEL_SUMMARY, LOCK, METRICS, SUMMARY, EVAL)
FOLDERS = (CHECKPOINTS, PLOTS)


def data_file(workdir: str, suffix: str, contents: bytes) -> str:
  """Where in `workdir` in-memory data written as `contents` (a .`suffix` file) is kept."""
  name = f'{suffix}-{hashlib.sha256(contents).hexdigest()[:16]}.{suffix}'
  return os.path.join(os.path.abspath(workdir), DATA, name)


def held_data(workdir: str, dataset: str) -> str:
  """`dataset`, or this workdir's own copy of it (data the API wrote into it).

  config.json names the file in the workdir the run trained in; a workdir
  copied or moved since reads its own copy, so it is self-contained.
  """
  name = os.path.basename(dataset)
  if os.path.basename(os.path.dirname(dataset)) != DATA or not _HELD.fullmatch(name):
    return dataset
  here = os.path.join(os.path.abspath(workdir), DATA, name)
  return here if os.path.isfile(here) else dataset


class WorkdirError(ValueError):
  """A file of the workdir that cannot be used as it is; a one-line refusal."""


def check_kinds(directory: str, files=FILES, folders=FOLDERS) -> None:
  """Refuses a folder where `directory` keeps a file, or a file where a folder.

  Before any work: the run would fail on it later (a rename onto a folder,
  a checkpoint into a file) with a traceback.
  """
  for names, kind, ok in ((files, 'file', os.path.isfile), (folders, 'folder', os.path.isdir)):
    for name in names:
      path = os.path.join(directory, name)
      if os.path.lexists(path) and not ok(path):
        raise WorkdirError(f'{path} should be a {kind} and is not; move it out of the way '
                           '(the run keeps its own there)')


def checkpoint_dir(workdir: str) -> str:
  """The absolute path of a workdir's checkpoints (Orbax wants it absolute)."""
  return os.path.join(os.path.abspath(workdir), CHECKPOINTS)


def checkpoint_steps(workdir: str) -> list:
  """The steps of the workdir's complete checkpoints, sorted (by their folder names)."""
  directory = checkpoint_dir(workdir)
  if not os.path.isdir(directory):
    return []
  return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


def write_text(path: str, text: str) -> None:
  """Writes `text` to `path` whole or not at all (write_bytes)."""
  write_bytes(path, text.encode())


def write_bytes(path: str, data: bytes) -> None:
  """Writes `data` to `path` whole or not at all (a temporary file renamed).

  A full disk or a kill never leaves a half-written file for the next run to
  read, nor a broken artifact beside a valid one. In a multi-process run,
  process 0 only calls it.
  """
  with replaced(path, 'wb') as f:
    f.write(data)


@contextlib.contextmanager
def replaced(path: str, mode: str = 'w', **kwargs):
  """A new file (open(..., mode)) that replaces `path` when the block ends, whole or not at all.

  Written as a temporary file beside it, renamed at the end: a kill or a
  failure inside the block leaves `path` as it was.
  """
  temporary = f'{path}.tmp-{os.getpid()}'
  try:
    with open(temporary, mode, **kwargs) as f:
      yield f
    os.replace(temporary, path)
  finally:
    if os.path.exists(temporary):
      os.remove(temporary)


def write_json(path: str, obj) -> None:
  """Writes `obj` as indented JSON, whole or not at all (write_text)."""
  write_text(path, json.dumps(obj, indent=2) + '\n')


def ends_a_line(path: str) -> bool:
  """Whether the non-empty file `path` ends with a newline (its last line is whole)."""
  with open(path, 'rb') as f:
    f.seek(-1, os.SEEK_END)
    return f.read(1) == b'\n'


def read_records(path: str) -> list:
  """The whole JSON objects of a JSON-lines file, one per line, in order.

  A line cut short (a kill, a full disk) or garbled is left out: such files
  are only ever appended to, so nothing after it depends on it.
  """
  try:
    with open(path, 'rb') as f:
      lines = f.read().split(b'\n')
  except FileNotFoundError:
    return []
  records = []
  for line in lines:
    try:
      record = json.loads(line)
    except ValueError:  # Cut short, empty or not JSON (also not UTF-8).
      continue
    if isinstance(record, dict):
      records.append(record)
  return records


def read_summary(workdir: str) -> dict | None:
  """The workdir's summary.json, or None if it has none that reads as one.

  A summary is derived from the checkpoints: one cut short or replaced by
  anything else is written again by the next run there (which re-evaluates
  a finished workdir whose summary does not read whole), never trusted.
  """
  try:
    with open(os.path.join(workdir, SUMMARY)) as f:
      summary = json.load(f)
  except (OSError, ValueError):
    return None
  return summary if isinstance(summary, dict) else None


def _frozen(value):
  """JSON lists as (nested) tuples: a spec is hashable."""
  return tuple(_frozen(v) for v in value) if isinstance(value, list) else value


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """What the dataset tells the model, so inference needs no dataset.

  Attributes:
    num_classes: output classes (classification; 0 for other tasks).
    input_shape: one input's shape, e.g. (28, 28, 1) for an MNIST image.
    shift: inputs are scaled as (x - shift) / scale inside the model; a
      number, or a tuple with one per input feature (flattened).
    scale: see `shift`.
    steps_per_epoch: training steps per epoch (the schedules are in steps).
    input_dtype: the inputs' dtype as stored ('uint8' for images).
    target_shape: one target's shape (regression and mixtures; () = a scalar).
    target_shift: the targets' training mean per element (the model predicts
      (y - target_shift) / target_scale; metrics are in y's own units).
    target_scale: the targets' training std-dev per element.
    columns: a table's columns as features, each (name, kind, fill,
      indicator, levels) (trainkit/data/sources/tables.py); () for other data.
    class_names: a table's class names by class index (predictions show them).
    numeric_classes: the class names are a number column's values: the
      Python API predicts them as integers, as the labels were given.
    class_weights: the weight of each class in the training loss; () = none.
    bins: per input feature, the edges of its quantile bins on the training
      rows (model.family='tabm' embeds the features that have them); () for
      none.
    data_fingerprint: a digest of the bytes of the table's or .npz file the
      model was trained on; '' for other data. A resume, or an evaluation, on
      files of another digest is refused.
    module_digest: a digest of the backbone class's source ('' for the
      built-in models); a restore by changed code warns.
  """
  num_classes: int
  input_shape: tuple
  shift: float | tuple
  scale: float | tuple
  steps_per_epoch: int
  input_dtype: str = 'uint8'
  target_shape: tuple = ()
  target_shift: tuple = ()
  target_scale: tuple = ()
  columns: tuple = ()
  class_names: tuple = ()
  numeric_classes: bool = False
  class_weights: tuple = ()
  data_fingerprint: str = ''
  bins: tuple = ()
  module_digest: str = ''

  @property
  def input_name(self) -> str:
    """What an exported model calls its input: 'images' ([H, W, C]) or 'features'."""
    return 'images' if len(self.input_shape) == 3 else 'features'

  def write(self, workdir: str) -> None:
    write_json(os.path.join(workdir, MODEL_SPEC), dataclasses.asdict(self))

  @classmethod
  def read(cls, workdir: str) -> 'ModelSpec':
    """The spec a training run wrote (FileNotFoundError if there is none).

    One that cannot be read as a spec is a WorkdirError naming it (a
    training run writes it anew; eval, predict and export need it).
    """
    path = os.path.join(workdir, MODEL_SPEC)
    try:
      with open(path) as f:
        fields = json.load(f)
      if 'image_shape' in fields:  # Written before inputs were more than images.
        fields['input_shape'] = fields.pop('image_shape')
      return cls(**{k: _frozen(v) for k, v in fields.items()})
    except FileNotFoundError:
      raise
    except (OSError, ValueError, TypeError, KeyError) as e:
      raise WorkdirError(f'{path} cannot be read as a model spec ({type(e).__name__}); '
                         'a training run in the workdir writes it again') from None


def check_workdir(workdir: str) -> None:
  """The workdir must be a writable directory or creatable as one.

  Each file and folder a run keeps there must be of its kind (check_kinds).
  """
  path = os.path.abspath(workdir)
  if os.path.exists(path):
    errors.require(os.path.isdir(path), '--workdir', workdir, 'is not a directory')
    errors.require(os.access(path, os.W_OK | os.X_OK), '--workdir', workdir,
                   'is not writable')
    check_kinds(path)
  else:
    parent = os.path.dirname(path)
    while not os.path.exists(parent):
      parent = os.path.dirname(parent)
    errors.require(os.path.isdir(parent) and os.access(parent, os.W_OK), '--workdir',
                   workdir, f'cannot be created in {parent}')
