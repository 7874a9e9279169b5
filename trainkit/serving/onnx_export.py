"""`--mode=export --format=onnx`: an ONNX model that onnxruntime serves.

jax2onnx converts the same serving function the jax export traces (the model
in inference mode, its input scaling inside, the task's serving outputs), with
a symbolic batch dimension; `WORKDIR/export/onnx/` holds

- `model.onnx`: one input named as the model's (`images` or `features`),
  one output per serving output, in float32;
- `signature.json`: as the jax export's (trainkit/serving/jax_export.py), with what
  turns table rows into the input.

    import numpy as np, onnxruntime
    session = onnxruntime.InferenceSession('W/export/onnx/model.onnx')
    names = [o.name for o in session.get_outputs()]
    outputs = dict(zip(names, session.run(None, {'features': rows.astype(np.float32)})))
"""

import logging as std_logging
import os

from absl import logging
import jax

from trainkit import errors
from trainkit import extras
from trainkit.serving import jax_export
from trainkit.workdirs import layout as workdir_lib

FOLDER = os.path.join('export', 'onnx')
MODEL = 'model.onnx'
OPSET = 21  # What onnxruntime 1.20 and later run.


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
    try:
      model = jax2onnx.to_onnx(serve, [example], model_name=f'{config.task}_model',
                               opset=OPSET, input_names=[spec.input_name],
                               output_names=names)
    except (NotImplementedError, ValueError, TypeError) as e:
      raise errors.ConfigError(
          f'--format=onnx: jax2onnx cannot convert this model '
          f'({str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}); '
          'use --format=jax') from e
    finally:
      for logger, level in zip(quiet, levels):
        logger.setLevel(level)
    folder = os.path.join(os.path.abspath(workdir), FOLDER)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, MODEL)
    workdir_lib.write_bytes(path, model.SerializeToString())
    jax_export.write_signature(folder, config, spec, step, outputs)
  logging.info('Exported checkpoint %d to %s.', step, path)
  return folder
