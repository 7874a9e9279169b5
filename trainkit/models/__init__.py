"""The models a config names: the built-in MLP, or a backbone by name or import path.

`config.model.module` is '' for the MLP (trainkit/models/mlp.py, its fields
in `config.model`), or a backbone (trainkit/models/backbone.py): a built-in
one by name ('cnn') or any Flax linen module by import path, built with
`config.model.args`.
"""

import json

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from trainkit import errors
from trainkit import tasks
from trainkit.models import mlp
from trainkit.models import tabular
from trainkit.tasks import ensemble

FAMILIES = ('mlp', 'tabm')  # config.model.family: the built-in MLP's kinds.
# The MLP's fields TabM does not read (it has its paper's ReLU and init), at their defaults.
_NOT_TABM = {'activation': 'relu', 'kernel_init': 'lecun_normal'}
# The MLP's layer fields, which a backbone does not read.
MLP_ONLY = ('hidden_sizes', 'dropout_rates', 'activation', 'use_batchnorm',
            'batchnorm_momentum', 'kernel_init', 'init_scale')


def _backbones():
  """trainkit/models/backbone.py, imported for a backbone alone.

  It imports flax.nnx, a tenth of a second that every MLP command would pay.
  """
  from trainkit.models import backbone  # pylint: disable=g-import-not-at-top
  return backbone


def _module(model_config) -> str:
  return model_config.get('module', '') or ''


def _args(model_config) -> dict:
  args = model_config.get('args', None)
  return args.to_dict() if hasattr(args, 'to_dict') else dict(args or {})


def create(model_config, head, input_shift=0.0, input_scale=255.0, dtype='float32',
           bins: tuple = ()):
  """The model of the `config.model` section, ending in the task `head`.

  `bins`: the model spec's, per input feature (family 'tabm' embeds the
  features that have them).
  """
  if model_config.get('family', 'mlp') == 'tabm':
    return tabular.create_model(model_config, ensemble.Ensemble(head, model_config.members),
                                bins, input_shift, input_scale, dtype)
  if not _module(model_config):
    return mlp.create_model(model_config, head, input_shift, input_scale, dtype)
  backbone = _backbones()
  return backbone.WithHead(backbone.construct(_module(model_config), _args(model_config),
                                              str(jnp.dtype(dtype))),
                           head, input_shift=input_shift, input_scale=input_scale,
                           dtype=jnp.dtype(dtype))


def module_digest(model_config) -> str:
  """A digest of the backbone class's source ('' for the built-in MLP and TabM)."""
  return _backbones().source_digest(_module(model_config)) if _module(model_config) else ''


def note_module_change(model_config, trained_digest: str, now: str) -> None:
  """Warns where the backbone's source (digest `now`) is not the one it was trained by.

  Its weights are then read by other code; a comment changes the digest too,
  so this warns rather than refuses.
  """
  if trained_digest and now and now != trained_digest:
    logging.warning('model.module=%r: its class\'s source has changed since the workdir was '
                    'trained; its checkpoints are read by the new code', _module(model_config))


def check_config(config) -> None:
  """Refuses the model's fields: the MLP's, TabM's, or a backbone that cannot be built."""
  if _module(config.model):  # The MLP's layer fields are not read (check_new_run).
    errors.one_of(config, 'dtype', mlp.DTYPES)
  else:
    mlp.check_config(config)
  _check_family(config)
  if _module(config.model):
    try:
      json.dumps(_args(config.model))
    except (TypeError, ValueError) as e:
      raise errors.ConfigError(f'model.args={_args(config.model)!r}: every argument must be a '
                               f'JSON value, to be recorded in config.json ({e})') from None
    _backbones().construct(_module(config.model), _args(config.model), config.dtype)


def _check_family(config) -> None:
  """The family's own fields, and what TabM does not have (BatchNorm, a backbone)."""
  errors.one_of(config, 'model.family', FAMILIES)
  if config.model.family != 'tabm':
    return
  model = config.model
  for name in ('members', 'embedding_size'):
    errors.require(isinstance(model[name], int) and model[name] >= 1, f'model.{name}',
                   model[name], 'must be a positive integer')
  errors.require(isinstance(model.num_bins, int) and model.num_bins in (0, *range(2, 1025)),
                 'model.num_bins', model.num_bins,
                 'must be 0 (no piecewise-linear embeddings) or 2 to 1024 bins')
  errors.require(not _module(config.model), 'model.module', _module(config.model),
                 "is a backbone of its own; model.family='tabm' is the built-in TabM")
  errors.require(not config.model.use_batchnorm, 'model.use_batchnorm', True,
                 "model.family='tabm' has no BatchNorm (set it False)")
  errors.require(tasks.of(config).AVERAGES_MEMBERS, 'task', config.task,
                 "does not average ensemble members, which model.family='tabm' "
                 'trains')


