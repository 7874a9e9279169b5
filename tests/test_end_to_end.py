"""train_and_evaluate on mocked TFDS data: outputs, resume, re-runs, mismatch."""

import glob
import json
import logging
import os
import shutil

import jax
import numpy as np
import pytest

from tests.helpers import checkpoint_steps, digest, tiny_config, without_timing
from trainkit.checkpoints import manager as checkpointing
from trainkit import errors
from trainkit.training import optimizers
from trainkit.workdirs import config_history
import train



pytestmark = pytest.mark.usefixtures('mock_mnist')


def _run(workdir, continue_with_changes=False, **overrides):
  return train.train_and_evaluate(tiny_config(**overrides), str(workdir),
                                  continue_with_changes=continue_with_changes)


def test_run_writes_every_output(tmp_path):
  state, summary = _run(tmp_path)
  assert int(state.step) == 12
  assert checkpoint_steps(tmp_path) == [6, 12]
  with open(tmp_path / 'summary.json') as f:
    written = json.load(f)
  assert written == summary
  for key in ('eval_accuracy', 'eval_loss', 'best_eval_accuracy', 'step', 'epoch',
              'train_wall_s', 'examples_per_s'):
    assert key in written
  assert written['step'] == 12 and written['epoch'] == 2.0
  assert 0.0 <= written['eval_accuracy'] <= 1.0
  # No validation split: nothing is chosen by the test split.
  assert written['best_metric'] is None and written['best_step'] is None
  assert written['best_eval_accuracy'] is None and written['best_eval_loss'] is None
  with open(tmp_path / 'config.json') as f:
    assert json.load(f)['model']['hidden_sizes'] == [16]
  with open(tmp_path / 'metrics.jsonl') as f:
    events = [json.loads(line) for line in f]
  assert [e['step'] for e in events if e['split'] == 'eval'] == [6, 12]
  assert [e['step'] for e in events if e['split'] == 'train'] == [2, 4, 6, 8, 10, 12]
  assert [e['step'] for e in events if e['split'] == 'epoch'] == [6, 12]
  assert {'loss', 'accuracy', 'learning_rate'} <= set(events[0]['metrics'])
  assert glob.glob(str(tmp_path / 'events.out.tfevents.*'))


@pytest.mark.parametrize('input_mode', ['device', 'stream'])
def test_resume_matches_an_uninterrupted_run(tmp_path, input_mode, caplog):
  """Resumes from mid-epoch and epoch-end checkpoints land on the same result."""
  straight, resumed = tmp_path / 'straight', tmp_path / 'resumed'
  kw = dict(checkpoint_every_steps=4, keep_checkpoints=10, input_mode=input_mode)
  final_state, summary = _run(straight, **kw)
  assert checkpoint_steps(straight) == [4, 6, 8, 12]
  for keep_up_to in (8, 4):  # Resume at step 8 (mid epoch 2), then at step 4.
    shutil.rmtree(resumed, ignore_errors=True)
    shutil.copytree(straight, resumed)
    for step in checkpoint_steps(resumed):
      if step > keep_up_to:
        shutil.rmtree(resumed / 'checkpoints' / str(step))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger='absl'):
      state, resumed_summary = _run(resumed, **kw)
    # It resumed (a retrain from scratch would give the same numbers).
    assert f'Restored checkpoint {resumed}/checkpoints/{keep_up_to}.' in caplog.text
    assert f'Training from step {keep_up_to} to 12' in caplog.text
    if input_mode == 'stream':  # Mid-epoch, from the checkpointed Grain iterator.
      assert f'Input resumed from its saved Grain state at step {keep_up_to}.' in caplog.text
    assert resumed_summary['eval_loss'] == summary['eval_loss']
    assert resumed_summary['eval_accuracy'] == summary['eval_accuracy']
    jax.tree.map(np.testing.assert_array_equal, state.params, final_state.params)
    jax.tree.map(np.testing.assert_array_equal, state.batch_stats,
                 final_state.batch_stats)
    jax.tree.map(np.testing.assert_array_equal, state.opt_state,
                 final_state.opt_state)


