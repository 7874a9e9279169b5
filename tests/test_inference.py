"""Using a trained workdir: --mode=eval, predict (image files) and export."""

import json
import os

import jax
import numpy as np
import pytest
from PIL import Image

from tests.conftest import NUM_EXAMPLES
from tests.conftest import mock_data
from tests.helpers import checkpoint_steps, run_export, run_main, tiny_config, write_mnist
from trainkit import errors
from trainkit.checkpoints import manager as checkpointing
from trainkit import cli
from trainkit.data.sources import host_tensorflow
from trainkit.serving import digit_images
from trainkit.serving import predict_images
from trainkit.serving import restore as restore_lib
from trainkit.serving import saved_model
from trainkit.serving import jax_export
from trainkit.serving import onnx_export
from trainkit.training import optimizers
from trainkit.workdirs import layout as workdir_lib
import train



from trainkit.training import state as state_lib
@pytest.fixture
def trained(tmp_path):
  """A finished 2-epoch tiny run on mocked MNIST: (config, workdir, summary, state)."""
  config = tiny_config(keep_checkpoints=1, num_epochs=4)
  with mock_data():
    state, summary = train.train_and_evaluate(config, str(tmp_path))
  return config, str(tmp_path), summary, state


def test_eval_of_the_final_checkpoint_reproduces_summary_exactly(trained):
  config, workdir, summary, _ = trained
  with mock_data():
    result = restore_lib.evaluate_checkpoint(config, workdir)
  assert result['eval_accuracy'] == summary['eval_accuracy']
  assert result['eval_loss'] == summary['eval_loss']
  assert result['step'] == 24 and result['num_examples'] == NUM_EXAMPLES
  with open(os.path.join(workdir, workdir_lib.EVAL)) as f:
    assert json.load(f) == result


def test_checkpoint_choice_and_refusals(trained):
  config, workdir, summary, _ = trained
  # keep_checkpoints=1 and no validation split: only the latest is kept, and
  # none is best (the epochs were evaluated on the test split).
  assert checkpoint_steps(workdir) == [24] and summary['best_step'] is None
  _, latest, _ = restore_lib.restore(config, workdir, '24')
  assert latest == 24
  with pytest.raises(errors.ConfigError, match='no best checkpoint') as e:
    restore_lib.restore(config, workdir, 'best')
  assert '\n' not in str(e.value) and 'without a validation split' in str(e.value)
  with pytest.raises(errors.ConfigError, match=r"--checkpoint='7' is not"):
    restore_lib.restore(config, workdir, '7')
  with pytest.raises(errors.ConfigError, match='has no model.json'):
    restore_lib.restore(config, os.path.join(workdir, 'checkpoints'))


def test_best_is_chosen_by_the_runs_own_validation_metric(tmp_path):
  """--checkpoint=best is the run's best by the metric it was trained with."""
  config = tiny_config(keep_checkpoints=1, num_epochs=4, best_metric='loss',
                       train_split='train[:40]', validation_split='train[40:]')
  with mock_data():
    _, summary = train.train_and_evaluate(config, str(tmp_path))
  with open(tmp_path / 'metrics.jsonl') as f:
    losses = {r['step']: r['metrics']['loss'] for r in map(json.loads, f)
              if r['split'] == 'eval'}
  best = min(losses, key=losses.get)
  assert summary['best_step'] == best
  # Asked with best_metric='accuracy' (a continuable field), still the run's own best.
  config.best_metric = 'accuracy'
  _, chosen, _ = restore_lib.restore(config, str(tmp_path), 'best')
  assert chosen == best


def _digit(size=(300, 220), light_background=True, offset=(40, 10)):
  """A '1'-like bar and a foot, drawn large: dark on white or light on black."""
  canvas = np.zeros(size[::-1], np.uint8)
  x, y = offset
  canvas[y + 20:y + 180, x + 90:x + 115] = 255
  canvas[y + 160:y + 180, x + 60:x + 150] = 255
  return 255 - canvas if light_background else canvas


