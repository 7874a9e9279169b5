"""The values a train state carries, and a config's structure without them.

The seed (initial parameters, dropout keys, data order), the injected learning
rate, weight decay and momentum (trainkit/training/optimizers.py) and the dropout keep
probabilities (state.TrainState) are values of the train state, not constants
of the programs compiled for it. Configs that differ only in them share those
programs: a sweep trains them as one vmapped group, and each run of a sweep or
search in one process reuses the step compiled for the one before.
"""

def placeholders(config):
  """A copy of `config` with fixed placeholders for the carried values.

  Whether a decay or a dropout rate is zero is structure (an optimizer
  transform, a dropout layer), and is kept.
  """
  config = config.copy_and_resolve_references()
  config.seed, config.learning_rate, config.momentum = 0, 1.0, 0.9
  config.weight_decay = 1.0 if config.weight_decay > 0 else 0.0
  config.model.dropout_rates = tuple(0.5 if rate > 0 else 0.0
                                     for rate in config.model.dropout_rates)
  return config


def structure_key(config) -> str:
  """Equal for configs whose train states share their compiled programs."""
  return placeholders(config).to_json_best_effort(sort_keys=True)
