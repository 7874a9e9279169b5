"""The first command on a machine: a dataset prepared from IDX files, its arrays not decoded.

A split prepared from source files takes its arrays from those files, in the
order TFDS wrote the examples; what the tests hold them to is what decoding
the prepared split gives. A process killed while it prepares, decodes or
caches leaves nothing a later run trusts.
"""

import glob
import os
import signal
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from tests.helpers import ENV, ROOT, tiny_config, write_idx, write_mnist
from trainkit.data import pipeline as input_pipeline
from trainkit.data.sources import tfds_prepare as offline_data
from trainkit.data.sources import tfds_source


def _decoded(config, split):
  """`split` as TFDS decodes the prepared records (PNG, one by one)."""
  return tfds_source.read_all(tfds_source.records(tfds_source.prepared(config), split))


def _config(tmp_path, **overrides):
  return tiny_config(**{'manual_dir': str(tmp_path / 'idx'), 'data_dir': str(tmp_path / 'tfds'),
                        'cache_dir': str(tmp_path / 'cache'), 'input_mode': 'device',
                        'train_split': 'train', 'validation_split': '', **overrides})


def _idx_with_repeats(tmp_path, n_train=300, n_test=40):
  """Random IDX files where some examples repeat: same image and label, and same image only."""
  directory = tmp_path / 'idx'
  directory.mkdir()
  arrays = write_mnist(directory, n_train=n_train, n_test=n_test, seed=3)
  images, labels = arrays['train']
  images[10:20], labels[10:20] = images[0], labels[0]  # The same example, ten times more.
  images[20:25], labels[20:25] = images[1], (labels[1] + 1) % 10  # Same image, other label.
  image_file, label_file = offline_data.IDX_FILES['train']
  write_idx(directory / image_file, images)
  write_idx(directory / label_file, labels)
  return arrays


def test_a_device_run_reads_the_idx_files_in_tfds_order_and_prepares_nothing(tmp_path,
                                                                             monkeypatch):
  _idx_with_repeats(tmp_path)
  config = _config(tmp_path)
  monkeypatch.setattr(tfds_source, 'read_all', lambda *a, **k: pytest.fail('decoded'))
  monkeypatch.setattr(offline_data, 'prepare', lambda *a, **k: pytest.fail('prepared'))
  data = input_pipeline.create_datasets(config)
  monkeypatch.undo()
  assert not tfds.builder('mnist', data_dir=config.data_dir).is_prepared()
  train, test = _decoded(config, 'train'), _decoded(config, 'test')  # Prepared now.
  # In TFDS's order (a hash of the keys), not the files': the same as decoding.
  assert not np.array_equal(train['y'], offline_data.load_idx_split(config.manual_dir,
                                                                    'train')[1])
  # The test split is stacked into evaluation batches, padded at the end.
  np.testing.assert_array_equal(
      np.asarray(data.test['x']).reshape(-1, 28, 28, 1)[:len(test['x'])], test['x'])
  np.testing.assert_array_equal(np.asarray(data.train['x']), train['x'])
  np.testing.assert_array_equal(np.asarray(data.train['y']), train['y'])
  assert np.asarray(data.train['y']).dtype == train['y'].dtype == np.int32
  # The cache holds them for the next run, which reads nothing but the cache.
  monkeypatch.setattr(offline_data, 'load_idx_split', lambda *a: pytest.fail('read'))
  again = input_pipeline.create_datasets(config)
  np.testing.assert_array_equal(np.asarray(again.train['x']), train['x'])
  np.testing.assert_array_equal(np.asarray(again.train['y']), train['y'])


def test_without_a_cache_the_arrays_still_come_from_the_files(tmp_path, monkeypatch):
  _idx_with_repeats(tmp_path, n_train=64, n_test=16)
  config = _config(tmp_path, cache_dir='')
  monkeypatch.setattr(tfds_source, 'read_all', lambda *a, **k: pytest.fail('decoded'))
  data = input_pipeline.create_datasets(config)
  monkeypatch.undo()
  np.testing.assert_array_equal(np.asarray(data.train['x']), _decoded(config, 'train')['x'])
  assert not (tmp_path / 'cache').exists()


