"""Warm start: a new run initialised from another run's checkpoint (init_from)."""

import dataclasses
import json
import logging
import shutil

import jax
import numpy as np
import pytest

from tests.conftest import mock_data
from tests.helpers import digest
from tests.helpers import tiny_config
from trainkit import errors
from trainkit.training import evaluation
from trainkit.training import optimizers
from trainkit.serving import restore as restore_lib
from trainkit.workdirs import layout as workdir_lib
from trainkit.data import pipeline as input_pipeline
import train

from trainkit.training import state as state_lib
pytestmark = pytest.mark.usefixtures('mock_mnist')


@pytest.fixture(scope='module')
def source(tmp_path_factory):
  """A finished 4-epoch tiny run whose best checkpoint is not its latest: (config, workdir).

  Read only by the tests. A last epoch at a learning rate of 1 makes the
  validation loss worse, so `:best` and `:latest` name different checkpoints.
  """
  config = tiny_config(num_epochs=3, keep_checkpoints=1, learning_rate=1e-2,
                       schedule='constant', best_metric='loss', train_split='train[:40]',
                       validation_split='train[40:]')
  workdir = tmp_path_factory.mktemp('warm') / 'source'
  with mock_data():
    train.train_and_evaluate(config, str(workdir))
    config.num_epochs, config.learning_rate = 4, 1.0
    _, summary = train.train_and_evaluate(config, str(workdir), continue_with_changes=True)
  assert summary['best_step'] != summary['step'], 'the test needs best != latest'
  return config, str(workdir)


def test_a_warm_started_state_evaluates_exactly_as_its_checkpoint(source, tmp_path):
  config, workdir = source
  loaded, step, spec = restore_lib.restore(config, workdir, 'latest')
  warm = config.copy_and_resolve_references()
  warm.init_from = f'{workdir}:{step}'
  state = state_lib.warm_started(warm, state_lib.create_state(warm, spec))
  data = input_pipeline.create_datasets(config)
  assert evaluation.evaluate(state, data, 16) == evaluation.evaluate(loaded, data, 16)
  jax.tree.map(np.testing.assert_array_equal, state.params, loaded.params)
  jax.tree.map(np.testing.assert_array_equal, state.batch_stats, loaded.batch_stats)
  # A fresh optimizer and step counter.
  assert int(state.step) == 0
  fresh = state_lib.create_state(warm, spec)
  jax.tree.map(np.testing.assert_array_equal, state.opt_state, fresh.opt_state)


def test_an_average_of_the_parameters_starts_from_the_warm_started_ones(source, tmp_path):
  """With ema_decay, evaluation uses the average: it starts at the loaded parameters."""
  config, workdir = source
  loaded, step, spec = restore_lib.restore(config, workdir, 'latest')
  warm = config.copy_and_resolve_references()
  warm.init_from, warm.ema_decay = f'{workdir}:{step}', 0.9
  state = state_lib.warm_started(warm, state_lib.create_state(warm, spec))
  averaged = optimizers.params_for_eval(state).params
  jax.tree.map(np.testing.assert_array_equal, averaged, loaded.params)
  data = input_pipeline.create_datasets(config)
  assert evaluation.evaluate(state, data, 16) == evaluation.evaluate(loaded, data, 16)


@pytest.mark.slow  # Trains a model of its own.
def test_a_source_keeping_an_average_gives_the_average(source, tmp_path):
  """It evaluated, ranked and exported with its average (ema_decay): the raw
  parameters were loaded."""
  config, _ = source
  averaging = config.copy_and_resolve_references()
  averaging.ema_decay = 0.9
  train.train_and_evaluate(averaging, str(tmp_path / 'ema'))
  loaded, step, spec = restore_lib.restore(averaging, str(tmp_path / 'ema'), 'latest')
  warm = config.copy_and_resolve_references()
  warm.init_from = f'{tmp_path / "ema"}:{step}'
  state = state_lib.warm_started(warm, state_lib.create_state(warm, spec))
  jax.tree.map(np.testing.assert_array_equal, state.params,
               optimizers.params_for_eval(loaded).params)
  assert not np.array_equal(state.params['Dense_0']['kernel'], loaded.params['Dense_0']['kernel'])


