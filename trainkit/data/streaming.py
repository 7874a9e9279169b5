"""The streamed input: Grain reading a random-access source, epoch after epoch.

Every global batch of an epoch is a slice of one index-shuffled order of the
whole split (Grain's `MapDataset.shuffle`: a permutation computed per index,
no buffer), and each process reads and decodes only its own rows of it, so the
batches are the same for any number of processes and host memory does not
grow with the dataset. One Grain iterator serves a run's every epoch (its
worker processes start once), and its state, with the global step it stands
at, goes into each checkpoint (calls.train_calls).
"""

import ctypes
import functools
import os
import threading
import time

from absl import logging
import jax


# How often a worker process checks that the trainer that started it lives.
_PARENT_CHECK_S = 0.5
# glibc's mallopt parameter for the most malloc arenas, and the cap set on
# workers.
_M_ARENA_MAX, _WORKER_ARENAS = -8, 2


def _init_worker(worker_index: int, worker_count: int) -> None:
  """Grain's worker_init_fn: bounded memory, and an end within a second of the trainer's.

  Memory: the ArrayRecord reader reads from a pool of threads, and glibc
  gives each thread a malloc arena of its own that grows with the spread of
  the reads over the files: a worker took 100 MB more on 16x MNIST than on
  1x. Two arenas hold what the reads need.

  The end: a trainer killed by SIGKILL (routine preemption) runs no cleanup,
  and its workers, re-parented to init, would live on with their memory (and
  keep Python's resource tracker alive). A thread of the worker's own checks
  its parent; PR_SET_PDEATHSIG is no substitute, as it follows the thread
  that started the worker, not the process.
  """
  del worker_index, worker_count
  try:
    ctypes.CDLL('libc.so.6').mallopt(_M_ARENA_MAX, _WORKER_ARENAS)
  except (OSError, AttributeError):  # Not glibc: its allocator is its own business.
    pass
  parent = os.getppid()

  def watch():
    while os.getppid() == parent:
      time.sleep(_PARENT_CHECK_S)
    os._exit(1)  # pylint: disable=protected-access

  threading.Thread(target=watch, daemon=True, name='exit-with-parent').start()


def _own_rows(lo: int, hi: int, rows):
  return rows[lo:hi]


def epoch_batches(data, config, epoch_seed: int):
  """Grain: this process's rows of each global batch of one epoch, read and decoded."""
  import grain  # pylint: disable=g-import-not-at-top
  local = config.batch_size // jax.process_count()
  lo = jax.process_index() * local
  return (grain.MapDataset.range(data.num_train)
          .shuffle(seed=epoch_seed)
          .batch(config.batch_size, drop_remainder=True)
          .map(functools.partial(_own_rows, lo, lo + local))
          .map(data.train.read))


class Stream:
  """One run's streamed input: a Grain iterator over all its epochs, and where it stands.

  `position` is the global step whose batch `next()` returns. `resume` is the
  input state of the checkpoint being resumed (`state()` as saved): when it
  stands at `first` and was made with as many workers, the iterator is
  restored from Grain's saved state; otherwise it starts at `first` by index
  (the same batches: the order is a pure function of seed, epoch and step).
  """

  def __init__(self, data, config, epoch_seeds: list, first: int, resume: dict | None):
    import grain  # pylint: disable=g-import-not-at-top
    self.key = (config.seed, config.batch_size, len(epoch_seeds))
    self.workers = data.workers
    fits = bool(resume and resume.get('position') == first and
                resume.get('workers') == self.workers and resume.get('grain') is not None)
    self.start = resume['start'] if fits else first
    epochs = [epoch_batches(data, config, seed) for seed in epoch_seeds]
    batches = grain.MapDataset.concatenate(epochs) if len(epochs) > 1 else epochs[0]
    iterator = batches[self.start:].to_iter_dataset(
        grain.ReadOptions(num_threads=1 if self.workers else 2, prefetch_buffer_size=4))
    if self.workers:
      iterator = iterator.mp_prefetch(grain.MultiprocessingOptions(num_workers=self.workers),
                                      worker_init_fn=_init_worker)
    self.iterator = iter(iterator)
    self.position = first
    if fits:
      self.iterator.set_state(resume['grain'])
      logging.info('Input resumed from its saved Grain state at step %d.', first)

  def take(self, n: int) -> list:
    """The next `n` batches."""
    batches = [next(self.iterator) for _ in range(n)]
    self.position += n
    return batches

  def state(self) -> dict:
    """Where the input stands, for a checkpoint (JSON)."""
    return {'start': self.start, 'position': self.position, 'workers': self.workers,
            'grain': self.iterator.get_state()}

  def close(self) -> None:
    """Stops the worker processes."""
    self.iterator.close()


def local_eval_batches(data, local_batch: int):
  """This process's share of the test split, in order, in batches of `local_batch`."""
  import grain  # pylint: disable=g-import-not-at-top
  processes, index = jax.process_count(), jax.process_index()
  share = -(-data.num_test // processes)
  lo, hi = min(index * share, data.num_test), min((index + 1) * share, data.num_test)
  if lo == hi:
    return
  # One reading thread, as tfds_source.read_all: decoding holds the GIL, and
  # each thread would grow a malloc arena of its own.
  iterator = iter(grain.MapDataset.range(lo, hi).batch(local_batch)
                  .map(data.test.read).to_iter_dataset(
                      grain.ReadOptions(num_threads=1, prefetch_buffer_size=4)))
  try:
    yield from iterator
  finally:
    iterator.close()
