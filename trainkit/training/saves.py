"""One run's checkpoint saves: one at a time, in a thread; the best epoch held between them.

The training loop's live state is donated to the next device call, and
Orbax's save and the checksum take host time the device would wait for: a
save works on a copy made on the device, in this process's saving thread.
An epoch not due a save is held (a copy) while it is the best by validation
so far and saved before the next checkpoint, so the best checkpoint is the
best of every epoch however seldom epochs are saved. Where epochs are held
anyway, the copy of the best saved is kept to the end: the test split's
best figures evaluate it without reading it back (trainkit/training/run.py).
"""

import concurrent.futures
import math

import jax

from trainkit.checkpoints import manager as checkpointing
from trainkit.runtime import parallel
from trainkit.tasks import selection
from trainkit.training import state as state_lib
from trainkit.workdirs import full_disk

# The thread that runs every checkpoint save of this process, one at a time:
# Orbax's asynchronous saves from several threads at once (a sweep group's
# members) wait on each other's signals.
_SAVER = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix='checkpoint')


class Saves:
  """The saves of one run's checkpoints through its Orbax `manager`."""

  def __init__(self, manager, checkpoint_dir: str, best_metric: str | None,
               keeps_best: bool, meta_at):
    """`keeps_best`: the run holds epochs between saves, so the best saved copy is kept.

    `meta_at(step)`: the loop counters a checkpoint of `step` saves, as of now.
    """
    self.manager, self.checkpoint_dir, self.best_metric = manager, checkpoint_dir, best_metric
    self._keeps_best, self._meta_at = keeps_best, meta_at
    self._saving = None  # The save in flight (a Future of _SAVER).
    self._held = None  # (step, state copy, meta, metrics, input state) of the held epoch.
    self._best_saved = None  # (step, score, state copy) of the best this process saved.
    _, figures = checkpointing.best(manager, best_metric)  # A resumed run's best so far.
    self._best_score = -math.inf if figures is None else self._score(figures)

  def save(self, step: int, state, eval_metrics: dict | None = None,
           input_state: dict | None = None) -> None:
    """Starts an asynchronous save of `state` with the loop counters.

    With `eval_metrics` of the validation split (an epoch's end), the
    checkpoint is ranked for keep-the-best (selection.py); the test split's
    rank nothing. `input_state` is a streamed input's position after `step`
    (calls.train_calls). A held best epoch is saved first, unless this one
    ranks as high.
    """
    metrics = self._ranked(eval_metrics)
    held, self._held = self._held, None
    if held is not None and not (metrics and self._score(metrics) >= self._score(held[3])):
      self._save(*held, copied=True)
    if metrics:
      self._best_score = max(self._best_score, self._score(metrics))
    self._save(step, state, self._meta_at(step), metrics, input_state)

  def hold_if_best(self, step: int, state, eval_metrics: dict,
                   input_state: dict | None = None) -> None:
    """Keeps a copy of an epoch not due a save if it is the best by validation so far.

    It is saved before the next checkpoint. A run killed before then redoes
    the epochs from its last checkpoint and finds the same one again.
    """
    metrics = self._ranked(eval_metrics)
    if not metrics or self._score(metrics) < self._best_score:  # Ties: the later, as Orbax.
      return
    self._best_score = self._score(metrics)
    self._held = (step, state_lib.copied(state), self._meta_at(step), metrics, input_state)

  def best_copy(self, step: int):
    """The kept copy of checkpoint `step` if it is the one kept (else None); it goes."""
    kept, self._best_saved = self._best_saved, None
    return kept[2] if kept is not None and kept[0] == step else None

  def close(self, diverged: bool, failed: bool) -> None:
    """Ends the saves: a best epoch held before a divergence is saved first.

    The best checkpoint is then the best of the good epochs. After a failure
    or a divergence no test figures follow, and the kept copy goes.
    """
    held, self._held = self._held, None
    if held is not None and diverged:
      self._save(*held, copied=True)
    if diverged or failed:
      self._best_saved = None
    self._wait()
    with full_disk.writing('a checkpoint', self.checkpoint_dir):
      self.manager.wait_until_finished()

  def _ranked(self, eval_metrics: dict | None) -> dict | None:
    """A checkpoint's figures that rank it for keep-the-best, or None."""
    if not (eval_metrics and self.best_metric):
      return None
    return {selection.key(name): value for name, value in eval_metrics.items()}

  def _score(self, metrics: dict) -> float:
    return selection.checkpoint_score(self.best_metric, metrics)

  def _save(self, step: int, state, meta: dict, metrics: dict | None,
            input_state: dict | None, copied: bool = False) -> None:
    """Saves one checkpoint, after the one in flight; `copied`: `state` is a copy of its own."""
    self._wait()
    # Room for this checkpoint and the one Orbax may still be committing, or
    # no save at all: one that runs out of space fails in Orbax's threads.
    needed = 2 * sum(x.nbytes for x in jax.tree.leaves(state)) + 2**20
    if parallel.any_process(full_disk.free_bytes(self.checkpoint_dir) < needed):
      raise full_disk.DiskFull(f'checkpoint {step}', self.checkpoint_dir, needed)
    if jax.process_count() > 1:
      # Orbax synchronises the processes with device collectives, which must
      # stay in order with the training thread's.
      checkpointing.save(self.manager, step, state, meta, metrics, input_state)
      return
    if not copied:
      state = state_lib.copied(state)
    # Kept while it is the best saved (ties: the later, as Orbax ranks them):
    # where epochs are held, a held copy is no less, so the peak is no higher;
    # saving every epoch, keeping it to the end would be one more state.
    if self._keeps_best and metrics and (self._best_saved is None
                                         or self._score(metrics) >= self._best_saved[1]):
      self._best_saved = (step, self._score(metrics), state)
    self._saving = _SAVER.submit(checkpointing.save, self.manager, step, state, meta,
                                 metrics, input_state)

  def _wait(self) -> None:
    """Waits for the save in flight, if any; raises what it raised."""
    if self._saving is not None:
      saving, self._saving = self._saving, None
      with full_disk.writing('a checkpoint', self.checkpoint_dir):
        saving.result()
