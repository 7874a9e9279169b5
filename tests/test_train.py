"""The math of training: steps, donation, exact evaluation, optimizer factory."""

import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tests.helpers import tiny_config
from trainkit.tasks import classification
from trainkit.training import evaluation
from trainkit.data import calls as calls_lib
from trainkit.data import pipeline as input_pipeline
from trainkit.tasks import losses
from trainkit.models import mlp as models
from trainkit.training import optimizers
from trainkit.runtime import parallel
from trainkit.workdirs import layout as workdir_lib
from trainkit.data.sources import base
import flax
import train


from trainkit.training import state as state_lib
from trainkit.training import step as step_lib
def _state(config, steps_per_epoch=10):
  model = models.create_model(config.model, classification.Classification(10))
  return train.create_train_state(jax.random.key(0), config, model,
                                  (28, 28, 1), steps_per_epoch)


def _batch(n=32, seed=0):
  rng = np.random.default_rng(seed)
  return {'x': rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8),
          'y': rng.integers(0, 10, (n,), dtype=np.int32)}


def test_train_step_lowers_the_loss_on_a_fixed_batch():
  state = _state(tiny_config(schedule='constant', learning_rate=1e-2))
  batch, rng = _batch(), jax.random.key(1)
  losses = []
  for _ in range(30):
    state, metrics = train.train_step(state, batch, rng)
    losses.append(float(metrics['loss']))
  assert losses[-1] < 0.5 * losses[0]
  assert int(state.step) == 30


def test_train_step_consumes_the_donated_state():
  state = _state(tiny_config())
  kernel = state.params['Dense_0']['kernel']
  new_state, _ = train.train_step(state, _batch(), jax.random.key(1))
  assert kernel.is_deleted()
  assert not new_state.params['Dense_0']['kernel'].is_deleted()


def test_one_compiled_step_serves_every_dropout_rate():
  spec = workdir_lib.ModelSpec(num_classes=10, input_shape=(28, 28, 1), shift=0.0,
                               scale=255.0, steps_per_epoch=10)
  step = jax.jit(step_lib._train_step)  # pylint: disable=protected-access
  losses = {}
  for rate in (0.2, 0.7, 0.0):
    state = state_lib.create_state(tiny_config(**{'model.dropout_rates': (rate,)}), spec)
    np.testing.assert_array_equal(state.keep_probs, np.float32([1 - rate]))
    losses[rate] = float(step(state, _batch(), jax.random.key(1))[1]['loss'])
  # Rate 0 has no dropout layer: a second program; the other rates share one.
  assert step._cache_size() == 2  # pylint: disable=protected-access
  assert len(set(losses.values())) == 3


def test_checkpoints_leave_the_dropout_rates_to_the_config():
  state = _state(tiny_config(**{'model.dropout_rates': (0.3,)}))
  saved = flax.serialization.to_state_dict(state)
  assert set(saved) == {'step', 'params', 'batch_stats', 'opt_state'}
  other = _state(tiny_config(**{'model.dropout_rates': (0.6,)}))
  restored = flax.serialization.from_state_dict(other, saved)
  np.testing.assert_array_equal(restored.keep_probs, np.float32([0.4]))
  np.testing.assert_array_equal(restored.params['Dense_0']['kernel'],
                                state.params['Dense_0']['kernel'])


@pytest.mark.parametrize('seed', [0, 7, 2**31 - 1, 2**31, 2**32 + 5, 2**40])
def test_a_seeds_keys_are_those_jax_random_key_draws_from_it(seed):
  """One program draws both keys: as jax.random.key(seed) and split do, op by op, for any seed."""
  expected = jax.random.split(jax.random.key(seed))
  for key, want in zip(state_lib.seed_keys(seed), expected):
    np.testing.assert_array_equal(jax.random.key_data(key), jax.random.key_data(want))


def test_dropout_key_depends_on_the_step():
  config = tiny_config(**{'model.dropout_rates': (0.5,)}, learning_rate=1e-9,
                       schedule='constant')
  batch, rng = _batch(), jax.random.key(1)
  s0 = _state(config)
  _, m0 = train.train_step(s0, batch, rng)
  s1 = _state(config).replace(step=jnp.asarray(1, jnp.int32))
  _, m1 = train.train_step(s1, batch, rng)
  s0 = _state(config)
  _, m0_again = train.train_step(s0, batch, rng)
  assert float(m0['loss']) == float(m0_again['loss'])
  assert float(m0['loss']) != float(m1['loss'])