def test_a_resume_between_logged_steps_logs_the_uninterrupted_averages(tmp_path):
  """The train metrics' open window is in the checkpoint: steps 4-6 are averaged, not 5-6."""
  straight, resumed = tmp_path / 'straight', tmp_path / 'resumed'
  kw = dict(checkpoint_every_steps=4, keep_checkpoints=10, log_every_steps=3)
  _run(straight, **kw)
  shutil.copytree(straight, resumed)
  for step in checkpoint_steps(resumed):
    if step > 4:
      shutil.rmtree(resumed / 'checkpoints' / str(step))
  _run(resumed, **kw)

  def train_lines(workdir):
    with open(workdir / 'metrics.jsonl') as f:
      return [(e['step'], {k: v for k, v in e['metrics'].items() if k != 'steps_per_s'})
              for e in map(json.loads, f) if e['split'] == 'train']
  assert [step for step, _ in train_lines(resumed)] == [3, 6, 9, 12]
  assert train_lines(resumed) == train_lines(straight)


def test_a_longer_patience_continues_a_run_that_stopped_early(tmp_path):
  # No epoch improves the loss by 10: the second epoch's wait of 1 stops it.
  kw = dict(num_epochs=4, early_stopping_patience=1, early_stopping_min_delta=10.0)
  _, stopped = _run(tmp_path, **kw)
  assert stopped['step'] == 12 and stopped['stop_reason'].startswith('early stopping after')
  _, again = _run(tmp_path, **kw)  # The same patience: it stays stopped.
  assert without_timing(again) == without_timing(stopped)
  _, longer = _run(tmp_path, continue_with_changes=True,
                   **{**kw, 'early_stopping_patience': 3})
  # Waits 2 and 3 after epochs 3 and 4: trained on to the end, and stopped there.
  assert longer['step'] == 24 and longer['stop_reason'].startswith('early stopping after epoch 4')


def test_a_run_killed_before_its_summary_logs_its_last_evaluation_once(tmp_path):
  _, summary = _run(tmp_path)
  (tmp_path / 'summary.json').unlink()  # As if killed after the last save.
  _, again = _run(tmp_path)
  assert without_timing(again) == without_timing(summary)
  with open(tmp_path / 'metrics.jsonl') as f:
    evals = [e['step'] for e in map(json.loads, f) if e['split'] == 'eval']
  assert evals == [6, 12]


def test_a_finished_run_again_reads_nothing_and_writes_nothing(tmp_path, monkeypatch):
  """Its summary stands: no data loaded, nothing evaluated or written, the final state back."""
  final, summary = _run(tmp_path)
  before = digest(tmp_path)
  from trainkit.data import pipeline  # pylint: disable=g-import-not-at-top
  from trainkit.training import evaluation  # pylint: disable=g-import-not-at-top
  def refused(*args, **kwargs):
    raise AssertionError('a finished run again loaded or evaluated data')
  with monkeypatch.context() as patched:
    patched.setattr(pipeline, 'create_datasets', refused)
    patched.setattr(evaluation, 'evaluate', refused)
    state, again = _run(tmp_path, progress='off')  # Operational, unseen: still finished.
  assert digest(tmp_path) == before
  assert again == summary
  jax.tree.map(np.testing.assert_array_equal, state.params, final.params)
  assert int(state.step) == 12
  # Placed as the run that trained it placed it: replicated over the devices' mesh.
  assert [leaf.sharding for leaf in jax.tree.leaves(state)] == [
      leaf.sharding for leaf in jax.tree.leaves(final)]


def test_a_summary_older_than_the_config_is_evaluated_again(tmp_path):
  """A changed run stopped before its end wrote config.json, not yet summary.json."""
  _, summary = _run(tmp_path)
  stale = {**summary, 'eval_loss': 123.0}
  with open(tmp_path / 'summary.json', 'w') as f:
    json.dump(stale, f)
  os.utime(tmp_path / 'summary.json', ns=(1, 1))  # Older than config.json.
  _, again = _run(tmp_path)
  assert again['eval_loss'] == summary['eval_loss']  # Evaluated, not the stale figure.


