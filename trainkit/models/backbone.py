"""A backbone of the user's (or a built-in CNN), scaled inputs in, the task's head on top.

`config.model.module` names a Flax module by import path
('package.module:Name'), linen or NNX, or a built-in one by name ('cnn'); its
constructor arguments are `config.model.args` (JSON-able values, recorded in
config.json). The module maps a batch of inputs, as scaled floats of the
dataset's input shape, to features [batch, n]; `WithHead` scales the inputs
the way the MLP does (so an exported model takes raw inputs) and ends in the
task's head. A linen module is called as `module(x, train=...)`; an NNX
module as `module(x)`, in training mode (`module.train()`) or not
(`module.eval()`), and gets its `rngs` from the run (through
`flax.nnx.bridge.ToLinen`). Either way BatchNorm statistics are the
`batch_stats` collection and dropout draws from the run's 'dropout' key,
so checkpoints, resumes and exports treat them as the MLP's. A module that
computes the task's outputs itself sets the class attribute `HEAD = False`
and returns them (a classifier's logits).
"""

import functools
import hashlib
import importlib
import inspect
from typing import Any

import flax
from flax import nnx
import flax.linen as nn
from flax.nnx import bridge
import jax
import jax.numpy as jnp

from trainkit import errors
from trainkit.models import mlp

# Built-in backbones by name.
BUILT_IN = {'cnn': 'trainkit.models.cnn:CNN'}


def resolve(path: str):
  """The linen or NNX module class `path` names ('package.module:Name' or a built-in's name)."""
  full = BUILT_IN.get(path, path)
  module_name, _, class_name = full.partition(':')
  if not module_name or not class_name:
    raise errors.ConfigError(
        f"model.module={path!r}: give 'package.module:Name' (or one of: "
        f"{', '.join(BUILT_IN)})")
  try:
    found = getattr(importlib.import_module(module_name), class_name)
  except Exception as e:  # pylint: disable=broad-except  # Whatever the user's file raises.
    raise errors.ConfigError(f'model.module={path!r} cannot be imported '
                             f'({errors.raised(e)})') from None
  if not (inspect.isclass(found) and issubclass(found, (nn.Module, nnx.Module))):
    raise errors.ConfigError(f'model.module={path!r} is not a Flax linen or NNX Module class '
                             f'(it is {found!r})')
  return found


def source_digest(path: str) -> str:
  """A digest of the source of the class `path` names ('' where Python has none)."""
  try:
    source = inspect.getsource(resolve(path))
  except (OSError, TypeError):  # Made at run time, or from a file since gone.
    return ''
  return hashlib.sha256(source.encode()).hexdigest()[:16]


def _in_mode(module, x, train: bool):
  """Calls NNX `module` on `x` in training mode or not (its Dropout and BatchNorm follow)."""
  if train:
    module.train()
  else:
    module.eval()
  return module(x)


class NnxBackbone(nn.Module):
  """An NNX module as a linen backbone: `module(x, train=...)` as the MLP is called."""
  nnx_class: Any
  kwargs: Any  # Its constructor's keyword arguments (a FrozenDict); `rngs` is the run's.

  @nn.compact
  def __call__(self, x, *, train: bool):
    build = (self.nnx_class if train or self.is_initializing()
             else _shapes_only(self.nnx_class))
    wrapped = bridge.ToLinen(build, kwargs=self.kwargs, name='nnx')
    return wrapped(x, nnx_method=_in_mode, train=train)


@functools.cache
def _shapes_only(nnx_class):
  """`nnx_class`'s constructor without its initialisers: variables of shapes only.

  ToLinen builds the module on every call, initialisers included, then puts
  the stored variables in. In inference that is all they are for: built
  abstractly, the discarded initial values stay out of the traced function,
  so an export holds none of their operations (TensorFlow's XLA cannot read
  the `erf` of jax's truncated-normal initialiser). Only the random streams
  stay abstract, and an NNX module in eval mode draws none.
  """
  def build(*args, **kwargs):
    def construct():  # Its own random streams: the run's are of another trace.
      return nnx_class(*args, **{**kwargs, **({'rngs': nnx.Rngs(0)} if 'rngs' in kwargs else {})})
    return nnx.eval_shape(construct)
  return build


