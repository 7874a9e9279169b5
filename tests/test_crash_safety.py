"""Crash safety: broken checkpoints, divergence, signals, kills, bad input."""

import dataclasses
import functools
import glob
import json
import os
import random
import signal
import subprocess
import time
import types

import jax
import ml_collections
import numpy as np
import pytest

from configs import default
from tests.conftest import mock_data
from tests.helpers import (ENV, ROOT, alive, checkpoint_steps, descendants, digest,
                           error_lines, main_command, run_main, session_cache_dir, tiny_config,
                           without_timing)
from trainkit import errors
from trainkit.checkpoints import manager as checkpointing
from trainkit.data import pipeline as input_pipeline
from trainkit.models import mlp as models
from trainkit.runtime import preemption
from trainkit.tasks import classification
from trainkit.training import divergence
import train



def _largest_file(directory):
  files = [f for f in glob.glob(os.path.join(directory, '**'), recursive=True)
           if os.path.isfile(f)]
  return max(files, key=os.path.getsize)


@pytest.mark.slow  # Over five seconds here: the full suite runs it.
@pytest.mark.parametrize('damage', ['truncate', 'delete'])
def test_broken_latest_checkpoint_falls_back_to_the_previous(tmp_path, mock_mnist,
                                                             damage, caplog):
  kw = dict(checkpoint_every_steps=4, keep_checkpoints=10, input_mode='device')
  workdir = tmp_path
  _, straight = train.train_and_evaluate(tiny_config(**kw), str(workdir))
  assert checkpoint_steps(workdir) == [4, 6, 8, 12]
  victim = _largest_file(workdir / 'checkpoints' / '12')
  if damage == 'truncate':
    with open(victim, 'r+b') as f:
      f.truncate(os.path.getsize(victim) // 2)
  else:
    os.remove(victim)
  _, resumed = train.train_and_evaluate(tiny_config(**kw), str(workdir))
  warnings = [r.getMessage() for r in caplog.records if 'is broken' in r.getMessage()]
  assert len(warnings) == 1
  assert '/12 is broken' in warnings[0] and 'falling back to checkpoint 8' in warnings[0]
  assert os.path.isdir(workdir / 'broken_checkpoints' / '12')
  assert checkpoint_steps(workdir) == [4, 6, 8, 12]  # Step 12 trained and saved again.
  assert resumed['eval_loss'] == straight['eval_loss']


def test_only_process_0_moves_a_broken_checkpoint(tmp_path, monkeypatch):
  # Every process finds it broken; a second move of the one folder failed, and
  # the other processes then waited on the one that crashed.
  (tmp_path / 'checkpoints' / '12').mkdir(parents=True)
  monkeypatch.setattr(jax, 'process_index', lambda: 1)
  checkpointing._set_aside(str(tmp_path), tmp_path / 'checkpoints', 12, 'why', 'then')  # pylint: disable=protected-access
  assert (tmp_path / 'checkpoints' / '12').is_dir()
  monkeypatch.setattr(jax, 'process_index', lambda: 0)
  checkpointing._set_aside(str(tmp_path), tmp_path / 'checkpoints', 12, 'why', 'then')  # pylint: disable=protected-access
  assert not (tmp_path / 'checkpoints' / '12').exists()
  assert (tmp_path / 'broken_checkpoints' / '12').is_dir()


def test_checksum_catches_a_checkpoint_that_reads_back_wrong(tmp_path, mock_mnist):
  train.train_and_evaluate(tiny_config(), str(tmp_path))
  meta_path = tmp_path / 'checkpoints' / '12' / 'meta' / 'metadata'
  meta = json.loads(meta_path.read_text())
  meta['state_crc32'] ^= 1  # As if the arrays had changed on disk.
  meta_path.write_text(json.dumps(meta))
  state, summary = train.train_and_evaluate(tiny_config(), str(tmp_path))
  assert int(state.step) == 12 and summary['step'] == 12
  assert os.path.isdir(tmp_path / 'broken_checkpoints' / '12')


def test_nonfinite_step_changes_nothing_but_the_counter():
  config = tiny_config(schedule='constant', optimizer='sgd', learning_rate=0.1)
  model = models.create_model(config.model, classification.Classification(10))
  state = train.create_train_state(jax.random.key(0), config, model, (28, 28, 1), 6)
  # Kernels near float32's limit overflow the logits to inf: the loss is NaN.
  state = state.replace(params=jax.tree.map(lambda p: p * 1e37, state.params))
  before = jax.device_get(state.params)
  batch = {'x': np.full((8, 28, 28, 1), 255, np.uint8),
           'y': np.arange(8, dtype=np.int32)}
  state, metrics = train.train_step(state, batch, jax.random.key(1))
  assert float(metrics['finite']) == 0.0
  assert not np.isfinite(float(metrics['loss']) * float(metrics['grad_norm']))
  assert int(state.step) == 1
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.params), before)


