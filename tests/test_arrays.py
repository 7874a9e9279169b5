"""Arrays under every guarantee of the TFDS path: streamed, resumed, grouped, sharded.

The runs are the seed's mixture density network (configs/mixture_density.py)
on small draws of its inverse-sine problem: a real-valued task read from
arrays, in both input modes.
"""

import json
import os
import shutil
import sys

import jax
import numpy as np
import pytest

from tests.helpers import ROOT, checkpoint_steps, mdn_config
from tests.test_parallel import _devices_run, _env, _free_port
from trainkit.data import pipeline as input_pipeline
from trainkit.search import groups as grouping
from trainkit.search import sweeps
from trainkit.serving import restore as restore_lib
from trainkit.training import evaluation
import train


@pytest.mark.slow  # Three streamed runs with Grain.
def test_streamed_arrays_resume_exactly_and_evaluate_as_resident_ones(tmp_path, restored_steps):
  straight, resumed = tmp_path / 'straight', tmp_path / 'resumed'
  config = mdn_config(input_mode='stream', checkpoint_every_steps=4, keep_checkpoints=10)
  final, summary = train.train_and_evaluate(config, str(straight))
  assert summary['step'] == 3 * 8 and np.isfinite(summary['test_nll'])
  # Every example once, read from the records or resident on the device.
  streamed = input_pipeline.create_datasets(config)
  resident = input_pipeline.create_datasets(mdn_config(input_mode='device'))
  assert (streamed.mode, resident.mode) == ('stream', 'device')
  assert evaluation.evaluate(final, streamed, 48) == pytest.approx(
      evaluation.evaluate(final, resident, 48), rel=1e-6)
  # Killed after step 12 (mid-epoch 2); resumed with a worker process reading
  # the arrays (the saved input state had none: it restarts by index).
  shutil.copytree(straight, resumed)
  for step in checkpoint_steps(resumed):
    if step > 12:
      shutil.rmtree(resumed / 'checkpoints' / str(step))
  config.input_workers = 1
  state, again = train.train_and_evaluate(config, str(resumed))
  assert restored_steps == [12]  # It resumed: a retrain from scratch ends alike.
  jax.tree.map(np.testing.assert_array_equal, state.params, final.params)
  for key in ('eval_nll', 'test_nll', 'test_rmse', 'best_step'):
    assert again[key] == summary[key], key


@pytest.mark.slow  # A group and each member alone.
def test_mdn_members_trained_in_a_vmapped_group_match_them_trained_alone(tmp_path):
  overrides = [{'learning_rate': 3e-4, 'seed': 0}, {'learning_rate': 3e-3, 'seed': 1}]
  configs = [sweeps.member_config(mdn_config(input_mode='device', num_epochs=2), o)
             for o in overrides]
  dirs = [str(tmp_path / f'm{i}') for i in range(2)]
  together = grouping.train_group(configs, dirs)
  for i, config in enumerate(configs):
    state, alone = train.train_and_evaluate(config, str(tmp_path / f'alone{i}'))
    for key in ('eval_nll', 'eval_rmse', 'test_nll'):
      assert together[i][key] == pytest.approx(alone[key], rel=1e-4), key
    grouped, _, _ = restore_lib.restore(config, dirs[i])
    for a, b in zip(jax.tree.leaves(grouped.params), jax.tree.leaves(state.params)):
      np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)


@pytest.mark.slow
def test_four_devices_match_one_on_arrays_in_both_input_modes(tmp_path):
  configs = {mode: mdn_config(input_mode=mode, num_epochs=2) for mode in ('device', 'stream')}
  runs = _devices_run(tmp_path, **{f'{mode}_{n}': (config, n)
                                   for mode, config in configs.items() for n in (1, 4)})
  for mode in configs:
    one, four = runs[f'{mode}_1'], runs[f'{mode}_4']
    assert "'data': 4" in four['params_sharding']
    assert four['summary']['step'] == one['summary']['step'] == 2 * 512 // 64
    # The same batches and dropout: only the order of float sums differs.
    np.testing.assert_allclose(four['params'], one['params'], rtol=1e-3, atol=1e-5)
    for key in ('eval_nll', 'eval_rmse', 'test_nll'):
      assert four['summary'][key] == pytest.approx(one['summary'][key], rel=1e-4), (mode, key)


def _main_py(workdir, config_file, *flags, processes=1):
  """main.py with `config_file` and `flags`, as `processes` processes; the summary."""
  import subprocess  # pylint: disable=g-import-not-at-top
  common = [sys.executable, os.path.join(ROOT, 'main.py'), f'--config={config_file}',
            f'--workdir={workdir}', *flags]
  address = f'127.0.0.1:{_free_port()}'
  commands = [common] if processes == 1 else [
      common + [f'--jax_coordinator_address={address}', f'--jax_num_processes={processes}',
                f'--jax_process_id={i}'] for i in range(processes)]
  running = [subprocess.Popen(c, cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for c in commands]
  outputs = [p.communicate(timeout=300) for p in running]
  for p, (_, err) in zip(running, outputs):
    assert p.returncode == 0, err[-3000:]
  with open(os.path.join(workdir, 'summary.json')) as f:
    return json.load(f)


def _mdn_main(workdir, *flags, processes=1):
  """configs/mixture_density.py, small, as `processes` processes of main.py."""
  return _main_py(workdir, 'configs/mixture_density.py',
                  '--config.synthetic_examples=(512,256,256)', '--config.num_epochs=2',
                  '--config.eval_batch_size=48', '--config.cache_dir=', '--config.progress=off',
                  *flags, processes=processes)


@pytest.mark.slow
def test_two_processes_match_one_on_arrays(tmp_path):
  # Streamed: each process reads its own rows of the arrays (resident arrays
  # are loaded whole by both, then placed as a TFDS split is: tested there).
  one = _mdn_main(tmp_path / 'one', '--config.input_mode=stream')
  two = _mdn_main(tmp_path / 'two', '--config.input_mode=stream', processes=2)
  assert two['step'] == one['step'] == 2 * 512 // 64
  for key in ('eval_nll', 'eval_rmse', 'test_nll', 'test_rmse'):
    assert two[key] == pytest.approx(one[key], rel=1e-4), key