def test_evaluation_counts_every_example_once_with_a_padded_last_batch(monkeypatch):
  config = tiny_config()
  state = _state(config)
  n, batch_size = 37, 16  # 16 + 16 + 5 (padded to 16).
  examples = _batch(n, seed=3)
  data = input_pipeline.Data(
      mode='stream', train=None, test=base.ArrayRecords(examples),
      num_train=0, num_test=n, num_classes=10, input_shape=(28, 28, 1),
      mesh=parallel.create_mesh())
  # Two batches' worth of images per call: calls of 2 and 1 batches.
  monkeypatch.setattr(calls_lib, '_EVAL_CALL_BYTES', 2 * batch_size * 784)
  calls = list(calls_lib.eval_calls(data, batch_size))
  assert [c['x'].shape for c in calls] == [(2, batch_size, 28, 28, 1),
                                               (1, batch_size, 28, 28, 1)]
  assert sum(int(c['mask'].sum()) for c in calls) == n
  metrics = evaluation.evaluate(state, data, batch_size)
  logits = state.apply_fn({'params': state.params, 'batch_stats': state.batch_stats},
                          examples['x'], train=False)
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, examples['y'])
  assert metrics['loss'] == pytest.approx(float(jnp.mean(losses)), rel=1e-5)
  assert metrics['accuracy'] == pytest.approx(
      float(np.mean(np.argmax(logits, -1) == examples['y'])))


@pytest.mark.parametrize('optimizer', optimizers.OPTIMIZERS)
def test_every_optimizer_trains_and_injects_its_hyperparameters(optimizer):
  config = tiny_config(optimizer=optimizer, learning_rate=3e-3, weight_decay=1e-4,
                       grad_clip_norm=1.0, schedule='constant')
  state = _state(config)
  hyper = state.opt_state.hyperparams
  assert float(hyper['learning_rate']) == pytest.approx(3e-3)
  assert float(hyper['weight_decay']) == pytest.approx(1e-4)
  assert ('momentum' in hyper) == (optimizer in ('momentum', 'nesterov', 'rmsprop'))
  before = state.params['Dense_0']['kernel'].copy()
  state, _ = train.train_step(state, _batch(), jax.random.key(0))
  assert not np.allclose(before, state.params['Dense_0']['kernel'])


_REFERENCE = {  # What each optimizer name must build, written with optax directly.
    'sgd': lambda lr, m: optax.sgd(lr),
    'momentum': lambda lr, m: optax.sgd(lr, momentum=m),
    'nesterov': lambda lr, m: optax.sgd(lr, momentum=m, nesterov=True),
    'adam': lambda lr, m: optax.adam(lr),
    'adamw': lambda lr, m: optax.adamw(lr, weight_decay=0.0),
    'rmsprop': lambda lr, m: optax.rmsprop(lr, momentum=m),
}


@pytest.mark.parametrize('optimizer', optimizers.OPTIMIZERS)
def test_each_optimizer_makes_the_updates_of_its_optax_namesake(optimizer):
  config = tiny_config(optimizer=optimizer, learning_rate=0.05, momentum=0.8,
                       schedule='constant')
  ours = optimizers.create_optimizer(config, steps_per_epoch=10)
  reference = _REFERENCE[optimizer](0.05, 0.8)
  params = {'w': jnp.asarray([[1.0, -2.0], [0.5, 3.0]]), 'b': jnp.asarray([0.1, -0.1])}
  grads = [jax.tree.map(lambda p, k=k: jnp.sin(p * (k + 1)) + 0.3 * k, params)
           for k in range(3)]
  ours_state, reference_state = ours.init(params), reference.init(params)
  for g in grads:  # Several steps, so momentum and moments matter.
    mine, ours_state = ours.update(g, ours_state, params)
    theirs, reference_state = reference.update(g, reference_state, params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
                 mine, theirs)


def test_nesterov_and_momentum_differ():
  params = {'w': jnp.ones(3)}
  updates = []
  for name in ('momentum', 'nesterov'):
    tx = optimizers.create_optimizer(
        tiny_config(optimizer=name, learning_rate=0.1, schedule='constant'), 10)
    state = tx.init(params)
    for _ in range(2):
      update, state = tx.update({'w': jnp.ones(3)}, state, params)
    updates.append(update['w'])
  assert not np.allclose(*updates)


def test_grad_clip_norm_bounds_the_gradient():
  config = tiny_config(optimizer='sgd', learning_rate=1.0, schedule='constant',
                       grad_clip_norm=0.5)
  tx = optimizers.create_optimizer(config, 10)
  params = {'w': jnp.zeros(4)}
  big = {'w': jnp.asarray([3.0, 4.0, 0.0, 0.0])}  # Norm 5.
  update, _ = tx.update(big, tx.init(params), params)
  np.testing.assert_allclose(update['w'], [-0.3, -0.4, 0.0, 0.0], rtol=1e-6)
  small = {'w': jnp.asarray([0.03, 0.04, 0.0, 0.0])}  # Under the bound: unchanged.
  update, _ = tx.update(small, tx.init(params), params)
  np.testing.assert_allclose(update['w'], [-0.03, -0.04, 0.0, 0.0], rtol=1e-6)


