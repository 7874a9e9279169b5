"""The benchmark's hand-written baselines train the trainer's model."""

import jax
import numpy as np

from benchmarks import baselines
from configs import default
import models


def _shapes(tree):
  return sorted((jax.tree_util.keystr(path), leaf.shape)
                for path, leaf in jax.tree_util.tree_leaves_with_path(tree))


def test_minimal_flax_baseline_has_the_default_models_parameters():
  config = default.get_config()
  model = models.create_model(config.model, 10)
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
