"""Runs an exported model (jax.export or ONNX) with its runtime alone; saves its outputs.

  python tests/export_run.py jax|onnx EXPORT_DIR ROWS.npy|TABLE.csv OUT.npz   # from anywhere

A helper for the export tests, run as a fresh process outside the project:
it must import neither the project nor TensorFlow (and for ONNX, not jax).
OUT.npz holds each output for the first row alone (b1_<name>) and for 37
rows (b37_<name>), the rows repeated as needed. A model trained on a table
is fed a CSV file's raw columns, read with the csv module as a user would:
an empty field is NaN for a number; strings go to ONNX as they are, and to
the jax export as their positions in signature.json's levels.
"""

import csv
import json
import os
import sys

import numpy as np


def runner(kind, folder, batch_example=None):
  """{name: output} of a batch, for the artifact of `kind` in `folder`."""
  if kind == 'jax':
    import jax  # pylint: disable=g-import-not-at-top
    with open(os.path.join(folder, 'model.bin'), 'rb') as f:
      exported = jax.export.deserialize(f.read())
    return lambda batch: {k: np.asarray(v) for k, v in exported.call(batch).items()}
  import onnxruntime  # pylint: disable=g-import-not-at-top
  session = onnxruntime.InferenceSession(os.path.join(folder, 'model.onnx'),
                                         providers=['CPUExecutionProvider'])
  names = [o.name for o in session.get_outputs()]
  if len(session.get_inputs()) > 1 or isinstance(batch_example, dict):
    return lambda batch: dict(zip(names, session.run(None, batch)))
  name = session.get_inputs()[0].name
  return lambda batch: dict(zip(names, session.run(None, {name: batch})))


def number(cell, kind):
  """A CSV cell as a number: NaN when empty, a boolean's 'true' and 'false' as 1 and 0."""
  words = {'true': 1.0, 'false': 0.0} if kind == 'bool' else {}
  cell = cell.strip()
  if cell.lower() in words:
    return words[cell.lower()]
  return float(cell) if cell else float('nan')


def table_columns(path, inputs, kind):
  """{column: values} of a CSV file, as the export of `kind` takes them (signature 'inputs')."""
  with open(path, newline='') as f:
    rows = list(csv.DictReader(f))
  columns = {}
  for spec in inputs:
    cells = [row[spec['name']] for row in rows]
    if spec['kind'] != 'string':
      values = [number(c, spec['kind']) for c in cells]
      columns[spec['name']] = np.array(values, spec['dtype'])
    elif kind == 'onnx':
      columns[spec['name']] = np.array(cells, dtype=object)
    else:
      position = {level: i for i, level in enumerate(spec['levels'])}
      columns[spec['name']] = np.array([position.get(c, -1) for c in cells], np.int32)
  return columns


def main(kind, folder, rows_path, out_path):
  with open(os.path.join(folder, 'signature.json')) as f:
    signature = json.load(f)
  if 'inputs' in signature:  # A table model: its raw columns.
    rows = table_columns(rows_path, signature['inputs'], kind)
    take = lambda index: {k: v[index] for k, v in rows.items()}
    count = len(next(iter(rows.values())))
  else:
    rows = np.load(rows_path).astype(signature['input']['dtype'])
    take, count = lambda index: rows[index], len(rows)
  run = runner(kind, folder, rows)
  outputs = {}
  for n in (1, 37):
    got = run(take(np.arange(n) % count))
    assert sorted(got) == sorted(signature['outputs']), (sorted(got), signature['outputs'])
    outputs.update({f'b{n}_{k}': v for k, v in got.items()})
  banned = ('trainkit', 'tensorflow', 'train', 'models') + (('jax',) if kind == 'onnx' else ())
  leaked = sorted(m for m in sys.modules if m.split('.')[0] in banned)
  assert not leaked, leaked
  np.savez(out_path, **outputs)


if __name__ == '__main__':
  main(*sys.argv[1:])
