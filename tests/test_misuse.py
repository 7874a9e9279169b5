"""Trust under misuse: config drift on resume, one run per workdir, full disks,
config-file mistakes, unknown datasets, no network, and predict's odd images."""

import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from tests.conftest import mock_data
from tests.helpers import (ENV, ROOT, digest, error_lines, idx_dir, run_main, session_cache_dir,
                           tiny_config)
from trainkit import cli
from trainkit import errors
from trainkit.data import pipeline as input_pipeline
from trainkit.data import sources
from trainkit.search import sweeps
from trainkit.serving import digit_images
from trainkit.serving import predict_images
from trainkit.serving import restore as restore_lib
from trainkit.tracking import metric_logs as metric_logging
from trainkit.workdirs import config_history
from trainkit.workdirs import lock as workdir_lock
import train

STEPS_PER_EPOCH = 6  # The tiny config on mocked data: 50 examples, batch 8.


@pytest.fixture(scope='module')
def _trained(tmp_path_factory):
  """A finished 2-epoch tiny run on mocked data, trained once for the module."""
  workdir = tmp_path_factory.mktemp('trained') / 'run'
  with mock_data():
    train.train_and_evaluate(tiny_config(), str(workdir))
  return workdir


@pytest.fixture
def finished(_trained, tmp_path):
  """A copy of that run for one test: (config, workdir)."""
  shutil.copytree(_trained, tmp_path / 'run')
  return tiny_config(), str(tmp_path / 'run')


@pytest.mark.parametrize('field, value, listed', [
    ('learning_rate', 0.002, 'learning_rate 0.001 -> 0.002'),
    ('num_epochs', 3, 'num_epochs 2 -> 3'),
    ('schedule', 'constant', 'schedule "cosine" -> "constant"'),
])
def test_a_resume_with_a_changed_config_is_refused_and_touches_nothing(
    finished, field, value, listed):
  config, workdir = finished
  before = digest(workdir)
  config[field] = value
  with mock_data(), pytest.raises(errors.ConfigError) as e:
    train.train_and_evaluate(config, workdir)
  message = str(e.value)
  assert listed in message and '--continue_with_changes' in message
  assert f'from step {2 * STEPS_PER_EPOCH}' in message and '\n' not in message
  assert digest(workdir) == before


@pytest.mark.parametrize('field, value', [('batch_size', 4), ('seed', 1),
                                          ('model.hidden_sizes', (8,)),
                                          ('optimizer', 'sgd'), ('dataset', 'fashion_mnist')])
def test_fields_that_define_the_checkpoint_never_change(finished, field, value):
  config, workdir = finished
  before = digest(workdir)
  *parents, last = field.split('.')
  target = config
  for part in parents:
    target = target[part]
  target[last] = value
  with mock_data(), pytest.raises(errors.ConfigError, match='cannot change'):
    train.train_and_evaluate(config, workdir, continue_with_changes=True)
  assert digest(workdir) == before


def test_continuing_with_changes_records_them_and_trains_with_them(finished):
  config, workdir = finished
  config.num_epochs, config.learning_rate = 3, 0.002
  config.progress, config.steps_per_call = 'off', 4  # Operational: never a change.
  with mock_data():
    state, summary = train.train_and_evaluate(config, workdir, continue_with_changes=True)
  assert summary['step'] == 3 * STEPS_PER_EPOCH
  # The checkpoint held the old learning rate; the new one is what trained on.
  assert float(state.opt_state.hyperparams['learning_rate']) == np.float32(0.002)
  with open(os.path.join(workdir, config_history.HISTORY)) as f:
    (line,) = [json.loads(line) for line in f]
  assert line['step'] == 2 * STEPS_PER_EPOCH
  assert line['changes'] == {'learning_rate': [0.001, 0.002], 'num_epochs': [2, 3]}
  with open(os.path.join(workdir, 'config.json')) as f:
    stored = json.load(f)
  assert stored['num_epochs'] == 3 and stored['learning_rate'] == 0.002
  # Now the workdir's config: the same command again changes nothing.
  before = digest(workdir)
  with mock_data():
    train.train_and_evaluate(config, workdir)
  assert digest(workdir)[config_history.HISTORY] == before[config_history.HISTORY]
  # Fewer epochs than trained cannot be continued.
  config.num_epochs = 2
  with mock_data(), pytest.raises(errors.ConfigError, match='has trained 3 epochs'):
    train.train_and_evaluate(config, workdir, continue_with_changes=True)


