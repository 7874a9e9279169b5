"""The task layer: each task's loss and metrics against NumPy, runs of the
real-valued tasks on arrays, and the inputs they refuse."""

import csv
import json
import math
import os
import shutil
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers import (ENV, ROOT, checkpoint_steps, main_command, mdn_config,
                           run_export, session_cache_dir,
                           sigkill_after_first_checkpoint, tiny_config)
from trainkit import cli
from trainkit import tasks
from trainkit.data.sources import host_tensorflow
from trainkit.data.sources import synthetic
from trainkit.search import results as search_results
from trainkit.search import sweeps
from trainkit.serving import jax_export
from trainkit.serving import onnx_export
from trainkit.serving import predict_rows as predictions
from trainkit.serving import restore as restore_lib
from trainkit.serving import saved_model
from trainkit.tasks import classification
from trainkit.tasks import metric_catalogue as metrics_lib
from trainkit.tasks import mixture_density
from trainkit.tasks import regression
from trainkit.tasks import selection
from trainkit.training import evaluation
from trainkit.training import model_summary
from trainkit.training import optimizers
import train

_RNG = np.random.default_rng(0)
_SHIFT, _SCALE = (1.5, -2.0), (3.0, 0.5)  # Two target elements' training statistics.
_MASK = np.array([1.0] * 9 + [0.0] * 3, np.float32)  # The last three rows are padding.


def _normal_nll(y, mean, std):
  return 0.5 * np.log(2 * np.pi) + np.log(std) + 0.5 * ((y - mean) / std) ** 2


def _sums_to_metrics(task, outputs, y):
  sums = jax.device_get(task.eval_sums(outputs, jnp.asarray(y), jnp.asarray(_MASK)))
  return task.metrics_from_sums(sums, int(_MASK.sum()), {})


def test_regression_matches_numpy_in_the_targets_own_units():
  n = len(_MASK)
  targets = regression.Targets((2,), _SHIFT, _SCALE)
  task = regression.Regression(targets, 'nll')
  outputs = {'mean': _RNG.normal(size=(n, 2)).astype(np.float32),
             'std': _RNG.uniform(0.5, 2.0, (n, 2)).astype(np.float32)}
  y = _RNG.normal(size=(n, 2)).astype(np.float32) * 4
  z = (y - _SHIFT) / _SCALE  # The model's units.
  np.testing.assert_allclose(task.objective(outputs, y),
                             _normal_nll(z, outputs['mean'], outputs['std']).sum(1).mean(),
                             rtol=1e-5)
  mean = outputs['mean'] * _SCALE + _SHIFT  # The targets' units.
  std = outputs['std'] * _SCALE
  real = _MASK == 1
  error = (mean - y)[real]
  metrics = _sums_to_metrics(task, outputs, y)
  assert metrics['nll'] == pytest.approx(_normal_nll(y, mean, std)[real].sum(1).mean(), rel=1e-5)
  assert metrics['loss'] == metrics['nll']
  assert metrics['mse'] == pytest.approx(np.mean(error ** 2), rel=1e-5)
  assert metrics['rmse'] == pytest.approx(math.sqrt(np.mean(error ** 2)), rel=1e-5)
  assert metrics['mae'] == pytest.approx(np.mean(np.abs(error)), rel=1e-5)
  # R^2 per output, averaged (as scikit-learn's r2_score).
  r2 = np.mean(1 - (error ** 2).sum(0) / ((y[real] - y[real].mean(0)) ** 2).sum(0))
  assert metrics['r2'] == pytest.approx(r2, rel=1e-4)
  predicted = task.predict(outputs)
  np.testing.assert_allclose(predicted['mean'], mean, rtol=1e-6)
  np.testing.assert_allclose(predicted['std'], std, rtol=1e-6)
  # The point head: its loss is the mean squared error (model units), and no NLL.
  point = regression.Regression(targets, 'mse')
  np.testing.assert_allclose(point.objective(outputs, y),
                             np.mean((outputs['mean'] - z) ** 2), rtol=1e-5)
  metrics = _sums_to_metrics(point, {'mean': outputs['mean']}, y)
  assert 'nll' not in metrics and metrics['loss'] == metrics['mse']


