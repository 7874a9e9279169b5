"""Every file a run reads back, damaged: rebuilt, repaired, or refused in one line naming it.

Each file of a trained workdir (and of a sweep or search directory, and of
the caches) is cut short, emptied, overwritten with garbage or replaced by a
folder, as a crash, a full disk or a user can; the next command must then
rebuild or repair it, or refuse in one line naming it and change nothing.
Never a traceback, never the damaged content used.
"""

import json
import os
import shutil

import numpy as np
import pytest

from tests.conftest import mock_data
from tests.helpers import checkpoint_steps, digest, tiny_config
from trainkit import cli
from trainkit.data.sources import decoded_cache
from trainkit.search import optuna_search as search
from trainkit.search import space as ss
from trainkit.search import sweeps
from trainkit.serving import restore as restore_lib
from trainkit.workdirs import layout as workdir_lib
import train

DAMAGES = ('cut', 'empty', 'garbage', 'folder')


def damage(path, how: str) -> None:
  """Damages the file at `path` as a crash, a full disk or a user would."""
  size = os.path.getsize(path)
  if how == 'folder':
    os.remove(path)
    os.makedirs(os.path.join(path, 'inside'))
    return
  with open(path, 'rb') as f:
    data = f.read()
  with open(path, 'wb') as f:
    if how == 'cut':
      f.write(data[:size // 2])
    elif how == 'garbage':
      f.write(np.random.default_rng(0).integers(0, 256, max(size, 64), np.uint8).tobytes())


def _config(**overrides):
  return tiny_config(**{'train_split': 'train[:40]', 'validation_split': 'train[40:]',
                        'keep_checkpoints': 5, **overrides})


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A finished run with a config history: (config, workdir, its summary)."""
  workdir = str(tmp_path_factory.mktemp('damage') / 'run')
  config = _config(num_epochs=2)
  with mock_data():
    train.train_and_evaluate(config, workdir)
    config.num_epochs = 3
    _, summary = train.train_and_evaluate(config, workdir, continue_with_changes=True)
  return config, workdir, summary


@pytest.fixture
def copy(trained, tmp_path):
  config, workdir, summary = trained
  target = str(tmp_path / 'run')
  shutil.copytree(workdir, target)
  return config.copy_and_resolve_references(), target, summary


def _refused(call, path: str, workdir: str):
  """`call()` is refused in one line naming `path`, and the workdir is untouched."""
  before = digest(workdir)
  with mock_data(), pytest.raises(cli.INPUT_ERRORS) as e:
    call()
  message = str(e.value)
  assert path in message and '\n' not in message, message
  assert digest(workdir) == before


@pytest.mark.parametrize('how', DAMAGES)
def test_config_json_is_refused_by_every_command(copy, how):
  config, workdir, _ = copy
  path = os.path.join(workdir, workdir_lib.CONFIG)
  damage(path, how)
  _refused(lambda: train.train_and_evaluate(config, workdir), path, workdir)
  _refused(lambda: restore_lib.evaluate_checkpoint(config, workdir), path, workdir)


@pytest.mark.parametrize('name', [workdir_lib.MODEL_SPEC, workdir_lib.SUMMARY,
                                  workdir_lib.METRICS, workdir_lib.LOCK])
@pytest.mark.parametrize('how', ['cut', 'garbage', 'folder'])  # Empty reads as cut.
def test_derived_files_are_rebuilt_by_the_next_run(copy, name, how):
  """What a run derives (spec, summary, metrics, lock) it writes again; a folder is refused."""
  config, workdir, summary = copy
  path = os.path.join(workdir, name)
  with open(path, 'rb') as f:
    original = f.read()
  damage(path, how)
  if how == 'folder':
    _refused(lambda: train.train_and_evaluate(config, workdir), path, workdir)
    return
  if name == workdir_lib.MODEL_SPEC:  # Inference needs it: refused until a run rewrites it.
    _refused(lambda: restore_lib.evaluate_checkpoint(config, workdir), path, workdir)
  with mock_data():
    _, again = train.train_and_evaluate(config, workdir)
  assert again == summary
  if name in (workdir_lib.MODEL_SPEC, workdir_lib.SUMMARY):
    with open(path, 'rb') as f:
      assert json.loads(f.read()) == json.loads(original)
  elif name == workdir_lib.METRICS:
    # Whole records only, none cut or garbled, ending with the re-evaluation.
    with open(path, 'rb') as f:
      lines = f.read().decode().splitlines()
    records = [json.loads(line) for line in lines]
    assert records[-1]['split'] == 'eval' and records[-1]['step'] == summary['step']
  else:  # The lock file is emptied when free.
    assert os.path.getsize(path) == 0
  with mock_data():
    restore_lib.evaluate_checkpoint(config, workdir)


@pytest.mark.parametrize('how', ['cut', 'garbage'])
def test_config_history_takes_the_next_change_on_a_line_of_its_own(copy, how):
  config, workdir, _ = copy
  path = os.path.join(workdir, workdir_lib.HISTORY)
  damage(path, how)
  config.num_epochs = 4
  with mock_data():
    train.train_and_evaluate(config, workdir, continue_with_changes=True)
  with open(path, 'rb') as f:
    last = json.loads(f.read().splitlines()[-1])
  assert last['changes'] == {'num_epochs': [3, 4]}


@pytest.mark.parametrize('item', ['meta/metadata', 'metrics/metrics', '_CHECKPOINT_METADATA',
                                  'state/_METADATA'])
@pytest.mark.parametrize('how', ['cut', 'folder'])  # Empty and garbage: the same refusals.
def test_a_damaged_latest_checkpoint_is_set_aside_for_the_previous(copy, item, how):
  config, workdir, summary = copy
  steps = checkpoint_steps(workdir)
  damage(os.path.join(workdir, 'checkpoints', str(steps[-1]), item), how)
  config.num_epochs = 3
  with mock_data():
    _, again = train.train_and_evaluate(config, workdir)
  # The damaged step was noticed and set aside, the run resumed from the one
  # before and trained the rest again: it ends as the undamaged one did.
  aside = os.path.join(workdir, workdir_lib.BROKEN_CHECKPOINTS)
  assert os.listdir(aside) == [str(steps[-1])]
  assert os.path.lexists(os.path.join(aside, str(steps[-1]), item))
  assert again['eval_loss'] == summary['eval_loss'] and again['step'] == summary['step']
  assert checkpoint_steps(workdir)[-1] == steps[-1]
  with mock_data():  # Its new latest checkpoint evaluates.
    evaluated = restore_lib.evaluate_checkpoint(config, workdir, split='train[40:]')
  assert evaluated['step'] == steps[-1]
  assert evaluated['eval_loss'] == pytest.approx(summary['eval_loss'], rel=1e-6)


@pytest.mark.parametrize('how', DAMAGES)
def test_inference_refuses_a_checkpoint_folder_it_cannot_open(copy, how):
  config, workdir, _ = copy
  step = checkpoint_steps(workdir)[-1]
  path = os.path.join(workdir, 'checkpoints', str(step), 'metrics', 'metrics')
  damage(path, how)
  _refused(lambda: restore_lib.evaluate_checkpoint(config, workdir), path, workdir)


def test_a_sweeps_summary_is_written_anew(tmp_path):
  overrides = [{'seed': 0}, {'seed': 1}]
  run = lambda: sweeps.run_sweep(tiny_config(), overrides, str(tmp_path))
  with mock_data():
    first = run()
  for name in (sweeps.SUMMARY_CSV, sweeps.SUMMARY_MD):
    path = os.path.join(tmp_path, name)
    with open(path, 'rb') as f:
      original = f.read()
    for how in DAMAGES:
      damage(path, how)
      if how == 'folder':
        _refused(run, path, str(tmp_path))
        shutil.rmtree(path)
      with mock_data():
        again = run()  # The members finished: skipped, the summary written again.
      assert [r['name'] for r in again] == [r['name'] for r in first]
      with open(path, 'rb') as f:
        assert f.read() == original, (name, how)


def _search(directory):
  spec = ss.Search(space={'learning_rate': ss.Float(1e-3, 1e-1, log=True)}, num_trials=2,
                   sampler='random', pruner='none', heartbeat_s=1, grace_s=3)
  config = _config(num_epochs=1)
  with mock_data():
    study, storage = search.prepare(spec, config, directory, None, None, 'sweep.py')
    search.run_worker(study, storage, spec, config, directory)
  return study


def test_a_search_journal_cut_short_is_repaired_and_garbage_is_refused(tmp_path):
  directory = str(tmp_path / 's')
  _search(directory)
  path = os.path.join(directory, search.JOURNAL)
  with open(path, 'rb') as f:
    whole = f.read()
  # A killed worker's last record, cut short: dropped, and the study goes on.
  with open(path, 'ab') as f:
    f.write(b'{"op_code": 5, "worker_id": "x", "trial_id"')
  study = _search(directory)
  assert len(study.get_trials()) == 2 and study.best_trial is not None
  with open(path, 'rb') as f:
    assert f.read() == whole  # Nothing appended after it ran on from the cut one.
  spec = ss.Search(space={'learning_rate': ss.Float(1e-3, 1e-1, log=True)}, num_trials=2,
                   sampler='random', pruner='none', heartbeat_s=1, grace_s=3)
  prepare = lambda: search.prepare(spec, _config(num_epochs=1), directory, None, None,
                                   'sweep.py')
  for how in ('garbage', 'folder'):
    damage(path, how)
    _refused(prepare, path, directory)
    shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    with open(path, 'wb') as f:
      f.write(whole)


@pytest.mark.parametrize('name', ['x.npy', 'y.npy', 'key.json'])
@pytest.mark.parametrize('how', DAMAGES)
def test_a_damaged_decoded_split_is_decoded_again_and_replaced(tmp_path, name, how):
  config = _config(num_epochs=1, cache_dir=str(tmp_path / 'cache'), input_mode='device')
  calls, builder = [], _Builder(tmp_path)

  def load():
    arrays = decoded_cache.load(builder, 'train', config.cache_dir,
                                lambda: calls.append(1) or _ARRAYS)
    return {k: np.asarray(v) for k, v in arrays.items()}

  load()
  folder, = [f for f in (tmp_path / 'cache' / 'decoded').iterdir()]
  damage(str(folder / name), how)
  for _ in range(2):  # Decoded once, then read from the cache again.
    arrays = load()
    np.testing.assert_array_equal(arrays['x'], _ARRAYS['x'])
    np.testing.assert_array_equal(arrays['y'], _ARRAYS['y'])
  assert len(calls) == 2
  assert [f.name for f in (tmp_path / 'cache' / 'decoded').iterdir()] == [folder.name]


_ARRAYS = {'x': np.arange(20 * 4, dtype=np.uint8).reshape(20, 4),
           'y': np.arange(20, dtype=np.int32)}


class _Builder:
  """What decoded_cache reads of a prepared TFDS builder: its files on disk."""
  name, version = 'fake', '1.0.0'

  def __init__(self, directory):
    self.data_dir = str(directory / 'prepared')
    os.makedirs(self.data_dir, exist_ok=True)
    for file, text in (('dataset_info.json', '{}'), ('fake-train.array_record-00000', 'x')):
      with open(os.path.join(self.data_dir, file), 'w') as f:
        f.write(text)


def test_a_cache_dir_that_is_a_file_is_refused(tmp_path):
  (tmp_path / 'cache').write_text('not a folder')
  config = _config(cache_dir=str(tmp_path / 'cache'))
  with mock_data(), pytest.raises(cli.INPUT_ERRORS, match="cache_dir=.*: is not a folder"):
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()


def test_damaged_compilation_cache_entries_are_removed_and_written_again(tmp_path):
  directory = tmp_path / 'jax'
  directory.mkdir()
  import zlib  # pylint: disable=g-import-not-at-top
  whole = [directory / f'jit_f{i}-cache' for i in range(4)]
  for path in whole:
    path.write_bytes(zlib.compress(b'an executable'))
  assert cli.drop_damaged_cache_entries(str(directory)) == []  # Whole ones stay.
  for path, how in zip(whole, DAMAGES):
    damage(str(path), how)
  assert sorted(cli.drop_damaged_cache_entries(str(directory))) == sorted(map(str, whole))
  assert not list(directory.iterdir())
