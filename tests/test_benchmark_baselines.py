"""The benchmark's hand-written baselines train the trainer's model."""

import jax
import numpy as np
import pytest

from benchmarks import baselines
from benchmarks import tables
from benchmarks.peers import common
from configs import default
from trainkit.models import mlp as models
from trainkit.tasks import classification
from trainkit.training import optimizers


def _shapes(tree):
  return sorted((jax.tree_util.keystr(path), leaf.shape)
                for path, leaf in jax.tree_util.tree_leaves_with_path(tree))


def test_minimal_flax_baseline_has_the_default_models_parameters():
  config = default.get_config()
  model = models.create_model(config.model, classification.Classification(10))
  variables = model.init(jax.random.key(0), np.zeros((1, 28, 28, 1), np.uint8),
                         train=False)
  state = baselines.minimal_state(steps_per_epoch=10, num_epochs=1)
  assert _shapes(state.params) == _shapes(variables['params'])
  assert _shapes(state.batch_stats) == _shapes(variables['batch_stats'])
  assert baselines.HIDDEN == tuple(config.model.hidden_sizes)
  assert baselines.DROPOUT == tuple(config.model.dropout_rates)


def test_minimal_scan_epoch_trains():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (128 * 4, 28, 28, 1), dtype=np.uint8)
  labels = (images.reshape(len(images), -1).mean(-1) > 127.5).astype(np.int32)
  state = baselines.minimal_state(steps_per_epoch=4, num_epochs=3)
  losses = []
  for epoch in range(3):
    state, epoch_losses = baselines.minimal_epoch(state, images, labels,
                                                  jax.random.key(epoch))
    losses.append(float(np.mean(epoch_losses)))
  assert int(state.step) == 12
  assert losses[-1] < losses[0]


def test_peers_train_the_default_configs_model_with_its_schedule():
  config = default.get_config()
  assert (common.HIDDEN, common.DROPOUT) == (tuple(config.model.hidden_sizes),
                                             tuple(config.model.dropout_rates))
  assert (common.BATCH, common.PEAK_LR) == (config.batch_size, config.learning_rate)
  schedule = optimizers.create_learning_rate_fn(config, 468)
  for step in (0, 1, 100, 234, 235, 1000, 468 * 15 - 1):
    assert common.warmup_cosine(step, 468, 15) == pytest.approx(float(schedule(step)),
                                                                rel=1e-5, abs=1e-9)


def test_matmul_roofline_uses_every_product():
  weights = baselines.matmul_weights()
  images = np.random.default_rng(0).integers(0, 256, (256, 28, 28, 1), dtype=np.uint8)
  updated = baselines.matmul_epoch(images, weights)
  assert [w.shape for w in updated] == [(784, 512), (512, 512), (512, 10)]
  assert all(not np.array_equal(a, b) for a, b in zip(updated, weights))


def test_checks_compare_with_the_targets():
  results = {'trainer_1': {'wall_s': 4.0}, 'keras_1': {'wall_s': 7.0},
             'trainer': {'wall_s': 30.0, 'eval_accuracy': 0.986, 'steady_epoch_s': 1.6,
                         'peak_rss_mb': 1000},
             'keras': {'wall_s': 35.0}, 'latency': {'rerun_s': 2.0, 'eval_s': 4.0,
                                                   'predict_s': 1.0}}
  verdicts = {text.split(' =')[0].split(' {')[0]: ok for text, ok in tables.checks(results)}
  assert verdicts['Keras / trainer, 1-epoch whole command'] is True  # 1.75x
  assert verdicts['Keras / trainer, 15-epoch whole command'] is False  # 1.17x
  assert [ok for text, ok in tables.checks(results) if 'steady epoch' in text] == [False]
  assert [ok for text, ok in tables.checks(results) if text.startswith('eval')] == [False]
  assert 'FAIL' in tables.table(results, 468)
