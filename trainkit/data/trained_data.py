"""The data a workdir was trained on: a resume or an evaluation on other data is refused.

A table's or an .npz file's workdir records the digest of the files' bytes
in model.json (`data_fingerprint`); how they are read (separator,
encoding) is in its config, which a resume may not change. A file
changed since, read under the same name, would otherwise resume with
another epoch length, another encoding and other splits (rows of the
training split landing in the test split), or evaluate on rows the model
trained on. Both are refused in one line before any work; predict and
export read no training data, and use the stored encoding.
"""

import os

from trainkit.data import sources
from trainkit.workdirs import layout as workdir_lib


def _stored_fingerprint(workdir: str) -> str:
  try:
    return workdir_lib.ModelSpec.read(workdir).data_fingerprint
  except (FileNotFoundError, workdir_lib.WorkdirError):
    return ''  # No spec yet, or one a run writes again: nothing recorded to hold to.


def check(config, workdir: str, doing: str) -> None:
  """Refuses `doing` ('resume', 'eval') in `workdir` on data of another digest."""
  if not os.path.isdir(workdir) or not workdir_lib.checkpoint_steps(workdir):
    return
  stored = _stored_fingerprint(workdir)
  if not stored:
    return
  now = sources.open_source(config).fingerprint()
  if now == stored:
    return
  fix = ('train in a new --workdir to start over on it' if doing == 'resume' else
         'evaluate on the data it was trained on; --mode=predict takes new rows')
  raise sources.DataError(
      f'dataset={config.dataset!r} is not the data --workdir={workdir!r} was trained on '
      f'(its digest is {now}, the workdir\'s {stored}: the file changed); {fix}')
