"""Runs a jax.export artifact with jax and numpy alone; saves its outputs.

  python tests/jax_export_run.py EXPORT_DIR ROWS.npy OUT.npz   # from any directory

A helper for the export tests, run as a fresh process outside the project:
it must import neither the project nor TensorFlow. OUT.npz holds each
output for the first row alone (b1_<name>) and for 37 rows (b37_<name>),
the rows repeated as needed.
"""

import json
import os
import sys

import jax
import numpy as np


def main(folder, rows_path, out_path):
  with open(os.path.join(folder, 'model.bin'), 'rb') as f:
    exported = jax.export.deserialize(f.read())
  with open(os.path.join(folder, 'signature.json')) as f:
    signature = json.load(f)
  rows = np.load(rows_path).astype(signature['input']['dtype'])
  outputs = {}
  for n in (1, 37):
    batch = rows[np.arange(n) % len(rows)]
    outputs.update({f'b{n}_{k}': np.asarray(v) for k, v in exported.call(batch).items()})
  leaked = sorted(m for m in sys.modules
                  if m.split('.')[0] in ('trainkit', 'tensorflow', 'train', 'models'))
  assert not leaked, leaked
  np.savez(out_path, **outputs)


if __name__ == '__main__':
  main(*sys.argv[1:])
