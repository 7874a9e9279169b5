"""Data parallelism: 4 forced CPU devices against 1, and 2 processes against 1.

Both need a fresh JAX (a forced device count, or jax.distributed), so the runs
are subprocesses on small random MNIST-shaped data, prepared offline.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import ROOT, tiny_config, write_mnist

_FORCE_4 = '--xla_force_host_platform_device_count=4'
# The tiny model, as main.py overrides.
# Small IDX files: train on all of them, evaluate the epochs on the test split.
_TINY = ['--config.train_split=train', '--config.validation_split=',
         '--config.model.hidden_sizes=(16,)', '--config.model.dropout_rates=(0.1,)',
         '--config.batch_size=8', '--config.eval_batch_size=12',
         '--config.schedule=cosine', '--config.plots=False', '--config.progress=off']


@pytest.fixture(scope='module')
def small_mnist(tmp_path_factory):
  """Random MNIST-shaped IDX files (64 train, 28 test examples) and a TFDS dir."""
  root = tmp_path_factory.mktemp('small_mnist')
  write_mnist(str(root), n_train=64, n_test=28)
  return str(root), str(root / 'tfds')


def _env(**extra):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', JAX_PLATFORMS='cpu', **extra)
  env.pop('XLA_FLAGS', None)
  env.update(extra)
  return env


def _devices_run(workdir, **runs):
  """{name: (config, devices)} trained in one process with 4 forced devices."""
  runs = {name: (config.to_dict(), count) for name, (config, count) in runs.items()}
  result = subprocess.run(
      [sys.executable, '-m', 'tests.devices_run', json.dumps(runs),
       str(workdir)],
      cwd=ROOT, env=_env(XLA_FLAGS=_FORCE_4), capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # Four host devices in a subprocess.
def test_four_devices_match_one_and_uneven_batches_are_refused(small_mnist, tmp_path):
  manual_dir, data_dir = small_mnist
  configs = {mode: tiny_config(manual_dir=manual_dir, data_dir=data_dir, input_mode=mode,
                               num_epochs=2, steps_per_call=3)
             for mode in ('device', 'stream')}
  runs = _devices_run(
      tmp_path, device_1=(configs['device'], 1), device_4=(configs['device'], 4),
      stream_1=(configs['stream'], 1), stream_4=(configs['stream'], 4),
      uneven=(tiny_config(manual_dir=manual_dir, data_dir=data_dir, batch_size=6), 4))
  for mode, config in configs.items():
    one, four = runs[f'{mode}_1'], runs[f'{mode}_4']
    assert "'data': 1" in one['params_sharding']
    # Replicated over all four devices of the mesh.
    assert "'data': 4" in four['params_sharding'] and 'spec=P()' in four['params_sharding']
    assert four['summary']['step'] == one['summary']['step'] == 2 * 64 // 8
    # The same batches, dropout masks and global BatchNorm statistics: only
    # the order of floating-point sums differs. Adam's normalised step turns
    # the noise of near-zero gradients into whole steps (at most the learning
    # rate each), so a few parameters move apart.
    close = np.isclose(four['params'], one['params'], rtol=1e-4, atol=1e-5)
    assert close.mean() > 0.999, mode
    assert np.max(np.abs(np.subtract(four['params'], one['params']))) < 16 * config.learning_rate
    assert four['summary']['eval_loss'] == pytest.approx(one['summary']['eval_loss'], rel=1e-4)
    assert four['summary']['eval_accuracy'] == one['summary']['eval_accuracy']
  # Refused before anything is written.
  assert runs['uneven']['error'] == ('batch_size=6: is not divisible by the 4 devices (each '
                                     'takes an equal share of the global batch)')
  assert not os.path.exists(tmp_path / 'uneven')


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _main(workdir, manual_dir, data_dir, *flags, processes=1):
  """Runs main.py as `processes` processes on 127.0.0.1; returns their results."""
  common = [sys.executable, os.path.join(ROOT, 'main.py'), '--config=configs/default.py',
            f'--workdir={workdir}', f'--config.manual_dir={manual_dir}',
            f'--config.data_dir={data_dir}', *_TINY, *flags]
  if processes == 1:
    commands = [common]
  else:
    address = f'127.0.0.1:{_free_port()}'
    commands = [common + [f'--jax_coordinator_address={address}',
                          f'--jax_num_processes={processes}', f'--jax_process_id={i}']
                for i in range(processes)]
  running = [subprocess.Popen(c, cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for c in commands]
  outputs = [p.communicate(timeout=300) for p in running]
  return [(p.returncode, out, err) for p, (out, err) in zip(running, outputs)]


def _summary(workdir):
  with open(os.path.join(workdir, 'summary.json')) as f:
    return json.load(f)


@pytest.mark.slow
def test_two_processes_match_one_and_resume(small_mnist, tmp_path):
  manual_dir, data_dir = small_mnist
  # 48 to train on, 16 to validate (in eval batches of 12: the last one padded).
  splits = ['--config.train_split=train[:48]', '--config.validation_split=train[48:]']
  alone, shared = tmp_path / 'alone', tmp_path / 'shared'
  (code, _, err), = _main(alone, manual_dir, data_dir, '--config.num_epochs=2', *splits)
  assert code == 0, err[-3000:]
  results = _main(shared, manual_dir, data_dir, '--config.num_epochs=2', *splits,
                  processes=2)
  for code, _, err in results:
    assert code == 0, err[-3000:]
  assert 'Process 1 of 2' in results[1][2]
  one, two = _summary(alone), _summary(shared)
  assert two['step'] == one['step'] == 2 * 48 // 8
  # Validation and test, each example once, alike in one process and in two.
  assert two['eval_split'] == 'train[48:]'
  for split in ('eval', 'test'):
    assert two[f'{split}_loss'] == pytest.approx(one[f'{split}_loss'], rel=1e-4)
    assert two[f'{split}_accuracy'] == one[f'{split}_accuracy']
  # Only process 0 wrote the logs: one eval line per epoch, not two.
  with open(shared / 'metrics.jsonl') as f:
    evals = [json.loads(line)['step'] for line in f if '"eval"' in line]
  assert evals == [6, 12]
  assert len(list(shared.glob('events.out.tfevents.*'))) == 1

  # The same two processes resume from the shared checkpoint.
  results = _main(shared, manual_dir, data_dir, '--config.num_epochs=3', *splits,
                  '--continue_with_changes', processes=2)
  for code, _, err in results:
    assert code == 0, err[-3000:]
    assert f'Restored checkpoint {shared}/checkpoints/12' in err
  assert _summary(shared)['step'] == 18
