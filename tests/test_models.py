"""Model behaviour: shapes, dropout only in training, BatchNorm statistics."""

import jax
import jax.numpy as jnp
import numpy as np

from tests.helpers import tiny_config
import models


def _model_and_vars(**overrides):
  config = tiny_config(**overrides)
  model = models.create_model(config.model, num_classes=10)
  images = jax.random.randint(jax.random.key(1), (32, 28, 28, 1), 0, 256).astype(jnp.uint8)
  variables = model.init(jax.random.key(0), images, train=False)
  return model, variables, images


def test_output_shape_and_parameter_shapes():
  model, variables, images = _model_and_vars(**{'model.hidden_sizes': (16, 8)},
                                             **{'model.dropout_rates': (0.1, 0.2)})
  logits = model.apply(variables, images, train=False)
  assert logits.shape == (32, 10)
  params = variables['params']
  assert params['Dense_0']['kernel'].shape == (784, 16)
  assert params['Dense_1']['kernel'].shape == (16, 8)
  assert params['Dense_2']['kernel'].shape == (8, 10)
  assert set(variables['batch_stats']) == {'BatchNorm_0', 'BatchNorm_1'}


def test_dropout_is_active_only_in_training():
  model, variables, images = _model_and_vars(**{'model.dropout_rates': (0.5,)})
  def run(train, seed):
    out = model.apply(variables, images, train=train,
                      rngs={'dropout': jax.random.key(seed)},
                      mutable=['batch_stats'] if train else False)
    return out[0] if train else out
  assert not np.allclose(run(True, 0), run(True, 1))
  np.testing.assert_array_equal(run(False, 0), run(False, 1))


def test_batchnorm_uses_running_averages_in_evaluation():
  model, variables, images = _model_and_vars(**{'model.dropout_rates': (0.0,)})
  _, updates = model.apply(variables, images, train=True, mutable=['batch_stats'])
  # Training updates the running statistics ...
  before = variables['batch_stats']['BatchNorm_0']['mean']
  after = updates['batch_stats']['BatchNorm_0']['mean']
  assert not np.allclose(before, after)
  # ... and evaluation uses them: an example's logits do not depend on the
  # rest of its batch, whereas in training they do.
  full = model.apply(variables, images, train=False)
  alone = model.apply(variables, images[:4], train=False)
  np.testing.assert_allclose(full[:4], alone, rtol=1e-5, atol=1e-5)
  train_full, _ = model.apply(variables, images, train=True, mutable=['batch_stats'])
  train_alone, _ = model.apply(variables, images[:4], train=True, mutable=['batch_stats'])
  assert not np.allclose(train_full[:4], train_alone, atol=1e-3)


def test_normal_init_draws_kernels_and_biases_with_the_scale():
  model, variables, _ = _model_and_vars(**{'model.kernel_init': 'normal',
                                           'model.init_scale': 0.01,
                                           'model.hidden_sizes': (512,),
                                           'model.use_batchnorm': False})
  dense = variables['params']['Dense_0']
  assert abs(float(jnp.std(dense['kernel'])) - 0.01) < 1e-3
  assert abs(float(jnp.std(dense['bias'])) - 0.01) < 3e-3
  assert float(jnp.abs(dense['bias']).max()) > 0


def test_input_scaling_is_applied_inside_the_model():
  config = tiny_config(**{'model.dropout_rates': (0.0,), 'model.use_batchnorm': False})
  raw = models.create_model(config.model, 10, input_shift=0.0, input_scale=1.0)
  unit = models.create_model(config.model, 10, input_shift=0.0, input_scale=255.0)
  images = jnp.full((2, 28, 28, 1), 255, jnp.uint8)
  variables = raw.init(jax.random.key(0), images, train=False)
  np.testing.assert_allclose(unit.apply(variables, images, train=False),
                             raw.apply(variables, images / 255.0, train=False),
                             rtol=1e-5, atol=1e-6)
