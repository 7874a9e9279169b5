"""The device program of a lone run: its steps on the data mesh.

The training loop (trainkit/training/loop.py) drives runs through a program:
this one for a single run, trainkit/search/groups.py's for a vmapped group.
"""

from trainkit.runtime import parallel
from trainkit.training import evaluation
from trainkit.training import optimizers
from trainkit.training import state as state_lib
from trainkit.training import step as step_lib


class MeshSteps:
  """The device program of one run: `train_steps` split over the data mesh.

  `train_loop` drives a list of runs through such a program; this one holds
  a single run's state as it is (trainkit.search.groups.GroupSteps stacks several
  on a member axis). Per-run arguments come as lists of one.
  """

  def __init__(self, mesh):
    self.mesh = mesh
    self._train_steps = step_lib.mesh_train_steps(mesh)

  def stack(self, states: list):
    (state,) = states
    return state

  def member(self, tree, index: int):
    del index  # The only member.
    return tree

  def dropout_keys(self, configs: list):
    (config,) = configs
    return parallel.replicate(state_lib.seed_keys(config.seed)[1], self.mesh)

  def train(self, state, batches: list, rng, num_steps: list, source):
    return self._train_steps(state, batches[0], rng, num_steps[0], source)

  def set_learning_rate(self, state, index: int, value: float):
    """`state` with its injected peak learning rate set to `value`."""
    del index  # The only member.
    return state.replace(opt_state=optimizers.replace_hyperparams(state.opt_state,
                                                                  learning_rate=value))

  def evaluate(self, state, data, batch_size: int) -> list:
    return [evaluation.evaluate(state, data, batch_size)]
