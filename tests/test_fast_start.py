"""The fast run path: no TensorFlow (not even to prepare MNIST), caches of splits and programs."""

import gc
import glob
import importlib.metadata
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest

from tests.helpers import ENV, ROOT, idx_dir, tiny_config
from trainkit.data import pipeline as input_pipeline
from trainkit.data.sources import decoded_cache
from trainkit.data.sources import tfds_source
from trainkit.runtime import collector


def _prepared(tmp_path, **overrides):
  return tiny_config(manual_dir=idx_dir(tmp_path), data_dir=str(tmp_path / 'tfds'),
                     input_mode='device', **overrides)


def test_decoded_splits_are_cached_and_a_stale_copy_is_never_read(tmp_path, monkeypatch):
  # A prepared dataset read by its data_dir alone (with a manual_dir, the IDX files are read).
  tfds_source.prepared(_prepared(tmp_path))
  config = tiny_config(data_dir=str(tmp_path / 'tfds'), input_mode='device',
                       cache_dir=str(tmp_path / 'cache'))
  first = input_pipeline.create_datasets(config)
  folders = sorted(glob.glob(str(tmp_path / 'cache' / 'decoded' / 'mnist-*')))
  assert [os.path.basename(f).split('-')[2] for f in folders] == ['test', 'train']
  train_folder = next(f for f in folders if '-train-' in f)

  decodes = []
  real_read_all = tfds_source.read_all
  monkeypatch.setattr(tfds_source, 'read_all',
                      lambda *a, **k: decodes.append(1) or real_read_all(*a, **k))
  again = input_pipeline.create_datasets(config)
  assert decodes == []  # Both splits memory-mapped from the cache.
  np.testing.assert_array_equal(np.asarray(again.train['x']),
                                np.asarray(first.train['x']))
  np.testing.assert_array_equal(np.asarray(again.train['y']),
                                np.asarray(first.train['y']))
  # The same arrays TFDS decodes.
  builder = tfds_source.prepared(config)
  direct = real_read_all(tfds_source.records(builder, 'train'))
  np.testing.assert_array_equal(np.asarray(again.train['x']), direct['x'])

  # The prepared train file changes (here: its time stamp): decoded again,
  # into a new folder, and the stale copy is gone.
  record = glob.glob(str(tmp_path / 'tfds' / 'mnist' / '*' / 'mnist-train.*'))[0]
  os.utime(record, ns=(0, 0))
  input_pipeline.create_datasets(config)
  assert decodes == [1]
  now = glob.glob(str(tmp_path / 'cache' / 'decoded' / 'mnist-*-train-*'))
  assert len(now) == 1 and now[0] != train_folder
  with open(os.path.join(now[0], 'key.json')) as f:
    assert json.load(f)['key']['split'] == 'train'


def test_no_cache_dir_writes_no_cache(tmp_path, monkeypatch):
  # Where the default cache_dir (~/.cache/trainkit) would be, were '' ignored.
  monkeypatch.setenv('HOME', str(tmp_path / 'home'))
  written = []
  real_write = decoded_cache._write  # pylint: disable=protected-access
  monkeypatch.setattr(decoded_cache, '_write',
                      lambda *a: written.append(a[0]) or real_write(*a))
  config = _prepared(tmp_path, cache_dir='')
  data = input_pipeline.create_datasets(config)
  assert data.num_train == 40 and written == []
  assert not os.path.exists(tmp_path / 'home' / '.cache')
  # With a cache_dir the same data is cached (the spy sees it).
  input_pipeline.create_datasets(_prepared(tmp_path, cache_dir='~/.cache/trainkit'))
  assert len(written) == 2 and os.path.isdir(tmp_path / 'home' / '.cache' / 'trainkit')


def _imported(script, *args, children: int = 0):
  """(result, 'IMPORTED: [...]') of the command and every process it started.

  `children`: at least this many child processes must have been watched.
  """
  log = os.path.join(tempfile.mkdtemp(), 'imports.log')
  open(log, 'w').close()
  watch = os.path.join(ROOT, 'tests', 'import_watch')
  env = {**ENV, 'TRAINKIT_IMPORT_LOG': log,
         'PYTHONPATH': os.pathsep.join([watch, ROOT, ENV.get('PYTHONPATH', '')])}
  result = subprocess.run(
      [sys.executable, '-m', 'tests.modules_at_exit', script, *args], cwd=ROOT, env=env,
      capture_output=True, text=True, timeout=300)
  lines = [line for line in result.stderr.splitlines() if line.startswith('IMPORTED:')]
  assert lines, result.stderr[-3000:]
  with open(log) as f:
    seen = [line.split() for line in f if line.strip()]
  processes = {pid for pid, _ in seen}
  assert len(processes) >= 1 + children, (script, args, seen)
  heavy = sorted({name for _, name in seen if name != 'start'})
  return result, lines[-1] if heavy == [] else f'IMPORTED: {heavy} (in a process of the command)'



