"""Runs an exported model (jax.export or ONNX) with its runtime alone; saves its outputs.

  python tests/export_run.py jax|onnx EXPORT_DIR ROWS.npy OUT.npz   # from any directory

A helper for the export tests, run as a fresh process outside the project:
it must import neither the project nor TensorFlow (and for ONNX, not jax).
OUT.npz holds each output for the first row alone (b1_<name>) and for 37
rows (b37_<name>), the rows repeated as needed.
"""

import json
import os
import sys

import numpy as np


def runner(kind, folder):
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
  name = session.get_inputs()[0].name
  return lambda batch: dict(zip(names, session.run(None, {name: batch})))


def main(kind, folder, rows_path, out_path):
  with open(os.path.join(folder, 'signature.json')) as f:
    signature = json.load(f)
  run = runner(kind, folder)
  rows = np.load(rows_path).astype(signature['input']['dtype'])
  outputs = {}
  for n in (1, 37):
    got = run(rows[np.arange(n) % len(rows)])
    assert sorted(got) == sorted(signature['outputs']), (sorted(got), signature['outputs'])
    outputs.update({f'b{n}_{k}': v for k, v in got.items()})
  banned = ('trainkit', 'tensorflow', 'train', 'models') + (('jax',) if kind == 'onnx' else ())
  leaked = sorted(m for m in sys.modules if m.split('.')[0] in banned)
  assert not leaked, leaked
  np.savez(out_path, **outputs)


if __name__ == '__main__':
  main(*sys.argv[1:])
