"""Device-resident and streamed input, scanned multi-step calls, bfloat16."""

import logging
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.conftest import NUM_EXAMPLES
from tests.helpers import tiny_config
from trainkit.tasks import classification
from trainkit.training import evaluation
from trainkit.data import sources
from trainkit.data import calls as calls_lib
from trainkit.data import pipeline as input_pipeline
from trainkit.data import streaming
from trainkit.data import statistics as training_statistics
from trainkit.data.sources import tfds_source
from trainkit.models import mlp as models
import train



from trainkit.training import cadence
from trainkit.training import step as step_lib
def _state(config, steps_per_epoch=6):
  model = models.create_model(config.model, classification.Classification(10), dtype=config.dtype)
  return train.create_train_state(jax.random.key(0), config, model, (28, 28, 1),
                                  steps_per_epoch)


def _batches(n, batch=8, seed=0):
  rng = np.random.default_rng(seed)
  return {'x': rng.integers(0, 256, (n, batch, 28, 28, 1), dtype=np.uint8),
          'y': rng.integers(0, 10, (n, batch), dtype=np.int32)}


@pytest.mark.parametrize('first, epoch_start, per_call, every, expected', [
    (0, 0, 0, 0, [(0, 10)]),  # One call for the whole epoch.
    (0, 0, 4, 0, [(0, 4), (4, 8), (8, 10)]),
    (3, 0, 4, 0, [(3, 4), (4, 8), (8, 10)]),  # Resumed mid-epoch.
    (0, 10, 0, 4, [(0, 2), (2, 6), (6, 10)]),  # Checkpoints at global 12, 16.
    (0, 10, 3, 4, [(0, 2), (2, 3), (3, 6), (6, 9), (9, 10)]),
    (0, 0, 20, 0, [(0, 10)]),
])
def test_call_spans_end_at_call_and_checkpoint_boundaries(first, epoch_start, per_call,
                                                          every, expected):
  assert cadence.call_spans(first, epoch_start, 10, per_call, every) == expected


def test_a_due_save_waits_for_the_minimum_interval_but_the_last_epoch_does_not(monkeypatch):
  clock = [100.0]
  monkeypatch.setattr(cadence, '_now', lambda: clock[0])
  config = tiny_config(num_epochs=6, checkpoint_every_epochs=1, checkpoint_min_interval_s=10.0,
                       checkpoint_every_steps=2)
  data = types.SimpleNamespace(mode='device')
  plan = cadence.Plan(config, 6, data)
  saved = []
  for epoch, now in enumerate([103.0, 108.0, 111.0, 115.0, 116.0, 117.0]):
    clock[0] = now
    if plan.epoch_checkpoint_due(epoch):
      saved.append(epoch)
      plan.saved()
  assert saved == [2, 5]  # 11 s after the start, then the last epoch at 6 s after that.
  clock[0] = 126.0
  assert plan.checkpoint_due(2) is False  # 9 s after the last save.
  clock[0] = 127.0
  assert plan.checkpoint_due(2) is True and plan.checkpoint_due(3) is False
  config.checkpoint_min_interval_s = 0.0  # None: every due one, whatever the clock.
  assert cadence.Plan(config, 6, data).epoch_checkpoint_due(0)


@pytest.mark.slow  # A fresh compile of the train call: three seconds here.
def test_a_scanned_call_traces_the_step_once(monkeypatch):
  """The skipped rows' zeros take the step's shapes from the same trace, not a second one."""
  traced = []
  real = step_lib._train_step
  monkeypatch.setattr(step_lib, '_train_step', lambda *a: traced.append(1) or real(*a))
  config = tiny_config()
  state, metrics = jax.jit(step_lib._train_steps)(_state(config), _batches(3), jax.random.key(1), 2)
  assert len(traced) == 1
  assert metrics['loss'].shape == (3,) and metrics['loss'][2] == 0 and metrics['loss'][1] > 0
  assert int(state.step) == 2


def test_scanned_steps_match_single_steps_and_skip_the_padding():
  config = tiny_config(schedule='constant', learning_rate=1e-2)
  batches, rng = _batches(5), jax.random.key(1)
  single = _state(config)
  single_losses = []
  for i in range(3):
    single, metrics = train.train_step(
        single, jax.tree.map(lambda x, i=i: x[i], batches), rng)
    single_losses.append(float(metrics['loss']))
  scanned, metrics = step_lib.train_steps(_state(config), batches, rng, 3)
  assert int(scanned.step) == 3  # Rows 3 and 4 are padding.
  np.testing.assert_allclose(metrics['loss'][:3], single_losses, rtol=1e-5)
  assert np.all(np.asarray(metrics['loss'][3:]) == 0)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               scanned.params, single.params)