def _mixture_log_density(y, mean, std, logits):
  """log sum_k softmax(logits)_k prod_d N(y_d | mean_kd, std_kd^2), per row, in float64."""
  y, mean, std, logits = (np.asarray(a, np.float64) for a in (y, mean, std, logits))
  weights = np.exp(logits - logits.max(1, keepdims=True))
  weights /= weights.sum(1, keepdims=True)
  density = np.exp(-_normal_nll(y[:, None, :], mean, std).sum(-1))
  return np.log((weights * density).sum(1))


def test_mixture_density_matches_numpy_and_stays_finite():
  n, k = len(_MASK), 3
  targets = regression.Targets((2,), _SHIFT, _SCALE)
  task = mixture_density.MixtureDensity(targets, k)
  outputs = {'mean': _RNG.normal(size=(n, k, 2)).astype(np.float32),
             'std': _RNG.uniform(0.5, 2.0, (n, k, 2)).astype(np.float32),
             'logits': _RNG.normal(size=(n, k)).astype(np.float32)}
  y = _RNG.normal(size=(n, 2)).astype(np.float32) * 4
  z = (y - _SHIFT) / _SCALE
  np.testing.assert_allclose(
      task.objective(outputs, y),
      -_mixture_log_density(z, outputs['mean'], outputs['std'], outputs['logits']).mean(),
      rtol=1e-5)
  mean, std = outputs['mean'] * _SCALE + _SHIFT, outputs['std'] * _SCALE
  real = _MASK == 1
  metrics = _sums_to_metrics(task, outputs, y)
  nll = -_mixture_log_density(y, mean, std, outputs['logits'])[real].mean()
  assert metrics['nll'] == pytest.approx(nll, rel=1e-5) and metrics['loss'] == metrics['nll']
  weights = np.asarray(jax.nn.softmax(outputs['logits']))
  mixture_mean = np.einsum('bk,bkd->bd', weights, mean)
  assert metrics['rmse'] == pytest.approx(
      math.sqrt(np.mean((mixture_mean - y)[real] ** 2)), rel=1e-5)
  predicted = task.predict(outputs)
  np.testing.assert_allclose(predicted['mean'], mixture_mean, rtol=1e-5)
  np.testing.assert_allclose(predicted['weights'], weights, rtol=1e-5)
  # The most likely of the component means, by the whole mixture's density.
  at_means = [_mixture_log_density(np.broadcast_to(mean[:, j], (n, 2)), mean, std,
                                   outputs['logits']) for j in range(k)]
  best = np.argmax(np.stack(at_means, 1), 1)
  np.testing.assert_allclose(predicted['mode'], mean[np.arange(n), best], rtol=1e-6)
  # A component squeezed onto a point far from the data: the loss and its
  # gradient stay finite (the std-dev has a floor; the sum is in log space).
  head_raw = jnp.full((n, k, 2), -50.0)  # softplus(-50) ~ 0: the floor holds.
  def loss(raw):
    squeezed = {**outputs, 'std': regression.positive_std(raw),
                'mean': outputs['mean'] + 1e3, 'logits': outputs['logits'] * 1e3}
    return task.objective(squeezed, y)
  value, grad = jax.value_and_grad(loss)(head_raw)
  assert np.isfinite(value) and np.all(np.isfinite(grad))


def test_classification_matches_numpy():
  n = len(_MASK)
  task = classification.Classification(4)
  logits = _RNG.normal(size=(n, 4)).astype(np.float32)
  labels = _RNG.integers(0, 4, n).astype(np.int32)
  log_probs = logits - np.log(np.exp(logits).sum(1, keepdims=True))
  cross_entropy = -log_probs[np.arange(n), labels]
  np.testing.assert_allclose(task.objective(logits, labels), cross_entropy.mean(), rtol=1e-5)
  real = _MASK == 1
  metrics = _sums_to_metrics(task, logits, labels)
  assert metrics['loss'] == pytest.approx(cross_entropy[real].mean(), rel=1e-5)
  assert metrics['accuracy'] == pytest.approx(np.mean((logits.argmax(1) == labels)[real]))


