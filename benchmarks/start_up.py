r"""Small jobs, where start-up is the whole cost: a finished workdir's commands and a small table.

  python -m benchmarks.start_up --manual_dir=../shared/data/mnist [--repeats=5] [--json=F]

Trains the default config for 1 epoch into a workdir of its own (caches
warm, as a user's are after a first run), then times from launch to exit,
alternated `--repeats` times so a slow spell of the shared machine hits all
alike:

  python        the interpreter alone (`python -c pass`);
  imports       `python -c 'import trainkit.train_command'`: everything the
                command imports before it reads a flag;
  rerun         the same training command again: the workdir has finished;
  eval          `--mode=eval` of the workdir (its test split);
  predict       `--mode=predict` of one PNG image;
  table         `configs/table.py` on scikit-learn's breast_cancer table (569
                rows, a split column 70 / 15 / 15), one hidden layer of 100,
                Adam 1e-3, batch 32, 200 epochs;
  sklearn_mlp   scikit-learn's MLPClassifier with the same layers, optimizer,
                batch and epochs, as a whole Python process reading the same
                CSV (needs scikit-learn: benchmarks/requirements.txt);
  bare_jax      the floor under the table: the same training hand-written in
                JAX, Flax and Optax (an epoch's steps scanned in one call, the
                validation loss copied to the host after each epoch; no
                logs, checkpoints or checks), as a whole process, its
                programs cached as the trainer's are.

Prints the medians and the issue's targets as checks; writes them as JSON.
"""

import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

from benchmarks import tabular

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
flags.DEFINE_string('manual_dir', os.path.join(ROOT, '..', 'shared', 'data', 'mnist'),
                    'The MNIST IDX files.')
flags.DEFINE_integer('repeats', 5, 'Rounds of every command.')
flags.DEFINE_string('json', '', 'Write the figures here.')
FLAGS = flags.FLAGS

_MLP = r'''
import sys, warnings
import numpy as np
from pyarrow import csv
from sklearn import exceptions, metrics, neural_network, pipeline, preprocessing
columns = csv.read_csv(sys.argv[1]).to_pydict()
split, y = np.array(columns.pop('split')), np.array(columns.pop('target'))
x = np.stack([np.asarray(v, float) for v in columns.values()], 1)
model = pipeline.make_pipeline(preprocessing.StandardScaler(), neural_network.MLPClassifier(
    hidden_layer_sizes=(100,), solver='adam', learning_rate_init=1e-3, batch_size=32,
    max_iter=200, alpha=0.0, tol=0.0, n_iter_no_change=201, random_state=0))
with warnings.catch_warnings():
  warnings.simplefilter('ignore', exceptions.ConvergenceWarning)
  model.fit(x[split == 'train'], y[split == 'train'])
print(metrics.accuracy_score(y[split == 'test'], model.predict(x[split == 'test'])))
'''

# The same job as a minimal JAX program: what any JAX trainer of it costs at least.
_BARE_JAX = r'''
import sys
import numpy as np
import jax, jax.numpy as jnp, optax, flax.linen as nn
from pyarrow import csv
jax.config.update('jax_compilation_cache_dir', sys.argv[2])
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
columns = csv.read_csv(sys.argv[1]).to_pydict()
split, y = np.array(columns.pop('split')), np.array(columns.pop('target'), np.float32)
x = np.stack([np.asarray(v, np.float32) for v in columns.values()], 1)
train, valid = split == 'train', split == 'validation'
x = (x - x[train].mean(0)) / (x[train].std(0) + 1e-6)
xt, yt, xv, yv = (jnp.asarray(a) for a in (x[train], y[train], x[valid], y[valid]))
class MLP(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.Dense(1)(nn.relu(nn.Dense(100)(x)))[:, 0]
model, tx, steps = MLP(), optax.adam(1e-3), len(xt) // 32
def loss(params, x, y):
  return optax.sigmoid_binary_cross_entropy(model.apply(params, x), y).mean()
@jax.jit
def epoch(params, opt, key):
  def step(carry, rows):
    params, opt = carry
    value, grads = jax.value_and_grad(loss)(params, xt[rows], yt[rows])
    updates, opt = tx.update(grads, opt, params)
    return (optax.apply_updates(params, updates), opt), value
  order = jax.random.permutation(key, len(xt))[:steps * 32].reshape(steps, 32)
  (params, opt), losses = jax.lax.scan(step, (params, opt), order)
  return params, opt, losses
validation = jax.jit(loss)
params = model.init(jax.random.key(0), xt[:1])
opt, key = tx.init(params), jax.random.key(1)
for e in range(200):
  params, opt, losses = epoch(params, opt, jax.random.fold_in(key, e))
  validation_loss = float(validation(params, xv, yv))
print(validation_loss)
'''