def test_nan_policies_on_the_host():
  bad = {'finite': np.array([1, 0, 0, 1, 0, 0, 0]), 'loss': np.full(7, np.nan),
         'grad_norm': np.full(7, np.inf)}
  with pytest.raises(divergence.Diverged, match=r'at step 12: loss=nan.*stop'):
    divergence.NonFiniteTracker('stop', 5).update(10, bad)
  skip = divergence.NonFiniteTracker('skip', 3)
  with pytest.raises(divergence.Diverged, match=r'at step 17: .*3 non-finite steps in a row'):
    skip.update(10, bad)
  assert skip.skipped == 5
  tolerant = divergence.NonFiniteTracker('skip', 4)
  tolerant.update(10, bad)
  assert tolerant.state() == {'skipped_steps': 5, 'nonfinite_in_a_row': 3}


def test_a_skipped_step_is_left_out_of_the_logged_averages():
  # One dropped step's NaN made the whole window's loss NaN.
  from trainkit.tracking import metric_logs  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  averager = metric_logs.StepAverager(4)
  steps = {'finite': np.array([1.0, 0.0, 1.0, 1.0]), 'loss': np.array([1.0, np.nan, 2.0, 3.0])}
  ((step, averages),) = averager.add(0, steps)
  assert step == 4 and averages == {'finite': 0.75, 'loss': 2.0}
  # A resumed window goes on with what the checkpoint saved of it.
  half = metric_logs.StepAverager(4)
  assert half.add(0, {k: v[:2] for k, v in steps.items()}) == []
  resumed = metric_logs.StepAverager(4, json.loads(json.dumps(half.window())))
  assert resumed.add(2, {k: v[2:] for k, v in steps.items()}) == [(4, averages)]


def test_divergence_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path,
                                                                      mock_mnist):
  config = tiny_config(optimizer='sgd', schedule='constant', learning_rate=1e30,
                       checkpoint_every_steps=1, steps_per_call=1,
                       normalization='raw', **{'model.use_batchnorm': False,
                                              'model.dropout_rates': (0.0,)})
  with pytest.raises(divergence.Diverged, match=r'training diverged at step (\d+)') as e:
    train.train_and_evaluate(config, str(tmp_path))
  bad_step = int(e.value.args[0].split('step ')[1].split(':')[0])
  saved = checkpoint_steps(tmp_path) if (tmp_path / 'checkpoints').exists() else []
  # Checkpoints every step: those before the bad step are saved, none after.
  assert saved and saved == list(range(1, bad_step))
  manager = checkpointing.create_manager(str(tmp_path / 'checkpoints'), 10)
  model = models.create_model(config.model, classification.Classification(10), 0.0, 1.0)
  template = train.create_train_state(jax.random.key(0), config, model, (28, 28, 1), 6)
  for step in saved:  # Every saved state is finite.
    state, _ = checkpointing.restore(manager, step, template)
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state.params))
  manager.close()


def test_a_best_epoch_held_before_a_divergence_is_saved(tmp_path, mock_mnist, monkeypatch):
  # Epoch 1 (step 6) is not due a save (every 5th epoch) and is held as the best;
  # the second epoch's steps then "diverge".
  config = tiny_config(num_epochs=3, checkpoint_every_epochs=5, validation_split='train[:16]',
                       train_split='train[16:]', best_metric='loss', batch_size=8)
  update = divergence.NonFiniteTracker.update

  def diverging(self, first_step, metrics):
    if first_step >= 4:
      raise divergence.Diverged(f'training diverged at step {first_step + 1}: a test')
    update(self, first_step, metrics)
  monkeypatch.setattr(divergence.NonFiniteTracker, 'update', diverging)
  with pytest.raises(divergence.Diverged):
    train.train_and_evaluate(config, str(tmp_path))
  assert checkpoint_steps(tmp_path) == [4]  # 34 rows: 4 steps an epoch.
  manager = checkpointing.create_manager(str(tmp_path / 'checkpoints'), 10, best_metric='loss')
  assert checkpointing.best_step(manager, 'loss') == 4
  manager.close()


