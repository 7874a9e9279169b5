"""The real MNIST files (../shared/data/mnist), prepared offline: a 2-epoch
run, then everything a person does with it (TensorBoard, eval, export,
predict, plots)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from configs import default
from tests.helpers import ROOT
from tests import test_visibility
from trainkit.data.sources import tfds_prepare as offline_data
from trainkit.serving import predict_images
from trainkit.serving import restore as restore_lib
from trainkit.serving import saved_model
from trainkit.training import evaluation
from trainkit.training import optimizers
import train
import trainkit


@pytest.mark.slow
def test_two_epochs_then_tensorboard_eval_export_predict(mnist_dir, mnist_data_dir,
                                                        mnist_cache_dir, tmp_path):
  config = default.get_config()
  config.manual_dir = mnist_dir
  config.data_dir = mnist_data_dir
  config.cache_dir = mnist_cache_dir
  # The default model on a short budget: lighter dropout, a shorter warmup
  # and a higher peak rate (the 15-epoch defaults reach ~96.5 % after one).
  config.num_epochs = 2
  config.model.dropout_rates = (0.1, 0.1)
  config.learning_rate = 3e-3
  config.warmup_epochs = 0.1
  workdir = str(tmp_path)
  _, summary = train.train_and_evaluate(config, workdir)
  # 55,000 to train on; the epochs evaluated on the 5,000 held out.
  assert summary['step'] == 2 * (55_000 // 128)
  assert summary['eval_split'] == 'train[55000:]'
  assert summary['test_accuracy'] >= 0.975
  with open(tmp_path / 'summary.json') as f:
    assert json.load(f)['test_accuracy'] == summary['test_accuracy']
  # The evaluations saw every one of the 5,000 validation and 10,000 test images.
  for name, n in (('eval_accuracy', 5_000), ('test_accuracy', 10_000)):
    correct = summary[name] * n
    assert abs(correct - round(correct)) < 1e-6

  # TensorBoard's reader finds train and eval loss and accuracy.
  _, scalars = test_visibility._scalars(tmp_path)  # pylint: disable=protected-access
  for tag in ('train_loss', 'train_accuracy', 'eval_loss', 'eval_accuracy'):
    assert scalars[tag], tag
  assert scalars['eval_accuracy'][summary['step']] == pytest.approx(
      summary['eval_accuracy'], rel=1e-6)

  # --mode=eval of the final checkpoint gives summary.json's test figures exactly.
  result = restore_lib.evaluate_checkpoint(config, workdir)
  assert result['num_examples'] == 10_000
  assert result['eval_accuracy'] == summary['test_accuracy']
  assert result['eval_loss'] == summary['test_loss']

  # The Python API on the raw test images, as a user holds them: the
  # summary's test accuracy.
  images, labels = offline_data.load_idx_split(mnist_dir, 'test')
  predicted = trainkit.load(workdir).predict(images)
  assert abs(np.mean(predicted['class'] == labels) - summary['test_accuracy']) <= 0.0005

  # The SavedModel, run by TensorFlow alone on the raw uint8 test images.
  exported = saved_model.export_saved_model(config, workdir)
  served = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'tests', 'tf_serving_eval.py'), exported,
       mnist_dir, str(tmp_path / 'tf_scores.npy')], cwd=ROOT,
      capture_output=True, text=True, timeout=240,
      env={**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2'})
  assert served.returncode == 0, served.stderr[-2000:]
  tf_accuracy = float(served.stdout.split()[-1])
  assert abs(tf_accuracy - summary['test_accuracy']) <= 0.002
  # Image by image: TensorFlow's scores are the model's own, to float32 rounding.
  images, labels = offline_data.load_idx_split(mnist_dir, 'test')
  state, _, _ = restore_lib.restore(config, workdir)
  ours = np.asarray(evaluation.predict_steps(optimizers.params_for_eval(state),
                                             {'x': images[None]})['probs'][0])
  theirs = np.load(tmp_path / 'tf_scores.npy')
  np.testing.assert_allclose(theirs, ours, atol=2e-5)
  top = np.sort(ours, axis=-1)
  clear = top[:, -1] - top[:, -2] > 1e-4  # Near-ties may round either way.
  assert clear.mean() > 0.99
  np.testing.assert_array_equal(theirs.argmax(-1)[clear], ours.argmax(-1)[clear])

  # Test digits drawn large, dark on white, off-centre: still recognised.
  paths = []
  for i in range(20):
    canvas = Image.new('L', (360, 300), 255)
    digit = Image.fromarray(255 - images[i, ..., 0]).resize((200, 240), Image.Resampling.BICUBIC)
    canvas.paste(digit, (20 + 5 * i, 30))
    paths.append(str(tmp_path / f'{i}.png'))
    canvas.convert('RGB').save(paths[-1])
  predicted = [r.label for r in predict_images.predict_files(config, workdir, paths)]
  assert np.mean(np.array(predicted) == labels[:20]) >= 0.9

  for name in ('learning_curves.png', 'confusion_matrix.png', 'worst_errors.png'):
    assert os.path.getsize(tmp_path / 'plots' / name) > 10_000