def test_a_new_head_is_refused_unless_left_fresh(source, tmp_path, caplog):
  config, workdir = source
  spec = dataclasses.replace(workdir_lib.ModelSpec.read(workdir), num_classes=5)
  warm = config.copy_and_resolve_references()
  warm.init_from = f'{workdir}:best'
  with pytest.raises(errors.ConfigError,
                     match=r'params/Dense_1/bias is \(10,\) float32 in checkpoint \d+ but '
                           r'\(5,\) float32 here') as e:
    state_lib.warm_started(warm, state_lib.create_state(warm, spec))
  assert '\n' not in str(e.value)
  warm.init_exclude = 'Dense_1'
  state = state_lib.warm_started(warm, state_lib.create_state(warm, spec))
  loaded, best, _ = restore_lib.restore(config, workdir, 'best')
  latest, _, _ = restore_lib.restore(config, workdir, 'latest')
  np.testing.assert_array_equal(state.params['Dense_0']['kernel'],
                                loaded.params['Dense_0']['kernel'])
  # :best is the best checkpoint, not the latest (the fixture makes them differ).
  assert not np.array_equal(state.params['Dense_0']['kernel'],
                            latest.params['Dense_0']['kernel'])
  np.testing.assert_array_equal(state.params['Dense_1']['kernel'],
                                state_lib.create_state(warm, spec).params['Dense_1']['kernel'])
  # A pattern that matches nothing (a typo) would load the head it meant to keep fresh.
  warm.init_exclude = 'Dense_9'
  spec = workdir_lib.ModelSpec.read(workdir)
  with pytest.raises(errors.ConfigError, match="init_exclude='Dense_9' matches none of the "
                     "model's arrays, so every one would be loaded"):
    state_lib.warm_started(warm, state_lib.create_state(warm, spec))
  # The source's arrays this model has no place for are named, not dropped unsaid.
  warm.init_exclude, warm.model.use_batchnorm = '', False
  with caplog.at_level(logging.WARNING, logger='absl'):
    state_lib.warm_started(warm, state_lib.create_state(warm, spec))
  assert 'of its arrays have no place in this model and are not used: params/BatchNorm_0/' in (
      caplog.text)


def _max_difference(a, b) -> float:
  return max(float(np.max(np.abs(x - y))) for x, y in zip(jax.tree.leaves(a),
                                                          jax.tree.leaves(b)))


def test_a_warm_started_run_trains_from_the_source_and_outlives_it(source, tmp_path,
                                                                   caplog):
  config, workdir = source
  copy = tmp_path / 'source'  # The source, to be deleted below.
  shutil.copytree(workdir, copy)
  # A rate so small that an epoch moves no parameter by 1e-4: the warm run
  # ends where its source was, a fresh one far from it.
  warm = tiny_config(init_from=f'{copy}:latest', num_epochs=1, learning_rate=1e-7,
                     train_split='train[:40]', validation_split='train[40:]')
  with caplog.at_level(logging.INFO, logger='absl'):
    warm_state, _ = train.train_and_evaluate(warm, str(tmp_path / 'new'))
  assert f'Warm start: parameters and BatchNorm statistics from {copy}' in caplog.text
  fresh = warm.copy_and_resolve_references()
  fresh.init_from = ''
  fresh_state, _ = train.train_and_evaluate(fresh, str(tmp_path / 'fresh'))
  trained, _, _ = restore_lib.restore(config, workdir, 'latest')
  assert _max_difference(warm_state.params, trained.params) < 1e-4
  assert _max_difference(fresh_state.params, trained.params) > 1e-2
  # Once it has checkpoints of its own, the source matters no more: gone,
  # the workdir still resumes (more epochs), evaluates and re-runs.
  shutil.rmtree(copy)
  caplog.clear()
  more = warm.copy_and_resolve_references()
  more.num_epochs = 2
  with caplog.at_level(logging.INFO, logger='absl'):
    train.train_and_evaluate(more, str(tmp_path / 'new'), continue_with_changes=True)
  assert 'Warm start' not in caplog.text
  assert workdir_lib.checkpoint_steps(tmp_path / 'new')[-1] == 10
  restore_lib.evaluate_checkpoint(more, str(tmp_path / 'new'))
  # A new run from it is refused in one line, before any work.
  with pytest.raises(errors.ConfigError, match='has no checkpoints folder'):
    train.train_and_evaluate(warm, str(tmp_path / 'other'))
  assert not (tmp_path / 'other').exists()
  steps = workdir_lib.checkpoint_steps(workdir)
  seventh = tiny_config(init_from=f'{workdir}:7')
  fresh = state_lib.create_state(seventh, workdir_lib.ModelSpec.read(workdir))
  with pytest.raises(errors.ConfigError, match="init_from='.*:7' is not latest, best"):
    state_lib.warm_started(seventh, fresh)
  assert 7 not in steps
  # A run from it is refused before any work (it was, after loading the data, leaving
  # the new workdir's checkpoints folder and lock).
  with pytest.raises(errors.ConfigError, match="init_from='.*:7' is not latest, best"):
    train.train_and_evaluate(seventh, str(tmp_path / 'seventh'))
  assert not (tmp_path / 'seventh').exists()