def test_every_task_metric_has_a_direction():
  for name in tasks.NAMES:
    for loss in regression.LOSSES:
      for metric in tasks.metrics(tiny_config(task=name, regression_loss=loss)):
        assert metric in metrics_lib.CATALOGUE, (name, metric)
  assert selection.direction('nll') == 'minimize' and selection.direction('r2') == 'maximize'


@pytest.mark.slow  # Over five seconds here: the full suite runs it.
def test_an_mdn_run_resumes_mid_epoch_to_the_same_bits_and_keeps_the_lowest_nll(tmp_path,
                                                                              restored_steps):
  straight, resumed = tmp_path / 'straight', tmp_path / 'resumed'
  config = mdn_config(checkpoint_every_steps=4, checkpoint_every_epochs=1, keep_checkpoints=10)
  final, summary = train.train_and_evaluate(config, str(straight))
  assert summary['step'] == 3 * 8 and checkpoint_steps(straight) == [4, 8, 12, 16, 20, 24]
  # Every figure of the task, for the validation and the test split.
  for name in ('loss', 'nll', 'rmse'):
    for prefix in ('eval_', 'best_eval_', 'test_', 'best_test_'):
      assert math.isfinite(summary[prefix + name]), prefix + name
  assert 'test_accuracy' not in summary and summary['best_metric'] == 'nll'
  # The best checkpoint is the epoch with the lowest validation NLL.
  with open(straight / 'metrics.jsonl') as f:
    evals = {r['step']: r['metrics']['nll'] for r in map(json.loads, f) if r['split'] == 'eval'}
  assert summary['best_step'] == min(evals, key=evals.get)
  assert summary['best_eval_nll'] == pytest.approx(min(evals.values()), rel=1e-6)
  shutil.copytree(straight, resumed)
  for step in checkpoint_steps(resumed):
    if step > 12:  # Resume mid-epoch 2.
      shutil.rmtree(resumed / 'checkpoints' / str(step))
  state, again = train.train_and_evaluate(config, str(resumed))
  assert restored_steps == [12]  # It resumed: a retrain from scratch ends alike.
  jax.tree.map(np.testing.assert_array_equal, state.params, final.params)
  jax.tree.map(np.testing.assert_array_equal, state.opt_state, final.opt_state)
  for key in ('eval_nll', 'test_nll', 'best_step', 'best_test_nll'):
    assert again[key] == summary[key], key


def test_regression_on_an_npz_file_fits_as_least_squares_does(tmp_path):
  rng = np.random.default_rng(1)
  x = rng.normal(size=(1200, 3)).astype(np.float32) * [1.0, 10.0, 0.1]
  y = (x @ np.array([2.0, -0.3, 15.0]) + 40.0 + rng.normal(0, 0.5, 1200)).astype(np.float32)
  np.savez(tmp_path / 'data.npz', x=x, y=y)
  config = tiny_config(task='regression', regression_loss='mse', normalization='per_feature',
                       dataset=str(tmp_path / 'data.npz'), train_split='train[:1000]',
                       validation_split='train[1000:1100]', test_split='train[1100:]',
                       best_metric='rmse', batch_size=32, num_epochs=20,
                       learning_rate=1e-2, schedule='constant',
                       **{'model.hidden_sizes': (), 'model.dropout_rates': (),
                          'model.use_batchnorm': False})
  _, summary = train.train_and_evaluate(config, str(tmp_path / 'run'))
  # A linear model: the least-squares fit is the best it can reach.
  design = np.c_[x[:1000], np.ones(1000)]
  coef = np.linalg.lstsq(design, y[:1000], rcond=None)[0]
  errors = np.c_[x[1100:], np.ones(100)] @ coef - y[1100:]
  assert summary['test_rmse'] == pytest.approx(np.sqrt(np.mean(errors ** 2)), rel=0.05)
  r2 = 1 - np.sum(errors ** 2) / np.sum((y[1100:] - y[1100:].mean()) ** 2)
  assert summary['test_r2'] == pytest.approx(r2, abs=0.005)
  with open(tmp_path / 'run' / 'model.json') as f:
    spec = json.load(f)
  # Standardised with the training split's statistics, kept for eval and predict.
  np.testing.assert_allclose(spec['shift'], x[:1000].mean(0), rtol=1e-5)
  np.testing.assert_allclose(spec['target_shift'], [y[:1000].mean()], rtol=1e-5)


