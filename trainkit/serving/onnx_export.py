"""`--mode=export --format=onnx`: an ONNX model that onnxruntime serves.

jax2onnx converts the same serving function the jax export traces (the model
in inference mode, its input scaling inside, the task's serving outputs), with
a symbolic batch dimension; `WORKDIR/export/onnx/` holds

- `model.onnx`: one input named as the model's (`images` or `features`),
  or for a model trained on a table one input per column, named as the
  column: float64 numbers (NaN where missing) and strings as they are, the
  fitted encoding inside the graph (trainkit/serving/table_inputs.py); one
  output per serving output, in float32;
- `signature.json`: as the jax export's (trainkit/serving/jax_export.py).

    import numpy as np, onnxruntime
    session = onnxruntime.InferenceSession('W/export/onnx/model.onnx')
    names = [o.name for o in session.get_outputs()]
    outputs = dict(zip(names, session.run(None, {'features': rows.astype(np.float32)})))
    # A table model: session.run(None, {'carat': np.array([0.3, np.nan]),
    #                                   'cut': np.array(['Ideal', ''], dtype=object), ...})
"""

import logging as std_logging
import os

from absl import logging
import jax

from trainkit import errors
from trainkit import extras
from trainkit.serving import jax_export
from trainkit.serving import table_inputs
from trainkit.workdirs import layout as workdir_lib

FOLDER = os.path.join('export', 'onnx')
MODEL = 'model.onnx'
OPSET = 21  # What onnxruntime 1.20 and later run.
_PREFIX = 'model/'  # Of the converted model's own names, beside the columns'.


def _refuse_names(table_columns: list, outputs: list) -> None:
  """Refuses columns that cannot be ONNX inputs: one without a name, or named as an output."""
  if any(not c.name for c in table_columns):
    position = [c.name for c in table_columns].index('')
    raise errors.ConfigError(
        f'--format=onnx: the table column at position {position + 1} has no name, and an '
        'ONNX input needs one; name it (or leave it out with feature_columns) and train '
        'again, or use --format=jax')
  clash = sorted({c.name for c in table_columns} & set(outputs))
  if clash:
    raise errors.ConfigError(
        f'--format=onnx: the table column {clash[0]!r} is named as an output of the model, '
        'and an ONNX graph holds one value per name; rename the column and train again, '
        'or use --format=jax')


def export(config, workdir: str, checkpoint: str = 'latest') -> str:
  """Writes the ONNX model of `checkpoint` of `workdir`; returns its folder.

  Raises:
    ConfigError: the model holds an operation that jax2onnx cannot convert.
  """
  extras.require('--format=onnx', 'jax2onnx', 'onnxruntime')
  if config.dtype != 'float32':
    # It converts, but onnxruntime has no CPU kernel for a bfloat16 Gemm.
    raise errors.ConfigError(
        f"--format=onnx: dtype={config.dtype!r} is not exported to ONNX "
        "(float32 only); use --format=jax")
  with jax_export.serving_function(config, workdir, checkpoint,
                                   'export') as (serve, example, spec, step):
    import jax2onnx  # pylint: disable=g-import-not-at-top
    outputs = jax.eval_shape(serve, example)
    names = [path[0].key for path, _ in jax.tree.flatten_with_path(outputs)[0]]
    # jax2onnx imports every plugin it has and warns of each one that does
    # not import (those for libraries not installed), tracebacks included.
    quiet = [std_logging.getLogger(name) for name in ('jax2onnx', 'onnx_ir')]
    levels = [logger.level for logger in quiet]
    for logger in quiet:
      logger.setLevel(std_logging.ERROR)
    table_columns = table_inputs.columns(spec)
    if table_columns:
      _refuse_names(table_columns, names)
      columns = [c.name for c in table_columns]
      examples = [example[c] for c in columns]
      convert = lambda *values: serve(dict(zip(columns, values)))
    else:
      columns, examples, convert = [spec.input_name], [example], serve
    try:
      with errors.converting('onnx', 'jax2onnx', 'jax'):
        model = jax2onnx.to_onnx(convert, examples, model_name=f'{config.task}_model',
                                 opset=OPSET, input_names=columns, output_names=names)
    finally:
      for logger, level in zip(quiet, levels):
        logger.setLevel(level)
    if table_columns:
      import onnx  # pylint: disable=g-import-not-at-top
      model = table_inputs.onnx_strings(
          table_columns, onnx.compose.add_prefix(model, _PREFIX, rename_outputs=False),
          _PREFIX)
    folder = os.path.join(os.path.abspath(workdir), FOLDER)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, MODEL)
    workdir_lib.write_bytes(path, model.SerializeToString())
    jax_export.write_signature(folder, config, spec, step, outputs, number_dtype='float64')
  logging.info('Exported checkpoint %d to %s.', step, path)
  return folder
