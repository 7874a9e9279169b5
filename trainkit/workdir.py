"""What a run's workdir holds: every file's name, and the model spec.

Light on purpose (no JAX): report.py reads workdirs with it alone.
"""

import dataclasses
import json
import os

CONFIG = 'config.json'  # The resolved config.
MODEL_SPEC = 'model.json'  # What rebuilds the model besides config and checkpoint.
CHECKPOINTS = 'checkpoints'
BROKEN_CHECKPOINTS = 'broken_checkpoints'
METRICS = 'metrics.jsonl'
SUMMARY = 'summary.json'
EVAL = 'eval.json'  # --mode=eval.
PLOTS = 'plots'
# In PLOTS: the test predictions, and what a run draws from them.
PREDICTIONS = 'predictions.npz'
PLOT_FILES = ('learning_curves.png', 'confusion_matrix.png', 'worst_errors.png',
              PREDICTIONS)
PROFILE = 'profile'
EXPORT = os.path.join('export', 'saved_model')  # --mode=export.


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
  """Writes `text` to `path` whole or not at all (a temporary file renamed).

  A full disk or a kill never leaves a half-written file for the next run to
  read. In a multi-process run, process 0 only calls it.
  """
  temporary = f'{path}.tmp-{os.getpid()}'
  try:
    with open(temporary, 'w') as f:
      f.write(text)
    os.replace(temporary, path)
  finally:
    if os.path.exists(temporary):
      os.remove(temporary)


def write_json(path: str, obj) -> None:
  """Writes `obj` as indented JSON, whole or not at all (write_text)."""
  write_text(path, json.dumps(obj, indent=2) + '\n')


def read_summary(workdir: str) -> dict | None:
  """The workdir's summary.json, or None if it has none that reads as one.

  A summary is derived from the checkpoints: one cut short or replaced by
  anything else is written again by the next run there (which re-evaluates
  a finished workdir), never trusted.
  """
  try:
    with open(os.path.join(workdir, SUMMARY)) as f:
      summary = json.load(f)
  except (OSError, ValueError):
    return None
  return summary if isinstance(summary, dict) else None


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """What the dataset tells the model, so inference needs no dataset.

  Attributes:
    num_classes: output classes.
    image_shape: one image's shape, e.g. (28, 28, 1).
    shift: inputs are scaled as (pixels - shift) / scale inside the model.
    scale: see `shift`.
    steps_per_epoch: training steps per epoch (the schedules are in steps).
  """
  num_classes: int
  image_shape: tuple
  shift: float
  scale: float
  steps_per_epoch: int

  def write(self, workdir: str) -> None:
    write_json(os.path.join(workdir, MODEL_SPEC),
               {**dataclasses.asdict(self), 'image_shape': list(self.image_shape)})

  @classmethod
  def read(cls, workdir: str) -> 'ModelSpec':
    """The spec a training run wrote (FileNotFoundError if there is none)."""
    with open(os.path.join(workdir, MODEL_SPEC)) as f:
      fields = json.load(f)
    return cls(**{**fields, 'image_shape': tuple(fields['image_shape'])})