@pytest.mark.slow
def test_training_eval_predict_rerun_and_sweeps_never_import_tensorflow(tmp_path):
  manual_dir, data_dir = idx_dir(tmp_path), tmp_path / 'tfds'
  common = [f'--config.data_dir={data_dir}', '--config.num_epochs=1',
            '--config.train_split=train', '--config.validation_split=',
            '--config.batch_size=8', '--config.model.hidden_sizes=(16,)',
            '--config.model.dropout_rates=(0.1,)', f'--config.cache_dir={tmp_path / "c"}',
            '--config.progress=off']
  # Preparing MNIST from its IDX files (a streamed run's first) needs no TensorFlow either.
  result, imported = _imported('main.py', '--config=configs/default.py',
                               f'--workdir={tmp_path / "w0"}', '--config.input_mode=stream',
                               f'--config.manual_dir={manual_dir}', *common)
  assert result.returncode == 0, result.stderr[-3000:]
  assert imported == 'IMPORTED: []', ('first run', imported)
  assert (data_dir / 'mnist').is_dir()
  image = tmp_path / 'digit.png'
  from PIL import Image  # pylint: disable=g-import-not-at-top
  Image.fromarray(np.eye(28, dtype=np.uint8) * 255).save(image)
  workdir = f'--workdir={tmp_path / "w"}'
  commands = {
      'train': ['main.py', '--config=configs/default.py', workdir,
                f'--config.manual_dir={manual_dir}', *common],
      'streamed': ['main.py', '--config=configs/default.py', f'--workdir={tmp_path / "s"}',
                   '--config.input_mode=stream', '--config.input_workers=1', *common],
      'rerun': ['main.py', '--config=configs/default.py', workdir, *common],
      'eval': ['main.py', '--config=configs/default.py', workdir, '--mode=eval', *common],
      'predict': ['main.py', '--config=configs/default.py', workdir, '--mode=predict',
                  f'--input={image}', *common],
      'sweep': ['sweep.py', '--config=configs/sweeps/lr_seed.py',
                f'--workdir={tmp_path / "sweep"}', *common, '--config.input_mode=stream',
                '--config.input_workers=1'],
  }
  for name, command in commands.items():
    # The streamed run's Grain worker and the sweep's member processes are watched too.
    result, imported = _imported(*command, children={'streamed': 1, 'sweep': 1}.get(name, 0))
    assert result.returncode == 0, (name, result.stderr[-3000:])
    assert imported == 'IMPORTED: []', (name, imported)


@pytest.mark.slow
def test_compilation_cache_hits_and_leaves_results_bit_identical(tmp_path):
  manual_dir = idx_dir(tmp_path)
  cache = tmp_path / 'cache'

  home = tmp_path / 'home'  # The default cache_dir's home, were '' ignored.

  def train(name, cache_dir):
    workdir = tmp_path / name
    result = subprocess.run(
        [sys.executable, 'main.py', '--config=configs/default.py', f'--workdir={workdir}',
         f'--config.manual_dir={manual_dir}', f'--config.data_dir={tmp_path / "tfds"}',
         '--config.num_epochs=1', '--config.batch_size=8', '--config.plots=False',
         '--config.model.hidden_sizes=(16,)', '--config.model.dropout_rates=(0.1,)',
         '--config.train_split=train', '--config.validation_split=',
         f'--config.cache_dir={cache_dir}'], cwd=ROOT, capture_output=True, text=True,
        timeout=300, env={**ENV, 'JAX_DEBUG_LOG_MODULES': 'jax._src.compiler',
                          'HOME': str(home)})
    assert result.returncode == 0, result.stderr[-3000:]
    (meta,) = glob.glob(str(workdir / 'checkpoints' / '*' / 'meta' / 'metadata'))
    with open(meta) as f:
      return result.stderr, json.load(f)['state_crc32']

  cold_log, cold = train('cold', cache)
  warm_log, warm = train('warm', cache)
  off_log, off = train('off', '')
  assert os.listdir(cache / 'jax')
  # Turned off, nothing is looked up or written anywhere.
  assert 'Persistent compilation cache hit' not in off_log
  assert 'PERSISTENT COMPILATION CACHE MISS' not in off_log
  assert not glob.glob(str(home / '.cache' / '*' / '*cache*'))  # No program cached anywhere.
  assert not os.path.exists(home / '.cache' / 'trainkit')
  assert 'Persistent compilation cache hit' not in cold_log
  # The train steps, the eval steps and the rest come from the cache.
  assert warm_log.count('Persistent compilation cache hit') >= 5
  assert 'PERSISTENT COMPILATION CACHE MISS' not in warm_log.split('Training from step')[1]
  assert cold == warm == off  # The same parameters, optimizer state and counters.


