"""The Elegy example's mixture density network: how close, and at what cost.

    python -m benchmarks.mixture_density [--out=FILE.json]

On 20,000 fresh points of the inverse-sine process (the configs' test
split, trainkit/data/sources/synthetic.py), the test NLL per point in the generator's own
units of:

- configs/mixture_density.py (the Elegy setup), configs/mixture_density_tuned.py,
  and the `regression` task (one Gaussian) with the Elegy setup's other settings,
  each run as a user runs it (`main.py`, whole command);
- the generating process's own conditional NLL (quadrature over y: the best
  any model can do) and a linear-Gaussian fit to the training points;
- a minimal hand-written Flax loop of the Elegy setup (`--minimal`, in a
  process of its own: the same data, model, optimizer and epochs, no
  evaluation or checkpoints until the end).

Time: the trainer's whole command against the minimal loop's whole script
(start to exit), both warm: each has run once, untimed, with a persistent
compilation cache (the trainer's cache_dir, JAX's cache for the minimal
loop), so neither compiles in a timed run. Then each runs twice, alternated
(trainer, minimal, minimal, trainer), and the medians compare; and their
steady epochs (median), in the same run of this script.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(cmd, log_path, env=None) -> float:
  """Runs `cmd` from the project root to its end; its wall seconds."""
  start = time.perf_counter()
  with open(log_path, 'w') as log:
    status = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2',
                                 **(env or {})}).returncode
  if status:
    with open(log_path) as f:
      raise RuntimeError(f'{" ".join(cmd)} failed:\n{f.read()[-3000:]}')
  return time.perf_counter() - start


def trainer(config_file: str, workdir: str, cache_dir: str, *overrides) -> dict:
  """main.py with `config_file` from an empty workdir: test NLL, wall s, epoch s."""
  cmd = [sys.executable, 'main.py', f'--config={config_file}', f'--workdir={workdir}',
         f'--config.cache_dir={cache_dir}', '--config.progress=off', *overrides]
  wall = _run(cmd, workdir + '.log')
  with open(os.path.join(workdir, 'summary.json')) as f:
    summary = json.load(f)
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    epochs = [r['metrics']['wall_s'] for r in map(json.loads, f) if r['split'] == 'epoch']
  return {'test_nll': summary['test_nll'], 'best_test_nll': summary['best_test_nll'],
          'wall_s': wall, 'epoch_s': statistics.median(epochs)}


def minimal_loop() -> dict:
  """The Elegy setup as a minimal hand-written Flax loop; prints its result as JSON."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from trainkit.data.sources import synthetic  # pylint: disable=g-import-not-at-top
  k, batch, epochs = 5, 64, 500
  splits = synthetic.splits('inverse_sine', (3000, 1000, 20_000), 0)
  x, y = splits['train']['x'][:, 0], splits['train']['y']
  x_mean, x_std, y_mean, y_std = x.mean(), x.std(), y.mean(), y.std()

  class MDN(nn.Module):
    @nn.compact
    def __call__(self, x):
      h = nn.relu(nn.Dense(64)(x[:, None]))
      components = nn.Dense(2 * k)(h).reshape(-1, k, 2)
      return (components[..., 0], jax.nn.softplus(components[..., 1]) + 1e-3,
              nn.Dense(k)(h))

  def nll(params, x, y):
    mean, std, logits = MDN().apply(params, x)
    log_p = (-0.5 * jnp.log(2 * jnp.pi) - jnp.log(std)
             - 0.5 * jnp.square((y[:, None] - mean) / std))
    return -jax.nn.logsumexp(jax.nn.log_softmax(logits) + log_p, axis=-1)

  tx = optax.adam(3e-4)

  @jax.jit
  def step(params, opt_state, x, y):
    loss, grads = jax.value_and_grad(lambda p: nll(p, x, y).mean())(params)
    updates, opt_state = tx.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, loss

  xs, ys = jnp.asarray((x - x_mean) / x_std), jnp.asarray((y - y_mean) / y_std)
  params = MDN().init(jax.random.key(0), xs[:1])
  opt_state = tx.init(params)
  rng = np.random.default_rng(0)
  steps = len(x) // batch
  epoch_s = []
  for _ in range(epochs):
    start = time.perf_counter()
    order = rng.permutation(len(x))[:steps * batch].reshape(steps, batch)
    for rows in order:
      params, opt_state, loss = step(params, opt_state, xs[rows], ys[rows])
    loss.block_until_ready()
    epoch_s.append(time.perf_counter() - start)
  test = splits['test']
  per_point = nll(params, jnp.asarray((test['x'][:, 0] - x_mean) / x_std),
                  jnp.asarray((test['y'] - y_mean) / y_std))
  # In y's own units: the density of a standardised y is y_std times larger.
  return {'test_nll': float(per_point.mean()) + float(np.log(y_std)),
          'epoch_s': statistics.median(epoch_s)}


