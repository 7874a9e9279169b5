"""Warm start: a new run initialised from another run's checkpoint (init_from)."""

import dataclasses
import json
import logging

import jax
import numpy as np
import pytest

from tests.conftest import mock_data
from tests.helpers import tiny_config
from trainkit import config_checks
from trainkit import evaluation
from trainkit import inference
from trainkit import workdir as workdir_lib
import input_pipeline
import train

pytestmark = pytest.mark.usefixtures('mock_mnist')


@pytest.fixture(scope='module')
def source(tmp_path_factory):
  """A finished 2-epoch tiny run, read only by the tests: (config, workdir)."""
  config, workdir = tiny_config(), tmp_path_factory.mktemp('warm') / 'source'
  with mock_data():
    train.train_and_evaluate(config, str(workdir))
  return config, str(workdir)


def test_a_warm_started_state_evaluates_exactly_as_its_checkpoint(source, tmp_path):
  config, workdir = source
  loaded, step, spec = inference.restore(config, workdir, 'latest')
  warm = config.copy_and_resolve_references()
  warm.init_from = f'{workdir}:{step}'
  state = train.initial_state(warm, spec, str(tmp_path / 'new'))
  data = input_pipeline.create_datasets(config)
  assert evaluation.evaluate(state, data, 16) == evaluation.evaluate(loaded, data, 16)
  jax.tree.map(np.testing.assert_array_equal, state.params, loaded.params)
  jax.tree.map(np.testing.assert_array_equal, state.batch_stats, loaded.batch_stats)
  # A fresh optimizer and step counter.
  assert int(state.step) == 0
  fresh = train.create_state(warm, spec)
  jax.tree.map(np.testing.assert_array_equal, state.opt_state, fresh.opt_state)


def test_a_new_head_is_refused_unless_left_fresh(source, tmp_path):
  config, workdir = source
  spec = dataclasses.replace(workdir_lib.ModelSpec.read(workdir), num_classes=5)
  warm = config.copy_and_resolve_references()
  warm.init_from = f'{workdir}:best'
  with pytest.raises(config_checks.ConfigError,
                     match=r'params/Dense_1/bias is \(10,\) float32 in checkpoint \d+ but '
                           r'\(5,\) float32 here') as e:
    train.initial_state(warm, spec, str(tmp_path / 'new'))
  assert '\n' not in str(e.value)
  warm.init_exclude = 'Dense_1'
  state = train.initial_state(warm, spec, str(tmp_path / 'new'))
  loaded, _, _ = inference.restore(config, workdir, 'best')
  np.testing.assert_array_equal(state.params['Dense_0']['kernel'],
                                loaded.params['Dense_0']['kernel'])
  np.testing.assert_array_equal(state.params['Dense_1']['kernel'],
                                train.create_state(warm, spec).params['Dense_1']['kernel'])


def test_a_warm_started_run_trains_and_a_resume_ignores_init_from(source, tmp_path, caplog):
  config, workdir = source
  warm = tiny_config(init_from=workdir, num_epochs=1, learning_rate=1e-4)
  with caplog.at_level(logging.INFO, logger='absl'):
    _, summary = train.train_and_evaluate(warm, str(tmp_path / 'new'))
  assert f'Warm start: parameters and BatchNorm statistics from {workdir}' in caplog.text
  with open(f'{workdir}/summary.json') as f:
    source_loss = json.load(f)['eval_loss']
  # One more epoch at a small rate from the trained weights: near where it was.
  assert summary['eval_loss'] < source_loss + 0.5
  caplog.clear()
  with caplog.at_level(logging.INFO, logger='absl'):
    train.train_and_evaluate(warm, str(tmp_path / 'new'))
  assert 'Warm start' not in caplog.text
  with pytest.raises(config_checks.ConfigError, match='has no checkpoints folder'):
    config_checks.validate(tiny_config(init_from=str(tmp_path / 'nowhere')))
  steps = workdir_lib.checkpoint_steps(workdir)
  with pytest.raises(config_checks.ConfigError, match='no such checkpoint'):
    train.initial_state(tiny_config(init_from=f'{workdir}:7'),
                        workdir_lib.ModelSpec.read(workdir), str(tmp_path / 'other'))
  assert 7 not in steps