@pytest.mark.parametrize('base, change', [
    # The test split reports alone where a validation split evaluates the epochs.
    ({'train_split': 'train[:40]', 'validation_split': 'train[40:]'},
     {'test_split': 'test[:50%]'}),
    ({}, {'eval_batch_size': 8})])
def test_a_finished_run_with_another_evaluation_evaluates_again(tmp_path, base, change):
  _, summary = _run(tmp_path, **base)
  checkpoints = {k: v for k, v in digest(tmp_path).items() if k.startswith('checkpoints')}
  state, again = _run(tmp_path, **base, **change)
  assert {k: v for k, v in digest(tmp_path).items()
          if k.startswith('checkpoints')} == checkpoints  # Nothing new trained or saved.
  assert int(state.step) == summary['step'] > 0
  assert again['step'] == summary['step'] and again['train_wall_s'] == summary['train_wall_s']
  if 'test_split' in change:  # Half the examples: other figures.
    assert again['test_loss'] != summary['test_loss']
  with open(tmp_path / 'summary.json') as f:
    assert json.load(f) == again  # Written again.


@pytest.mark.slow  # Trains a model of its own.
def test_the_test_split_that_chose_the_best_checkpoint_cannot_change_unsaid(tmp_path):
  # Without a validation split the epochs were evaluated on the test split.
  _run(tmp_path)
  with pytest.raises(errors.ConfigError, match='test_split "test" -> "test.:50%."; run with '
                     '--continue_with_changes'):
    _run(tmp_path, test_split='test[:50%]')


def test_more_epochs_continue_from_the_finished_run(tmp_path, caplog):
  _run(tmp_path, num_epochs=1, schedule='constant')
  with caplog.at_level(logging.INFO, logger='absl'):
    state, summary = _run(tmp_path, num_epochs=2, schedule='constant',
                          continue_with_changes=True)
  assert 'Training from step 6 to 12' in caplog.text
  assert int(state.step) == 12 and summary['epoch'] == 2.0
  assert checkpoint_steps(tmp_path) == [6, 12]


@pytest.mark.parametrize('overrides, names', [
    ({'model.hidden_sizes': (32,)}, '(16,) float32 in the checkpoint but (32,) float32'),
    ({'optimizer': 'momentum'}, 'opt_state'),
    ({'model.use_batchnorm': False}, 'BatchNorm_0'),
])
def test_mismatched_checkpoint_is_refused_and_workdir_untouched(tmp_path, overrides,
                                                                names):
  _run(tmp_path)
  # Without its config.json (a workdir of an older version), the checkpoint's
  # own structure is what refuses another model.
  os.remove(tmp_path / 'config.json')
  before = digest(tmp_path)
  with pytest.raises(checkpointing.CheckpointMismatchError, match='does not fit') as e:
    _run(tmp_path, **overrides)
  assert names in str(e.value)
  assert '\n' not in str(e.value)
  assert digest(tmp_path) == before


@pytest.mark.parametrize('best_metric', ['accuracy', 'loss'])
def test_keeps_latest_and_best_checkpoints(tmp_path, best_metric):
  """One notion of best: the checkpoint kept, best_step and best_eval_* agree."""
  _, summary = _run(tmp_path, num_epochs=4, keep_checkpoints=1, best_metric=best_metric,
                    train_split='train[:40]', validation_split='train[40:]')
  steps = checkpoint_steps(tmp_path)
  assert steps[-1] == 20
  with open(tmp_path / 'metrics.jsonl') as f:
    evals = {e['step']: e['metrics'] for e in map(json.loads, f) if e['split'] == 'eval'}
  sign = 1 if best_metric == 'accuracy' else -1
  # Ties go to the later checkpoint.
  best = max(evals, key=lambda s: (sign * evals[s][best_metric], s))
  assert steps == sorted({20, best})
  assert summary['best_step'] == best and summary['best_metric'] == best_metric
  # The best checkpoint's figures, both of them, whatever the metric.
  assert summary['best_eval_accuracy'] == evals[best]['accuracy']
  assert summary['best_eval_loss'] == evals[best]['loss']