def test_a_change_that_trains_no_step_on_a_finished_run_is_warned_of(finished, caplog):
  config, workdir = finished
  config.learning_rate = 0.005
  with mock_data():
    summary = train.train_and_evaluate(config, workdir, continue_with_changes=True)[1]
  assert summary['step'] == 2 * STEPS_PER_EPOCH  # Nothing trained with it.
  assert 'has trained every epoch of its config (2): learning_rate 0.001 -> 0.005 trains no ' \
         'step (raise num_epochs or max_steps with it to train on)' in caplog.text


# A new value for every continuable field (the tiny config's differ).
CONTINUED = {
    'num_epochs': 3, 'max_steps': 1000, 'learning_rate': 0.002, 'weight_decay': 2e-4,
    'momentum': 0.8,
    'grad_clip_norm': 2.0, 'schedule': 'constant', 'warmup_epochs': 0.25,
    'end_lr_factor': 0.1, 'decay_rate': 0.9, 'decay_epochs': 2.0, 'staircase': True,
    'input_mode': 'stream', 'nan_policy': 'skip', 'nan_skip_limit': 3,
    'validation_split': 'train[40:]', 'test_split': 'test[:40]', 'best_metric': 'loss',
    'early_stopping_patience': 5,
    'early_stopping_metric': 'accuracy', 'early_stopping_min_delta': 0.01,
    'plateau_patience': 3, 'plateau_factor': 0.5, 'plateau_min_delta': 1e-3,
}


def test_every_continuable_field_is_covered():
  assert set(CONTINUED) == set(config_history.CONTINUABLE)


@pytest.fixture(scope='module')
def _trained_with_transforms(tmp_path_factory):
  """As _trained, with clipping and weight decay on (their values can change)."""
  workdir = tmp_path_factory.mktemp('transforms') / 'run'
  with mock_data():
    train.train_and_evaluate(tiny_config(grad_clip_norm=1.0, weight_decay=1e-4),
                             str(workdir))
  return workdir


def test_every_continuable_field_continues_and_is_recorded(_trained_with_transforms, tmp_path):
  """All of them changed in one resume: each is refused without the flag, then
  continued, recorded, written to config.json and used where the run shows it."""
  shutil.copytree(_trained_with_transforms, tmp_path / 'run')
  config, workdir = tiny_config(grad_clip_norm=1.0, weight_decay=1e-4), str(tmp_path / 'run')
  old = {field: config[field] for field in CONTINUED}
  assert all(old[field] != value for field, value in CONTINUED.items())
  config.update(CONTINUED)  # Among them one more epoch, trained with the new values.
  config.allow_split_overlap = True  # Operational; the new validation split overlaps.
  with mock_data(), pytest.raises(errors.ConfigError) as e:
    train.train_and_evaluate(config, workdir)  # Not without --continue_with_changes.
  for field in CONTINUED:
    assert f'{field} ' in str(e.value), field
  with mock_data():
    state, summary = train.train_and_evaluate(config, workdir, continue_with_changes=True)
  assert summary['step'] == 3 * STEPS_PER_EPOCH
  with open(os.path.join(workdir, config_history.HISTORY)) as f:
    (line,) = [json.loads(line) for line in f]
  assert line['step'] == 2 * STEPS_PER_EPOCH
  assert line['changes'] == json.loads(json.dumps(
      {field: [old[field], value] for field, value in CONTINUED.items()}))
  with open(os.path.join(workdir, 'config.json')) as f:
    stored = json.load(f)
  assert {field: stored[field] for field in CONTINUED} == json.loads(json.dumps(CONTINUED))
  # What the run then did with them, where the state or the summary shows it.
  hyperparams = state.opt_state.hyperparams
  assert float(hyperparams['learning_rate']) == np.float32(0.002)
  assert float(hyperparams['weight_decay']) == np.float32(2e-4)
  assert summary['eval_split'] == 'train[40:]' and summary['best_metric'] == 'loss'


