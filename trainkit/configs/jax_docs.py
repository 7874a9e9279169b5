"""The JAX documentation's MNIST example ("Training a simple neural network").

784-512-512-10 ReLU MLP, no Dropout or BatchNorm, weights *and* biases drawn
from N(0, 0.01^2), raw pixel values 0-255 as input, plain SGD with step size
0.01, batch 128, 8 epochs. The docs report 96.7 % test accuracy.

Loss mapping: the docs minimise `-mean(log_softmax(logits) * one_hot)`, a mean
over the 10 classes as well as the examples (standard cross-entropy / 10), so
the step of 0.01 is effectively 0.001 on standard cross-entropy. This config
trains on that very objective (`loss='class_mean_cross_entropy'`) with the
docs' literal step size. Logged train losses are that objective; eval losses
are standard cross-entropy, as for every config.
"""

from trainkit.configs import default


def get_config():
  """JAX docs MNIST setup, mapped onto this trainer's fields."""
  config = default.get_config()
  # The tutorial's setup: train on all 60,000, evaluate each epoch on test.
  config.train_split, config.validation_split = 'train', ''
  config.normalization = 'raw'  # Pixels 0-255, unscaled.
  config.batch_size = 128
  config.num_epochs = 8
  config.optimizer = 'sgd'
  config.learning_rate = 0.01  # On the class-averaged loss below.
  config.loss = 'class_mean_cross_entropy'
  config.schedule = 'constant'
  config.model.hidden_sizes = (512, 512)
  config.model.activation = 'relu'
  config.model.dropout_rates = (0.0, 0.0)
  config.model.use_batchnorm = False
  config.model.kernel_init = 'normal'  # Kernels and biases ~ N(0, scale^2).
  config.model.init_scale = 0.01
  return config
