""""JAX in Action" (Sapunov), chapter 2: an MNIST MLP in pure JAX.

784-512-10 with swish, pixels scaled to [0, 1], weights and biases drawn from
N(0, 0.01^2), plain SGD with lr = 1.0 * 0.95^(epoch / 5) (constant within an
epoch), batch 32, 25 epochs. The book reports 98.12 % test accuracy.

Loss mapping: the book's loss is `-mean(one_hot * (logits - logsumexp(logits)))`
on the batched logits, so the logsumexp runs over the whole batch rather than
per example, and the mean runs over the 10 classes as well as the examples
(about 1/10 of standard cross-entropy, hence its large lr 1.0). This config
trains on exactly that objective (`loss='batch_normalized_cross_entropy'`) with
the book's literal learning rate; the schedule is `exponential` with 0.95 per
5 epochs, `staircase` so it changes at epoch boundaries as the book's per-epoch
update does. Eval losses are standard cross-entropy, as for every config.
"""

from trainkit.configs import default


def get_config():
  """JAX in Action chapter 2 setup, mapped onto this trainer's fields."""
  config = default.get_config()
  # The tutorial's setup: train on all 60,000, evaluate each epoch on test.
  config.train_split, config.validation_split = 'train', ''
  config.normalization = 'unit'  # Pixels / 255.
  config.batch_size = 32
  config.num_epochs = 25
  config.optimizer = 'sgd'
  config.learning_rate = 1.0  # On the book's batch-normalised loss below.
  config.loss = 'batch_normalized_cross_entropy'
  config.schedule = 'exponential'
  config.decay_rate = 0.95
  config.decay_epochs = 5.0
  config.staircase = True
  config.model.hidden_sizes = (512,)
  config.model.activation = 'swish'
  config.model.dropout_rates = (0.0,)
  config.model.use_batchnorm = False
  config.model.kernel_init = 'normal'
  config.model.init_scale = 0.01
  return config
