"""The Elegy example's mixture density network, on its 1-D inverse problem.

y ~ U(-10.5, 10.5), x = 7 sin(0.75 y) + 0.5 y + N(0, 1), and y predicted from
x (trainkit/data/sources/synthetic.py): for many x several y are likely, so the model is a
mixture of k = 5 Gaussians with a softmax gate on a Dense(64)-ReLU backbone,
trained on the mixture's negative log-likelihood with Adam 3e-4, batch 64,
for 500 epochs of 3,000 points, as the example does. Differences, each for a
reason: inputs and targets are standardised with the training split's
statistics (the example divides both by their largest absolute value), the
std-devs are softplus with a floor (the example's 1 + elu can reach zero),
every figure is in the generator's own units, and a checkpoint is saved
every 25 epochs, not every epoch. The epochs are evaluated on 1,000 fresh
points; the test split is 20,000 more.
"""

from trainkit.configs import default


def get_config():
  """The Elegy MDN example's setup."""
  config = default.get_config()
  config.task = 'mixture_density'
  config.num_components = 5  # k.
  config.dataset = 'synthetic:inverse_sine'
  config.synthetic_examples = (3000, 1000, 20_000)  # Train, validation, test: fresh draws each.
  config.train_split = 'train'
  config.validation_split = 'validation'
  config.test_split = 'test'
  config.normalization = 'per_feature'  # x standardised (y is, always, for this task).
  config.best_metric = 'nll'  # The validation NLL chooses the best checkpoint.
  config.model.hidden_sizes = (64,)
  config.model.dropout_rates = ()
  config.model.use_batchnorm = False
  config.optimizer = 'adam'
  config.learning_rate = 3e-4
  config.schedule = 'constant'
  config.batch_size = 64  # 46 steps per epoch.
  config.eval_batch_size = 1000
  config.num_epochs = 500
  config.steps_per_call = 0  # A whole epoch per device call.
  config.log_every_steps = 46
  # A save costs more than an epoch of 46 steps of this model: every 25th.
  config.checkpoint_every_epochs = 25
  # The Elegy example's figures: the components over the data, and the gates.
  config.plots = True
  return config
