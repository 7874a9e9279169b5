"""The mixture density network with more data, more components and a schedule.

configs/mixture_density.py is the Elegy example's setup; this variant shows
how close the trainer gets to the generating process itself: 100,000 points,
k = 8 components, a wider backbone, a cosine decay over 60 epochs.
"""

from trainkit.configs import mixture_density


def get_config():
  """A better-tuned MDN on the inverse-sine problem."""
  config = mixture_density.get_config()
  config.synthetic_examples = (100_000, 5000, 20_000)
  config.num_components = 8
  config.model.hidden_sizes = (128, 128)
  config.learning_rate = 3e-3
  config.schedule = 'cosine'
  config.batch_size = 256
  config.num_epochs = 60
  config.log_every_steps = 390
  config.checkpoint_every_epochs = 5
  return config