@pytest.mark.parametrize('field', ['grad_clip_norm', 'weight_decay'])
def test_turning_an_optimizer_transform_on_is_refused_in_one_line(finished, field):
  config, workdir = finished
  before = digest(workdir)
  config[field] = 1e-3
  with mock_data(), pytest.raises(errors.ConfigError,
                                  match=f'{field} 0.0 -> 0.001 turns an optimizer') as e:
    train.train_and_evaluate(config, workdir, continue_with_changes=True)
  assert '\n' not in str(e.value) and digest(workdir) == before
  # adamw's own decay is in its state whatever its value: it may change.
  assert config_history._switched_transforms(  # pylint: disable=protected-access
      {'weight_decay': (0.0, 1e-3)}, 'adamw') == {}


def test_inference_refuses_another_model_but_not_other_training_fields(finished):
  config, workdir = finished
  config.learning_rate, config.num_epochs = 0.5, 9  # Irrelevant to reading a checkpoint.
  with mock_data():
    assert restore_lib.evaluate_checkpoint(config, workdir)['step'] == 2 * STEPS_PER_EPOCH
  config.model.activation = 'gelu'  # The same arrays, another model.
  with pytest.raises(errors.ConfigError, match='model.activation "relu" -> "gelu"'):
    restore_lib.restore(config, workdir)


def test_a_sweep_checks_each_members_config(tmp_path):
  overrides = sweeps.product(learning_rate=[1e-3, 1e-2])
  with mock_data():
    sweeps.run_sweep(tiny_config(), overrides, str(tmp_path / 'sweep'))
    before = digest(tmp_path / 'sweep')
    with pytest.raises(errors.ConfigError, match='batch_size 8 -> 4'):
      sweeps.run_sweep(tiny_config(batch_size=4), overrides, str(tmp_path / 'sweep'))
    assert digest(tmp_path / 'sweep') == before
    ranked = sweeps.run_sweep(tiny_config(num_epochs=3), overrides, str(tmp_path / 'sweep'),
                              continue_with_changes=True)
  assert all(json.load(open(os.path.join(r['workdir'], 'summary.json')))['epoch'] == 3
             for r in ranked)


def _hold_in_another_process(workdir):
  """A process holding `workdir`'s lock, started and holding when this returns."""
  holder = subprocess.Popen(
      [sys.executable, '-c', 'import sys, time\n'
       'from trainkit.workdirs import lock as workdir_lock\n'
       'with workdir_lock.hold(sys.argv[1]):\n'
       '  print("held", flush=True)\n'
       '  time.sleep(120)\n', workdir], cwd=ROOT, env=ENV, stdout=subprocess.PIPE, text=True)
  assert holder.stdout.readline().strip() == 'held'
  return holder


def test_a_second_run_is_refused_while_one_holds_the_workdir(finished):
  config, workdir = finished
  holder = _hold_in_another_process(workdir)
  before = digest(workdir)  # The lock file names its holder: the refused touch nothing.
  try:
    with mock_data(), pytest.raises(workdir_lock.WorkdirBusy) as e:
      train.train_and_evaluate(config, workdir)
    assert f'pid {holder.pid} on {socket.gethostname()} since ' in str(e.value)
    with mock_data(), pytest.raises(workdir_lock.WorkdirBusy):
      restore_lib.evaluate_checkpoint(config, workdir)
    # Reading only: predict needs no lock.
    image = os.path.join(os.path.dirname(workdir), 'x.png')
    Image.fromarray(np.full((28, 28), 255, np.uint8)).save(image)
    assert predict_images.predict_files(config, workdir, [image])
    assert digest(workdir) == before
  finally:
    holder.kill()  # SIGKILL: the lock of a dead process blocks no one.
    holder.wait()
  with mock_data():
    _, summary = train.train_and_evaluate(config, workdir)
  assert summary['step'] == 2 * STEPS_PER_EPOCH