def test_load_digit_makes_mnist_style_input(tmp_path):
  light, dark = tmp_path / 'light.png', tmp_path / 'dark.jpg'
  Image.fromarray(_digit(light_background=True)).convert('RGB').save(light)
  Image.fromarray(_digit(light_background=False)).save(dark, quality=95)
  a, b = digit_images.load_digit(str(light)), digit_images.load_digit(str(dark))
  for image in (a, b):
    assert image.shape == (28, 28, 1) and image.dtype == np.uint8
    assert image.max() == 255
    # Black background at the border, as MNIST.
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    assert border.max() < 30
    # The digit fits a 20x20 box centred by mass.
    ys, xs = np.nonzero(image[..., 0] > 50)
    assert ys.max() - ys.min() < 21 and xs.max() - xs.min() < 21
    mass = image[..., 0].astype(float)
    cy = (mass.sum(1) * np.arange(28)).sum() / mass.sum()
    cx = (mass.sum(0) * np.arange(28)).sum() / mass.sum()
    assert abs(cy - 14) < 1.5 and abs(cx - 14) < 1.5
  # Light or dark background, the model sees (nearly) the same digit.
  assert np.abs(a.astype(int) - b.astype(int)).mean() < 8


def _variants(tmp_path) -> dict:
  """The same dark-on-white digit saved in each mode people's files come in."""
  ink = _digit(light_background=False)  # 255 where the strokes are.
  dark = Image.fromarray(255 - ink)
  out = {}

  def save(name, image, **kw):
    out[name] = str(tmp_path / name)
    image.save(out[name], **kw)
  save('grey8.png', dark)
  save('grey16.png', Image.fromarray((255 - ink).astype(np.uint16) * 257))  # 'I;16'.
  save('rgb.jpg', dark.convert('RGB'), quality=95)
  save('cmyk.jpg', dark.convert('CMYK'), quality=95)
  save('bilevel.bmp', dark.convert('1'))
  save('float.tif', Image.fromarray((255 - ink).astype(np.float32) / 255))
  # Strokes on a transparent background (alpha = the strokes), in both colours.
  black, white = np.zeros_like(ink), np.full_like(ink, 255)
  save('black_rgba.png', Image.fromarray(np.dstack([black] * 3 + [ink])))
  save('white_rgba.png', Image.fromarray(np.dstack([white] * 3 + [ink])))
  save('black_la.png', Image.fromarray(np.dstack([black, ink]), 'LA'))
  palette = Image.fromarray(np.where(ink > 0, 1, 0).astype(np.uint8), 'P')
  palette.putpalette([255, 255, 255, 0, 0, 0])
  save('black_p.png', palette, transparency=0)  # Index 0 (white) is transparent.
  save('black_p.gif', palette, transparency=0)
  return out


def test_every_image_mode_gives_the_same_digit(tmp_path):
  files = _variants(tmp_path)
  reference = digit_images.load_digit(files['grey8.png']).astype(int)
  assert reference.max() == 255
  for name, path in files.items():
    with Image.open(path) as image:
      mode = image.mode
    digit = digit_images.load_digit(path)
    assert digit is not None, (name, mode)
    # JPEG and the 1-bit image lose a little at the strokes' edges.
    assert np.abs(digit.astype(int) - reference).mean() < 6, (name, mode)


