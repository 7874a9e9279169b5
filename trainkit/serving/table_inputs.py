"""What the jax and ONNX exports of a table model take: its columns, encoded inside.

A model trained on a table (trainkit/data/sources/tables.py) takes its
encoded features; its exports take one input per column instead, named as
the column, and apply the fitted encoding (model.json's fills, missing-value
indicators and one-hot levels) before the model:

- a number or boolean column: its values, NaN where missing (float32 for the
  jax export, float64 for ONNX; booleans as 0 and 1);
- a string column: for ONNX, the strings themselves (a value that is not
  one of the column's levels, '' and a missing one included, is `<other>`);
  jax cannot take strings, so the jax export takes each value's position in
  the column's `levels` (signature.json), any other number meaning `<other>`.

`encoder(columns)` is that encoding in jax; the ONNX export converts it with
the model and adds the strings' lookup (`onnx_strings`).
"""

import jax
import jax.numpy as jnp
import numpy as np

from trainkit.data.sources import tables


def columns(spec) -> list:
  """The table columns a model's spec records ([] for a model not trained on a table)."""
  return [tables.Column.from_tuple(c) for c in spec.columns]


def encoder(table_columns: list):
  """The encoding: {column: [batch] values} -> features float32 [batch, F], as predict does."""

  def encode(inputs: dict):
    parts = []
    for column in table_columns:
      value = inputs[column.name]
      if column.kind == 'string':
        other = len(column.levels)
        position = jnp.where((value >= 0) & (value < other), value, other)
        parts.append(jax.nn.one_hot(position, other + 1, dtype=jnp.float32))
        continue
      value = value.astype(jnp.float32)
      missing = jnp.isnan(value)
      parts.append(jnp.where(missing, np.float32(column.fill), value)[:, None])
      if column.indicator:
        parts.append(missing.astype(jnp.float32)[:, None])
    return jnp.concatenate(parts, axis=1)

  return encode


def examples(table_columns: list, batch) -> dict:
  """{column name: abstract [batch] input} of the jax encoder."""
  return {c.name: jax.ShapeDtypeStruct((batch,), np.int32 if c.kind == 'string' else np.float32)
          for c in table_columns}


def signature(table_columns: list, number_dtype: str) -> list:
  """signature.json's 'inputs': each column's name, kind, dtype (and a string's levels)."""
  described = []
  for c in table_columns:
    entry = {'name': c.name, 'kind': c.kind, 'shape': [None]}
    if c.kind == 'string':
      entry.update(dtype=None, levels=list(c.levels))
    else:
      entry.update(dtype=number_dtype, fill=c.fill, missing='NaN')
      if c.kind == 'date':  # As --mode=predict reads a date column.
        entry['unit'] = 'days since 1970-01-01 UTC'
    described.append(entry)
  return described


def onnx_strings(table_columns: list, model, prefix: str):
  """`model` (its inputs named `prefix` + column) fed raw columns: strings and float64 numbers.

  A string goes through an ONNX-ML LabelEncoder to its level's position
  (anything else to -1, which the encoder reads as `<other>`); a number is
  cast from float64 to the float32 the model takes.
  """
  import onnx  # pylint: disable=g-import-not-at-top
  from onnx import helper  # pylint: disable=g-import-not-at-top
  nodes, inputs = [], []
  for i, c in enumerate(table_columns):
    fed = f'{prefix}{c.name}'
    if c.kind == 'string':
      inputs.append(helper.make_tensor_value_info(c.name, onnx.TensorProto.STRING, ['batch']))
      nodes.append(helper.make_node(
          'LabelEncoder', [c.name], [f'raw/{i}/position'], domain='ai.onnx.ml',
          keys_strings=list(c.levels) or [''], values_int64s=list(range(len(c.levels))) or [-1],
          default_int64=-1))
      nodes.append(helper.make_node('Cast', [f'raw/{i}/position'], [fed],
                                    to=onnx.TensorProto.INT32))
    else:
      inputs.append(helper.make_tensor_value_info(c.name, onnx.TensorProto.DOUBLE, ['batch']))
      nodes.append(helper.make_node('Cast', [c.name], [fed], to=onnx.TensorProto.FLOAT))
  outputs = [helper.make_tensor_value_info(
      f'{prefix}{c.name}', onnx.TensorProto.INT32 if c.kind == 'string'
      else onnx.TensorProto.FLOAT, ['batch']) for c in table_columns]
  opsets = {o.domain: o.version for o in model.opset_import}
  reader = helper.make_model(
      helper.make_graph(nodes, 'raw_columns', inputs, outputs),
      opset_imports=[helper.make_opsetid(d, v) for d, v in
                     {**opsets, '': opsets.get('', 21), 'ai.onnx.ml': 3}.items()],
      ir_version=model.ir_version)
  model = onnx.compose.merge_models(
      reader, onnx.helper.make_model(model.graph, opset_imports=reader.opset_import,
                                     ir_version=model.ir_version, functions=model.functions),
      io_map=[(f'{prefix}{c.name}', f'{prefix}{c.name}') for c in table_columns])
  onnx.checker.check_model(model)
  return model
