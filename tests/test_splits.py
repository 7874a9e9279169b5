"""Honest model selection: train, validation and test splits; early stopping, plateaus."""

import json
import os
import shutil

import jax
import numpy as np
import pytest

from tests import conftest
from tests.helpers import tiny_config
from trainkit import errors
from trainkit.checkpoints import manager as checkpointing
from trainkit.data import pipeline as input_pipeline
from trainkit.data import sources
from trainkit.serving import restore as restore_lib
from trainkit.training import evaluation
import train

pytestmark = pytest.mark.usefixtures('mock_mnist')

# 50 mocked training examples: 40 to train on (5 steps of 8), 10 to validate.
SPLITS = {'train_split': 'train[:40]', 'validation_split': 'train[40:]'}


def _evals(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return {r['step']: r['metrics'] for r in map(json.loads, f) if r['split'] == 'eval'}


def test_the_best_checkpoint_is_chosen_by_validation_and_test_is_reported_apart(tmp_path):
  config = tiny_config(num_epochs=3, keep_checkpoints=1, best_metric='loss',
                       schedule='constant', learning_rate=1e-2, **SPLITS)
  train.train_and_evaluate(config, str(tmp_path))
  # A last epoch at a learning rate of 1 makes the validation loss worse: the
  # best checkpoint is not the latest, so choosing the latest would fail below.
  config.num_epochs, config.learning_rate = 4, 1.0
  state, summary = train.train_and_evaluate(config, str(tmp_path), continue_with_changes=True)
  data = input_pipeline.create_datasets(config)
  assert (data.num_train, data.num_validation, data.num_test) == (40, 10, 50)
  validation = input_pipeline.validation_view(data)
  # The epochs were evaluated on the validation split...
  evals = _evals(tmp_path)
  assert sorted(evals) == [5, 10, 15, 20]
  assert evals[20]['loss'] == pytest.approx(evaluation.evaluate(state, validation, 16)['loss'])
  # ... and the best checkpoint is the one with the lowest validation loss.
  best = min(evals, key=lambda step: evals[step]['loss'])
  assert best != 20 and summary['best_step'] == best and summary['eval_split'] == 'train[40:]'
  assert summary['best_eval_loss'] == evals[best]['loss']
  # The test split, evaluated apart: the final checkpoint and the best one.
  test = evaluation.evaluate(state, data, 16)
  assert summary['test_loss'] == pytest.approx(test['loss'])
  assert summary['test_loss'] != pytest.approx(summary['eval_loss'])
  manager = checkpointing.create_manager(str(tmp_path / 'checkpoints'), 1, best_metric='loss')
  try:
    best_state, _ = checkpointing.restore(manager, best, state)
  finally:
    manager.close()
  assert summary['best_test_loss'] == pytest.approx(
      evaluation.evaluate(best_state, data, 16)['loss'])
  assert summary['best_test_loss'] != pytest.approx(summary['test_loss'])
  # --mode=eval --split evaluates any split of a checkpoint.
  result = restore_lib.evaluate_checkpoint(config, str(tmp_path), split='train[40:]')
  assert result['split'] == 'train[40:]' and result['num_examples'] == 10
  assert result['eval_loss'] == pytest.approx(evals[20]['loss'])


@pytest.mark.parametrize('every_epochs, read_back', [(3, 0), (1, 1)])
def test_a_runs_best_test_figures_evaluate_its_own_copy_where_it_holds_epochs(
    tmp_path, monkeypatch, every_epochs, read_back):
  """Where epochs are held between saves, the best this run saved is not read back.

  Saving every epoch, nothing is held, and a copy kept to the end would be
  one more state on the device: the best is read back from disk.
  """
  config = tiny_config(num_epochs=4, keep_checkpoints=1, best_metric='loss',
                       schedule='constant', learning_rate=1.0,
                       checkpoint_every_epochs=every_epochs, **SPLITS)
  real_restore, restores = checkpointing.restore, []
  monkeypatch.setattr(checkpointing, 'restore',
                      lambda *a, **k: restores.append(a[1]) or real_restore(*a, **k))
  state, summary = train.train_and_evaluate(config, str(tmp_path))
  assert summary['best_step'] != summary['step']  # Else there is no best to evaluate apart.
  assert restores == [summary['best_step']] * read_back
  manager = checkpointing.create_manager(str(tmp_path / 'checkpoints'), 1, best_metric='loss')
  try:
    best_state, _ = real_restore(manager, summary['best_step'], state)
  finally:
    manager.close()
  best = evaluation.evaluate(best_state, input_pipeline.create_datasets(config), 16)
  assert summary['best_test_loss'] == best['loss']  # The same bits as the saved checkpoint's.
  assert summary['best_test_loss'] != summary['test_loss']


def test_saves_wait_for_the_minimum_interval_and_the_best_epoch_is_still_kept(tmp_path):
  config = tiny_config(num_epochs=4, keep_checkpoints=10, best_metric='loss',
                       schedule='constant', learning_rate=1.0, checkpoint_every_epochs=1,
                       checkpoint_min_interval_s=3600.0, **SPLITS)
  _, summary = train.train_and_evaluate(config, str(tmp_path))
  assert summary['best_step'] != summary['step']
  # Only the last epoch is saved by the cadence; the best, held until then, too.
  steps = sorted(int(name) for name in os.listdir(tmp_path / 'checkpoints'))
  assert steps == sorted([summary['best_step'], summary['step']])
  assert summary['best_eval_loss'] == min(r['loss'] for r in _evals(tmp_path).values())


def test_without_a_validation_split_no_checkpoint_is_chosen_by_test(tmp_path):
  _, summary = train.train_and_evaluate(tiny_config(), str(tmp_path))
  assert summary['eval_split'] == 'test'
  assert summary['test_accuracy'] == summary['eval_accuracy']
  assert 'best_test_accuracy' not in summary


def test_a_validation_split_overlapping_training_is_refused_unless_allowed(tmp_path):
  config = tiny_config(train_split='train[:40]', validation_split='train[30:]')
  with pytest.raises(sources.DataError, match='shares 10 examples with') as e:
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert '\n' not in str(e.value) and not (tmp_path / 'run').exists()
  config.allow_split_overlap = True
  assert input_pipeline.create_datasets(config).num_validation == 20


@pytest.mark.parametrize('spec, expected', [
    ('train[:10%]+train[-5:]', [('train', i) for i in (0, 1, 2, 3, 4, 45, 46, 47, 48, 49)]),
    ('train[40:]', [('train', i) for i in range(40, 50)]),
    ('test[:50%]', [('test', i) for i in range(25)])])
def test_split_syntax_selects_the_same_examples_in_both_modes(spec, expected):
  """The very examples the spec names, in order, in both input modes."""
  want = [conftest.FakeSource(split)[i] for split, i in expected]
  for mode in ('device', 'stream'):
    config = tiny_config(input_mode=mode, validation_split=spec, allow_split_overlap=True)
    data = input_pipeline.create_datasets(config)
    assert data.num_validation == len(expected)
    if mode == 'device':
      batches = jax.device_get(data.validation)
      mask = batches['mask'].reshape(-1)
      got = {k: batches[k].reshape(-1, *batches[k].shape[2:])[mask] for k in ('x', 'y')}
    else:
      got = data.validation.read(range(data.num_validation))
    np.testing.assert_array_equal(got['x'], np.stack([w['image'] for w in want]), mode)
    np.testing.assert_array_equal(got['y'], [w['label'] for w in want], mode)


def test_early_stopping_and_plateaus_decide_alike_after_a_resume(tmp_path, restored_steps):
  # Nothing counts as an improvement (min_delta 10): the learning rate is
  # halved after each epoch from the second, and the run stops after epoch 4.
  config = tiny_config(num_epochs=10, keep_checkpoints=10, early_stopping_patience=3,
                       early_stopping_min_delta=10.0, plateau_patience=1,
                       plateau_factor=0.5, plateau_min_delta=10.0, progress='off', **SPLITS)
  state, summary = train.train_and_evaluate(config, str(tmp_path / 'whole'))
  assert summary['stop_reason'].startswith('early stopping after epoch 4: the validation '
                                           'loss did not improve by more than 10 for 3 epochs')
  assert summary['step'] == 4 * 5 and summary['epoch'] == 4
  rate = float(state.opt_state.hyperparams['learning_rate'])
  assert rate == pytest.approx(1e-3 * 0.5 ** 3)
  # The logged train rate is the one the steps had: the schedule's, times the
  # cuts so far (after epochs 2 and 3 for epoch 4's steps; it ignored them).
  from trainkit.training import optimizers  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  schedule = optimizers.create_learning_rate_fn(config, 5)
  with open(tmp_path / 'whole' / 'metrics.jsonl') as f:
    logged = {r['step']: r['metrics'] for r in map(json.loads, f) if r['split'] == 'train'}
  for step, metrics in logged.items():
    cuts = max(0, (step - 1) // 5 - 1)  # Epochs ended with a cut before this step's epoch.
    assert metrics['learning_rate'] == pytest.approx(float(schedule(step - 1)) * 0.5 ** cuts)
    assert metrics['steps_per_s'] > 0  # It was 0 without a progress bar.
  # Killed after epoch 2's checkpoint: its later checkpoints never were.
  shutil.copytree(tmp_path / 'whole', tmp_path / 'resumed')
  for step in (15, 20):
    shutil.rmtree(tmp_path / 'resumed' / 'checkpoints' / str(step))
  resumed_state, resumed = train.train_and_evaluate(config, str(tmp_path / 'resumed'))
  assert restored_steps == [10]  # It resumed: a retrain from scratch ends alike.
  for key in ('stop_reason', 'step', 'eval_loss', 'test_loss', 'best_step'):
    assert resumed[key] == summary[key], key
  jax.tree.map(np.testing.assert_array_equal, resumed_state.params, state.params)
  jax.tree.map(np.testing.assert_array_equal, resumed_state.opt_state, state.opt_state)
  # Run again, a stopped run only re-evaluates.
  _, again = train.train_and_evaluate(config, str(tmp_path / 'whole'))
  assert again['step'] == 20 and again['stop_reason'] == summary['stop_reason']


def test_a_batch_larger_than_the_training_split_is_refused_before_any_work(tmp_path):
  config = tiny_config(batch_size=48, **SPLITS)  # 40 training examples.
  with pytest.raises(errors.ConfigError,
                     match=r'^batch_size=48: is larger than the training split \(40 examples\)'):
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()
  config.batch_size = 40  # One whole batch is enough.
  _, summary = train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert summary['step'] == 2


def test_early_stopping_on_accuracy(tmp_path):
  """On accuracy, higher is better: a rise counts, and a stall of `patience` epochs stops."""
  config = tiny_config(num_epochs=10, early_stopping_patience=2,
                       early_stopping_metric='accuracy', early_stopping_min_delta=1.0,
                       **SPLITS)
  _, summary = train.train_and_evaluate(config, str(tmp_path / 'stalled'))
  # No accuracy can rise by more than 1: epochs 2 and 3 count as stalls.
  assert summary['stop_reason'].startswith(
      'early stopping after epoch 3: the validation accuracy did not improve by more than 1 '
      'for 2 epochs')
  assert summary['epoch'] == 3
  evals = _evals(tmp_path / 'stalled')
  assert f'(best {evals[5]["accuracy"]:.6g})' in summary['stop_reason']  # The first epoch's.
  # Judged as a loss would be (lower is better), a falling accuracy would count
  # as improving: with min_delta 0 and rising accuracy it must never stop early.
  from trainkit.training import plateaus  # pylint: disable=g-import-not-at-top
  meta = {}
  for epoch, accuracy in enumerate([0.1, 0.2, 0.3, 0.4], 1):
    assert plateaus.early_stop(tiny_config(early_stopping_patience=1,
                                           early_stopping_metric='accuracy'),
                               meta, {'accuracy': accuracy, 'loss': 1.0}, epoch) is None
  assert plateaus.early_stop(tiny_config(early_stopping_patience=1,
                                         early_stopping_metric='accuracy'),
                             meta, {'accuracy': 0.35, 'loss': 1.0}, 5) is not None


@pytest.mark.parametrize('spec', [
    'train', 'test', 'train[:55000]', 'train[55000:]', 'train[10:20]', 'train[:60000]',
    'train[0:1]', 'train + test', 'train[:100]+test[5:]', 'train[:70%]', 'train[70%:85%]',
    'train[-5000:]', 'train[:0]', 'train[7:7]', 'train[:60001]', 'train[20:10]',
    'train[:-1]', 'train[1%:]', 'validation', 'train[', 'train[a:b]', 'train[10:20%]',
    'train[10%:20]', 'train[%:5]', 'train[:101%]', 'train[33%:67%]+test[:50%]',
    'test[:0%]', 'train[0%:100%]', 'train[1.5%:]', 'train[:]'])
def test_split_syntax_read_without_tfds_agrees_with_tfds(spec):
  """Whole splits and slices are read without TFDS, exactly as TFDS reads them."""
  import types  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from trainkit.data.sources import split_syntax  # pylint: disable=g-import-not-at-top
  for sizes in ({'train': 60000, 'test': 10001}, {'train': 569, 'test': 85},
                {'train': 7, 'test': 3}):  # Sizes whose percentages round.
    try:
      absolute = tfds.core.ReadInstruction.from_spec(spec).to_absolute(
          {k: types.SimpleNamespace(num_examples=v) for k, v in sizes.items()})
      expected = [(i.splitname, i.from_ or 0, sizes[i.splitname] if i.to is None else i.to)
                  for i in absolute]
    except (ValueError, AssertionError, KeyError):
      expected = 'refused'
    try:
      got = split_syntax.split_ranges(spec, sizes.__getitem__)
    except sources.DataError:
      got = 'refused'
    assert got == expected, sizes


def test_early_stopping_counts_afresh_when_its_metric_changes_on_a_resume():
  from trainkit.training import plateaus  # pylint: disable=g-import-not-at-top
  config = tiny_config(early_stopping_patience=2, early_stopping_metric='rmse',
                       early_stopping_min_delta=0.0)
  # Saved while stopping on r2 (higher is better): 0.95 is no bar for an rmse.
  meta = {'early_stopping_best': 0.95, 'early_stopping_wait': 1, 'early_stopping_for': 'r2'}
  assert plateaus.early_stop(config, meta, {'rmse': 500.0}, epoch=4) is None
  assert (meta['early_stopping_best'], meta['early_stopping_wait']) == (500.0, 0)
  # A run that stopped early on r2 trains on, its count started afresh.
  meta = {'early_stopping_best': 0.95, 'early_stopping_wait': 3, 'early_stopping_for': 'r2',
          'stop_reason': 'early stopping after epoch 9: ...'}
  plateaus.lift_early_stop(config, meta)
  assert 'stop_reason' not in meta and meta['early_stopping_wait'] == 0
  # A checkpoint from before the metric was recorded goes on as it was.
  meta = {'early_stopping_best': 400.0, 'early_stopping_wait': 1}
  assert 'did not improve' in plateaus.early_stop(config, meta, {'rmse': 500.0}, epoch=4)


def test_the_test_split_is_part_of_training_where_it_evaluates_the_epochs():
  from trainkit.workdirs import config_history  # pylint: disable=g-import-not-at-top
  stored = json.loads(json.dumps(tiny_config(validation_split='', test_split='test').to_dict()))
  other = tiny_config(validation_split='', test_split='test[:50%]')
  # It decides the best checkpoint and early stopping: a change is one to training.
  assert config_history.training_differences(stored, other) == {
      'test_split': ('test', 'test[:50%]')}
  assert 'test_split' in config_history.CONTINUABLE
  stored['validation_split'] = other.validation_split = 'train[40:]'
  assert config_history.training_differences(stored, other) == {}


def test_a_split_columns_values_with_dots_and_dashes_are_split_names():
  from trainkit.data.sources import split_syntax  # pylint: disable=g-import-not-at-top
  sizes = {'0.5': 10, '2020-01': 20, 'train': 30}.__getitem__
  # TFDS's parser reads neither: the docs' own example failed.
  assert split_syntax.split_ranges('0.5', sizes) == [('0.5', 0, 10)]
  assert split_syntax.split_ranges('2020-01[:50%]+train[:3]', sizes) == [
      ('2020-01', 0, 10), ('train', 0, 3)]