@pytest.mark.parametrize('arrays, overrides, message', [
    ({'features': np.zeros((4, 1)), 'y': np.zeros(4)}, {},
     "has 'y' but no 'x'"),
    ({'x': np.zeros((4, 1)), 'y': np.zeros(5)}, {}, 'has 4 rows of x but 5 of y'),
    ({'x': np.array([[0.0], [np.nan]] * 2), 'y': np.zeros(4)}, {},
     'x of split .train. holds 2 NaN or infinite values .the first in row 1.'),
    ({'x': np.zeros((4, 1)), 'y': np.array([0.0, np.inf, 1, 2])}, {},
     'y of split .train. holds 1 NaN or infinite'),
    ({'x': np.zeros((4, 1)), 'y': np.linspace(0, 1, 4)}, {'task': 'classification'},
     "task='classification': needs integer class labels"),
    ({'x': np.zeros((4, 1)), 'y': np.zeros(4)}, {'num_components': 0},
     'num_components=0: must be an integer >= 1'),
    ({'x': np.zeros((4, 1)), 'y': np.zeros(4)}, {'best_metric': 'accuracy'},
     "best_metric='accuracy': is not a metric task='regression' reports"),
    ({'x': np.zeros((4, 1)), 'y': np.zeros(4)}, {'early_stopping_metric': 'r2'},
     "early_stopping_metric='r2': is not a metric task='mixture_density' reports"),
    ({'x': np.zeros((4, 1)), 'y': np.zeros(4)}, {'normalization': 'unit'},
     "normalization='unit': divides uint8 pixels by 255"),
    ({'x': np.zeros((4, 1)), 'y': np.array([0, 1, -1, 2])}, {'task': 'classification'},
     "task='classification': needs integer class labels .* not all class labels 0..K-1"),
    ({'x': np.zeros((4, 1)), 'y': np.zeros(4, np.int64)}, {'task': 'classification'},
     "task='classification': needs integer class labels .at least 2 classes.; .* has 1 class"),
    # The named splits were ignored for 'x'/'y'.
    ({'x': np.zeros((4, 1)), 'y': np.zeros(4), 'x_test': np.zeros((4, 1)),
      'y_test': np.zeros(4)}, {}, r"holds both 'x'/'y' .* and named splits \(x_test, y_test\)"),
    ({'x': np.array([{'a': 1}] * 4, dtype=object), 'y': np.zeros(4)}, {},
     r'cannot be read as a .npz file \(ValueError: Object arrays cannot be loaded'),
    # Cast to 32 bits, these wrapped to -807,049,216 or became inf.
    ({'x': np.array([[1.0], [2.0], [1e300], [3.0]]), 'y': np.zeros(4)}, {},
     r"x of split .train. holds 1 values past 32 bits' range \(np.float64\(1e\+300\) in row 2\)"),
    ({'x': np.zeros((4, 1)), 'y': np.array([0, 1, 1_700_000_000_000, 1])},
     {'task': 'classification'}, r"y of split .train. holds 1 values past 32 bits' range"),
    # Labels of shape [n, 1]: the loss broadcast them against every row of the batch.
    ({'x': np.zeros((4, 1)), 'y': np.array([[0], [1], [0], [1]])}, {'task': 'binary'},
     r"task='binary': needs one label per example; .* targets of shape \(1,\) each"),
    ({'x': np.zeros((4, 1)), 'y': np.array([[0], [1], [2], [1]])}, {'task': 'classification'},
     r"task='classification': needs one label per example; .* shape \(1,\) each"),
])
def test_bad_arrays_and_settings_are_refused_before_any_work(tmp_path, arrays, overrides,
                                                             message):
  np.savez(tmp_path / 'data.npz', **arrays)
  task = overrides.get('task', 'mixture_density' if 'early_stopping_metric' in overrides
                       else 'regression')
  config = tiny_config(task=task, normalization='per_feature', dataset=str(tmp_path / 'data.npz'),
                       test_split='train', batch_size=2,
                       best_metric='accuracy' if task in ('classification', 'binary') else 'nll')
  config.update(overrides)
  with pytest.raises(cli.INPUT_ERRORS, match=message):
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()


