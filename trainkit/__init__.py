"""trainkit: config-driven training with JAX, Flax, Optax and Orbax.

  import trainkit
  result = trainkit.train('default', '/tmp/mnist', overrides={'num_epochs': 1})
  model = trainkit.load('/tmp/mnist')
  model.predict(images)

`train`, `load`, `Model`, `Trained`, `Refused` and `UnseenLevelsWarning` are
trainkit/api.py's, imported when first used: `import trainkit` itself loads
nothing heavy, parses no flags and changes no global setting. The command line is
`trainkit` / `trainkit-sweep` (trainkit/train_command.py, sweep_command.py);
docs/design.md maps the rooms of the package.
"""

import importlib

__all__ = ['train', 'load', 'Model', 'Trained', 'Refused', 'UnseenLevelsWarning']


def __getattr__(name: str):
  if name in __all__:
    return getattr(importlib.import_module('trainkit.api'), name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__():
  return sorted(set(globals()) | set(__all__))