def test_skip_policy_drops_nonfinite_steps_and_finishes(tmp_path, mock_mnist):
  # After one enormous (finite) step every loss overflows: each later update is
  # dropped, the run goes on to its end, and the summary counts the drops.
  config = tiny_config(optimizer='sgd', schedule='constant', learning_rate=1e30,
                       nan_policy='skip', nan_skip_limit=100, normalization='raw',
                       **{'model.use_batchnorm': False, 'model.dropout_rates': (0.0,)})
  state, summary = train.train_and_evaluate(config, str(tmp_path))
  assert summary['step'] == int(state.step) == 12
  assert 1 <= summary['skipped_steps'] <= 11
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(jax.device_get(state.params)))
  meta = json.loads((tmp_path / 'checkpoints' / '12' / 'meta' / 'metadata').read_text())
  assert meta['skipped_steps'] == summary['skipped_steps']


def _main_cmd(workdir, *overrides):
  return main_command('--config=configs/default.py', f'--workdir={workdir}',
                      '--config.plots=False', *overrides)


def _start(cmd, log):
  return subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=ENV)


def _wait_for_training(workdir, proc, log_path, timeout=180):
  """Returns once `proc` logs a train metric (training is under way).

  Lines an earlier, killed run wrote past its last checkpoint stay in the
  file until this process opens its logs (then it logs 'Training from step'),
  so only a later line past the restored checkpoint is this process's.
  """
  path = os.path.join(workdir, 'metrics.jsonl')
  checkpoints = os.path.join(workdir, 'checkpoints')
  # The folder exists as soon as a run starts, and may hold no checkpoint yet.
  resumed_at = max(checkpoint_steps(workdir) if os.path.isdir(checkpoints) else [],
                   default=0)
  deadline = time.time() + timeout
  while time.time() < deadline and proc.poll() is None:
    if os.path.exists(path) and 'Training from step' in log_path.read_text():
      with open(path) as f:
        records = [json.loads(line) for line in f if line.endswith('\n')]
      if any(r['split'] == 'train' and r['step'] > resumed_at for r in records):
        return
    time.sleep(0.05)
  raise AssertionError(f'training did not start (exit {proc.poll()})')


def _stop(cmd, workdir, log_path, signum):
  """Starts `cmd`, sends `signum` once it trains; returns (status, seconds, output)."""
  with open(log_path, 'w') as log:
    proc = _start(cmd, log)
    _wait_for_training(workdir, proc, log_path)
    time.sleep(0.5)
    sent = time.time()
    proc.send_signal(signum)
    status = proc.wait(timeout=60)
  return status, time.time() - sent, log_path.read_text()


def _records(workdir, split):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [(r['step'], r['metrics']) for r in map(json.loads, f) if r['split'] == split]


@pytest.mark.parametrize('every_epochs, min_delta', [
    (3, 0.0), pytest.param(1, 0.0, marks=pytest.mark.slow),  # The epoch due a save, or not.
    # No epoch improves by 10: early stopping ends the run at the stop's epoch.
    pytest.param(3, 10.0, marks=pytest.mark.slow)])
def test_a_signal_in_an_epochs_last_call_stops_after_its_evaluation(
    tmp_path, mock_mnist, monkeypatch, every_epochs, min_delta):
  """A resume starts at the next epoch, so the stopped epoch's books must be done first."""
  from trainkit.training import members  # pylint: disable=g-import-not-at-top
  kw = dict(num_epochs=5, steps_per_call=0, checkpoint_every_epochs=every_epochs,
            validation_split='train[:16]', train_split='train[16:]', learning_rate=0.05,
            schedule='constant', early_stopping_patience=1 if min_delta else 2,
            early_stopping_min_delta=min_delta, keep_checkpoints=10, plateau_patience=1)
  _, straight = train.train_and_evaluate(tiny_config(**kw), str(tmp_path / 'straight'))
  after_call = members.Members.after_call

  def signalled(self, first, num_steps, metrics):
    after_call(self, first, num_steps, metrics)
    if first + num_steps == 2 * num_steps:  # In the second epoch's one call.
      os.kill(os.getpid(), signal.SIGTERM)

  killed = tmp_path / 'killed'
  with monkeypatch.context() as patched:
    patched.setattr(members.Members, 'after_call', signalled)
    with pytest.raises(preemption.Interrupted) as stopped:
      train.train_and_evaluate(tiny_config(**kw), str(killed))
  assert _records(killed, 'eval')[-1][0] == stopped.value.step  # Evaluated before it stopped.
  _, resumed = train.train_and_evaluate(tiny_config(**kw), str(killed))
  assert without_timing(resumed) == without_timing(straight)
  assert _records(killed, 'eval') == _records(tmp_path / 'straight', 'eval')


