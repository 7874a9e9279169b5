"""The package's optional parts (pyproject.toml's extras), and the line that asks for one.

The core install trains and uses every arrays, table and MNIST-from-IDX run.
A feature that needs an extra which is not installed is refused before any
work, in one line naming the extra to install.
"""

import importlib.util

from trainkit import errors

# The extra that brings each optional module.
EXTRAS = {'tensorflow': 'tfds', 'orbax.export': 'tfds', 'mlflow': 'tracking',
          'jax2onnx': 'onnx', 'onnxruntime': 'onnx', 'optuna': 'search'}


def _installed(module: str) -> bool:
  try:
    return importlib.util.find_spec(module) is not None
  except (ImportError, ValueError):  # A parent package missing, or a stub module.
    return False


def require(what: str, *modules: str) -> None:
  """Refuses `what` (e.g. "--format=onnx") in one line if any of `modules` is not installed."""
  for module in modules:
    if not _installed(module):
      extra = EXTRAS[module]
      raise errors.ConfigError(
          f"{what} needs {module}, from the '{extra}' extra: pip install 'trainkit[{extra}]'")
