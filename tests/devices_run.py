"""Trains configs on the first N devices of this process; prints JSON.

  XLA_FLAGS=--xla_force_host_platform_device_count=4 \
      python -m tests.devices_run RUNS_JSON WORKDIR   # from the project root

A helper for test_parallel: the forced device count must be set before JAX
starts, so it runs as its own process. RUNS_JSON maps a run's name to
[config dict, N]; each trains in WORKDIR/<name>. It prints {name: {'summary',
'params' (flat values), 'params_sharding'}} or {name: {'error'}} for a run
refused with a ConfigError.
"""

import json
import os
import sys

import jax
import ml_collections
import numpy as np

from trainkit import errors

from trainkit.data import pipeline as input_pipeline
import train
from trainkit.runtime import parallel


def main(runs_json, workdir):
  out = {}
  for name, (config, count) in json.loads(runs_json).items():
    config = ml_collections.ConfigDict(config)
    mesh = parallel.create_mesh(jax.devices()[:count])
    try:
      data = input_pipeline.create_datasets(config, mesh)
      state, summary = train.train_and_evaluate(config, os.path.join(workdir, name), data)
    except errors.ConfigError as e:
      out[name] = {'error': str(e)}
      continue
    params = np.concatenate([np.ravel(x) for x in jax.tree.leaves(jax.device_get(state.params))])
    out[name] = {'summary': summary, 'params': params.tolist(),
                 'params_sharding': str(jax.tree.leaves(state.params)[0].sharding)}
  print(json.dumps(out))


if __name__ == '__main__':
  main(*sys.argv[1:])