@pytest.mark.slow
def test_ctrl_c_and_sigterm_save_the_current_step_and_the_next_run_continues(
    tmp_path, random_mnist_4096):
  manual_dir, data_dir = random_mnist_4096
  workdir = tmp_path / 'run'
  cmd = _main_cmd(workdir, f'--config.manual_dir={manual_dir}',
                  f'--config.data_dir={data_dir}', '--config.num_epochs=15',
                  '--config.train_split=train', '--config.validation_split=',
                  '--config.batch_size=32', '--config.steps_per_call=8',
                  '--config.log_every_steps=8', '--config.eval_batch_size=256')
  previous = None
  for signum in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C, then a scheduler's stop.
    name = signal.Signals(signum).name
    status, took, output = _stop(cmd, workdir, tmp_path / f'{name}.log', signum)
    assert status == 128 + signum, output[-2000:]
    assert took < 20
    if previous:
      assert f'Restored checkpoint {workdir}/checkpoints/{previous}' in output
    stopped_at = int(output.split(f'stopped by {name} at step ')[1].split(';')[0])
    assert (previous or 0) < stopped_at < 15 * 128
    assert checkpoint_steps(workdir)[-1] == stopped_at
    previous = stopped_at
  with open(tmp_path / 'last.log', 'w') as log:
    assert _start(cmd, log).wait(timeout=300) == 0
  output = (tmp_path / 'last.log').read_text()
  assert f'Restored checkpoint {workdir}/checkpoints/{previous}' in output
  assert json.loads((workdir / 'summary.json').read_text())['step'] == 15 * 128


@pytest.mark.slow
@pytest.mark.parametrize('input_mode, epochs, train_examples, every', [
    ('device', 2, 55_000, 100),
    # Streaming runs ~4x slower here: a shorter split, denser checkpoints, so
    # that every kill leaves one for the next run to resume from.
    ('stream', 1, 40_000, 50)])
