"""Model behaviour: shapes, dropout only in training, BatchNorm statistics."""

import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from tests.helpers import run_main, tiny_config
from trainkit.models import mlp as models
from trainkit.tasks import classification
from trainkit.training import model_summary
import train


def _model_and_vars(**overrides):
  config = tiny_config(**overrides)
  model = models.create_model(config.model, classification.Classification(10))
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


def test_dropout_rates_given_as_values_train_as_the_models_own():
  model, variables, images = _model_and_vars(**{'model.hidden_sizes': (16, 8),
                                                'model.dropout_rates': (0.6, 0.25)})
  def run(keep_probs):
    return model.apply(variables, images, train=True, keep_probs=keep_probs,
                       rngs={'dropout': jax.random.key(3)}, mutable=['batch_stats'])[0]
  own = jax.jit(lambda: run(None))()
  given = jax.jit(run)(jnp.asarray(models.keep_probabilities((0.6, 0.25), 2), jnp.float32))
  np.testing.assert_array_equal(own, given)
  other = jax.jit(run)(jnp.asarray([0.9, 0.9], jnp.float32))
  assert not np.allclose(own, other)


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
  head = classification.Classification(10)
  raw = models.create_model(config.model, head, input_shift=0.0, input_scale=1.0)
  unit = models.create_model(config.model, head, input_shift=0.0, input_scale=255.0)
  images = jnp.full((2, 28, 28, 1), 255, jnp.uint8)
  variables = raw.init(jax.random.key(0), images, train=False)
  np.testing.assert_allclose(unit.apply(variables, images, train=False),
                             raw.apply(variables, images / 255.0, train=False),
                             rtol=1e-5, atol=1e-6)


def test_the_summary_table_counts_what_the_issue_and_keras_count(tmp_path):
  config = default.get_config()
  spec = model_summary.spec_without_data(config, str(tmp_path))  # No data loaded.
  assert (spec.num_classes, spec.input_shape) == (10, (28, 28, 1))
  assert not os.listdir(tmp_path)
  text = model_summary.table(config, spec)
  for layer in ('Dense_0', 'Dropout_0', 'BatchNorm_0', 'Dense_1', 'BatchNorm_1', 'Dense_2'):
    assert f'│ {layer} ' in text
  assert '401,920 (1.6 MB)' in text and '5,130 (20.5 KB)' in text  # Per layer.
  assert 'Trainable parameters: 671,754 (2.7 MB)' in text
  assert 'BatchNorm statistics: 2,048 (8.2 KB)' in text
  # Adam: two moments per parameter, and five scalars (step counts, the
  # injected learning rate and weight decay).
  assert 'Optimizer state (adam): 1,343,513 (5.4 MB)' in text
  flops = int(text.split('computes them): ')[1].split()[0].replace(',', ''))
  assert 'FLOPs' not in model_summary.table(config, spec, flops=False)
  # Forward and backward of the three products (no input gradient for the
  # first layer): 2 * (784*512 + 512*512 + 512*10) * 3 - 2 * 784*512 = 3.21 M.
  assert 3.1e6 < flops < 3.4e6


def test_a_training_run_keeps_and_logs_the_summary(tmp_path, mock_mnist, caplog):
  with caplog.at_level(logging.INFO, logger='absl'):
    train.train_and_evaluate(tiny_config(num_epochs=1), str(tmp_path))
  text = (tmp_path / model_summary.SUMMARY_FILE).read_text()
  # 784*16+16 (Dense_0) + 2*16 (BatchNorm_0) + 16*10+10 (Dense_1).
  assert 'Trainable parameters: 12,762 (51.0 KB)' in text
  assert text in caplog.text


@pytest.mark.slow  # A process start.
def test_cli_summary_mode_prints_the_table_without_data(tmp_path):
  result = run_main('--config=configs/default.py', f'--workdir={tmp_path / "w"}',
                    f'--config.data_dir={tmp_path / "tfds"}', '--mode=summary')
  assert result.returncode == 0, result.stderr[-2000:]
  assert 'Trainable parameters: 671,754' in result.stdout
  assert not (tmp_path / 'w').exists()


@pytest.mark.slow  # Process starts.
def test_the_summary_table_is_the_same_in_every_process(tmp_path):
  """Flax orders its collections' columns by a set of names: by the strings' hashes,
  which differ per process. The table puts params first whatever they are."""
  import subprocess  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  import sys  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  from tests.helpers import ENV, ROOT  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  code = ('from configs import default\nfrom trainkit.training import model_summary\n'
          'c = default.get_config()\n'
          f'print(model_summary.table(c, model_summary.spec_without_data(c, {str(tmp_path)!r}),'
          ' flops=False))')
  texts = {subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True,
                          text=True, check=True, env={**ENV, 'PYTHONHASHSEED': seed}).stdout
           for seed in ('0', '1', '2', '3')}
  (text,) = texts
  header = next(line for line in text.splitlines() if line.startswith('┃'))
  assert header.index(' params ') < header.index(' batch_stats ')