def test_predict_files_and_bad_inputs(trained, tmp_path):
  config, workdir, _, state = trained
  folder = tmp_path / 'digits'
  folder.mkdir()
  for i in range(3):
    Image.fromarray(_digit(offset=(10 * i, 5 * i))).save(folder / f'{i}.png')
  (folder / 'notes.txt').write_text('not an image')
  results = predict_images.predict_files(config, workdir, [str(folder)])
  assert [os.path.basename(r[0]) for r in results] == ['0.png', '1.png', '2.png']
  for path, label, probability, probs, problem in results:
    assert problem is None
    assert probs.shape == (10,) and np.isclose(probs.sum(), 1.0, atol=1e-5)
    assert label == probs.argmax() and probability == pytest.approx(probs.max())
    # The trained parameters classified it (not a freshly initialised model).
    logits = state.apply_fn({'params': state.params, 'batch_stats': state.batch_stats},
                            digit_images.load_digit(path)[None], train=False)
    np.testing.assert_allclose(probs, jax.nn.softmax(logits[0]), rtol=1e-5, atol=1e-6)
    fresh = state_lib.create_state(config, workdir_lib.ModelSpec.read(workdir))
    untrained = fresh.apply_fn({'params': fresh.params, 'batch_stats': fresh.batch_stats},
                               digit_images.load_digit(path)[None], train=False)
    assert not np.allclose(probs, jax.nn.softmax(untrained[0]), atol=1e-3)
  with pytest.raises(errors.ConfigError, match='does not exist'):
    predict_images.predict_files(config, workdir, [str(tmp_path / 'missing.png')])
  # A file that is no image is named, and the others are classified all the same.
  results = predict_images.predict_files(config, workdir, [str(folder / 'notes.txt'), str(folder)])
  assert results[0].label is None and 'not an image Pillow can read' in results[0].problem
  assert [r.label for r in results[1:]] == [r.label for r in predict_images.predict_files(
      config, workdir, [str(folder)])]


@pytest.mark.slow
def test_cli_modes_on_a_trained_workdir(tmp_path):
  """--mode=eval, predict (paths after the flags too) and export from the CLI."""
  write_mnist(tmp_path, n_train=64, n_test=20)
  workdir = tmp_path / 'run'
  overrides = {'manual_dir': str(tmp_path), 'data_dir': str(tmp_path / 'tfds'),
               'model.hidden_sizes': (16,), 'model.dropout_rates': (0.1,),
               'train_split': 'train', 'validation_split': '',
               'batch_size': 16, 'num_epochs': 1}
  train.train_and_evaluate(tiny_config(**overrides), str(workdir))
  common = ['--config=configs/default.py', f'--workdir={workdir}'] + [
      f'--config.{k}={v}' for k, v in overrides.items()]
  evaluated = run_main(*common, '--mode=eval', '--checkpoint=latest')
  assert evaluated.returncode == 0, evaluated.stderr[-2000:]
  with open(workdir / 'summary.json') as f:
    summary = json.load(f)
  with open(workdir / workdir_lib.EVAL) as f:
    result = json.load(f)
  assert result['eval_accuracy'] == summary['eval_accuracy']
  assert f'eval_accuracy {summary["eval_accuracy"]:.4%}' in evaluated.stdout
  Image.fromarray(_digit()).save(tmp_path / 'a.png')
  Image.fromarray(_digit(light_background=False)).save(tmp_path / 'b.jpg')
  predicted = run_main(*common, '--mode=predict', f'--input={tmp_path / "a.png"}',
                    str(tmp_path / 'b.jpg'))
  assert predicted.returncode == 0, predicted.stderr[-2000:]
  lines = predicted.stdout.splitlines()
  assert len(lines) == 2 and lines[0].startswith(f'{tmp_path / "a.png"}: ')
  assert lines[1].endswith('%)')
  # A folder with a file that is no image: the others are classified, it is
  # named, and the status says so.
  folder = tmp_path / 'inbox'
  folder.mkdir()
  Image.fromarray(_digit()).save(folder / 'a.png')
  (folder / 'b.png').write_bytes(b'\x89PNG\r\n\x1a\n cut short')
  predicted = run_main(*common, '--mode=predict', f'--input={folder}')
  assert predicted.returncode == cli.EXIT_UNREADABLE_INPUT, predicted.stderr[-2000:]
  lines = predicted.stdout.splitlines()
  assert lines[0] == f'{folder / "a.png"}: {lines[0].split(": ")[1]}' and '%)' in lines[0]
  assert lines[1].startswith(f'{folder / "b.png"}: not an image Pillow can read')
  exported = run_main(*common, '--mode=export')
  assert exported.returncode == 0, exported.stderr[-2000:]
  saved_model = workdir / 'export' / 'saved_model'
  assert exported.stdout.strip().splitlines()[-1] == str(saved_model)
  assert (saved_model / 'saved_model.pb').stat().st_size > 1000
  exported = run_main(*common, '--mode=export', '--format=onnx')
  assert exported.returncode == 0, exported.stderr[-2000:]
  assert exported.stdout.strip().splitlines()[-1] == str(workdir / 'export' / 'onnx')
  with open(workdir / 'export' / 'onnx' / 'signature.json') as f:
    signature = json.load(f)
  assert signature['input'] == {'name': 'images', 'shape': [None, 28, 28, 1],
                                'dtype': 'uint8'}
  assert signature['outputs'] == {'scores': {'shape': [None, 10], 'dtype': 'float32'}}


