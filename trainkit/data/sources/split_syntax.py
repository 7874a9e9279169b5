"""TFDS split syntax for every source: 'train[:80%]', 'train[55000:]+test', ...

The configured splits (train, validation, test) select from a source's named
splits with the syntax TFDS reads, whatever the source: a TFDS dataset, an
.npz file's arrays or a generator's draws.
"""

import re
import types

from trainkit.data.sources import base


def split_ranges(spec: str, size_of) -> list:
  """[(split, start, stop)] that TFDS split syntax `spec` selects, in order.

  E.g. 'train[:55000]' -> [('train', 0, 55000)]; `size_of(name)` gives a
  named split's size. Raises DataError for a spec TFDS cannot read.
  """
  try:
    plain = _whole_or_slice(spec, size_of)
    if plain is not None:
      return plain
    instructions = _instructions(spec, size_of)
  except (ValueError, AssertionError, KeyError) as e:
    if isinstance(e, base.DataError):
      raise
    raise base.DataError(f'split {spec!r}: {str(e).splitlines()[0]}') from None
  out = []
  for i in instructions:
    size = size_of(i.splitname)
    out.append((i.splitname, 0 if i.from_ is None else i.from_,
                size if i.to is None else i.to))
  return out


def names(spec: str) -> set:
  """The named splits `spec` reads ('train[:80%]+extra' -> {'train', 'extra'})."""
  return {part.split('[')[0].strip() for part in spec.split('+')}


# A split's name (a split column's values may hold '.' and '-': '0.5', '2020-01'), and
# optionally a slice of whole numbers, all with or without '%'.
_PART = re.compile(r'([\w.\-]+)(?:\[(\d+%?)?:(\d+%?)?\])?')


def _whole_or_slice(spec: str, size_of) -> list | None:
  """split_ranges of whole splits and slices of them ('train[:55000]', 'train[70%:85%]').

  Read without TFDS, whose import takes a quarter of a second; None for any
  other spec (negative, mixed or out-of-range bounds, empty slices), which
  TFDS reads. Where both read a spec they agree (tests/test_splits.py):
  percentages round to the closest example, as TFDS's default rounding does.
  """
  out = []
  for part in spec.split('+'):
    found = _PART.fullmatch(part.strip())
    if not found:
      return None
    name, lo, hi = found.groups()
    size = size_of(name)
    if '[' not in part:
      out.append((name, 0, size))
      continue
    bounds = [b for b in (lo, hi) if b]
    percent = any(b.endswith('%') for b in bounds)
    if not bounds or any(b.endswith('%') != percent or (percent and int(b[:-1]) > 100)
                         for b in bounds):
      return None

    def example(bound, default, size=size, percent=percent):
      if not bound:
        return default
      return int(round(float(bound[:-1]) * size / 100.0)) if percent else int(bound)

    lo, hi = example(lo, 0), example(hi, size)
    if not 0 <= lo < hi <= size:
      return None
    out.append((name, lo, hi))
  return out


def _instructions(spec: str, size_of) -> list:
  """TFDS's reading of `spec` (its absolute instructions)."""
  # Here, not at the top: importing TFDS takes a quarter of a second, which a
  # run whose splits are whole names never needs.
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  sizes = {name: types.SimpleNamespace(num_examples=size_of(name)) for name in names(spec)}
  return tfds.core.ReadInstruction.from_spec(spec).to_absolute(sizes)


def overlap(a: list, b: list) -> int:
  """How many examples two split_ranges results share."""
  return sum(max(0, min(hi, hi2) - max(lo, lo2))
             for name, lo, hi in a for name2, lo2, hi2 in b if name == name2)