def _timed(command: list) -> float:
  start = time.perf_counter()
  done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                        env={**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2'})
  if done.returncode:
    raise RuntimeError(f'{" ".join(command)} failed:\n{done.stderr[-3000:]}')
  return time.perf_counter() - start


def _commands(tmp: str, manual_dir: str) -> dict:
  """{name: command line} of every timed command (the workdir trained first)."""
  main = [sys.executable, 'main.py']
  cache = f'--config.cache_dir={tmp}/cache'
  train = [*main, '--config=configs/default.py', f'--workdir={tmp}/w',
           f'--config.manual_dir={manual_dir}', f'--config.data_dir={tmp}/tfds',
           '--config.num_epochs=1', '--config.progress=off', cache]
  _timed(train)
  image = os.path.join(tmp, 'digit.png')
  import numpy as np  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  Image.fromarray(np.eye(28, dtype=np.uint8) * 255).save(image)
  table = tabular.write_tables('breast_cancer', 0, tmp)[0]['csv']
  commands = {
      'python': [sys.executable, '-c', 'pass'],
      'imports': [sys.executable, '-c', 'import trainkit.train_command'],
      'rerun': train,
      'eval': [*main, f'--workdir={tmp}/w', '--mode=eval'],
      'predict': [*main, f'--workdir={tmp}/w', '--mode=predict', f'--input={image}'],
      'table': [*main, '--config=configs/table.py', f'--workdir={tmp}/table',
                f'--config.dataset={table}', '--config.target_column=target',
                '--config.task=binary', '--config.split_column=split',
                '--config.train_split=train', '--config.validation_split=validation',
                '--config.test_split=test', *tabular.MLP_FLAGS,
                '--config.num_epochs=200', '--config.progress=off', cache],
  }
  if importlib.util.find_spec('sklearn'):
    commands['sklearn_mlp'] = [sys.executable, '-c', _MLP, table]
  else:
    print('scikit-learn is not installed: sklearn_mlp not measured')
  commands['bare_jax'] = [sys.executable, '-c', _BARE_JAX, table, f'{tmp}/bare_cache']
  for name in ('table', 'bare_jax'):  # Their programs compiled once, as the others' were.
    _timed(commands[name])
  return commands


def main(argv):
  del argv
  with tempfile.TemporaryDirectory() as tmp:
    commands = _commands(tmp, os.path.abspath(FLAGS.manual_dir))
    times = {name: [] for name in commands}
    for _ in range(FLAGS.repeats):
      for name, command in commands.items():
        if name == 'table':
          shutil.rmtree(os.path.join(tmp, 'table'), ignore_errors=True)
        times[name].append(_timed(command))
  medians = {name: statistics.median(t) for name, t in times.items()}
  for name, t in times.items():
    print(f'{name:12s} median {medians[name]:.2f} s  ({", ".join(f"{x:.2f}" for x in t)})')
  checks = {'rerun <= 2 s': medians['rerun'] <= 2.0, 'eval <= 1.5 s': medians['eval'] <= 1.5,
            'predict <= 1.5 s': medians['predict'] <= 1.5}
  if 'sklearn_mlp' in medians:
    checks['table <= sklearn MLP process'] = medians['table'] <= medians['sklearn_mlp']
  for check, ok in checks.items():
    print(f'{"met" if ok else "NOT met"}: {check}')
  if FLAGS.json:
    with open(FLAGS.json, 'w') as f:
      json.dump({'times': times, 'medians': medians, 'checks': checks}, f, indent=1)


if __name__ == '__main__':
  app.run(main)