def test_the_best_checkpoint_is_known_after_a_restart(tmp_path):
  """Its metric is on disk: a resumed run keeps and reports the same best."""
  state = {'w': np.zeros(3, np.float32)}

  def manager(best_metric='accuracy'):
    return checkpointing.create_manager(str(tmp_path), keep_checkpoints=1,
                                        best_metric=best_metric)
  first = manager()
  for step, accuracy in ((6, 0.14), (12, 0.12), (18, 0.08)):
    checkpointing.save(first, step, state, {}, {'eval_accuracy': accuracy})
  first.wait_until_finished()
  assert first.best_step() == 6
  first.close()
  again = manager()
  assert again.best_step() == 6
  checkpointing.save(again, 24, state, {}, {'eval_accuracy': 0.06})
  again.wait_until_finished()
  assert again.all_steps() == [6, 24] and again.best_step() == 6
  assert checkpointing.best_step(again, 'accuracy') == 6
  again.close()
  # Ranked by another metric than they hold, no checkpoint is best (no
  # fallback to accuracy ranked as a loss), and a NaN is never best.
  by_loss = manager('loss')
  assert checkpointing.best_step(by_loss, 'loss') is None
  checkpointing.save(by_loss, 30, state, {}, {'eval_loss': float('nan')})
  checkpointing.save(by_loss, 36, state, {}, {'eval_loss': 2.5})
  by_loss.wait_until_finished()
  assert checkpointing.best_step(by_loss, 'loss') == 36
  by_loss.close()


@pytest.mark.slow  # Imports TensorFlow to read the SavedModel back.
def test_predict_and_export_use_the_parameter_average(tmp_path):
  """With ema_decay, predictions and the SavedModel come from the average, not the last step."""
  config = tiny_config(ema_decay=0.9, num_epochs=2)
  with mock_data():
    state, _ = train.train_and_evaluate(config, str(tmp_path / 'run'))
  averaged = optimizers.params_for_eval(state)
  for i in range(2):
    Image.fromarray(_digit(offset=(20 * i, 10))).save(tmp_path / f'{i}.png')
  files = [str(tmp_path / f'{i}.png') for i in range(2)]
  images = np.stack([digit_images.load_digit(f) for f in files])

  def probs(params):
    logits = state.apply_fn({'params': params, 'batch_stats': state.batch_stats}, images,
                            train=False)
    return np.asarray(jax.nn.softmax(logits))
  expected, last = probs(averaged.params), probs(state.params)
  assert not np.allclose(expected, last, atol=1e-4)  # The test can tell them apart.
  predicted = np.stack([r.probs for r in predict_images.predict_files(config, str(tmp_path / 'run'),
                                                                 files)])
  np.testing.assert_allclose(predicted, expected, rtol=1e-5, atol=1e-6)
  directory = saved_model.export_saved_model(config, str(tmp_path / 'run'))
  tf = host_tensorflow.tensorflow()
  serve = tf.saved_model.load(directory).signatures['serving_default']
  exported = serve(images=tf.constant(images))['scores'].numpy()
  np.testing.assert_allclose(exported, expected, rtol=1e-4, atol=1e-5)
  # The jax.export and ONNX artifacts take the uint8 images as they are, too.
  for kind, export in (('jax', jax_export.export), ('onnx', onnx_export.export)):
    got = run_export(kind, export(config, str(tmp_path / 'run')), images, str(tmp_path))
    for n in (1, 37):
      np.testing.assert_allclose(got[f'b{n}_scores'], expected[np.arange(n) % 2],
                                 rtol=1e-5, atol=1e-6, err_msg=kind)