def test_synthetic_splits_are_fresh_draws_fixed_by_their_seed():
  first = synthetic.splits('inverse_sine', (100, 50, 50), seed=3)
  again = synthetic.splits('inverse_sine', (100, 50, 50), seed=3)
  other = synthetic.splits('inverse_sine', (100, 50, 50), seed=4)
  np.testing.assert_array_equal(first['test']['x'], again['test']['x'])
  assert not np.array_equal(first['test']['x'], other['test']['x'])
  assert not np.array_equal(first['train']['y'][:50], first['test']['y'])
  assert np.all(np.abs(first['train']['y']) <= synthetic.Y_LIMIT)
  # The generator's own NLL is a density: p(y | x) integrates to 1 over y.
  grid = np.linspace(-synthetic.Y_LIMIT, synthetic.Y_LIMIT, 4001)
  p = np.exp(-synthetic.inverse_sine_nll(np.full_like(grid, 1.0), grid))
  assert np.trapezoid(p, grid) == pytest.approx(1.0, rel=1e-3)


def test_train_figures_are_in_the_targets_units_like_the_evaluation():
  n = len(_MASK)
  targets = regression.Targets((2,), _SHIFT, _SCALE)
  outputs = {'mean': _RNG.normal(size=(n, 3, 2)).astype(np.float32),
             'std': _RNG.uniform(0.5, 2.0, (n, 3, 2)).astype(np.float32),
             'logits': _RNG.normal(size=(n, 3)).astype(np.float32)}
  y = _RNG.normal(size=(n, 2)).astype(np.float32)
  everything = np.ones(n, np.float32)
  for task, out in ((mixture_density.MixtureDensity(targets, 3), outputs),
                    (regression.Regression(targets, 'nll'),
                     {k: outputs[k][:, 0] for k in ('mean', 'std')})):
    sums = task.eval_sums(out, y, everything)
    assert float(task.train_metrics(out, y, task.objective(out, y))['nll']) == pytest.approx(
        float(sums['nll_sum']) / n, rel=1e-5)


