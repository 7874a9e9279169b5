"""The error a config, workdir or dataset is refused with, and the helpers that check fields.

Each owner of config fields (a task, a source, the optimizer module, ...)
checks its own with these; every failure is one line naming the field and
its value, which the command line prints without a traceback.
"""

import contextlib
import difflib


class ConfigError(ValueError):
  """A config value, workdir or dataset that the run cannot use."""


def suggest(value, choices) -> str:
  """' (did you mean 'x'?)' for the nearest of `choices`, or ''."""
  close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
  return f' (did you mean {close[0]!r}?)' if close else ''


def field(config, name: str):
  """The value of a dotted field ('model.hidden_sizes') of `config`."""
  for part in name.split('.'):
    config = config[part]
  return config


def field_or_none(config, name: str):
  """The value of a dotted field of `config`, or None where it has no such field."""
  for part in name.split('.'):
    config = config.get(part) if hasattr(config, 'get') else None
  return config


def one_of(config, name: str, choices) -> None:
  """Refuses `config.<name>` unless it is one of `choices`."""
  value = field(config, name)
  if value not in choices:
    raise ConfigError(f'{name}={value!r} is not one of: {", ".join(choices)}'
                      f'{suggest(value, choices)}')


def raised(error: BaseException) -> str:
  """'Kind: the first line of its message' of an error user code raised, for a refusal."""
  why = str(error).strip().splitlines()[0] if str(error).strip() else ''
  return f'{type(error).__name__}: {why}'.rstrip(': ')


def require(ok: bool, name: str, value, why: str) -> None:
  """Refuses `name`=`value` with `why` unless `ok`."""
  if not ok:
    raise ConfigError(f'{name}={value!r}: {why}')


def positive_integers(config, names) -> None:
  """Refuses any of the fields `names` that is not an integer >= 1."""
  for name in names:
    require(isinstance(config[name], int) and config[name] >= 1, name, config[name],
            'must be a positive integer')


def numbers(config, names) -> None:
  """Refuses any of the fields `names` that is not a number (config files can set any type)."""
  for name in names:
    value = field(config, name)
    require(isinstance(value, (int, float)) and not isinstance(value, bool), name, value,
            'must be a number')


def counts(config, names) -> None:
  """Refuses any of the fields `names` that is not an integer >= 0 (0: off)."""
  for name in names:
    require(isinstance(config[name], int) and config[name] >= 0, name, config[name],
            'must be an integer >= 0')


@contextlib.contextmanager
def converting(export_format: str, converter: str, other: str):
  """Turns a converter's refusal of the model into one line naming the format and another.

  What a converter raises for a model it cannot take (an operation it lacks,
  a host callback, a custom call) is one of these; a full disk is not.
  """
  try:
    yield
  except (NotImplementedError, ValueError, TypeError) as e:
    raise ConfigError(f'--format={export_format}: {converter} cannot convert this model '
                      f'({raised(e)}); try --format={other}') from e