@pytest.mark.slow  # Two process starts.
def test_cli_exit_statuses_for_a_busy_workdir_and_a_blank_image(finished, tmp_path):
  _, workdir = finished
  holder = _hold_in_another_process(str(tmp_path / 'busy'))
  try:
    result = run_main('--config=configs/default.py', f'--workdir={tmp_path / "busy"}',
                      '--config.model.hidden_sizes=(16,)', '--config.model.dropout_rates=(0.1,)',
                      f'--config.cache_dir={session_cache_dir()}')
  finally:
    holder.kill()
    holder.wait()
  assert result.returncode == cli.EXIT_WORKDIR_BUSY, result.stderr[-2000:]
  assert len(error_lines(result.stderr)) == 1 and 'Traceback' not in result.stderr
  assert 'is in use by pid' in result.stderr
  Image.fromarray(np.full((40, 30), 200, np.uint8)).save(tmp_path / 'grey.png')
  predicted = run_main('--config=configs/default.py', f'--workdir={workdir}',
                       '--config.model.hidden_sizes=(16,)', '--config.model.dropout_rates=(0.1,)',
                       '--mode=predict', f'--input={tmp_path / "grey.png"}')
  assert predicted.returncode == cli.EXIT_NO_DIGIT, predicted.stderr[-2000:]
  assert predicted.stdout.strip() == f'{tmp_path / "grey.png"}: no digit found (the image is ' \
      'blank or one colour)'


def _png_header_only(path, width, height):
  """A PNG whose header claims width x height (its pixels are never read)."""
  def chunk(kind, data):
    return (struct.pack('>I', len(data)) + kind + data
            + struct.pack('>I', zlib.crc32(kind + data)))
  with open(path, 'wb') as f:
    f.write(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', width, height,
                                                             8, 0, 0, 0, 0))
            + chunk(b'IDAT', zlib.compress(b'\0' * 64)) + chunk(b'IEND', b''))


@pytest.mark.parametrize('side', [12_000, 30_000])  # Past PIL's warning; past its error.
def test_predict_refuses_a_decompression_bomb_in_one_line(tmp_path, side):
  path = str(tmp_path / 'bomb.png')
  _png_header_only(path, side, side)
  with pytest.raises(digit_images.UnreadableImage, match='too large to decode safely') as e:
    digit_images.load_digit(path)
  assert '\n' not in str(e.value)


def test_predict_says_no_digit_for_a_blank_or_uniform_image(finished, tmp_path):
  config, workdir = finished
  for name, pixels in (('white.png', np.full((50, 50), 255, np.uint8)),
                       ('black.png', np.zeros((28, 28), np.uint8))):
    Image.fromarray(pixels).save(tmp_path / name)
  Image.new('RGB', (64, 48), (30, 120, 200)).save(tmp_path / 'blue.jpg')
  assert digit_images.load_digit(str(tmp_path / 'blue.jpg')) is None
  results = predict_images.predict_files(config, workdir, [str(tmp_path)])
  assert [r[1:] for r in results] == [(None, None, None, predict_images.NO_DIGIT)] * 3


@pytest.mark.parametrize('text, problem', [
    (None, 'no such file'),
    ('def get_config(:\n', 'syntax error on line 1'),
    ('X = 1\n', 'defines no get_config() function'),
    ('def get_config():\n  raise ValueError("boom")\n', 'get_config() raised ValueError: boom'),
    ('import no_such_module\n', 'loading it raised ModuleNotFoundError'),
])
def test_config_file_mistakes_are_one_line(tmp_path, capsys, text, problem):
  path = tmp_path / 'my_config.py'
  if text is not None:
    path.write_text(text)
  with pytest.raises(SystemExit) as e:
    cli.parse_flags(['main.py', f'--config={path}', f'--workdir={tmp_path / "w"}'])
  assert e.value.code == cli.EXIT_BAD_INPUT
  (line,) = capsys.readouterr().err.splitlines()
  assert line.startswith(f'error: --config={path}: {problem}')
  assert not (tmp_path / 'w').exists()


@pytest.mark.slow  # A process start.
def test_cli_config_file_mistake_has_no_traceback(tmp_path):
  (tmp_path / 'broken.py').write_text('def get_config(:\n')
  result = run_main(f'--config={tmp_path / "broken.py"}', f'--workdir={tmp_path / "w"}')
  assert result.returncode == cli.EXIT_BAD_INPUT
  assert error_lines(result.stderr) == [
      f'error: --config={tmp_path / "broken.py"}: syntax error on line 1: invalid syntax']
  assert 'Traceback' not in result.stderr