@pytest.mark.parametrize('task, dataset, columns', [
    ('classification', 'synthetic:blobs', ['row', 'class', 'probs_0', 'probs_1', 'probs_2']),
    ('regression', 'synthetic:linear', ['row', 'mean', 'std']),
    ('mixture_density', 'synthetic:inverse_sine',
     ['row', *[f'weights_{i}' for i in range(3)], *[f'means_{i}' for i in range(3)],
      *[f'stds_{i}' for i in range(3)], 'mean', 'mode']),
])
@pytest.mark.slow  # Three exports per task (jax2onnx).
def test_predict_summary_and_export_for_every_task(tmp_path, task, dataset, columns):
  config = tiny_config(task=task, dataset=dataset, synthetic_examples=(64, 32, 32),
                       normalization='per_feature', train_split='train',
                       validation_split='validation', test_split='test', num_components=3,
                       best_metric='accuracy' if task == 'classification' else 'nll',
                       num_epochs=1, plots=True)
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(config, workdir)
  drawn = {
      'classification': ['confusion_matrix.png', 'learning_curves.png', 'predictions.npz'],
      'regression': ['learning_curves.png', 'predicted_vs_true.png', 'predictions.npz'],
      'mixture_density': ['fit.png', 'gates.png', 'learning_curves.png',
                          'predicted_vs_true.png', 'predictions.npz']}[task]
  assert sorted(os.listdir(tmp_path / 'run' / 'plots')) == drawn
  assert all(os.path.getsize(tmp_path / 'run' / 'plots' / name) > 10_000
             for name in drawn if name.endswith('.png'))
  rows = synthetic.splits(dataset.split(':')[1], (5, 1, 1), seed=9)['train']['x']
  state, _, spec = restore_lib.restore(config, workdir)
  expected = jax.device_get(evaluation.predict_steps(
      optimizers.params_for_eval(state), {'x': rows[None]}))
  for suffix in ('.csv', '.npy', '.npz'):
    path = str(tmp_path / f'rows{suffix}')
    if suffix == '.csv':  # With a header, as a spreadsheet writes it.
      np.savetxt(path, rows.reshape(5, -1), delimiter=',', header='a,b,c', comments='')
    else:
      (np.save if suffix == '.npy' else lambda p, a: np.savez(p, x=a))(path, rows)
    written, table = predictions.predict_rows(config, workdir, path)
    with open(written) as f:
      lines = list(csv.reader(f))
    assert lines[0] == columns and len(lines) == 6, (suffix, lines[0])
    assert table.splitlines()[0].split() == columns[:9]
    # Every cell of every row, in the task's order of predictions.
    want = jax.tree.map(lambda v: np.asarray(v)[0], expected)
    cells = np.concatenate([np.asarray(want[name], np.float32).reshape(5, -1)
                            for name in state.task.PREDICTIONS if name in want], axis=1)
    assert [line[0] for line in lines[1:]] == ['0', '1', '2', '3', '4']
    got = np.array([[np.float32(cell) for cell in line[1:]] for line in lines[1:]])
    assert got.shape == cells.shape, suffix
    # Written exactly (float32's shortest text); computed in batches of another
    # shape than `expected`, so equal to float32 rounding.
    np.testing.assert_allclose(got, cells, rtol=1e-6, atol=1e-7, err_msg=suffix)
  features = int(np.prod(spec.input_shape))
  np.save(tmp_path / 'bad.npy', np.zeros(features + 1) if features > 1 else np.array([np.nan]))
  with pytest.raises(cli.INPUT_ERRORS, match=r'shape \(\d+,\); the model takes rows of shape'
                     if features > 1 else 'NaN'):
    predictions.predict_rows(config, workdir, str(tmp_path / 'bad.npy'))
  table = model_summary.table(config, model_summary.spec_without_data(config, workdir),
                              flops=False)
  assert 'Trainable parameters' in table
  if task == 'mixture_density':  # The two heads' outputs: 3 components x (mean, scale), gates.
    assert 'float32[1,6]' in table and 'float32[1,3]' in table
  # The SavedModel serves what predict writes, in the targets' units.
  tf = host_tensorflow.tensorflow()
  serve = tf.saved_model.load(saved_model.export_saved_model(config, workdir)).signatures[
      'serving_default']
  served = {k: v.numpy() for k, v in serve(features=tf.constant(rows)).items()}
  want = jax.tree.map(lambda v: np.asarray(v)[0], expected)
  if task == 'classification':
    want = {'scores': want['probs']}
  assert sorted(served) == sorted(want)
  for key, value in want.items():
    np.testing.assert_allclose(served[key], value, rtol=1e-4, atol=1e-5, err_msg=key)
  # The jax.export artifact (with jax and numpy alone) and the ONNX model (with
  # onnxruntime and numpy alone), each in a fresh process, at batch sizes 1 and 37.
  for kind, export in (('jax', jax_export.export), ('onnx', onnx_export.export)):
    got = run_export(kind, export(config, workdir), rows, str(tmp_path))
    for n in (1, 37):
      for key, value in want.items():
        np.testing.assert_allclose(got[f'b{n}_{key}'], value[np.arange(n) % len(rows)],
                                   rtol=1e-5, atol=1e-6, err_msg=f'{kind}: {key} at batch {n}')