def test_changed_idx_files_are_read_again_not_taken_from_the_cache(tmp_path):
  arrays = _idx_with_repeats(tmp_path, n_train=64, n_test=16)
  config = _config(tmp_path)
  first = np.asarray(input_pipeline.create_datasets(config).train['x'])
  images, labels = arrays['train']
  image_file, label_file = offline_data.IDX_FILES['train']
  write_idx(tmp_path / 'idx' / image_file, 255 - images)
  write_idx(tmp_path / 'idx' / label_file, labels)
  again = np.asarray(input_pipeline.create_datasets(config).train['x'])
  np.testing.assert_array_equal(again, 255 - first)
  # The stale copy is gone: one per split.
  assert len(glob.glob(str(tmp_path / 'cache' / 'decoded' / 'mnist-*'))) == 2


@pytest.mark.slow
def test_real_mnist_from_its_idx_files_equals_decoding_it(mnist_dir, tmp_path):
  config = tiny_config(manual_dir=mnist_dir, data_dir=str(tmp_path / 'tfds'), cache_dir='')
  found = tfds_source.prepared(config)
  for split in ('train', 'test'):
    decoded = tfds_source.read_all(tfds_source.records(found, split))
    arrays = offline_data.idx_arrays(mnist_dir, split)
    np.testing.assert_array_equal(arrays['x'], decoded['x'])
    np.testing.assert_array_equal(arrays['y'], decoded['y'])


# A child process that stops, for good, at a chosen point; the test kills it there.
_CHILD = textwrap.dedent('''
    import os, sys, time
    import numpy as np
    from tests.helpers import tiny_config
    from trainkit.data import pipeline as input_pipeline
    from trainkit.data.sources import decoded_cache, tfds_prepare as offline_data
    from trainkit.data.sources import tfds_source
    tmp, where = sys.argv[1], sys.argv[2]

    def stop_here():
      open(os.path.join(tmp, 'stopped'), 'w').close()
      time.sleep(600)

    if where == 'preparing':  # Some images encoded and handed to TFDS's writer.
      encode = offline_data._png
      calls = []
      def slow(images):
        calls.append(1)
        if len(calls) == 3:
          stop_here()
        return encode(images)
      offline_data._png = slow
    elif where == 'decoding':
      tfds_source.read_all = lambda records: stop_here()
    elif where == 'caching':  # One array written into the cache, not the other.
      save = np.save
      def half(path, array):
        save(path, array)
        stop_here()
      decoded_cache.np.save = half
    # Streamed runs prepare; device runs read the IDX files, or decode a prepared
    # dataset when no manual_dir is given.
    config = tiny_config(manual_dir='' if where == 'decoding' else os.path.join(tmp, 'idx'),
                         cache_dir=os.path.join(tmp, 'cache'),
                         data_dir=os.path.join(tmp, 'tfds'),
                         input_mode='stream' if where == 'preparing' else 'device',
                         train_split='train', validation_split='')
    input_pipeline.create_datasets(config)
    ''')