def test_the_best_epoch_is_saved_though_epochs_are_saved_seldom(tmp_path):
  """Only the last of 6 epochs is due a save; the best of all 6 is kept, not of the saved."""
  _, summary = _run(tmp_path, num_epochs=6, checkpoint_every_epochs=6, keep_checkpoints=1,
                    learning_rate=0.3, best_metric='loss', train_split='train[:40]',
                    validation_split='train[40:]')
  with open(tmp_path / 'metrics.jsonl') as f:
    losses = {e['step']: e['metrics']['loss'] for e in map(json.loads, f)
              if e['split'] == 'eval'}
  best = min(losses, key=lambda s: (losses[s], -s))
  assert best != 30  # Else this run would not tell.
  assert summary['best_step'] == best and summary['best_eval_loss'] == losses[best]
  assert checkpoint_steps(tmp_path) == [best, 30]


def test_a_run_resumed_between_seldom_saves_holds_the_same_epochs(tmp_path):
  """Resumed from its save at epoch 4 of 8, a run compares later epochs with the saved best.

  Epoch 4 is the best of this run: a resumed run that forgot it would hold
  and save a later, worse epoch as its best so far.
  """
  fields = dict(num_epochs=8, checkpoint_every_epochs=4, keep_checkpoints=10,
                learning_rate=0.3, best_metric='loss', train_split='train[:40]',
                validation_split='train[40:]')
  _, straight = _run(tmp_path / 'straight', **fields)
  assert straight['best_step'] == 20 and checkpoint_steps(tmp_path / 'straight') == [20, 40]
  # What a run killed after its save at epoch 4 left: the checkpoints up to it.
  shutil.copytree(tmp_path / 'straight', tmp_path / 'resumed')
  shutil.rmtree(tmp_path / 'resumed' / 'checkpoints' / '40')
  _, resumed = _run(tmp_path / 'resumed', **fields)
  assert checkpoint_steps(tmp_path / 'resumed') == [20, 40]
  assert without_timing(resumed) == without_timing(straight)


def test_max_steps_ends_the_run_after_the_epoch_that_reaches_it(tmp_path):
  """6 steps an epoch: 13 steps end the run after epoch 3, and the cosine schedule spans 13."""
  state, summary = _run(tmp_path, num_epochs=10, max_steps=13, schedule='cosine',
                        end_lr_factor=0.0)
  assert int(state.step) == 18 and summary['epoch'] == 3.0
  assert summary['stop_reason'] == 'max_steps=13 reached at epoch 3 (18 steps)'
  schedule = optimizers.create_learning_rate_fn(tiny_config(num_epochs=10, max_steps=13,
                                                            schedule='cosine',
                                                            end_lr_factor=0.0), 6)
  assert float(schedule(13)) == 0.0 and float(schedule(6)) > 0.0


def test_a_run_ended_by_max_steps_is_finished_and_a_larger_budget_trains_on(tmp_path, caplog):
  with caplog.at_level(logging.INFO, logger='absl'):
    _, first = _run(tmp_path, num_epochs=10, max_steps=13, schedule='constant',
                    progress='off')
  assert first['step'] == 18 and first['stop_reason'].startswith('max_steps=13')
  # Shown to the epoch the budget ends in, not to num_epochs.
  assert 'Training from step 0 to 18 (6 steps per epoch)' in caplog.text
  assert 'Epoch 3/3: eval' in caplog.text and '/10' not in caplog.text
  _, again = _run(tmp_path, num_epochs=10, max_steps=13, schedule='constant')
  assert again == first  # Finished: only re-evaluated.
  assert config_history.finished_summary(str(tmp_path), tiny_config(
      num_epochs=10, max_steps=13, schedule='constant')) == first
  with pytest.raises(errors.ConfigError, match='max_steps=12: .* has trained 18 steps'):
    _run(tmp_path, continue_with_changes=True, num_epochs=10, max_steps=12,
         schedule='constant')
  _, more = _run(tmp_path, continue_with_changes=True, num_epochs=10, max_steps=25,
                 schedule='constant')
  assert more['step'] == 30 and more['stop_reason'].startswith('max_steps=25')


