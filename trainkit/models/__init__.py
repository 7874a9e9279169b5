"""The models a config names: the built-in MLP, or a backbone by name or import path.

`config.model.module` is '' for the MLP (trainkit/models/mlp.py, its fields
in `config.model`), or a backbone (trainkit/models/backbone.py): a built-in
one by name ('cnn') or any Flax linen module by import path, built with
`config.model.args`.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np

from trainkit import errors
from trainkit.models import mlp


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


def create(model_config, head, input_shift=0.0, input_scale=255.0, dtype='float32'):
  """The model of the `config.model` section, ending in the task `head`."""
  if not _module(model_config):
    return mlp.create_model(model_config, head, input_shift, input_scale, dtype)
  backbone = _backbones()
  return backbone.WithHead(backbone.construct(_module(model_config), _args(model_config)),
                           head, input_shift=input_shift, input_scale=input_scale,
                           dtype=jnp.dtype(dtype))


def check_config(config) -> None:
  """Refuses the model's fields: the MLP's, or a backbone that cannot be built."""
  mlp.check_config(config)
  if _module(config.model):
    try:
      json.dumps(_args(config.model))
    except (TypeError, ValueError) as e:
      raise errors.ConfigError(f'model.args={_args(config.model)!r}: every argument must be a '
                               f'JSON value, to be recorded in config.json ({e})') from None
    _backbones().construct(_module(config.model), _args(config.model))


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
        f'{tuple(example.shape)} ({str(e).splitlines()[0]})') from None
  except Exception as e:  # pylint: disable=broad-except  # A shape the module cannot take.
    raise errors.ConfigError(
        f'model.module={name!r} fails on inputs of shape {tuple(example.shape)} '
        f'({type(e).__name__}: {str(e).splitlines()[0]})') from None
  features = jax.eval_shape(
      lambda: model.backbone.apply(
          {k: v['backbone'] for k, v in variables.items() if 'backbone' in v},
          example.astype(jnp.float32), train=False))
  if _backbones().head_on_top(model.backbone) and len(features.shape) != 2:
    raise errors.ConfigError(
        f'model.module={name!r} returns features of shape {tuple(features.shape)}; the '
        "task's head takes [batch, features] (flatten them, or set HEAD = False and return "
        "the task's outputs)")
  leaves = jax.tree.leaves(variables)
  if not all(np.isfinite(np.asarray(leaf)).all() for leaf in leaves):
    raise errors.ConfigError(f'model.module={name!r}: its initial parameters are not all '
                             'finite')
