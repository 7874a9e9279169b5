"""The device calls' input: each epoch's order, a call's stacked batches, eval batches.

What the training loop and the evaluation read of placed `pipeline.Data`,
one device call at a time. In mode 'device' an epoch's order is drawn on the
device and a call needs nothing from the host but a slice of indices; in
mode 'stream' each call's batches are read, stacked and sent one call ahead
of the one running. The order of an epoch is a pure function of (seed,
epoch), so a run resumed at step s of an epoch sees exactly the batches an
uninterrupted run would.
"""

import collections
import functools
import math
from collections.abc import Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from trainkit.data import streaming
from trainkit.data.pipeline import Data
from trainkit.data.pipeline import eval_part
from trainkit.data.pipeline import stack_eval_batches
from trainkit.runtime import parallel

# A streamed evaluation sends at most this many bytes of inputs per call:
# a call's inputs are held about three times over (read, stacked, on the
# device), so this bounds the trainer's memory whatever the split's size.
_EVAL_CALL_BYTES = 8 << 20


def epoch_seed(seed: int, epoch: int) -> int:
  """A 31-bit shuffle seed for `epoch`, derived from the run's seed."""
  return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0] >> 1)


# A streamed call's batches are read, stacked and sent at once (each held by
# Grain in shared memory until then): at most this many steps per call,
# whatever steps_per_call asks, so the host holds a bounded number of batches.
_STREAM_CALL_STEPS = 100


def steps_per_call(config, data: Data) -> int:
  """Steps per device call: config.steps_per_call (0: the epoch's rest), capped when streamed."""
  if data.mode == 'stream':
    return min(config.steps_per_call or _STREAM_CALL_STEPS, _STREAM_CALL_STEPS)
  return config.steps_per_call


def steps_per_epoch(data: Data, global_batch_size: int) -> int:
  """Full training batches per epoch (the remainder is dropped, reshuffled)."""
  return data.num_train // global_batch_size


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4, 5))
def _epoch_order(seed, num_examples: int, steps: int, batch_size: int, pad: int,
                 sharding):
  """Example indices [steps + pad, batch]: a permutation, then `pad` rows of 0."""
  order = jax.random.permutation(jax.random.key(seed), num_examples)[:steps * batch_size]
  order = order.reshape(steps, batch_size).astype(jnp.int32)
  order = jnp.pad(order, ((0, pad), (0, 0)))
  return jax.lax.with_sharding_constraint(order, sharding)


def device_epoch_order(data: Data, seed: int, epoch: int, batch_size: int,
                       pad: int) -> jax.Array:
  """Mode 'device': the example indices [steps + pad, batch] of `epoch`.

  The same in every process; the rows are split over `data.mesh`.
  """
  return _epoch_order(epoch_seed(seed, epoch), data.num_train,
                      data.num_train // batch_size, batch_size, pad,
                      parallel.row_sharding(data.mesh))


@functools.partial(jax.jit, static_argnums=2)
def _rows(order, start, length: int):
  return jax.lax.dynamic_slice_in_dim(order, start, length)


def _prefetch_to_device(iterator: Iterator, mesh, size: int = 2) -> Iterator:
  """Keeps `size` (steps, batches, state) in flight to the devices ahead of the consumer."""
  queue = collections.deque()
  for steps, batches, state in iterator:
    queue.append((steps, parallel.global_rows(batches, mesh), state))
    if len(queue) == size:
      yield queue.popleft()
  while queue:
    yield queue.popleft()


def train_calls(data: Data, config, epoch: int, spans: Sequence[tuple[int, int]],
                call_length: int, resume: dict | None = None
                ) -> Iterator[tuple[int, dict, dict | None]]:
  """Yields, per (start, stop) span of steps of `epoch`, one call's input.

  Each item is (steps, batches, input state) with batches of leading size
  `call_length` >= steps, the rows past `steps` being padding, so every call
  has one shape and the step is compiled once. Mode 'device' yields
  {'index': [call_length, batch]} positions into `data.train` and no state;
  mode 'stream' yields the stacked batches {'x': [call_length, batch,
  ...], 'y': [call_length, batch]} and the input state after them (the
  Grain iterator's, with where it stands), which a checkpoint at the call's
  end saves and `resume` takes back.
  """
  if data.mode == 'device':
    steps = steps_per_epoch(data, config.batch_size)
    if len(spans) == 1 and spans[0] == (0, steps) and call_length >= steps:
      # The whole epoch in one call (a small table's hundreds of epochs): its
      # order padded to the call's length is the call's input as it stands.
      yield steps, {'index': device_epoch_order(data, config.seed, epoch, config.batch_size,
                                                call_length - steps)}, None
      return
    order = device_epoch_order(data, config.seed, epoch, config.batch_size, call_length)
    for start, stop in spans:
      yield stop - start, {'index': _rows(order, start, call_length)}, None
    return
  if not spans:
    return
  first = epoch * steps_per_epoch(data, config.batch_size) + spans[0][0]
  stream = data.stream
  if stream is None or stream.position != first or stream.key != (
      config.seed, config.batch_size, config.num_epochs):
    close_stream(data)
    stream = data.stream = streaming.Stream(
        data, config, [epoch_seed(config.seed, e) for e in range(config.num_epochs)],
        first, resume)

  def stacked():
    for start, stop in spans:
      steps = stream.take(stop - start)
      state = stream.state()
      steps += [jax.tree.map(np.zeros_like, steps[0])] * (call_length - len(steps))
      yield stop - start, {k: np.stack([b[k] for b in steps]) for k in steps[0]}, state
  yield from _prefetch_to_device(stacked(), data.mesh)


def close_stream(data: Data) -> None:
  """Ends a streamed run's input (its worker processes), if one is open."""
  if data.stream is not None:
    data.stream.close()
    data.stream = None


def eval_calls(data: Data, batch_size: int) -> Iterator[dict]:
  """Yields the test split as stacked, padded, masked eval batches, per call.

  Mode 'device': the whole split, one call. Mode 'stream': as many batches
  per call as fit in `_EVAL_CALL_BYTES` of inputs (at least one); every
  process makes the same number of calls of the same shapes (the processes
  with fewer examples add masked batches), each its share of the global batch.
  """
  if data.mode == 'device':
    yield data.test
    return
  processes = jax.process_count()
  local_batch = parallel.padded_batch_size(batch_size, data.mesh) // processes
  # The largest share decides how many batches every process sends.
  largest_share = -(-data.num_test // processes)
  num_batches = max(1, -(-largest_share // local_batch))
  per_call = max(1, _EVAL_CALL_BYTES // (local_batch * math.prod(data.input_shape)
                                          * np.dtype(data.input_dtype).itemsize))
  local = streaming.local_eval_batches(data, local_batch)
  empty = {'x': np.zeros((0, *data.input_shape), data.input_dtype),
           'y': np.zeros((0, *data.target_shape), data.target_dtype)}
  for first in range(0, num_batches, per_call):
    group = [stack_eval_batches(eval_part(next(local, empty)), local_batch)
             for _ in range(min(per_call, num_batches - first))]
    yield parallel.global_rows(
        jax.tree.map(lambda *x: np.concatenate(x), *group), data.mesh)
