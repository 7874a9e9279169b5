"""Sweep members trained together, as one vmapped program over a member axis.

Members that differ only in values the train state carries
(trainkit/training/carried_values.py) share one compiled program: the train state is
stacked on a leading member axis and `step_lib.train_steps` and
`evaluation.eval_steps` are vmapped over it, with the resident training data
shared. `GroupSteps` is that program; `loop.train_loop`, the loop of
every run, drives it, so each member's workdir holds exactly what a lone run
writes and can be resumed or evaluated alone. A member that diverges is
stopped alone: its later steps are skipped (its step count is 0) and nothing
more of it is saved.
"""

import contextlib

from absl import logging
import jax
import jax.numpy as jnp

from trainkit.data import pipeline as input_pipeline
from trainkit.data import trained_data
from trainkit.training import config_checks
from trainkit.training import evaluation
from trainkit.training import loop
from trainkit.training import optimizers
from trainkit.training import run as runs_lib
from trainkit.training import state as state_lib
from trainkit.training import step as step_lib
from trainkit.workdirs import layout as workdir_lib
from trainkit.workdirs import lock as workdir_lock


class NotGroupable(Exception):
  """Members that cannot train together (then they train one by one)."""


# The member axis leads the state, batches of indices, dropout keys and step
# counts (0 lets a diverged member sit out); the resident data is shared.
_group_train_steps = jax.jit(
    jax.vmap(step_lib.train_steps, in_axes=(0, 0, 0, 0, None)), donate_argnums=0)
_group_eval_steps = jax.jit(jax.vmap(evaluation.eval_steps, in_axes=(0, None)))


class GroupSteps:
  """The device program of a group: the members' states stacked, one device.

  The same interface as programs.MeshSteps, with per-run arguments stacked on a
  leading member axis.
  """

  def stack(self, states: list):
    # The members' states share their static parts (state_lib.create_state), so
    # they stack leaf by leaf.
    return jax.tree.map(lambda *x: jnp.stack(x), *states)

  def member(self, tree, index: int):
    return jax.tree.map(lambda x: x[index], tree)

  def dropout_keys(self, configs: list):
    return jnp.stack([state_lib.seed_keys(c.seed)[1] for c in configs])

  def train(self, state, batches: list, rng, num_steps: list, source):
    stacked = {'index': jnp.stack([b['index'] for b in batches])}
    return _group_train_steps(state, stacked, rng, jnp.asarray(num_steps, jnp.int32),
                              source)

  def set_learning_rate(self, state, index: int, value: float):
    """`state` with member `index`'s injected peak learning rate set to `value`."""
    rates = optimizers.hyperparams(state.opt_state)['learning_rate']
    return state.replace(opt_state=optimizers.replace_hyperparams(
        state.opt_state, learning_rate=rates.at[index].set(value)))

  def evaluate(self, state, data, batch_size: int) -> list:
    del batch_size  # The resident test split is stacked in eval batches already.
    sums, values = jax.device_get(
        _group_eval_steps(optimizers.params_for_eval(state), data.test))
    return [evaluation.metrics_from_sums(state, self.member(sums, i),
                                         evaluation.unmasked([self.member(values, i)]))
            for i in range(len(sums['count']))]


def train_group(configs, workdirs, data: input_pipeline.Data | None = None,
                changes: list | None = None) -> list:
  """Trains the members (configs with equal carried_values.structure_key) together.

  Args:
    configs: the members' configs.
    workdirs: their workdirs, one each (each locked while it trains).
    data: input_pipeline.create_datasets(configs[0]), if already loaded.
    changes: per member, the config changes its resume makes
      (config_history.check_resume), if any.

  Returns:
    One summary dict per member (as written to its summary.json), or None for
    a member that diverged.

  Raises:
    NotGroupable: more than one device, streamed input, or members at
      different steps; nothing has been written then.
  """
  base = configs[0]
  if jax.device_count() > 1:
    raise NotGroupable(f'{jax.device_count()} devices: each member uses them all')
  for config, workdir in zip(configs, workdirs):
    config_checks.validate(config)
    workdir_lib.check_workdir(workdir)
    config_checks.check_new_run(config, workdir)
    trained_data.check(config, workdir, 'resume')
  data = data or input_pipeline.create_datasets(base)
  if data.mode != 'device':
    raise NotGroupable('the data is streamed (input_mode=stream)')
  config_checks.check_data(base, data)
  for config, workdir in zip(configs, workdirs):
    config_checks.check_new_run_data(config, data, workdir)
  spec = state_lib.model_spec(base, data)
  with contextlib.ExitStack() as locks:
    for workdir in workdirs:
      locks.enter_context(workdir_lock.hold(workdir))
    return _train_runs(configs, workdirs, data, spec, changes or [None] * len(configs))


def _train_runs(configs, workdirs, data, spec, changes) -> list:
  """train_group's work, with the members' workdirs locked."""
  runs = []
  try:
    for config, workdir, changed in zip(configs, workdirs, changes):
      state = state_lib.create_state(config, spec)
      runs.append(runs_lib.Run(config, workdir, spec, state, config_changes=changed))
    steps = {run.step for run in runs}
    if len(steps) > 1:
      raise NotGroupable(f'members are at different steps {sorted(steps)}')
  except Exception:  # Nothing was written: release the members' managers.
    for run in runs:
      run.close()
    raise
  _, summaries = loop.train_loop(runs, GroupSteps(), data)
  for run in runs:
    if run.diverged:
      logging.warning('Member %s stopped: %s', run.workdir, run.diverged)
  return summaries