def test_an_unknown_dataset_is_refused_alike_with_or_without_manual_dir(tmp_path):
  messages = []
  for manual_dir in (None, idx_dir(tmp_path)):
    config = tiny_config(dataset='mnistt', manual_dir=manual_dir,
                         data_dir=str(tmp_path / 'tfds'))
    with pytest.raises(sources.DataError) as e:
      input_pipeline.create_datasets(config)
    messages.append(str(e.value))
  assert messages == ["dataset='mnistt' is not a TFDS dataset (did you mean 'mnist'?)"] * 2
  assert not (tmp_path / 'tfds').exists()


@pytest.mark.parametrize('dataset, message', [
    ('{tmp}/parts', 'a folder is read as a table of Parquet files, and it holds no .parquet'),
    ('{tmp}/data.xlsx', r'not a file this reads: a table \(.csv, .tsv, .txt, .parquet, .pq;'),
    ('{tmp}/gone', 'no such file or folder'),
    ('data.json', 'is not a TFDS dataset name, a table or .npz arrays'),
    ('mnist!', r'is not a TFDS dataset name, a table or .npz arrays \(ValueError: Parsing'),
])
def test_a_dataset_that_is_no_source_is_refused_in_one_line(tmp_path, dataset, message):
  # TFDS took each of these for a dataset's name: a ValueError traceback.
  (tmp_path / 'parts').mkdir()
  (tmp_path / 'parts' / 'a.csv').write_text('x,y\n1,2\n')
  (tmp_path / 'data.xlsx').write_bytes(b'PK')
  config = tiny_config(dataset=dataset.format(tmp=tmp_path))
  with pytest.raises(sources.DataError, match=message):
    input_pipeline.create_datasets(config)


def test_a_split_mnist_has_not_is_refused_naming_those_it_has(tmp_path):
  config = tiny_config(manual_dir=idx_dir(tmp_path), data_dir=str(tmp_path / 'tfds'),
                       validation_split='validation')
  with pytest.raises(sources.DataError, match=r"^dataset='mnist': has no split 'validation' "
                     r"\(it has: 'train', 'test'\)$"):  # It was "split 'validation': 'validation'".
    input_pipeline.create_datasets(config)


def test_a_tfds_name_with_a_dot_is_not_taken_for_a_path():
  sources._refuse_other_files('c4/en.noclean')  # pylint: disable=protected-access
  sources._refuse_other_files('wikipedia/20230601.en')  # pylint: disable=protected-access


def test_arrays_are_known_by_their_suffix_in_any_case(tmp_path):
  with open(tmp_path / 'DATA.NPZ', 'wb') as f:  # A path would get '.npz' added.
    np.savez(f, x=np.zeros((4, 2), np.float32), y=np.arange(4) % 2)
  config = tiny_config(dataset=str(tmp_path / 'DATA.NPZ'), train_split='train',
                       test_split='train', normalization='per_feature')
  assert input_pipeline.create_datasets(config).num_train == 4


def test_a_proxy_that_refuses_fails_within_seconds_naming_it(tmp_path, monkeypatch):
  """Runs on any machine: the proxy (a closed port here) is what is out of reach."""
  monkeypatch.setenv('HTTPS_PROXY', 'http://127.0.0.1:9')
  config = tiny_config(data_dir=str(tmp_path / 'tfds'))
  start = time.perf_counter()
  with pytest.raises(sources.DataError, match=r'cannot be downloaded: 127\.0\.0\.1:9 is not '
                     r'reachable .*manual_dir'):
    input_pipeline.create_datasets(config)
  assert time.perf_counter() - start < 10
  assert not (tmp_path / 'tfds').exists()