def references() -> dict:
  """The best possible test NLL (the process itself) and a linear-Gaussian fit's."""
  from trainkit.data.sources import synthetic  # pylint: disable=g-import-not-at-top
  splits = synthetic.splits('inverse_sine', (3000, 1000, 20_000), 0)
  x, y = splits['train']['x'][:, 0].astype(np.float64), splits['train']['y'].astype(np.float64)
  design = np.c_[x, np.ones_like(x)]
  coef = np.linalg.lstsq(design, y, rcond=None)[0]
  std = (y - design @ coef).std()
  tx, ty = splits['test']['x'][:, 0].astype(np.float64), splits['test']['y'].astype(np.float64)
  error = ty - np.c_[tx, np.ones_like(tx)] @ coef
  linear = np.mean(0.5 * np.log(2 * np.pi) + np.log(std) + 0.5 * (error / std) ** 2)
  return {'best_possible': float(synthetic.inverse_sine_nll(tx, ty).mean()),
          'linear_gaussian': float(linear)}


def _minimal(log: str, jax_cache: str) -> dict:
  """The minimal loop's whole script, its compilations kept in JAX's persistent cache."""
  wall = _run([sys.executable, '-m', 'benchmarks.mixture_density', '--minimal'], log,
              env={'JAX_COMPILATION_CACHE_DIR': jax_cache,
                   'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0',
                   'JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES': '0'})
  with open(log) as f:
    line = next(line for line in f if line.startswith('RESULT '))
  return {**json.loads(line[len('RESULT '):]), 'wall_s': wall}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--out', default='', help='also write the figures here as JSON')
  parser.add_argument('--minimal', action='store_true', help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.minimal:
    print('RESULT ' + json.dumps(minimal_loop()))
    return
  figures = references()
  with tempfile.TemporaryDirectory() as tmp:
    cache = os.path.join(tmp, 'cache')
    # Both warm (a first run of each, untimed), then alternated.
    runs = {'elegy_setup': [], 'minimal_loop': []}
    for i, name in enumerate(['elegy_setup', 'minimal_loop', 'elegy_setup', 'minimal_loop',
                              'minimal_loop', 'elegy_setup']):
      if name == 'elegy_setup':
        result = trainer('configs/mixture_density.py', os.path.join(tmp, f'elegy{i}'), cache)
      else:
        result = _minimal(os.path.join(tmp, f'minimal{i}.log'), os.path.join(tmp, 'jax_cache'))
      if i >= 2:  # Runs 0 and 1 warm the caches.
        runs[name].append(result)
    for name, results in runs.items():
      figures[name] = {**results[0], 'wall_s': statistics.median(r['wall_s'] for r in results),
                       'wall_s_runs': [r['wall_s'] for r in results]}
    figures['one_gaussian'] = trainer(
        'configs/mixture_density.py', os.path.join(tmp, 'gaussian'), cache,
        '--config.task=regression')
    figures['tuned'] = trainer('configs/mixture_density_tuned.py', os.path.join(tmp, 'tuned'),
                               cache)
  elegy, minimal = figures['elegy_setup'], figures['minimal_loop']
  figures['whole_command_ratio'] = elegy['wall_s'] / minimal['wall_s']
  figures['steady_epoch_ratio'] = elegy['epoch_s'] / minimal['epoch_s']
  figures['tuned_above_best'] = figures['tuned']['test_nll'] - figures['best_possible']
  print(json.dumps(figures, indent=2))
  if args.out:
    with open(args.out, 'w') as f:
      json.dump(figures, f, indent=2)


if __name__ == '__main__':
  main()
