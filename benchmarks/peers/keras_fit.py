"""The benchmark's training in Keras 3 `fit` on the JAX backend, as a Keras user writes it.

Same model (784-512-512-10, Dense -> ReLU -> Dropout 0.3/0.4 -> BatchNorm), Adam
with half an epoch of warmup then cosine, batch 128, the test split evaluated
after every epoch (validation_data), from the same IDX files. Run in the peers'
venv: `python benchmarks/peers/keras_fit.py --idx_dir=DIR --workdir=W`.
"""

import os
import time

os.environ.setdefault('KERAS_BACKEND', 'jax')

import keras  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

import common  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position


class EpochTimes(keras.callbacks.Callback):
  """Wall time of each epoch, its evaluation included."""

  def __init__(self):
    super().__init__()
    self.times = []

  def on_epoch_begin(self, epoch, logs=None):
    self._start = time.perf_counter()

  def on_epoch_end(self, epoch, logs=None):
    self.times.append(time.perf_counter() - self._start)


def main():
  args = common.parse_args()
  keras.utils.set_random_seed(0)
  x_train, y_train, x_test, y_test = common.load_mnist(args.idx_dir)
  layers = [keras.Input((28, 28)), keras.layers.Flatten(), keras.layers.Rescaling(1 / 255)]
  for size, rate in zip(common.HIDDEN, common.DROPOUT):
    layers += [keras.layers.Dense(size, activation='relu'), keras.layers.Dropout(rate),
               keras.layers.BatchNormalization(momentum=0.9)]
  model = keras.Sequential(layers + [keras.layers.Dense(10)])
  steps = -(-len(y_train) // common.BATCH)
  schedule = keras.optimizers.schedules.CosineDecay(
      0.0, decay_steps=steps * args.epochs - steps // 2, warmup_target=common.PEAK_LR,
      warmup_steps=steps // 2)
  model.compile(optimizer=keras.optimizers.Adam(schedule),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=['accuracy'])
  times = EpochTimes()
  history = model.fit(x_train, y_train, batch_size=common.BATCH, epochs=args.epochs,
                      validation_data=(x_test, y_test), callbacks=[times], verbose=2)
  common.report(framework=f'Keras {keras.__version__} (JAX backend)',
                accuracy=history.history['val_accuracy'][-1], epoch_s=times.times)


if __name__ == '__main__':
  main()