def test_injected_learning_rate_scales_the_update():
  """The swept value really drives the step (not a closed-over constant)."""
  config = tiny_config(optimizer='sgd', schedule='constant', learning_rate=1.0,
                       **{'model.dropout_rates': (0.0,)})
  updates = []
  for lr in (1e-3, 2e-3):
    state = _state(config)
    state.opt_state.hyperparams['learning_rate'] = jnp.asarray(lr)
    before = np.asarray(state.params['Dense_1']['bias'])
    state, _ = train.train_step(state, _batch(), jax.random.key(0))
    updates.append(np.asarray(state.params['Dense_1']['bias']) - before)
  np.testing.assert_allclose(updates[1], 2 * updates[0], rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize('schedule, expected', [
    ('constant', {0: 1.0, 50: 1.0, 100: 1.0}),
    ('cosine', {0: 1.0, 50: 0.55, 100: 0.1}),
    ('warmup_cosine', {0: 0.0, 10: 1.0, 100: 0.1}),
    ('linear', {0: 1.0, 50: 0.55, 100: 0.1}),
    ('exponential', {0: 1.0, 10: 0.5 ** 0.5, 15: 0.5 ** 0.5, 20: 0.5}),
])
def test_learning_rate_schedules(schedule, expected):
  config = tiny_config(schedule=schedule, learning_rate=2.0, num_epochs=10,
                       warmup_epochs=1.0, end_lr_factor=0.1, decay_rate=0.5,
                       decay_epochs=2.0, staircase=True)
  lr_fn = optimizers.create_learning_rate_fn(config, steps_per_epoch=10)
  for step, factor in expected.items():
    assert float(lr_fn(step)) == pytest.approx(2.0 * factor, rel=1e-5), step
  optimizer = optimizers.create_optimizer(config, steps_per_epoch=10)
  assert optimizer.init({'w': jnp.zeros(3)}).hyperparams['learning_rate'] == 2.0


def test_weight_decay_spares_biases():
  mask = optimizers._decay_mask({'kernel': jnp.zeros((3, 4)), 'bias': jnp.zeros(4)})
  assert mask == {'kernel': True, 'bias': False}


def test_tutorial_losses():
  rng = np.random.default_rng(0)
  logits = jnp.asarray(rng.normal(size=(8, 10)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, 10, 8))
  ce = losses.cross_entropy(logits, labels).mean()
  assert float(losses.class_mean_cross_entropy(logits, labels)) == pytest.approx(
      float(ce) / 10, rel=1e-6)
  # The book's batch-wide logsumexp equals the per-example one for one example
  # only.
  one = (logits[:1], labels[:1])
  assert float(losses.batch_normalized_cross_entropy(*one)) == pytest.approx(
      float(losses.class_mean_cross_entropy(*one)), rel=1e-6)
  assert float(losses.batch_normalized_cross_entropy(logits, labels)) != pytest.approx(
      float(losses.class_mean_cross_entropy(logits, labels)), rel=1e-3)


def test_class_mean_loss_with_sgd_is_cross_entropy_with_a_tenth_of_the_step():
  def trained(**overrides):
    config = tiny_config(optimizer='sgd', schedule='constant',
                         **{'model.dropout_rates': (0.0,)}, **overrides)
    state, _ = train.train_step(_state(config), _batch(), jax.random.key(0))
    return state.params
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7),
               trained(loss='class_mean_cross_entropy', learning_rate=0.1),
               trained(loss='cross_entropy', learning_rate=0.01))


def test_gradient_accumulation_takes_the_batchs_mean_gradient_in_k_steps():
  # No BatchNorm or dropout: then k micro-batches average to the full batch.
  common = {'model.use_batchnorm': False, 'model.dropout_rates': (), 'optimizer': 'sgd',
            'schedule': 'constant', 'learning_rate': 0.1}
  whole = _state(tiny_config(**common))
  accumulated = _state(tiny_config(grad_accumulation_steps=2, **common))
  batch = _batch(n=16)
  halves = [jax.tree.map(lambda x, i=i: x[8 * i:8 * (i + 1)], batch) for i in range(2)]
  rng = jax.random.key(0)
  whole, _ = train.train_step(whole, batch, rng)
  before = jax.tree.map(np.asarray, accumulated.params)  # The step donates the state.
  accumulated, _ = train.train_step(accumulated, halves[0], rng)
  jax.tree.map(np.testing.assert_array_equal, accumulated.params, before)  # Only summed.
  accumulated, _ = train.train_step(accumulated, halves[1], rng)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
               accumulated.params, whole.params)
  # The schedule counts updates: 2 epochs of 10 steps are 10 updates of 2.
  rate = optimizers.create_learning_rate_fn(
      tiny_config(grad_accumulation_steps=2, schedule='linear', end_lr_factor=0.0), 10)
  assert float(rate(10)) == pytest.approx(0.5e-3) and float(rate(11)) == float(rate(10))