def test_best_is_refused_where_no_checkpoint_was_chosen(tmp_path):
  no_validation = tmp_path / 'plain'
  train.train_and_evaluate(tiny_config(num_epochs=1), str(no_validation))
  warm = tiny_config(init_from=f'{no_validation}:best', num_epochs=1)
  with pytest.raises(errors.ConfigError, match='no best checkpoint') as e:
    train.train_and_evaluate(warm, str(tmp_path / 'new'))
  assert 'without a validation split' in str(e.value) and '\n' not in str(e.value)


@pytest.mark.parametrize('damage', ['checksum', 'metadata'])
def test_a_warm_started_run_whose_checkpoints_are_all_broken_starts_from_the_source(
    source, tmp_path, caplog, damage):
  """Its checkpoints set aside, it is a new run again: warm-started, as one in a new workdir.

  A wrong checksum is found when restoring; unreadable checkpoint metadata
  when the manager opens the folder, before the restore.
  """
  _, workdir = source
  warm = tiny_config(init_from=f'{workdir}:latest', num_epochs=1, learning_rate=1e-7,
                     train_split='train[:40]', validation_split='train[40:]')
  train.train_and_evaluate(warm, str(tmp_path / 'new'))
  steps = workdir_lib.checkpoint_steps(tmp_path / 'new')
  for step in steps:
    folder = tmp_path / 'new' / 'checkpoints' / str(step)
    if damage == 'checksum':  # Reads back as other arrays than it saved.
      meta = json.loads((folder / 'meta' / 'metadata').read_text())
      meta['state_crc32'] ^= 1
      (folder / 'meta' / 'metadata').write_text(json.dumps(meta))
    else:
      (folder / '_CHECKPOINT_METADATA').write_text('{"cut short')
  more = warm.copy_and_resolve_references()
  more.num_epochs = 2
  caplog.clear()
  with caplog.at_level(logging.INFO, logger='absl'):
    again, _ = train.train_and_evaluate(more, str(tmp_path / 'new'), continue_with_changes=True)
  assert 'is broken' in caplog.text
  assert f'Warm start: parameters and BatchNorm statistics from {workdir}' in caplog.text
  assert sorted(int(p.name) for p in (tmp_path / 'new' / 'broken_checkpoints').iterdir()) == steps
  direct, _ = train.train_and_evaluate(more, str(tmp_path / 'direct'))
  jax.tree.map(np.testing.assert_array_equal, again.params, direct.params)


@pytest.mark.parametrize('damage', ['checksum', 'metadata'])
def test_broken_checkpoints_and_a_source_gone_are_refused_with_the_workdir_untouched(
    source, tmp_path, damage):
  """Nothing left to resume and nothing to start from: refused before a checkpoint is moved.

  Setting the broken ones aside only to refuse would leave the workdir
  changed by a command that did nothing.
  """
  _, workdir = source
  copy = tmp_path / 'source'
  shutil.copytree(workdir, copy)
  warm = tiny_config(init_from=f'{copy}:latest', num_epochs=1, learning_rate=1e-7,
                     train_split='train[:40]', validation_split='train[40:]')
  train.train_and_evaluate(warm, str(tmp_path / 'new'))
  for step in workdir_lib.checkpoint_steps(tmp_path / 'new'):
    folder = tmp_path / 'new' / 'checkpoints' / str(step)
    if damage == 'checksum':
      meta = json.loads((folder / 'meta' / 'metadata').read_text())
      meta['state_crc32'] ^= 1
      (folder / 'meta' / 'metadata').write_text(json.dumps(meta))
    else:
      (folder / '_CHECKPOINT_METADATA').write_text('{"cut short')
  shutil.rmtree(copy)
  before = digest(tmp_path / 'new')
  more = warm.copy_and_resolve_references()
  more.num_epochs = 2
  with pytest.raises(errors.ConfigError, match='has no checkpoints folder') as e:
    train.train_and_evaluate(more, str(tmp_path / 'new'), continue_with_changes=True)
  assert '\n' not in str(e.value)
  assert digest(tmp_path / 'new') == before
  assert not (tmp_path / 'new' / 'broken_checkpoints').exists()