def test_scanned_steps_gather_from_resident_arrays():
  config = tiny_config(schedule='constant')
  batches, rng = _batches(4), jax.random.key(1)
  source = {k: v.reshape(-1, *v.shape[2:]) for k, v in batches.items()}
  index = {'index': np.arange(32, dtype=np.int32).reshape(4, 8)[::-1].copy()}
  reversed_batches = jax.tree.map(lambda x: x[::-1], batches)
  by_value, m1 = step_lib.train_steps(_state(config), reversed_batches, rng, 4)
  by_index, m2 = step_lib.train_steps(_state(config), index, rng, 4, source)
  np.testing.assert_array_equal(m1['loss'], m2['loss'])
  jax.tree.map(np.testing.assert_array_equal, by_value.params, by_index.params)


def test_device_order_is_a_deterministic_permutation_per_epoch(mock_mnist):
  config = tiny_config(input_mode='device')
  data = input_pipeline.create_datasets(config)
  assert data.mode == 'device'

  def order(epoch):
    calls = calls_lib.train_calls(data, config, epoch, [(0, 6)], 6)
    return [np.asarray(batches['index']) for _, batches, _ in calls][0]
  first = order(0)
  assert first.shape == (6, 8)
  assert len(np.unique(first)) == 48 and first.max() < NUM_EXAMPLES
  np.testing.assert_array_equal(first, order(0))
  assert not np.array_equal(first, order(1))
  # A call starting mid-epoch sees the same rows as the whole-epoch order.
  calls = calls_lib.train_calls(data, config, 0, [(2, 5)], 4)
  steps, batches, _ = next(iter(calls))
  assert steps == 3
  np.testing.assert_array_equal(np.asarray(batches['index'])[:3], first[2:5])
  # A whole epoch in a longer call: its order, then rows of zeros the call does not train.
  (steps, batches, _), = calls_lib.train_calls(data, config, 0, [(0, 6)], 9)
  assert steps == 6
  np.testing.assert_array_equal(np.asarray(batches['index']),
                                np.concatenate([first, np.zeros((3, 8), np.int32)]))


def test_stream_calls_stack_the_same_batches_in_any_call_length(mock_mnist):
  config = tiny_config(input_mode='stream')
  data = input_pipeline.create_datasets(config)
  whole = list(calls_lib.train_calls(data, config, 0, [(0, 6)], 6))
  pieces = list(calls_lib.train_calls(data, config, 0, [(1, 4), (4, 6)], 3))
  assert [n for n, _, _ in pieces] == [3, 2]
  assert pieces[1][1]['x'].shape == (3, 8, 28, 28, 1)  # Padded to 3 rows.
  images = np.concatenate([np.asarray(b['x'])[:n] for n, b, _ in pieces])
  np.testing.assert_array_equal(images, np.asarray(whole[0][1]['x'])[1:])


def test_streamed_epoch_is_a_global_shuffle_the_same_for_any_process_count(
    mock_mnist, monkeypatch):
  config = tiny_config(input_mode='stream')
  data = input_pipeline.create_datasets(config)
  stored = data.train.read(range(NUM_EXAMPLES))['x']

  def epoch(processes, index, number=0):
    monkeypatch.setattr(jax, 'process_count', lambda: processes)
    monkeypatch.setattr(jax, 'process_index', lambda: index)
    seed = calls_lib.epoch_seed(config.seed, number)
    return [b['x'] for b in streaming.epoch_batches(data, config, seed)]
  whole = epoch(1, 0)
  # Each of two processes reads its half of every global batch, no more.
  halves = [epoch(2, i) for i in range(2)]
  for batch, first, second in zip(whole, *halves):
    assert len(first) == len(second) == 4
    np.testing.assert_array_equal(batch, np.concatenate([first, second]))
  # 6 batches of 8 distinct examples of the split, not in stored order.
  flat = np.concatenate(whole).reshape(48, -1)
  positions = [int(np.flatnonzero((stored.reshape(NUM_EXAMPLES, -1) == x).all(1))[0])
               for x in flat]
  assert len(set(positions)) == 48 and positions != sorted(positions)
  assert not np.array_equal(np.concatenate(epoch(1, 0, number=1)), np.concatenate(whole))


def test_standardize_scales_inputs_by_the_training_pixels(mock_mnist):
  config = tiny_config(input_mode='device', normalization='standardize')
  data = input_pipeline.create_datasets(config)
  pixels = np.asarray(data.train['x'], np.float64)
  shift, scale = training_statistics.normalization_constants(config, data)
  assert shift == pytest.approx(pixels.mean()) and scale == pytest.approx(pixels.std())
  # The model sees zero-mean, unit-variance inputs: a bias-free linear probe
  # of the first input pixel gives back the standardised value.
  model = models.create_model(tiny_config(**{'model.hidden_sizes': (),
                                             'model.dropout_rates': ()}).model,
                              classification.Classification(1), input_shift=shift,
                              input_scale=scale)
  variables = {'params': {'Dense_0': {
      'kernel': np.eye(784, 1, dtype=np.float32), 'bias': np.zeros(1, np.float32)}}}
  images = np.asarray(data.train['x'][:4])
  out = model.apply(variables, images, train=False)
  np.testing.assert_allclose(out[:, 0], (images.reshape(4, -1)[:, 0] - shift) / scale,
                             rtol=1e-5, atol=1e-5)