def test_no_network_fails_within_seconds(tmp_path, monkeypatch):
  for name in ('HTTPS_PROXY', 'https_proxy'):
    monkeypatch.delenv(name, raising=False)
  try:  # This test needs a machine where the download host is out of reach.
    socket.create_connection(('storage.googleapis.com', 443), timeout=3).close()
    reachable = 'storage.googleapis.com is reachable: the network is up'
    if os.environ.get('CI') == 'true':  # CI's machine has no network: the check must run.
      pytest.fail(f'CI=true but {reachable}')
    pytest.skip(reachable)
  except OSError:
    pass
  config = tiny_config(data_dir=str(tmp_path / 'tfds'))
  start = time.perf_counter()
  with pytest.raises(sources.DataError, match='storage.googleapis.com:443 is not reachable') as e:
    input_pipeline.create_datasets(config)
  assert time.perf_counter() - start < 10
  assert 'manual_dir' in str(e.value)


def test_a_metrics_line_cut_short_by_a_full_disk_is_dropped_on_resume(tmp_path):
  with open(tmp_path / 'metrics.jsonl', 'w') as f:
    f.write(json.dumps({'step': 2, 'split': 'train', 'time': 0, 'metrics': {}}) + '\n')
    f.write('{"step": 4, "split": "tr')
  metric_logging.MetricLogger(str(tmp_path), resume_step=6).close()
  lines = (tmp_path / 'metrics.jsonl').read_text().splitlines()
  assert len(lines) == 1 and json.loads(lines[0])['step'] == 2


@pytest.fixture
def small_disk(tmp_path):
  """A 2 MiB tmpfs mounted at tmp_path/disk (root only); yields its path."""
  mount = tmp_path / 'disk'
  mount.mkdir()
  mounted = os.geteuid() == 0 and subprocess.run(
      ['mount', '-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', str(mount)],
      capture_output=True).returncode == 0
  if not mounted:
    reason = 'mounting a tmpfs needs root (and a mount namespace that allows it)'
    if os.environ.get('CI') == 'true':
      pytest.fail(f'CI=true but {reason}')
    pytest.skip(reason)
  try:
    yield mount
  finally:
    subprocess.run(['umount', '-l', str(mount)], check=False)


@pytest.mark.slow  # Two runs of main.py on a real full filesystem.
def test_a_full_disk_ends_in_one_line_and_loses_no_checkpoint(tmp_path, small_disk):
  workdir = small_disk / 'run'
  common = ['--config=configs/default.py', f'--workdir={workdir}',
            f'--config.manual_dir={idx_dir(tmp_path)}', f'--config.data_dir={tmp_path / "tfds"}',
            '--config.model.hidden_sizes=(16,)', '--config.model.dropout_rates=(0.1,)',
            '--config.train_split=train', '--config.validation_split=',
            '--config.batch_size=8', '--config.num_epochs=12', '--config.keep_checkpoints=100',
            '--config.plots=false', f'--config.cache_dir={session_cache_dir()}',
            '--config.progress=off']
  full = run_main(*common)
  assert full.returncode == cli.EXIT_DISK_FULL, full.stderr[-3000:]
  (line,) = error_lines(full.stderr)
  assert line.startswith('error: no space left on the disk: writing checkpoint ')
  assert 'MiB free of 2.0 MiB' in line
  assert 'Traceback' not in full.stderr
  saved = sorted(int(d) for d in os.listdir(workdir / 'checkpoints') if d.isdigit())
  assert 2 <= len(saved) < 12
  # With room again, the same command resumes from the last complete
  # checkpoint (its CRC is checked on restore) and finishes.
  subprocess.run(['mount', '-o', 'remount,size=64m', str(small_disk)], check=True)
  resumed = run_main(*common)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f'Restored checkpoint {workdir / "checkpoints"}/{saved[-1]}.' in resumed.stderr
  assert not [d for d in os.listdir(workdir / 'checkpoints') if not d.isdigit()]
  with open(workdir / 'summary.json') as f:
    assert json.load(f)['epoch'] == 12


@pytest.fixture(scope='module')
def _tiny_data(tmp_path_factory):
  """Small IDX files and a TFDS data dir that the CLI tests below prepare once."""
  parent = tmp_path_factory.mktemp('tiny_data')
  return idx_dir(parent), parent / 'tfds'