def test_three_sigkills_end_with_the_uninterrupted_result(tmp_path, mnist_dir, mnist_data_dir,
                                                         mnist_cache_dir, input_mode, epochs,
                                                         train_examples, every):
  """The issue's acceptance run: real MNIST, checkpoints every 100 steps.

  Streamed, from disk by Grain's worker processes: each run resumes from the
  iterator state of the checkpoint it restores.
  """
  fields = {'manual_dir': mnist_dir, 'data_dir': mnist_data_dir, 'num_epochs': epochs,
            'train_split': f'train[:{train_examples}]', 'checkpoint_every_steps': every,
            'keep_checkpoints': 2, 'plots': False, 'input_mode': input_mode,
            'cache_dir': mnist_cache_dir}
  overrides = [f'--config.{k}={v}' for k, v in fields.items()]
  straight, killed = tmp_path / 'straight', tmp_path / 'killed'
  # The uninterrupted reference runs in this process (a process start saved).
  config = default.get_config()
  config.update(fields)
  train.train_and_evaluate(config, str(straight))
  seed = int(time.time())  # In every failure message, to replay the kill times.
  rng = random.Random(seed)
  kills = []

  def saved():
    return checkpoint_steps(killed) if (killed / 'checkpoints').exists() else []

  for attempt in range(3):
    before = saved()
    with open(tmp_path / f'kill{attempt}.log', 'w') as log:
      proc = _start(_main_cmd(killed, *overrides), log)
      _wait_for_training(killed, proc, tmp_path / f'kill{attempt}.log')
      if attempt == 1:  # Aim at a checkpoint being written.
        deadline = time.time() + 10
        while (time.time() < deadline and proc.poll() is None and
               not glob.glob(str(killed / 'checkpoints' / '*tmp*'))):
          time.sleep(0.002)
      else:
        delay = 1.5
        if attempt == 2:  # Not before this run saved a checkpoint of its own.
          deadline = time.time() + 60
          while (time.time() < deadline and proc.poll() is None
                 and max(saved(), default=0) <= max(before, default=0)):
            time.sleep(0.01)
          delay = 0.5  # And well before its training ends.
        time.sleep(rng.uniform(0, delay))
      children = descendants(proc.pid)  # Streamed: Grain's workers and resource tracker.
      proc.send_signal(signal.SIGKILL)
      kills.append((proc.wait(timeout=60), saved()))
      # No process of a run outlives it, whatever ends it.
      left = alive(children, within_s=10)
      for pid in left:
        os.kill(pid, signal.SIGKILL)
      assert not left, (seed, kills, children, left)
      if input_mode == 'stream':
        assert len(children) >= 2, children  # The test saw the workers it checks.
    if before:  # A run that found checkpoints resumed from the latest.
      log = (tmp_path / f'kill{attempt}.log').read_text()
      assert f'Restored checkpoint {killed}/checkpoints/{before[-1]}' in log, (seed, kills)
      if input_mode == 'stream':
        assert (f'Input resumed from its saved Grain state at step {before[-1]}.'
                in log), (seed, kills)
  assert [status for status, _ in kills] == [-signal.SIGKILL] * 3, (seed, kills)
  assert kills[2][1], (seed, kills)  # The last kill left checkpoints behind.
  with open(tmp_path / 'final.log', 'w') as log:
    assert _start(_main_cmd(killed, *overrides), log).wait(timeout=300) == 0
  assert (f'Restored checkpoint {killed}/checkpoints/{kills[2][1][-1]}'
          in (tmp_path / 'final.log').read_text()), (seed, kills)
  expected = json.loads((straight / 'summary.json').read_text())
  got = json.loads((killed / 'summary.json').read_text())
  assert got['eval_loss'] == expected['eval_loss'], (seed, kills)
  assert got['eval_accuracy'] == expected['eval_accuracy']
  assert got['step'] == expected['step'] == (train_examples // 128) * epochs


@pytest.fixture(scope='module')
def finished_workdir(tmp_path_factory):
  """One finished run that every refused input below must leave as it is."""
  workdir = tmp_path_factory.mktemp('finished')
  with mock_data():
    train.train_and_evaluate(tiny_config(), str(workdir))
  return workdir


@pytest.mark.parametrize('overrides, error, message', [
    ({'optimizer': 'adamm'}, errors.ConfigError, "did you mean 'adam'"),
    ({'model.activation': 'rleu'}, errors.ConfigError, "did you mean 'relu'"),
    ({'learning_rate': 'fast'}, errors.ConfigError,
     "learning_rate='fast': must be a number"),
    ({'learning_rate': -0.1}, errors.ConfigError, 'learning_rate=-0.1: must be > 0'),
    ({'batch_size': 0}, errors.ConfigError, 'batch_size=0: must be a positive'),
    ({'model.dropout_rates': (1.0,)}, errors.ConfigError, 'must be in [0, 1)'),
    ({'nan_policy': 'ignore'}, errors.ConfigError, "nan_policy='ignore'"),
    # A trained workdir refuses these before their own checks could (their
    # refusals on a fresh workdir: test_misuse.py, test_end_to_end.py).
    ({'dataset': 'mnst'}, errors.ConfigError,
     'dataset "mnist" -> "mnst" cannot change in a trained workdir'),
    ({'batch_size': 1000}, errors.ConfigError, 'batch_size 8 -> 1000 cannot change'),
    ({'manual_dir': '/nonexistent/mnist'}, errors.ConfigError,
     "manual_dir='/nonexistent/mnist': is not a directory"),
    ({'model.hidden_sizes': (32,)}, errors.ConfigError,
     'model.hidden_sizes [16] -> [32] cannot change'),
])
def test_bad_input_is_refused_and_the_finished_workdir_untouched(
    finished_workdir, mock_mnist, overrides, error, message):
  before = digest(finished_workdir)
  # As a config file would write them: any type, not only the default's.
  values = tiny_config().to_dict()
  for dotted, value in overrides.items():
    *path, last = dotted.split('.')
    functools.reduce(dict.__getitem__, path, values)[last] = value
  with pytest.raises(error) as e:
    train.train_and_evaluate(ml_collections.ConfigDict(values), str(finished_workdir))
  assert message in str(e.value) and '\n' not in str(e.value)
  assert digest(finished_workdir) == before


def test_batch_not_divisible_by_the_devices_is_refused(finished_workdir, mock_mnist):
  before = digest(finished_workdir)
  data = input_pipeline.create_datasets(tiny_config())
  # A mesh of 3 devices, as far as the check can tell (tests/test_parallel.py
  # runs 4 real ones).
  data = dataclasses.replace(data, mesh=types.SimpleNamespace(size=3))
  with pytest.raises(errors.ConfigError, match='not divisible by the 3 devices'):
    train.train_and_evaluate(tiny_config(), str(finished_workdir), data)
  assert digest(finished_workdir) == before


def test_workdir_that_is_a_file_is_refused(tmp_path, mock_mnist):
  path = tmp_path / 'file'
  path.write_text('keep me')
  with pytest.raises(errors.ConfigError, match='is not a directory'):
    train.train_and_evaluate(tiny_config(), str(path))
  assert path.read_text() == 'keep me'


@pytest.mark.parametrize('flag, message', [
    ('--config.lerning_rate=0.1',
     "error: unknown config field 'lerning_rate' in the --config overrides "
     "(did you mean 'learning_rate'?)"),
    ('--config.batch_size=large', 'error: flag --config.batch_size=large: '),
    # ml_collections' KeyError and TypeError: tracebacks, exit 1.
    ('--config.modle.hidden_sizes=(256,)',
     "error: unknown config section 'modle' in the --config overrides (did you mean 'model'?)"),
    ('--config.optimizer.name=adam',
     "error: --config.optimizer.name: 'optimizer' is a config field, not a section"),
])
@pytest.mark.slow  # A process start each.
def test_cli_refuses_misspelt_fields_and_wrong_types_in_one_line(finished_workdir, flag,
                                                                  message):
  before = digest(finished_workdir)
  result = run_main('--config=configs/default.py', f'--workdir={finished_workdir}', flag)
  assert result.returncode == 2
  errors = error_lines(result.stderr)
  assert len(errors) == 1 and errors[0].startswith(message), result.stderr[-1000:]
  assert 'Traceback' not in result.stderr
  assert digest(finished_workdir) == before


def test_interrupted_exit_status_and_message():
  own = preemption.Interrupted(signal.SIGINT, 40, '/w/checkpoints')
  assert own.exit_status == 130
  assert str(own) == ('stopped by SIGINT at step 40; checkpoint saved in /w/checkpoints. '
                      'Run the same command to continue.')
  # A process stopped because another process of the run got the signal.
  other = preemption.Interrupted(None, 40, '/w/checkpoints')
  assert other.exit_status == 143
  assert str(other).startswith('stopped with the other processes (one of them received '
                               'a signal) at step 40;')


@pytest.mark.slow
def test_early_stopping_stops_at_the_same_epoch_after_a_sigkill(tmp_path, random_mnist_4096):
  manual_dir, data_dir = random_mnist_4096
  # Nothing counts as an improvement: the rate is halved from epoch 2 on and
  # the run stops after epoch 3, of 112 steps each.
  fields = {'manual_dir': manual_dir, 'data_dir': data_dir,
            'train_split': 'train[:3584]', 'validation_split': 'train[3584:]',
            'batch_size': 32, 'eval_batch_size': 256, 'num_epochs': 15,
            'early_stopping_patience': 2, 'early_stopping_min_delta': 10.0,
            'plateau_patience': 1, 'plateau_factor': 0.5, 'plateau_min_delta': 10.0,
            'cache_dir': session_cache_dir(), 'plots': False}
  config = default.get_config()
  config.update(fields)
  _, expected = train.train_and_evaluate(config, str(tmp_path / 'straight'))
  assert expected['step'] == 3 * 112 and expected['stop_reason'].startswith(
      'early stopping after epoch 3')
  killed = tmp_path / 'killed'
  cmd = _main_cmd(killed, *[f'--config.{k}={v}' for k, v in fields.items()])
  with open(tmp_path / 'kill.log', 'w') as log:
    proc = _start(cmd, log)
    deadline = time.time() + 120
    while time.time() < deadline and not (killed / 'checkpoints' / '112').exists():
      time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
  assert checkpoint_steps(killed)[-1] < 3 * 112  # Killed before it stopped.
  with open(tmp_path / 'final.log', 'w') as log:
    assert _start(cmd, log).wait(timeout=300) == 0
  assert 'Restored checkpoint' in (tmp_path / 'final.log').read_text()
  got = json.loads((killed / 'summary.json').read_text())
  for key in ('stop_reason', 'step', 'eval_loss', 'test_loss', 'best_step'):
    assert got[key] == expected[key], key
