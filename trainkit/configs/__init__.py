"""The config files shipped with the package, and how a config is named and loaded.

`--config=NAME` (the command) and `trainkit.train(NAME, ...)` take a config
file's path or the name of one shipped here: 'default', 'table',
'mixture_density', 'sweeps/search', ... A path that does not exist but reads
as the clone's layout ('configs/default.py') names the shipped file, so the
flax-examples commands work from any folder.
"""

import os
import runpy

import ml_collections

_HERE = os.path.dirname(os.path.abspath(__file__))


def names() -> list:
  """The names of the shipped config files."""
  return sorted(os.path.splitext(os.path.relpath(os.path.join(root, f), _HERE))[0]
                for root, _, files in os.walk(_HERE) for f in files
                if f.endswith('.py') and f != '__init__.py')


def path(name: str) -> str:
  """`name` if it is a file; else the shipped config it names; else `name` as it is."""
  if os.path.isfile(name):
    return name
  stem = name.removeprefix('configs/').removesuffix('.py')
  shipped = os.path.join(_HERE, stem + '.py')
  return shipped if stem and os.path.isfile(shipped) else name


def load(name: str) -> ml_collections.ConfigDict:
  """The locked config of file or shipped name `name` (its get_config())."""
  module = runpy.run_path(path(name))
  if not callable(module.get('get_config')):
    raise ValueError(f'{name}: defines no get_config() function')
  config = module['get_config']()
  config.lock()
  return config