def check_new_run(config) -> None:
  """Refuses, for a run that starts training, the MLP's fields its model would not read.

  Only there: a workdir trained before this check holds whatever these
  fields said, and its model is TabM's or its backbone's all the same.
  """
  if _module(config.model):
    errors.require(config.dtype == 'float32' or 'dtype' in _args(config.model)
                   or _backbones().takes_dtype(_module(config.model)), 'dtype', config.dtype,
                   f'model.module={_module(config.model)!r} takes no dtype argument, so only '
                   'the head would compute in it; give the module a dtype field for its '
                   'layers, or use float32')
  if config.model.get('family', 'mlp') != 'tabm':
    return
  for name, value in _NOT_TABM.items():
    errors.require(config.model[name] == value, f'model.{name}', config.model[name],
                   f"is the MLP's; model.family='tabm' does not read it (its layers are "
                   f"ReLU, initialised as its paper's): leave it {value!r}")


def check_overridden(config, fields) -> None:
  """Refuses overrides (a sweep's, a search's) of the MLP's fields for a backbone.

  Read by nothing, a sweep over one would train the same model again and again.
  """
  if not _module(config.model):
    return
  for field in fields:
    name = field.removeprefix('model.')
    errors.require(not (field.startswith('model.') and name in MLP_ONLY), field,
                   config.model.get(name), f"is the MLP's; model.module="
                   f'{_module(config.model)!r} has layers of its own (set them in model.args)')


def check_data(config, data) -> None:
  """TabM bins each feature of a row: its inputs are rows of features, not images."""
  errors.require(config.model.get('family', 'mlp') != 'tabm' or len(data.input_shape) == 1,
                 'model.family', 'tabm', f'takes rows of features; dataset={config.dataset!r} '
                 f'has inputs of shape {tuple(data.input_shape)}')


def _check_outputs(config, outputs, expected) -> None:
  """Refuses a HEAD = False module whose outputs are not the task's (they would broadcast)."""
  shapes = lambda tree: jax.tree.map(lambda a: tuple(a.shape), tree)
  if shapes(outputs) != shapes(expected):
    raise errors.ConfigError(
        f'model.module={_module(config.model)!r} sets HEAD = False, so it returns the '
        f"task's outputs itself: task={config.task!r} takes {shapes(expected)} for a batch "
        f'of {jax.tree.leaves(expected)[0].shape[0]}, it returns {shapes(outputs)}')


def check_built(config, model, input_shape: tuple, input_dtype: str) -> None:
  """Refuses a backbone that cannot be called on the data, or initialises non-finite.

  Before any training: the model is initialised once on zeros of one input.
  """
  if not _module(config.model):
    return
  name = _module(config.model)
  example = jnp.zeros((2, *input_shape), input_dtype)
  rngs = {'params': jax.random.key(0), 'dropout': jax.random.key(1)}
  try:
    variables = model.init(rngs, example, train=False)
  except TypeError as e:
    raise errors.ConfigError(
        f'model.module={name!r} cannot be built and called as module(x, train=...) on inputs'
        f' of shape '
        f'{tuple(example.shape)} ({errors.raised(e)})') from None
  except Exception as e:  # pylint: disable=broad-except  # A shape the module cannot take.
    raise errors.ConfigError(
        f'model.module={name!r} fails on inputs of shape {tuple(example.shape)} '
        f'({errors.raised(e)})') from None
  other = sorted(set(variables) - {'params', 'batch_stats', 'intermediates'})
  if other:
    raise errors.ConfigError(
        f'model.module={name!r} keeps variables in collection {other[0]!r}, which a run '
        'neither trains nor checkpoints: only params and batch_stats (linen) or nnx.Param '
        'and nnx.BatchStat (NNX); make them parameters, or compute them in __call__')
  features = jax.eval_shape(
      lambda: model.backbone.apply(
          {k: v['backbone'] for k, v in variables.items() if 'backbone' in v},
          example.astype(jnp.float32), train=False))
  if not _backbones().head_on_top(model.backbone):
    _check_outputs(config, features, _backbones().head_outputs(model.head, example.shape[0]))
  elif len(features.shape) != 2:
    raise errors.ConfigError(
        f'model.module={name!r} returns features of shape {tuple(features.shape)}; the '
        "task's head takes [batch, features] (flatten them, or set HEAD = False and return "
        "the task's outputs)")
  leaves = jax.tree.leaves(variables)
  if not all(np.isfinite(np.asarray(leaf)).all() for leaf in leaves):
    raise errors.ConfigError(f'model.module={name!r}: its initial parameters are not all '
                             'finite')
