"""The benchmark's training in PyTorch Lightning, as a Lightning user writes it (GPU if any).

Same model, optimizer, schedule (stepped per batch), batch and data as
keras_fit.py; the test split is the validation loader, run after every epoch.
Trainer defaults otherwise (a checkpoint per epoch and a logger in `--workdir`).
"""

import time

import lightning as L  # pylint: disable=g-import-not-at-top
import torch
from torch import nn
from torch.utils import data

import common


class MLP(L.LightningModule):
  """784-512-512-10 with Dropout and BatchNorm after each hidden layer."""

  def __init__(self, steps_per_epoch, epochs):
    super().__init__()
    self.steps_per_epoch, self.epochs = steps_per_epoch, epochs
    layers, width = [nn.Flatten()], 784
    for size, rate in zip(common.HIDDEN, common.DROPOUT):
      layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(rate),
                 nn.BatchNorm1d(size, momentum=0.1)]
      width = size
    self.net = nn.Sequential(*layers, nn.Linear(width, 10))
    self.accuracy = []

  def forward(self, x):
    return self.net(x.float() / 255.0)

  def training_step(self, batch, _):
    x, y = batch
    loss = nn.functional.cross_entropy(self(x), y)
    self.log('train_loss', loss)
    return loss

  def on_validation_epoch_start(self):
    self._correct = self._seen = 0

  def validation_step(self, batch, _):
    x, y = batch
    logits = self(x)
    self._correct += int((logits.argmax(-1) == y).sum())
    self._seen += len(y)
    self.log('val_loss', nn.functional.cross_entropy(logits, y))

  def on_validation_epoch_end(self):
    self.accuracy.append(self._correct / max(1, self._seen))
    self.log('val_accuracy', self.accuracy[-1])

  def configure_optimizers(self):
    optimizer = torch.optim.Adam(self.parameters(), lr=common.PEAK_LR)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: common.warmup_cosine(step, self.steps_per_epoch,
                                                     self.epochs) / common.PEAK_LR)
    return {'optimizer': optimizer,
            'lr_scheduler': {'scheduler': schedule, 'interval': 'step'}}


class EpochTimes(L.Callback):
  """Wall time of each training epoch, its validation included."""

  def __init__(self):
    self.times = []

  def on_train_epoch_start(self, trainer, module):
    self._start = time.perf_counter()

  def on_train_epoch_end(self, trainer, module):
    self.times.append(time.perf_counter() - self._start)


def main():
  args = common.parse_args()
  L.seed_everything(0, verbose=False)
  x_train, y_train, x_test, y_test = (torch.from_numpy(a.copy())
                                      for a in common.load_mnist(args.idx_dir))
  train = data.DataLoader(data.TensorDataset(x_train, y_train.long()),
                          batch_size=common.BATCH, shuffle=True)
  test = data.DataLoader(data.TensorDataset(x_test, y_test.long()), batch_size=1000)
  model = MLP(len(train), args.epochs)
  times = EpochTimes()
  trainer = L.Trainer(max_epochs=args.epochs, accelerator='auto', devices=1,
                      default_root_dir=args.workdir, callbacks=[times],
                      enable_progress_bar=False)
  trainer.fit(model, train, test)
  device = 'GPU' if torch.cuda.is_available() else 'CPU'
  common.report(framework=f'Lightning {L.__version__} (PyTorch {torch.__version__}, {device})',
                accuracy=model.accuracy[-1], epoch_s=times.times)


if __name__ == '__main__':
  main()