def test_a_larger_budget_killed_before_its_first_save_still_trains_on(tmp_path):
  """The next plain run resumes the continued budget: config.json already holds it."""
  kw = dict(num_epochs=10, schedule='constant')
  _run(tmp_path, max_steps=13, **kw)

  class Killed(Exception):
    pass

  def kill(epoch, metrics):
    raise Killed  # After the first epoch of the larger budget, before its save.
  with pytest.raises(Killed):
    train.train_and_evaluate(tiny_config(max_steps=25, **kw), str(tmp_path),
                             continue_with_changes=True, epoch_hook=kill)
  assert checkpoint_steps(tmp_path)[-1] == 18
  _, more = _run(tmp_path, max_steps=25, **kw)
  assert more['step'] == 30 and more['stop_reason'].startswith('max_steps=25')


def test_a_new_learning_rate_killed_before_its_first_save_is_kept_by_the_next_run(tmp_path):
  """The checkpoint holds the old rate; config.json the new one, which the resume trains with."""
  kw = dict(num_epochs=4, schedule='constant', learning_rate=0.05)
  _run(tmp_path / 'straight', num_epochs=2, schedule='constant')
  shutil.copytree(tmp_path / 'straight', tmp_path / 'killed')
  state, straight = _run(tmp_path / 'straight', continue_with_changes=True, **kw)

  class Killed(Exception):
    pass

  def kill(epoch, metrics):
    raise Killed  # After the first epoch at the new rate, before its save.
  with pytest.raises(Killed):
    train.train_and_evaluate(tiny_config(**kw), str(tmp_path / 'killed'),
                             continue_with_changes=True, epoch_hook=kill)
  assert checkpoint_steps(tmp_path / 'killed')[-1] == 12
  resumed_state, resumed = _run(tmp_path / 'killed', **kw)
  assert without_timing(resumed) == without_timing(straight)
  assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(resumed_state.params),
                                                   jax.tree.leaves(state.params)))


def test_tabm_is_refused_on_images(tmp_path):
  with pytest.raises(errors.ConfigError, match="model.family='tabm': takes rows of features"):
    _run(tmp_path, **{'model.family': 'tabm', 'model.use_batchnorm': False})


def test_without_a_validation_split_no_checkpoint_is_best(tmp_path):
  _, summary = _run(tmp_path, num_epochs=4, keep_checkpoints=1)
  assert checkpoint_steps(tmp_path) == [24]  # Only the latest: none ranked by test.
  assert summary['best_step'] is None


def test_same_seed_same_numbers(tmp_path):
  _, a = _run(tmp_path / 'a')
  _, b = _run(tmp_path / 'b')
  _, c = _run(tmp_path / 'c', seed=1)
  assert a['eval_loss'] == b['eval_loss']
  assert a['eval_loss'] != c['eval_loss']


@pytest.mark.slow  # Over five seconds here: the full suite runs it.
def test_checkpoints_every_nth_epoch_the_last_and_where_a_run_stops_early(tmp_path):
  # 6 steps an epoch: epochs 2 and 4 are due, and 5 is the last.
  _run(tmp_path / 'every', num_epochs=5, checkpoint_every_epochs=2, keep_checkpoints=10)
  assert checkpoint_steps(tmp_path / 'every') == [12, 24, 30]
  # Nothing improves: the run stops after epoch 3, which is saved though not due.
  _, summary = _run(tmp_path / 'stopped', num_epochs=9, checkpoint_every_epochs=2,
                    keep_checkpoints=10, early_stopping_patience=2,
                    early_stopping_min_delta=10.0)
  assert summary['stop_reason'].startswith('early stopping after epoch 3')
  assert checkpoint_steps(tmp_path / 'stopped') == [12, 18]
