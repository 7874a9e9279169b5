"""`--mode=export --format=jax`: a serialized StableHLO model that runs with jax and numpy alone.

`jax.export` traces the model with its parameters baked in as constants and a
symbolic batch dimension, and serializes it; `WORKDIR/export/jax/` holds

- `model.bin`: the serialized `jax.export.Exported`;
- `signature.json`: the input's name, shape (`null` for the batch) and dtype,
  each output's name, shape and dtype, and what the model was trained on
  (model.json: the input scaling, which is inside the model). A model trained
  on a table takes its columns instead ('inputs': a dict of [batch] arrays,
  float32 numbers with NaN where missing and each string's position in its
  column's `levels`), its fitted encoding inside (trainkit/serving/table_inputs.py).

A fresh Python loads and runs it without this project or TensorFlow:

    import jax, numpy as np
    exported = jax.export.deserialize(open('W/export/jax/model.bin', 'rb').read())
    outputs = exported.call(np.asarray(rows, np.float32))  # {'mean': ..., 'std': ...}

The outputs are the task's serving outputs (trainkit/tasks), in the targets'
own units. `serving_function` and `write_signature` are shared with the ONNX
export (trainkit/serving/onnx_export.py).
"""

import contextlib
import dataclasses
import os

from absl import logging
import jax
import numpy as np

from trainkit import errors
from trainkit.serving import restore as restore_lib
from trainkit.serving import table_inputs
from trainkit.training import optimizers
from trainkit.workdirs import layout as workdir_lib
from trainkit.workdirs import lock as workdir_lock

FOLDER = os.path.join('export', 'jax')  # Beside export/saved_model.
MODEL = 'model.bin'
SIGNATURE = 'signature.json'


@contextlib.contextmanager
def serving_function(config, workdir: str, checkpoint: str, kind: str):
  """Yields (serve, example input, spec, step) of `checkpoint`, under the workdir's lock.

  `serve(inputs)` is the model in inference mode with its parameters as
  constants, returning the task's serving outputs; the example input has a
  symbolic batch dimension.
  """
  with workdir_lock.hold(workdir, kind):
    state, step, spec = restore_lib.restore(config, workdir, checkpoint)
    state = optimizers.params_for_eval(state)  # The averaged parameters, if kept.
    variables = jax.device_get({'params': state.params, 'batch_stats': state.batch_stats})
    apply_fn, task = state.apply_fn, state.task

    table_columns = table_inputs.columns(spec)
    encode = table_inputs.encoder(table_columns) if table_columns else lambda x: x

    def serve(inputs):
      return task.serving(apply_fn(variables, encode(inputs), train=False))

    batch, = jax.export.symbolic_shape('batch')
    example = (table_inputs.examples(table_columns, batch) if table_columns else
               jax.ShapeDtypeStruct((batch, *spec.input_shape), np.dtype(spec.input_dtype)))
    yield serve, example, spec, step


def write_signature(folder: str, config, spec, step: int, outputs: dict,
                    number_dtype: str = 'float32') -> None:
  """signature.json: the input (a table's columns) and `outputs` ({name: abstract value})."""
  table_columns = table_inputs.columns(spec)
  inputs = ({'inputs': table_inputs.signature(table_columns, number_dtype)} if table_columns
            else {'input': {'name': spec.input_name, 'shape': [None, *spec.input_shape],
                            'dtype': spec.input_dtype}})
  workdir_lib.write_json(os.path.join(folder, SIGNATURE), {
      **inputs,
      'outputs': {k: {'shape': [None, *v.shape[1:]], 'dtype': np.dtype(v.dtype).name}
                  for k, v in outputs.items()},
      'task': config.task, 'step': step, 'model': dataclasses.asdict(spec)})


def export(config, workdir: str, checkpoint: str = 'latest') -> str:
  """Writes the jax.export artifact of `checkpoint` of `workdir`; returns its folder."""
  with serving_function(config, workdir, checkpoint, 'export') as (serve, example, spec, step):
    with errors.converting('jax', 'jax.export', 'onnx'):  # e.g. a jax.debug.print inside.
      exported = jax.export.export(jax.jit(serve))(example)
      serialized = exported.serialize()
    folder = os.path.join(os.path.abspath(workdir), FOLDER)
    os.makedirs(folder, exist_ok=True)
    workdir_lib.write_bytes(os.path.join(folder, MODEL), serialized)
    # The batch dimension of these is symbolic.
    write_signature(folder, config, spec, step,
                    jax.tree.unflatten(exported.out_tree, exported.out_avals))
  logging.info('Exported checkpoint %d to %s.', step, folder)
  return folder
