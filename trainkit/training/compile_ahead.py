"""A run's programs compiled while its data loads.

On a machine's first run, preparing the dataset takes seconds and so does
compiling the run's programs (the initialisation, the train call, the epoch's
order, the evaluations), one after the other. The shapes those programs take
are known before a single example is read: the source's metadata gives its
fields and the sizes of its splits (input_pipeline.predicted_data). So a
thread runs the run's own code on zeros of those shapes while the data loads:
it initialises a state, trains a call of zero steps, evaluates and predicts
as the plots do, and jit keeps what that compiled, keyed by function and
argument types. The run then finds its programs compiled. Nothing else is
kept: the zeros, the state and the results are dropped. Where a prediction
misses (or a source learns its sizes only by reading), the run compiles what
it needs itself, as before.

Compiling releases the GIL, so this runs on the core that preparation and
decoding (Python) leave free. The run waits for the thread before it builds
its own programs, so the two never compile the same one twice. A sweep's or
search's members share these programs (their differing values are carried
in the state, trainkit/training/carried_values.py), so the first member finds them
compiled too.
"""

import contextlib
import threading

from absl import logging
import jax

from trainkit.data import calls
from trainkit.data import pipeline as input_pipeline
from trainkit.runtime import parallel
from trainkit.training import cadence
from trainkit.training import evaluation
from trainkit.training import programs
from trainkit.training import state as state_lib


@contextlib.contextmanager
def while_loading(config, enabled: bool = True):
  """Compiles `config`'s programs in a thread while the block loads the data.

  Single-process runs only: the thread's calls would run collectives that
  the other processes are not making. The block's end waits for the thread.
  """
  if jax.process_count() > 1 or not enabled:
    yield
    return
  thread = threading.Thread(target=_rehearse, args=(config,), name='compile-ahead',
                            daemon=True)
  thread.start()
  try:
    yield
    logging.info('Data loaded; compiling ahead %s.',
                 'still running' if thread.is_alive() else 'finished')
  finally:
    thread.join()


# The most of the device's memory the rehearsal's data may take: 1 / this.
_MEMORY_SHARE = 8


def _rehearse(config) -> None:
  """Calls what a run of `config` calls first, on zeros; any failure is the run's to meet."""
  try:
    # Its zeros take the data's room on the device again while the data
    # loads: only for data that leaves plenty.
    data = input_pipeline.predicted_data(
        config, max_bytes=input_pipeline.device_memory_bytes() // _MEMORY_SHARE)
    if data is None:
      return
    spec = state_lib.model_spec(config, data)
    state = parallel.replicate(state_lib.create_state(config, spec), data.mesh)
    program = programs.MeshSteps(data.mesh)
    # The evaluations compile beside the train call, on a core of their own
    # (compiling lets go of the GIL), on a copy: the train call donates its state.
    evaluations = threading.Thread(
        target=_evaluations, args=(config, program, state_lib.copied(state), data),
        name='compile-ahead-eval', daemon=True)
    evaluations.start()
    length = cadence.call_length(config, data, spec.steps_per_epoch)
    (_, batches, _), = calls.train_calls(data, config, 0, [(0, length)], length)
    program.train(state, [batches], program.dropout_keys([config]), [0], data.train)
    evaluations.join()
  except Exception as e:  # pylint: disable=broad-except
    _stopped(e)


def _evaluations(config, program, state, data) -> None:
  """The epochs' evaluations, the test split's and the plots' predictions, on zeros."""
  try:
    program.evaluate(state, input_pipeline.validation_view(data), config.eval_batch_size)
    if data.validation is not None:  # The test split, at the end.
      program.evaluate(state, data, config.eval_batch_size)
    if config.plots:  # Their predictions.
      evaluation.test_predictions(state, data, config.eval_batch_size)
  except Exception as e:  # pylint: disable=broad-except
    _stopped(e)


def _stopped(error: Exception) -> None:
  logging.info('Compiling ahead stopped (%s: %s); the run compiles what it needs.',
               type(error).__name__, error)
