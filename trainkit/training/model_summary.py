"""The model as a table, as Keras's and Elegy's `summary()` print it, from Flax's tabulate.

Each layer with its input and output shapes, forward and forward+backward
FLOPs, parameters and BatchNorm statistics (count and bytes); then the totals
a user sizes a run by: trainable parameters, BatchNorm statistics, optimizer
state, and FLOPs per training example. `--mode=summary` prints it without
loading any data (the dataset's registered metadata gives the shapes); a
training run logs it and keeps it as WORKDIR/model_summary.txt, without the
FLOPs (they cost half a second to count).
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from trainkit import models as models_lib
from trainkit import tasks
from trainkit.data import sources
from trainkit.data import statistics
from trainkit.data.sources import tables
from trainkit.models import mlp as models
from trainkit.training import carried_values
from trainkit.training import optimizers
from trainkit.training import state as state_lib
from trainkit.workdirs import layout as workdir_lib

SUMMARY_FILE = workdir_lib.MODEL_SUMMARY


def spec_without_data(config, workdir: str) -> workdir_lib.ModelSpec:
  """The workdir's model.json, or the shapes the dataset's metadata declares.

  Only shapes matter to the table: the input scaling is left at its default
  and the schedule's length at one step per epoch. TabM's embeddings get
  `model.num_bins` bins per number feature, the most that fitting gives.
  """
  try:
    return workdir_lib.ModelSpec.read(workdir)
  except FileNotFoundError:
    pass
  fields = sources.open_source(config).fields()
  size = math.prod(fields['target_shape'])
  real_targets = tasks.scales_targets(config)
  return workdir_lib.ModelSpec(
      columns=tuple(fields.get('columns', ())), class_names=tuple(fields.get('class_names', ())),
      num_classes=fields['num_classes'], input_shape=tuple(fields['input_shape']),
      input_dtype=fields['input_dtype'], target_shape=tuple(fields['target_shape']),
      shift=0.0, scale=1.0, steps_per_epoch=1,
      target_shift=(0.0,) * size if real_targets else (),
      target_scale=(1.0,) * size if real_targets else (),
      bins=statistics.bins_of_shape(config, tuple(fields.get('columns', ())),
                                    tuple(fields['input_shape'])))


def _count(tree) -> tuple:
  leaves = [x for x in jax.tree.leaves(tree) if hasattr(x, 'dtype')]
  return (sum(math.prod(x.shape) for x in leaves),
          sum(math.prod(x.shape) * x.dtype.itemsize for x in leaves))


def _size(n_bytes: int) -> str:
  for unit, scale in (('GB', 1e9), ('MB', 1e6), ('KB', 1e3)):
    if n_bytes >= scale:
      return f'{n_bytes / scale:.1f} {unit}'
  return f'{n_bytes} B'


# Tables made in this process, by their arguments' structure_key.
_TABLES = {}


def table(config, spec: workdir_lib.ModelSpec, flops: bool = True, width: int = 140) -> str:
  """The summary of `config`'s model on inputs of `spec`, as plain text.

  `flops`: each layer's FLOPs and the total per training example too (half a
  second more: Flax lowers each layer apart, and the step is lowered once).
  The values a train state carries (trainkit/training/carried_values.py) do not show
  (dropout's keep probability is an input, shown by its shape), so the runs
  of a sweep or search share one table, made once in a process.
  """
  key = (carried_values.structure_key(config), spec, flops, width)
  if key not in _TABLES:
    _TABLES[key] = _table(carried_values.placeholders(config), spec, flops, width)
  return _TABLES[key]


def _table(config, spec: workdir_lib.ModelSpec, flops: bool, width: int) -> str:
  model = models_lib.create(config.model, tasks.create(config, spec), spec.shift, spec.scale,
                            config.dtype, spec.bins)
  models_lib.check_built(config, model, spec.input_shape, spec.input_dtype)
  example = np.zeros((1, *spec.input_shape), spec.input_dtype)  # numpy: no program to load.
  # Any keys do (shapes are shown): the seed keys' program is loaded already.
  rngs = dict(zip(('params', 'dropout'), state_lib.seed_keys(0)))
  keep = models.keep_probs(config.model)
  console = {'width': width, 'force_terminal': False, 'color_system': None}
  layers = nn.tabulate(model, rngs, compute_flops=flops, compute_vjp_flops=flops,
                       console_kwargs=console)(example, train=True, keep_probs=keep)
  variables = jax.eval_shape(lambda: model.init(rngs, example, train=False))
  params, params_bytes = _count(variables['params'])
  stats, stats_bytes = _count(variables.get('batch_stats', {}))
  tx = optimizers.create_optimizer(config, spec.steps_per_epoch)
  opt, opt_bytes = _count(jax.eval_shape(tx.init, variables['params']))
  totals = [
      f'Trainable parameters: {params:,} ({_size(params_bytes)})',
      f'BatchNorm statistics: {stats:,} ({_size(stats_bytes)})',
      f'Optimizer state ({config.optimizer}): {opt:,} ({_size(opt_bytes)})',
  ]
  if flops:
    def scalar(params, others, x):  # Every output summed: the head's outputs may be several.
      outputs = model.apply({**others, 'params': params}, x, train=True, keep_probs=keep,
                            rngs={'dropout': rngs['dropout']}, mutable=['batch_stats'])[0]
      return sum(jnp.sum(leaf) for leaf in jax.tree.leaves(outputs))
    others = {k: v for k, v in variables.items() if k != 'params'}
    cost = jax.jit(jax.grad(scalar)).lower(variables['params'], others,
                                           example).cost_analysis()
    total = (cost[0] if isinstance(cost, list) else cost or {}).get('flops')
    totals.append('FLOPs per training example (forward and backward, as the train step '
                  'computes them): ' + (f'{total:,.0f}' if total else 'unknown'))
  return _columns(spec) + params_first(layers).rstrip() + '\n' + '\n'.join(totals) + '\n'


def params_first(layers: str) -> str:
  """Flax's table with its params column before its batch_stats column, in any process.

  Flax takes the columns from a set of the collections' names, whose order
  follows the strings' hashes, which differ from process to process: the
  same model's summary came out with the two columns either way round.
  """
  lines = layers.split('\n')
  table = [i for i, line in enumerate(lines) if line[:1] in '┏┃┡│├└' and line]
  header = next((i for i in table if lines[i].startswith('┃')), None)
  if header is None or [c.strip() for c in lines[header].split('┃')[-3:-1]] != [
      'batch_stats', 'params']:
    return layers
  a, b, c = [i for i, ch in enumerate(lines[header]) if ch == '┃'][-3:]
  for i in table:
    line = lines[i]
    lines[i] = line[:a + 1] + line[b + 1:c] + line[b] + line[a + 1:b] + line[c:]
  return '\n'.join(lines)


def _columns(spec: workdir_lib.ModelSpec) -> str:
  """A table's columns and the features each became (nothing for other data)."""
  if not spec.columns:
    return ''
  columns = [tables.Column.from_tuple(c) for c in spec.columns]
  lines = [f'Table columns -> {spec.input_shape[0]} features (fitted on the training rows):']
  width = max(len(c.name) for c in columns)
  for c in columns:
    if c.kind == 'string':
      became = (f'one-hot over {len(c.levels)} levels + other: '
                + ', '.join(map(repr, c.levels[:6])) + (', ...' if len(c.levels) > 6 else ''))
    else:
      number = 'days since 1970-01-01 UTC' if c.kind == 'date' else 'number'
      became = f'{number}, missing -> {c.fill:.6g}' + (' + a missing indicator'
                                                       if c.indicator else '')
    lines.append(f'  {c.name.ljust(width)}  {c.kind:<7}  {became}')
  return '\n'.join(lines) + '\n'


