"""Trains one config on the first N devices of this process; prints JSON.

  XLA_FLAGS=--xla_force_host_platform_device_count=4 \
      python tests/devices_run.py CONFIG_JSON WORKDIR N [N ...]

A helper for test_parallel: the forced device count must be set before JAX
starts, so it runs as its own process. For each N, it trains in WORKDIR/N
and prints {N: {'summary': ..., 'params': [flat parameter values]}}.
"""

import json
import os
import sys

import jax
import ml_collections
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import config_checks  # pylint: disable=wrong-import-position
import input_pipeline  # pylint: disable=wrong-import-position
import parallel  # pylint: disable=wrong-import-position
import train  # pylint: disable=wrong-import-position


def main(config_json, workdir, *counts):
  config = ml_collections.ConfigDict(json.loads(config_json))
  out = {}
  for count in map(int, counts):
    mesh = parallel.create_mesh(jax.devices()[:count])
    try:
      data = input_pipeline.create_datasets(config, mesh)
      state, summary = train.train_and_evaluate(config, os.path.join(workdir, str(count)), data)
    except config_checks.ConfigError as e:
      out[count] = {'error': str(e)}
      continue
    params = np.concatenate([np.ravel(x) for x in jax.tree.leaves(jax.device_get(state.params))])
    out[count] = {'summary': summary, 'params': params.tolist(),
                  'params_sharding': str(jax.tree.leaves(state.params)[0].sharding)}
  print(json.dumps(out))


if __name__ == '__main__':
  main(*sys.argv[1:])