def test_accumulated_gradients_resume_exactly_mid_update(tmp_path, mock_mnist, restored_steps):
  # 6 steps per epoch, updates every 4: the epoch's checkpoint holds a half sum.
  config = tiny_config(num_epochs=3, grad_accumulation_steps=4, keep_checkpoints=5)
  state, summary = train.train_and_evaluate(config, str(tmp_path / 'whole'))
  assert int(state.opt_state.gradient_step) == 18 // 4
  shutil.copytree(tmp_path / 'whole', tmp_path / 'resumed')
  for step in (12, 18):
    shutil.rmtree(tmp_path / 'resumed' / 'checkpoints' / str(step))
  resumed, again = train.train_and_evaluate(config, str(tmp_path / 'resumed'))
  assert restored_steps == [6]  # It resumed: a retrain from scratch ends alike.
  assert again['eval_loss'] == summary['eval_loss']
  jax.tree.map(np.testing.assert_array_equal, resumed.params, state.params)
  jax.tree.map(np.testing.assert_array_equal, resumed.opt_state, state.opt_state)


def test_an_average_of_the_parameters_is_kept_resumed_and_evaluated(tmp_path, mock_mnist,
                                                                   restored_steps):
  config = tiny_config(ema_decay=0.9, num_epochs=2, keep_checkpoints=5, input_mode='device')
  state, summary = train.train_and_evaluate(config, str(tmp_path / 'whole'))
  ema = optax.tree_utils.tree_get(state.opt_state, 'ema_params')
  assert not np.allclose(ema['Dense_0']['kernel'], state.params['Dense_0']['kernel'])
  data = input_pipeline.create_datasets(config)
  # The summary's figures are the average's, not the raw parameters'.
  averaged = evaluation.evaluate(state, data, 16)
  raw = evaluation.metrics_from_sums(state, *jax.device_get(evaluation.mesh_steps(
      data.mesh)['eval'](state, data.test)))
  assert summary['eval_loss'] == pytest.approx(averaged['loss'])
  assert summary['eval_loss'] != pytest.approx(raw['loss'])
  # One update from fresh parameters p0 to p1: ema = 0.9 p0 + 0.1 p1.
  fresh = _state(config, 6)
  stepped, _ = train.train_step(_state(config, 6), _batch(n=8), jax.random.key(1))
  one = optax.tree_utils.tree_get(stepped.opt_state, 'ema_params')
  np.testing.assert_allclose(
      one['Dense_0']['kernel'],
      0.9 * fresh.params['Dense_0']['kernel'] + 0.1 * stepped.params['Dense_0']['kernel'],
      rtol=1e-5, atol=1e-7)
  # Resumed from epoch 1, the average ends the same.
  shutil.copytree(tmp_path / 'whole', tmp_path / 'resumed')
  shutil.rmtree(tmp_path / 'resumed' / 'checkpoints' / '12')
  resumed, again = train.train_and_evaluate(config, str(tmp_path / 'resumed'))
  assert restored_steps == [6]  # It resumed: a retrain from scratch ends alike.
  assert again['eval_loss'] == summary['eval_loss']
  jax.tree.map(np.testing.assert_array_equal, resumed.opt_state, state.opt_state)


def test_a_call_of_one_step_is_compiled_without_a_loop():
  """XLA's CPU compiler slows convolutions' gradients in loops (jax#12868): one step, no loop."""
  state = _state(tiny_config())
  stacked = jax.tree.map(lambda x: x[None], _batch())
  loops = {}
  for n in (1, 2):
    batches = jax.tree.map(lambda x, n=n: np.repeat(x, n, axis=0), stacked)
    loops[n] = step_lib.train_steps.lower(state, batches, jax.random.key(1), n).as_text().count(
        'stablehlo.while')
  assert loops[2] == loops[1] + 1  # The scan of steps, for more than one.
  state, metrics = step_lib.train_steps(state, stacked, jax.random.key(1), 1)
  assert metrics['loss'].shape == (1,) and int(state.step) == 1
