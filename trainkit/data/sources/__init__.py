"""Data sources: where a dataset's examples come from, behind one small interface.

`open_source(config)` opens the source `config.dataset` names; trainkit/data/sources/base.py
holds the interface (a `Source` of named splits, read whole or by index as
{'x', 'y'} arrays). `input_pipeline` reads every source alike: the split
syntax, the device and streamed inputs, exact evaluation and resumption are
the same for all. One module per kind:

- tfds_source.py: a TFDS dataset name ('mnist'), prepared once as ArrayRecord.
- arrays.py: an .npz file's arrays, or a generator ('synthetic:<name>').
- tables.py: a CSV or Parquet file, or a folder of Parquet files
  (table_files.py converts it once into memory-mapped columns).

A new kind is one module with a `Source` subclass, and a line here.
"""

import os

from trainkit.data.sources import arrays
from trainkit.data.sources import base
from trainkit.data.sources import table_files
from trainkit.data.sources import table_formats
from trainkit.data.sources import tables

DataError = base.DataError
# What only a run that starts training is refused of its data (a table's).
check_new_run = tables.check_new_run


def open_source(config, fitted=None) -> base.Source:
  """The source of `config.dataset`; nothing is prepared or read yet.

  `fitted`: a trained workdir's ModelSpec, whose stored encoding a table
  uses instead of fitting one (eval of a trained model).
  """
  if table_files.is_table(config.dataset):
    return tables.TableSource(config, fitted)
  if arrays.is_arrays(config.dataset):
    return arrays.ArraySource(config)
  _refuse_other_files(config.dataset)
  # Here, not at the top: TensorFlow Datasets takes a quarter of a second to
  # import, which a run on arrays, a generator or a table never needs.
  from trainkit.data.sources import tfds_source  # pylint: disable=g-import-not-at-top
  return tfds_source.TfdsSource(config)


def _refuse_other_files(dataset: str) -> None:
  """Refuses a path that is neither a table nor arrays, rather than ask TFDS for it by name.

  A TFDS name ('mnist', 'glue/cola:2.0.0', 'c4/en.noclean') never starts
  with '/', '.' or '~'; anything that does, or names a file, is a path (any
  other name TFDS does not know is refused by it in one line).
  """
  path = os.path.expanduser(dataset)
  if not (dataset.startswith(('/', '.', '~')) or os.path.isfile(path)):
    return
  if not os.path.exists(path):
    why = 'no such file or folder'
  elif os.path.isdir(path):
    why = 'a folder is read as a table of Parquet files, and it holds no .parquet or .pq file'
  else:
    kinds = ', '.join((*table_formats.TEXT_SUFFIXES, *table_formats.PARQUET_SUFFIXES))
    why = (f'not a file this reads: a table ({kinds}; text ones may be compressed), '
           '.npz arrays, or a TFDS dataset name')
  raise DataError(f'dataset={dataset!r}: {why}')