def _tiny_cli(data, *extra):
  """Flags that make main.py or sweep.py train a tiny model on `data` (_tiny_data)."""
  manual_dir, data_dir = data
  return [f'--config.manual_dir={manual_dir}', f'--config.data_dir={data_dir}',
          '--config.model.hidden_sizes=(16,)', '--config.model.dropout_rates=(0.1,)',
          '--config.train_split=train', '--config.validation_split=',
          '--config.batch_size=8', '--config.plots=false',
          f'--config.cache_dir={session_cache_dir()}', '--config.progress=off', *extra]


@pytest.mark.slow  # A process start.
def test_main_exits_3_when_training_diverges(tmp_path, _tiny_data):
  workdir = tmp_path / 'run'
  # Finite, so not refused; the first update sends every weight to ~1e30.
  result = run_main('--config=configs/default.py', f'--workdir={workdir}',
                    *_tiny_cli(_tiny_data, '--config.learning_rate=1e30',
                               '--config.num_epochs=3', '--config.checkpoint_every_steps=1',
                               '--config.schedule=constant'))
  assert result.returncode == cli.EXIT_DIVERGED, result.stderr[-2000:]
  (line,) = error_lines(result.stderr)
  assert line.startswith('error: training diverged at step ') and 'Traceback' not in result.stderr
  # The checkpoints before it are kept: only finite steps were saved.
  assert os.listdir(workdir / 'checkpoints')


@pytest.mark.slow  # Process starts.
def test_sweep_exits_4_for_a_busy_directory(tmp_path, _tiny_data):
  directory = tmp_path / 'sweep'
  directory.mkdir()
  holder = _hold_in_another_process(str(directory))
  try:
    result = run_main('--config=configs/sweeps/lr_seed.py', f'--workdir={directory}',
                      *_tiny_cli(_tiny_data), script='sweep.py')
  finally:
    holder.kill()
    holder.wait()
  assert result.returncode == cli.EXIT_WORKDIR_BUSY, result.stderr[-2000:]
  (line,) = error_lines(result.stderr)
  assert f'is in use by pid {holder.pid}' in line and 'Traceback' not in result.stderr


@pytest.mark.slow  # A sweep on a real full filesystem.
def test_sweep_exits_5_on_a_full_disk(small_disk, _tiny_data):
  result = run_main('--config=configs/sweeps/lr_seed.py', f'--workdir={small_disk / "sweep"}',
                    *_tiny_cli(_tiny_data, '--config.num_epochs=12',
                               '--config.keep_checkpoints=100'), script='sweep.py')
  assert result.returncode == cli.EXIT_DISK_FULL, result.stderr[-2000:]
  (line,) = error_lines(result.stderr)
  assert line.startswith('error: no space left on the disk') and 'Traceback' not in result.stderr


@pytest.mark.parametrize('field, value, every_mode', [
    ('task', 'binary', True), ('normalization', 'per_feature', True),
    ('split_seed', 3, False), ('target_column', 'other', False)])
def test_inference_with_another_head_or_eval_on_other_rows_is_refused(finished, field, value,
                                                                      every_mode):
  """Every mode reads the checkpoint as trained; eval also on its test rows and target."""
  config, workdir = finished
  changed = config.copy_and_resolve_references()
  changed[field] = value
  before = digest(workdir)
  refused = f'was trained with another model or data: {field} '
  with pytest.raises(errors.ConfigError, match=refused):
    restore_lib.evaluate_checkpoint(changed, workdir)
  if every_mode:
    with pytest.raises(errors.ConfigError, match=refused):
      restore_lib.restore(changed, workdir)
    with pytest.raises(errors.ConfigError, match=field):
      cli.run_mode('summary', changed, workdir)
  else:  # Predict and export read no rows of the dataset.
    assert restore_lib.restore(changed, workdir)[1] > 0
  assert digest(workdir) == before


@pytest.mark.slow  # Trains a model of its own (3-5 s).
def test_images_for_a_model_that_takes_other_rows_are_refused_before_restoring(tmp_path,
                                                                               monkeypatch):
  config = tiny_config(task='regression', dataset='synthetic:linear',
                       synthetic_examples=(64, 32, 32), normalization='per_feature',
                       train_split='train', validation_split='', test_split='test',
                       best_metric='nll', num_epochs=1)
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(config, workdir)
  image = tmp_path / 'digit.png'
  Image.fromarray(np.full((28, 28), 255, np.uint8)).save(image)
  monkeypatch.setattr(restore_lib, 'restore', lambda *a, **k: pytest.fail('restored'))
  with pytest.raises(errors.ConfigError, match=r"^--input='.*digit.png': an image, but the "
                     r"model of --workdir='.*' does not classify grey images \(it takes rows "
                     r"of shape \(\d+,\), float32\); give rows as one .npy/.npz/.csv"):
    predict_images.predict_files(config, workdir, [str(image)])