@pytest.mark.slow  # Over five seconds here: the full suite runs it.
def test_a_search_on_the_mdns_validation_nll_minimises_it(tmp_path):
  from tests import test_search  # pylint: disable=g-import-not-at-top
  from optuna.trial import TrialState  # pylint: disable=g-import-not-at-top
  config = mdn_config(num_epochs=2, synthetic_examples=(256, 128, 128))
  with pytest.raises(cli.INPUT_ERRORS, match="metric: 'accuracy' is not a metric task="):
    test_search._spec(metric='accuracy', num_trials=2).check(config)  # pylint: disable=protected-access
  spec = test_search._spec(metric='nll', num_trials=3, sampler='tpe', startup_trials=2,  # pylint: disable=protected-access
                           space={'learning_rate': test_search.ss.Float(1e-3, 1e-1, log=True)})
  study, _, ran = test_search._search(tmp_path / 's', spec, config)  # pylint: disable=protected-access
  assert ran == 3 and study.direction.name == 'MINIMIZE'
  complete = study.get_trials(states=(TrialState.COMPLETE,))
  for trial in complete:  # Its best checkpoint's validation NLL (one saved per 25 epochs).
    assert trial.value >= min(trial.intermediate_values.values())
    summary = json.loads((tmp_path / 's' / trial.user_attrs['workdir'] / 'summary.json')
                         .read_text())
    assert trial.value == pytest.approx(summary['best_eval_nll'])
  assert study.best_value == min(t.value for t in complete)
  # The results table shows the task's figures.
  metrics = sweeps.summary_metrics(config)
  ranked = search_results.rows(study, str(tmp_path / 's'), metrics)
  search_results.write(study, str(tmp_path / 's'), ranked, metrics)
  assert ranked[0]['value'] == study.best_value
  assert ranked[0]['best_eval_nll'] == pytest.approx(study.best_value)
  with open(tmp_path / 's' / 'sweep_summary.csv') as f:
    assert {'best_eval_nll', 'eval_rmse', 'test_nll'} <= set(next(csv.reader(f)))
  assert '| test nll (info) |' in (tmp_path / 's' / 'sweep_summary.md').read_text()


@pytest.mark.slow  # Two process starts.
def test_an_mdn_run_sigkilled_in_training_resumes_to_the_uninterrupted_result(tmp_path):
  fields = {'synthetic_examples': (2048, 256, 256), 'num_epochs': 10,
            'checkpoint_every_epochs': 1, 'checkpoint_every_steps': 8, 'steps_per_call': 1,
            'keep_checkpoints': 2, 'plots': False, 'cache_dir': session_cache_dir()}
  _, expected = train.train_and_evaluate(mdn_config(**fields), str(tmp_path / 'straight'))
  killed = tmp_path / 'killed'
  command = main_command('--config=configs/mixture_density.py', f'--workdir={killed}',
                         '--config.progress=off',
                         *(f'--config.{k}={v}' for k, v in fields.items()))
  saved = sigkill_after_first_checkpoint(command, killed, tmp_path / 'kill.log')
  assert saved and saved[-1] < 320  # Killed in training, after a checkpoint.
  resumed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=ENV,
                           timeout=300)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f'Restored checkpoint {killed}/checkpoints/' in resumed.stderr
  got = json.loads((killed / 'summary.json').read_text())
  for key in ('step', 'eval_nll', 'test_nll', 'best_step', 'best_test_nll', 'test_rmse'):
    assert got[key] == expected[key], key