def test_a_finished_workdir_compiles_nothing_ahead(tmp_path, monkeypatch):
  from trainkit.training import compile_ahead  # pylint: disable=g-import-not-at-top
  import train  # pylint: disable=g-import-not-at-top
  rehearsed = []
  real = compile_ahead._rehearse  # pylint: disable=protected-access
  monkeypatch.setattr(compile_ahead, '_rehearse', lambda c: rehearsed.append(1) or real(c))
  config = _prepared(tmp_path, cache_dir='', num_epochs=1)
  first = train.train_and_evaluate(config, str(tmp_path / 'w'))[1]
  assert rehearsed == [1]
  again = train.train_and_evaluate(config, str(tmp_path / 'w'))[1]
  assert rehearsed == [1]  # Its summary stands: nothing compiled ahead.
  assert again['test_accuracy'] == first['test_accuracy']
  config.num_epochs = 2  # Not finished with this config: compiled ahead again.
  train.train_and_evaluate(config, str(tmp_path / 'w'), continue_with_changes=True)
  assert rehearsed == [1, 1]


def test_a_run_that_reads_no_tfds_dataset_never_imports_tfds():
  """TFDS costs a quarter of a second to import: only a TFDS dataset's run pays it."""
  code = '\n'.join([
      'import sys',
      'from trainkit import train_command',
      'from trainkit.data import pipeline',
      'from configs import default',  # Not tests.helpers: it imports TFDS.
      'config = default.get_config()',
      "config.update(dict(dataset='synthetic:blobs', train_split='train',",
      "                   validation_split='', test_split='test', cache_dir=''))",
      'data = pipeline.create_datasets(config)',
      "print(data.num_train, 'tensorflow_datasets' in sys.modules)"])
  result = subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.split()[1] == 'False', result.stdout


def test_the_command_imports_nothing_a_mode_may_not_need():
  """Each is a tenth of a second or more of every eval, predict and export."""
  deferred = ('tensorflow_datasets', 'tensorboardX', 'tqdm', 'flax.nnx', 'matplotlib',
              'jax2onnx', 'optuna', 'mlflow', 'tensorflow', 'PIL')
  code = ('import sys; import trainkit.train_command; '
          f'print([m for m in {deferred!r} if m in sys.modules])')
  result = subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.strip() == '[]'


@pytest.mark.parametrize('module', ['trainkit.train_command', 'trainkit.sweep_command'])
def test_a_command_module_imports_with_the_collector_paused_then_freezes(module):
  """Hardly a collection while its modules load (about 380 without the pause); then frozen."""
  code = ('import gc; started = []; '
          "gc.callbacks.append(lambda phase, info: phase == 'start' and started.append(1)); "
          'import trainkit; before = gc.get_freeze_count(); '
          f'import {module}; '
          'print(len(started), before, gc.get_freeze_count(), gc.isenabled())')
  result = subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-3000:]
  collections, before, frozen, running = result.stdout.split()
  assert int(collections) < 10, result.stdout
  assert before == '0' and int(frozen) > 100_000 and running == 'True', result.stdout
  # Off before the import: left off.
  code = f'import gc; gc.disable(); import {module}; print(gc.isenabled())'
  result = subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=120)
  assert result.stdout.strip() == 'False', result.stderr[-3000:]


def test_an_import_that_fails_leaves_the_collector_as_it_was():
  frozen = gc.get_freeze_count()
  with pytest.raises(ImportError):
    with collector.paused_then_frozen():
      import no_such_module  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  assert gc.isenabled() and gc.get_freeze_count() == frozen