def test_onnx_export_refuses_a_bfloat16_model_before_any_work(tmp_path):
  """It converts, but onnxruntime cannot run it: one line, naming the field."""
  with pytest.raises(cli.INPUT_ERRORS,
                     match="--format=onnx: dtype='bfloat16' is not exported to ONNX"):
    onnx_export.export(tiny_config(dtype='bfloat16'), str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()


def test_a_predictions_file_that_cannot_or_must_not_be_written_is_refused_first(
    tmp_path, monkeypatch):
  """Before the checkpoint is restored: the output's folder, a folder, the input, a record."""
  from trainkit.serving import predict_rows  # pylint: disable=g-import-not-at-top
  workdir, rows = tmp_path / 'w', tmp_path / 'rows.csv'
  workdir.mkdir()
  (workdir / 'model.json').write_text('{}')
  rows.write_text('1,2\n')
  def restored(*args, **kwargs):
    raise AssertionError('restored before the output was checked')
  monkeypatch.setattr(predict_rows.restore_lib, 'restore', restored)
  for output, message in ((tmp_path / 'none' / 'p.csv', 'is not a folder this process can'),
                          (tmp_path, 'is a folder; name the CSV'),
                          (rows, 'is the input'),
                          (workdir / 'model.json', "is one of the workdir's own records")):
    with pytest.raises(errors.ConfigError, match=f'^--output={str(output)!r}: .*{message}'):
      predict_rows.predict_rows(tiny_config(), str(workdir), str(rows), output=str(output))
  assert (workdir / 'model.json').read_text() == '{}' and rows.read_text() == '1,2\n'
  with pytest.raises(AssertionError, match='restored before'):  # A good one goes on.
    predict_rows.predict_rows(tiny_config(), str(workdir), str(rows),
                              output=str(tmp_path / 'p.csv'))


def test_a_predictions_file_is_written_whole_or_not_at_all(trained, tmp_path, monkeypatch):
  """A full disk mid-file is DiskFull (exit 5), and the earlier predictions stay as they were."""
  import errno  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  from trainkit.serving import predict_rows  # pylint: disable=g-import-not-at-top
  from trainkit.workdirs import full_disk  # pylint: disable=g-import-not-at-top
  config, workdir, _, _ = trained
  folder = tmp_path / 'rows'
  folder.mkdir()
  np.save(folder / 'rows.npy', np.zeros((6, 28, 28, 1), np.uint8))
  out, _ = predict_rows.predict_rows(config, workdir, str(folder / 'rows.npy'))
  with open(out) as f:
    before = f.read()
  real, cells = predict_rows._text, []  # pylint: disable=protected-access
  def filling(value, *args):
    cells.append(value)
    if len(cells) > 20:
      raise OSError(errno.ENOSPC, 'No space left on device')
    return real(value, *args)
  monkeypatch.setattr(predict_rows, '_text', filling)
  with pytest.raises(full_disk.DiskFull):
    predict_rows.predict_rows(config, workdir, str(folder / 'rows.npy'))
  with open(out) as f:
    assert f.read() == before
  assert sorted(os.listdir(folder)) == ['rows.npy', 'rows_predictions.csv']
  assert cli.exit_status(full_disk.DiskFull('x', 'y')) == cli.EXIT_DISK_FULL
