"""Training on the real MNIST files (../shared/data/mnist), prepared offline."""

import json

import pytest

from configs import default
import train


@pytest.mark.slow
def test_one_epoch_on_real_mnist_reaches_97_percent(mnist_dir, mnist_data_dir,
                                                    tmp_path):
  config = default.get_config()
  config.manual_dir = mnist_dir
  config.data_dir = mnist_data_dir
  # The default model on a one-epoch budget: lighter dropout, a shorter warmup
  # and a higher peak rate (the 15-epoch defaults reach ~96.5 % after one).
  config.num_epochs = 1
  config.model.dropout_rates = (0.1, 0.1)
  config.learning_rate = 3e-3
  config.warmup_epochs = 0.1
  _, summary = train.train_and_evaluate(config, str(tmp_path))
  assert summary['step'] == 60_000 // 128
  assert summary['eval_accuracy'] >= 0.97
  with open(tmp_path / 'summary.json') as f:
    assert json.load(f)['eval_accuracy'] == summary['eval_accuracy']
  # The evaluation saw every one of the 10,000 test images.
  with open(tmp_path / 'metrics.jsonl') as f:
    evals = [json.loads(l) for l in f if '"eval"' in l]
  correct = evals[-1]['metrics']['accuracy'] * 10_000
  assert abs(correct - round(correct)) < 1e-6