def test_a_command_still_running_when_told_prints_its_stacks_and_exits(tmp_path):
  """TRAINKIT_STACKS_AFTER_S: where a hung command waits, before a harness kills it."""
  command = [sys.executable, 'main.py', '--config=configs/default.py',
             f'--workdir={tmp_path}/w', '--config.dataset=synthetic:blobs',
             '--config.train_split=train', '--config.validation_split=',
             '--config.test_split=test', '--config.normalization=per_feature',
             '--config.num_epochs=50', '--config.cache_dir=',
             '--config.progress=off']
  result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**ENV, 'TRAINKIT_STACKS_AFTER_S': '0.5'})
  assert result.returncode == 1, result.stderr[-3000:]
  assert 'Timeout (0:00:00.500000)!' in result.stderr
  assert 'Current thread' in result.stderr or 'Thread 0x' in result.stderr, result.stderr[-3000:]
  result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**ENV, 'TRAINKIT_STACKS_AFTER_S': 'soon'})
  assert result.returncode == 2 and result.stderr.strip().splitlines()[-1] == (
      "error: TRAINKIT_STACKS_AFTER_S='soon': not a number of seconds"), result.stderr[-2000:]


def test_what_tfds_registers_of_an_idx_dataset_is_asked_once(tmp_path):
  """A second command on cached IDX arrays reads TFDS's facts from the cache, not TFDS."""
  manual_dir, cache = idx_dir(tmp_path), tmp_path / 'cache'
  code = '\n'.join([
      'import sys',
      'from configs import default',  # Not tests.helpers: it imports TFDS.
      'from trainkit.data import pipeline',
      'config = default.get_config()',
      f"config.update(dict(manual_dir={str(manual_dir)!r}, cache_dir={str(cache)!r},",
      f"                   data_dir={str(tmp_path / 'tfds')!r}, input_mode='device',",
      "                   train_split='train[:30]', validation_split='train[30:]'))",
      'data = pipeline.create_datasets(config)',
      "print(data.num_train, data.num_classes, tuple(data.input_shape),",
      "      int(data.test['x'].sum()), 'tensorflow_datasets' in sys.modules)"])
  outputs = []
  for _ in range(2):
    result = subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=ENV,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    outputs.append(result.stdout.split())
  assert outputs[0][-1] == 'True'  # The first asked TFDS (and hashed the examples' order).
  assert outputs[1][:-1] == outputs[0][:-1] and outputs[1][-1] == 'False'
  assert os.listdir(cache / 'tfds_registered') == [
      f'mnist-tfds-{importlib.metadata.version("tensorflow-datasets")}.json']


# Lowers every program a fresh process compiles (or loads from the cache) for
# a small table's run, its evaluation and its predictions, and prints their names.
_LOWERED = r'''
import sys
import numpy as np
import pandas
from jax import monitoring
import trainkit
names = []
monitoring.register_event_duration_secs_listener(
    lambda event, _, fun_name='', **kw: names.append(fun_name)
    if event.endswith('jaxpr_to_mlir_module_duration') else None)
rng = np.random.default_rng(0)
x = rng.normal(size=(240, 3))
lines = ['a,b,c,y,split'] + [
    f'{a:.4f},{b:.4f},{c:.4f},{int(a + b > 0)},{("train", "validation", "test")[i % 3]}'
    for i, (a, b, c) in enumerate(x)]
open(sys.argv[1] + '.csv', 'w').write('\n'.join(lines) + '\n')
overrides = {'dataset': sys.argv[1] + '.csv', 'target_column': 'y', 'task': 'binary',
             'split_column': 'split', 'num_epochs': 3, 'model.family': 'mlp',
             'batch_size': 16, 'cache_dir': '', 'progress': 'off', 'plots': False}
trainkit.train('table', sys.argv[1], overrides=overrides)
model = trainkit.load(sys.argv[1])
model.evaluate()
model.predict(pandas.DataFrame(x[:4], columns=['a', 'b', 'c']))
print('LOWERED', ' '.join(names))
'''


@pytest.mark.slow  # A process start and a small table trained (5 s).
def test_a_table_run_compiles_only_its_own_programs(tmp_path):
  """Every program lowered is a whole step of the run: none is a lone operation run eagerly.

  Each program a process lowers costs it milliseconds of start-up even when
  the compilation cache holds it (a small table trains in two seconds): a
  key drawn op by op, an index of a device array or a conversion each cost one.
  """
  result = subprocess.run([sys.executable, '-c', _LOWERED, str(tmp_path / 'w')], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env=ENV)
  assert result.returncode == 0, result.stderr[-3000:]
  (line,) = [out for out in result.stdout.splitlines() if out.startswith('LOWERED')]
  lowered = line.split()[1:]
  steps = {'jit(_seed_keys)', 'jit(create_train_state)', 'jit(_epoch_order)',
           'jit(_train_steps)', 'jit(_eval_steps)', 'jit(_predict_steps)',
           'jit(<lambda>)'}  # The state's copy to save, the learning rate's schedule.
  assert set(lowered) <= steps, sorted(set(lowered) - steps)
  assert lowered.count('jit(<lambda>)') <= 2, lowered