def construct(path: str, args: dict, dtype: str = 'float32') -> nn.Module:
  """The module of `path` built with `args`, refused in one line where it takes other ones.

  A compute `dtype` other than float32 goes to the module as its `dtype`
  argument (as Flax's layers take theirs), unless `args` gives one.
  """
  cls = resolve(path)
  args = _with_dtype(path, args, dtype)
  if issubclass(cls, nnx.Module):
    _check_nnx_args(path, cls, args)
    return NnxBackbone(cls, flax.core.FrozenDict(args))
  fields = {f for f in getattr(cls, '__dataclass_fields__', {}) if f not in ('parent', 'name')}
  _refuse_unknown(path, args, fields)
  try:
    return cls(**args)
  except TypeError as e:
    raise errors.ConfigError(f'model.args: {path} cannot be built with {args!r} ({e})') from None


def takes_dtype(path: str) -> bool:
  """Whether the module class `path` names has a `dtype` argument (as Flax's layers do)."""
  cls = resolve(path)
  if issubclass(cls, nnx.Module):
    return 'dtype' in inspect.signature(cls.__init__).parameters
  return 'dtype' in getattr(cls, '__dataclass_fields__', {})


def _with_dtype(path: str, args: dict, dtype: str) -> dict:
  """`args` with the run's compute dtype as the module's `dtype`, where it takes one.

  A new run without one is refused (models.check_new_run): only the head
  would compute in it.
  """
  if dtype == 'float32' or 'dtype' in args or not takes_dtype(path):
    return args
  return {**args, 'dtype': dtype}


def _refuse_unknown(path: str, args: dict, fields: set) -> None:
  """Refuses the first of `args` that is not one of the module's `fields`."""
  unknown = sorted(set(args) - fields)
  if unknown:
    raise errors.ConfigError(
        f'model.args: {path} takes no argument {unknown[0]!r} (it takes: '
        f'{", ".join(sorted(fields)) or "none"}){errors.suggest(unknown[0], fields)}')


def _check_nnx_args(path: str, cls, args: dict) -> None:
  """Refuses `args` an NNX class's constructor cannot bind: unknown or missing ones."""
  signature = inspect.signature(cls.__init__)
  fields = set(signature.parameters) - {'self', 'rngs'}
  takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values())
  if not takes_any:
    _refuse_unknown(path, args, fields)
  rngs = {'rngs': None} if 'rngs' in signature.parameters else {}
  try:
    signature.bind(None, **args, **rngs)
  except TypeError as e:  # A required argument not given.
    raise errors.ConfigError(f'model.args: {path} cannot be built with {args!r} ({e})') from None


def head_on_top(module: nn.Module) -> bool:
  """Whether the task's head goes on `module` (its class sets HEAD = False where not)."""
  return getattr(getattr(module, 'nnx_class', module), 'HEAD', True)


def head_outputs(head, batch: int):
  """The shapes of what the task's head returns for `batch` examples (for HEAD = False)."""

  class Head(nn.Module):
    @nn.compact
    def __call__(self, x):
      return head.head(x, nn.Dense)

  features = jnp.zeros((batch, 8), jnp.float32)
  return jax.eval_shape(lambda: Head().init_with_output(jax.random.key(0), features)[0])


class WithHead(nn.Module):
  """`(x - input_shift) / input_scale`, the backbone, then the task's head."""
  backbone: nn.Module
  head: Any
  input_shift: float | tuple = 0.0
  input_scale: float | tuple = 255.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool, keep_probs=None):
    del keep_probs  # The MLP's dropout as values; a backbone keeps its own rates.
    x = mlp.scaled_inputs(x, self.input_shift, self.input_scale, self.dtype).reshape(x.shape)
    features = self.backbone(x, train=train)
    if not head_on_top(self.backbone):
      return features
    dense = lambda n: nn.Dense(n, dtype=self.dtype)
    return self.head.head(features, dense)
