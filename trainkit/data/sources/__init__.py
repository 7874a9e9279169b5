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

from trainkit.data.sources import arrays
from trainkit.data.sources import base
from trainkit.data.sources import table_files
from trainkit.data.sources import tables

DataError = base.DataError


def open_source(config, fitted=None) -> base.Source:
  """The source of `config.dataset`; nothing is prepared or read yet.

  `fitted`: a trained workdir's ModelSpec, whose stored encoding a table
  uses instead of fitting one (eval of a trained model).
  """
  if table_files.is_table(config.dataset):
    return tables.TableSource(config, fitted)
  if arrays.is_arrays(config.dataset):
    return arrays.ArraySource(config)
  # Here, not at the top: TensorFlow Datasets takes a quarter of a second to
  # import, which a run on arrays, a generator or a table never needs.
  from trainkit.data.sources import tfds_source  # pylint: disable=g-import-not-at-top
  return tfds_source.TfdsSource(config)