def test_device_and_stream_evaluate_every_example_alike(mock_mnist):
  state = _state(tiny_config())
  results = {}
  for mode in ('device', 'stream'):
    data = input_pipeline.create_datasets(tiny_config(input_mode=mode,
                                                      eval_batch_size=16))
    results[mode] = evaluation.evaluate(state, data, 16)
  assert results['device']['accuracy'] == results['stream']['accuracy']
  assert results['device']['loss'] == pytest.approx(results['stream']['loss'], rel=1e-6)


@pytest.mark.slow  # Over five seconds here: the full suite runs it.
@pytest.mark.parametrize('input_mode', ['device', 'stream'])
def test_steps_per_call_does_not_change_the_result(tmp_path, mock_mnist, input_mode):
  results = []
  for per_call in (0, 1, 4):
    state, summary = train.train_and_evaluate(
        tiny_config(input_mode=input_mode, steps_per_call=per_call),
        str(tmp_path / f'{per_call}'))
    assert int(state.step) == 12
    results.append((summary['eval_loss'], state.params))
  for loss, params in results[1:]:
    assert loss == pytest.approx(results[0][0], rel=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 params, results[0][1])


def test_auto_mode_keeps_what_fits_on_the_device(monkeypatch):
  split = types.SimpleNamespace(num_examples=1000)
  image = types.SimpleNamespace(shape=(28, 28, 1), np_dtype=np.uint8)
  builder = types.SimpleNamespace(info=types.SimpleNamespace(
      features={'image': image}, splits={'train': split, 'test': split}),
                                  is_prepared=lambda: True)
  source = tfds_source.TfdsSource(tiny_config())
  source._builder = builder  # pylint: disable=protected-access
  size = 2000 * (784 + 4)
  assert source.nbytes() == size
  monkeypatch.setattr(input_pipeline, 'device_memory_bytes', lambda: 4 * size)
  assert input_pipeline.choose_input_mode(tiny_config(), source) == 'device'
  monkeypatch.setattr(input_pipeline, 'device_memory_bytes', lambda: 4 * size - 1)
  assert input_pipeline.choose_input_mode(tiny_config(), source) == 'stream'
  assert input_pipeline.choose_input_mode(
      tiny_config(input_mode='device'), source) == 'device'
  # Arrays: their bytes in memory, every split.
  arrays = sources.open_source(tiny_config(dataset='synthetic:linear',
                                           synthetic_examples=(100, 20, 30)))
  assert arrays.nbytes() == 150 * (8 + 1) * 4
  monkeypatch.setattr(input_pipeline, 'device_memory_bytes', lambda: 4 * 150 * 9 * 4 - 1)
  assert input_pipeline.choose_input_mode(tiny_config(), arrays) == 'stream'


def test_bfloat16_computes_in_bfloat16_and_keeps_float32_state():
  config = tiny_config(dtype='bfloat16', schedule='constant', learning_rate=1e-2)
  state = _state(config)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(state.params))
  batches = _batches(30)
  batches = jax.tree.map(lambda x: np.repeat(x[:1], 30, axis=0), batches)
  hidden = state.apply_fn(
      {'params': state.params, 'batch_stats': state.batch_stats},
      batches['x'][0], train=False,
      capture_intermediates=lambda module, _: isinstance(module, models.nn.Dense))
  intermediates = jax.tree.leaves(hidden[1])
  assert intermediates and all(x.dtype == jnp.bfloat16 for x in intermediates)
  assert hidden[0].dtype == jnp.float32  # Logits for the loss.
  state, metrics = step_lib.train_steps(state, batches, jax.random.key(0), 30)
  assert float(metrics['loss'][-1]) < 0.5 * float(metrics['loss'][0])
  assert all(jnp.dtype(x.dtype) == jnp.float32 for x in jax.tree.leaves(state.opt_state)
             if jnp.issubdtype(x.dtype, jnp.floating))


def test_a_streamed_call_holds_a_bounded_number_of_batches():
  streamed = types.SimpleNamespace(mode='stream')
  resident = types.SimpleNamespace(mode='device')
  # A whole-epoch call (0) streamed would hold every batch of the epoch on the host.
  assert calls_lib.steps_per_call(tiny_config(steps_per_call=0), streamed) == 100
  assert calls_lib.steps_per_call(tiny_config(steps_per_call=30), streamed) == 30
  assert calls_lib.steps_per_call(tiny_config(steps_per_call=0), resident) == 0


@pytest.mark.slow  # Trains a model of its own.
def test_a_resume_reading_its_rows_otherwise_says_so(tmp_path, mock_mnist, caplog):
  train.train_and_evaluate(tiny_config(input_mode='device', num_epochs=1), str(tmp_path))
  # As input_mode='auto' may choose on a machine of less memory: another order of rows.
  with caplog.at_level(logging.WARNING, logger='absl'):
    train.train_and_evaluate(tiny_config(input_mode='stream', num_epochs=2), str(tmp_path),
                             continue_with_changes=True)
  assert ("input_mode='stream' reads the training rows as 'stream', the checkpoint's epochs "
          "read them as 'device'") in caplog.text