def _killed_at(tmp_path, where):
  """Runs the child until it reaches `where`, then kills it (SIGKILL: no clean-up)."""
  marker = tmp_path / 'stopped'
  child = subprocess.Popen([sys.executable, '-c', _CHILD, str(tmp_path), where], cwd=ROOT,
                           env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  deadline = time.time() + 120
  while not marker.exists():
    if child.poll() is not None or time.time() > deadline:
      child.kill()
      pytest.fail(f'the child never reached {where}: {child.stderr.read()[-3000:]}')
    time.sleep(0.05)
  child.send_signal(signal.SIGKILL)
  child.wait()
  child.stderr.close()
  marker.unlink()


@pytest.mark.parametrize('where', ['preparing', 'decoding', 'caching'])
def test_a_process_killed_while_it_prepares_decodes_or_caches_misleads_no_later_run(
    tmp_path, where):
  # 5,000 examples: the encoding threads take several tasks each.
  write_mnist(_dir(tmp_path / 'idx'), n_train=5000, n_test=20, seed=1)
  config = _config(tmp_path)
  if where != 'preparing':  # Prepared already, not cached: this run decodes.
    offline_data.prepare('mnist', config.data_dir, config.manual_dir)
  _killed_at(tmp_path, where)
  builder = tfds.builder('mnist', data_dir=config.data_dir)
  if where == 'preparing':
    assert not builder.is_prepared()
    assert glob.glob(str(tmp_path / 'tfds' / 'mnist' / 'incomplete.*'))  # Its leftover.
  cached = glob.glob(str(tmp_path / 'cache' / 'decoded' / 'mnist-*'))
  assert cached == []  # Nothing under a name a run would read.
  data = input_pipeline.create_datasets(config)
  # The next run prepares or decodes again, and gets what decoding gives.
  train = _decoded(config, 'train')
  np.testing.assert_array_equal(np.asarray(data.train['x']), train['x'])
  np.testing.assert_array_equal(np.asarray(data.train['y']), train['y'])
  assert data.num_train == 5000
  assert not glob.glob(str(tmp_path / 'tfds' / 'mnist' / 'incomplete.*'))
  assert len(glob.glob(str(tmp_path / 'cache' / 'decoded' / 'mnist-*'))) == 2


def _dir(path):
  os.makedirs(path, exist_ok=True)
  return path


def _shapes(data):
  return {key: (jax.tree.map(lambda x: (x.shape, str(x.dtype), x.sharding), split)
                if split is not None else None)
          for key, split in (('train', data.train), ('validation', data.validation),
                             ('test', data.test))}


def test_the_predicted_data_has_the_shapes_the_data_gets(tmp_path):
  write_mnist(_dir(tmp_path / 'idx'), n_train=300, n_test=40)
  config = _config(tmp_path, train_split='train[:250]', validation_split='train[250:]',
                   eval_batch_size=32)
  before = input_pipeline.predicted_data(config)  # From the IDX files' headers.
  data = input_pipeline.create_datasets(config)
  after = input_pipeline.predicted_data(config)  # From the prepared dataset's metadata.
  assert _shapes(before) == _shapes(data) == _shapes(after)
  assert (before.num_train, before.num_validation, before.num_test) == (250, 50, 40)
  assert not np.asarray(before.train['x']).any()  # Zeros: nothing was read.
  # Streamed, or more than the room given: nothing to predict.
  assert input_pipeline.predicted_data(_config(tmp_path, input_mode='stream')) is None
  assert input_pipeline.predicted_data(config, max_bytes=340 * 788 - 1) is None
  assert input_pipeline.predicted_data(config, max_bytes=340 * 788) is not None


@pytest.mark.slow
def test_a_first_run_compiles_its_programs_while_the_data_loads(tmp_path):
  write_mnist(_dir(tmp_path / 'idx'), n_train=3000, n_test=1500)  # 1 and 2 eval batches.
  result = subprocess.run(
      [sys.executable, 'main.py', '--config=configs/default.py', f'--workdir={tmp_path / "w"}',
       f'--config.manual_dir={tmp_path / "idx"}', f'--config.data_dir={tmp_path / "tfds"}',
       '--config.cache_dir=', '--config.num_epochs=1', '--config.progress=off',
       '--config.model.hidden_sizes=(32,)', '--config.model.dropout_rates=(0.1,)',
       '--config.train_split=train[:2500]', '--config.validation_split=train[2500:]'],
      cwd=ROOT, env={**ENV, 'JAX_LOG_COMPILES': '1'}, capture_output=True, text=True,
      timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  lines = result.stderr.splitlines()
  main_thread = next(line.split()[2] for line in lines if '] Config:' in line)
  compiled = {}
  for line in lines:
    if 'Finished XLA compilation of jit(' in line:
      name = line.split('jit(')[1].split(')')[0]
      compiled.setdefault(name, []).append(line.split()[2])
  # Each once, and not by the main thread: the init, the train call, the
  # epoch's order, the evaluations (validation and test shapes), the predictions.
  assert compiled['_train_steps'] == compiled['_epoch_order'] == [compiled['_train_steps'][0]]
  assert '_rows' not in compiled  # 19 steps an epoch, 50 a call: the order is the call's input.
  assert len(compiled['_eval_steps']) == 2
  for name in ('_train_steps', '_epoch_order', '_eval_steps', '<lambda>'):
    assert main_thread not in compiled[name], (name, compiled)
  # While the data loads: the thread is still compiling when it has loaded (read from
  # the IDX files, it loads in a fraction of a second).
  assert any('] Data loaded; compiling ahead still running.' in line for line in lines)