@pytest.mark.slow  # Process starts.
def test_a_flag_for_another_mode_is_refused_not_ignored(tmp_path):
  workdir = str(tmp_path / 'w')
  for args, message in (
      (['--mode=eval', '--format=jax'], '--format is for --mode=export, not --mode=eval'),
      (['--mode=export', '--split=test'], '--split is for --mode=eval, not --mode=export'),
      (['--mode=eval', 'rows.csv'], "unexpected arguments 'rows.csv': only --mode=predict"),
      (['--mode=predict', '--input=a.csv', '--input=b.png'],
       "--input='a.csv': a file of rows is predicted alone"),
      (['--mode=predict', '--input=a.png', '--output=p.csv'],
       "--output='p.csv': is for a file of rows"),
      (['--mode=predict', '--input=rows.npy', '--header=yes'],
       "--header is for a text file of rows (.csv, .tsv, .txt), not --input='rows.npy'"),
  ):
    result = run_main(f'--workdir={workdir}', *args)
    assert result.returncode == 2, result.stderr[-2000:]
    assert error_lines(result.stderr) == [f'error: {message}'] or message in result.stderr
    assert message in error_lines(result.stderr)[0]
  assert not os.path.exists(workdir)


def test_values_past_float32s_range_are_refused_not_made_infinite():
  import pyarrow as pa  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  from trainkit.data.sources import table_formats  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  from trainkit.serving import row_inputs  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  with pytest.raises(errors.ConfigError, match=r"^x: holds values beyond float32's range "
                                               r"\(the first in row 1\)$"):
    row_inputs.array_rows('x', np.array([[1.0, 2.0], [3.0, -1e39]]), (2,), 'float32')
  assert row_inputs.array_rows('x', np.array([[1.0, 3e38]]), (2,), 'float32').dtype == np.float32
  with pytest.raises(table_formats.Infinite, match=r"beyond float32's range \(1e\+39, the "
                                                    r"first in row 12\)"):
    table_formats.numbers(pa.array([1.0, 1e39]), 'number', first_row=11)
  # A boolean column given numbers (a DataFrame's 0/1): 5 was taken as a feature value.
  assert table_formats.numbers(pa.array([1, 0, None]), 'bool').tolist()[:2] == [1.0, 0.0]
  with pytest.raises(table_formats.Unsupported, match=r'^holds 5 \(row 2\), not a boolean'):
    table_formats.numbers(pa.array([1, 0, 5]), 'bool')


def test_a_file_given_as_the_workdir_is_refused_in_one_line(tmp_path):
  folder = tmp_path / 'plain'
  folder.mkdir()
  (folder / 'notes.txt').write_text('mine')
  with pytest.raises(workdir_lock.LockFileError, match=r"^--workdir='.*notes.txt' is a file, "
                                                       r"not a folder$"):
    with workdir_lock.hold(str(folder / 'notes.txt'), 'export'):
      pass
  assert (folder / 'notes.txt').read_text() == 'mine'


def test_a_refused_run_in_a_folder_of_ones_own_leaves_no_lock_file(tmp_path):
  folder = tmp_path / 'mine'
  folder.mkdir()
  (folder / 'notes.txt').write_text('mine')
  with pytest.raises(errors.ConfigError):
    with workdir_lock.hold(str(folder)):
      raise errors.ConfigError('refused')
  assert sorted(p.name for p in folder.iterdir()) == ['notes.txt']
  # A lock file that was there before (a workdir's) stays.
  (folder / workdir_lock.LOCK_FILE).write_text('')
  with pytest.raises(errors.ConfigError):
    with workdir_lock.hold(str(folder)):
      raise errors.ConfigError('refused')
  assert (folder / workdir_lock.LOCK_FILE).exists()
