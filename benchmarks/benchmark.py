r"""Speed and memory of the trainer against a minimal loop, Keras 3, Lightning and PyTorch.

  python -m benchmarks.benchmark --manual_dir=../shared/data/mnist [--json=results.json] \
      [--parts=steps,minimal_loop,trainer,peers,latency,torch]

(from the project root, so that the trainer's modules import). The peers run
in their own venv (`python3 -m venv .venv-peers && .venv-peers/bin/pip install
-r benchmarks/requirements-peers.txt`, see --peers_python).

Each run is a fresh process, and the ratios compare figures of this one run of
the script only: the runs that are compared alternate, `--repeats` times, so a
slow spell of the shared machine hits all alike. An epoch time is the median
over every epoch but the first (which compiles) of the runs:

  steps         samples/s of the trainer's train step and of a minimal
                hand-written Flax/Optax step of the same model (per call and
                scanned over a whole epoch), the bfloat16 variant, and the
                matmul roofline (the step's matrix products alone);
  minimal_loop  MNIST in memory, each epoch one jitted lax.scan, evaluated
                after each epoch (the yardstick for the trainer's epoch);
  trainer       `main.py --config=configs/default.py` from an empty workdir,
                whole command for 1 and for 15 epochs, with the dataset
                prepared and the caches warm (decoded splits, compilations),
                and once for 1 epoch with empty caches; epoch wall time
                (input, steps, eval, checkpoint), time to 98 %, peak RSS;
  peers         the same training in Keras 3 `fit` (JAX backend) and in
                PyTorch Lightning (CPU), benchmarks/peers/, 1 and 15 epochs;
  latency       a finished re-run, --mode=eval and --mode=predict of one image;
  first         the first command from an empty home directory beside Keras's
                and Lightning's first runs, and a search's first command
                (benchmarks/first_command.py, alternated `--repeats` times);
  torch         bare PyTorch CPU training steps of the same model.

Prints a table and the issue's targets as checks, and writes every figure as JSON.
"""

import functools
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time

from absl import app
from absl import flags

from benchmarks import tables
from benchmarks import whole_command

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FLAGS = flags.FLAGS
flags.DEFINE_string('manual_dir', os.path.join(ROOT, '..', 'shared', 'data', 'mnist'),
                    'Folder with the MNIST IDX files (prepared into --data_dir).')
flags.DEFINE_string('data_dir', None, 'TFDS data dir; default: a temporary one.')
flags.DEFINE_list('parts', ['steps', 'minimal_loop', 'trainer', 'peers', 'latency', 'first'],
                  'What to run (also: torch).')
flags.DEFINE_string('peers_python', os.path.join(ROOT, '.venv-peers', 'bin', 'python'),
                    'The Python of the venv with benchmarks/requirements-peers.txt.')
flags.DEFINE_string('json', None, 'Write the results here as JSON.')
flags.DEFINE_integer('epochs', 15, 'Epochs of the minimal loop (the default config has 15).')
flags.DEFINE_integer('repeats', 2, 'Runs of each compared command, alternated.')
flags.DEFINE_string('part', None, 'Internal: run one part in this process.')

STEPS_PER_EPOCH = 60_000 // 128


def _load_mnist(manual_dir):
  """The IDX files as {'x', 'y'} per split (no TFDS: as the peers read them)."""
  from trainkit.data.sources import tfds_prepare as offline_data  # pylint: disable=g-import-not-at-top
  return [dict(zip(('x', 'y'), offline_data.load_idx_split(manual_dir, s)))
          for s in ('train', 'test')]


def _median_time(fn, repeats):
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def _trainer_state(dtype='float32'):
  """The trainer's train state of the default config, computing in `dtype`."""
  # pylint: disable=g-import-not-at-top
  import jax
  from configs import default
  import train
  from trainkit.models import mlp as models
  from trainkit.tasks import classification
  # pylint: enable=g-import-not-at-top
  config = default.get_config()
  config.dtype = dtype
  model = models.create_model(config.model, classification.Classification(10), dtype=dtype)
  return train.create_train_state(jax.random.key(0), config, model, (28, 28, 1),
                                  STEPS_PER_EPOCH)


def _step_runs() -> dict:
  """{result: (run, steps)}: the trainer's and the minimal step's workloads.

  `run(steps)` times `steps` single steps; a run with steps None is an
  epoch in one call, `run()`.
  """
  # pylint: disable=g-import-not-at-top
  import jax
  import numpy as np
  from benchmarks import baselines
  import train
  from trainkit.training import step as step_lib
  # pylint: enable=g-import-not-at-top
  rng = np.random.default_rng(0)
  images = jax.device_put(rng.integers(0, 256, (60_000, 28, 28, 1), dtype=np.uint8))
  labels = jax.device_put(rng.integers(0, 10, (60_000,), dtype=np.int32))
  batch = {'x': images[:128], 'y': labels[:128]}
  index = {'index': jax.device_put(
      rng.permutation(60_000)[:STEPS_PER_EPOCH * 128].reshape(STEPS_PER_EPOCH, 128)
      .astype(np.int32))}
  dropout_rng = jax.random.key(1)

  holder = {'trainer': _trainer_state(), 'minimal': baselines.minimal_state(
      STEPS_PER_EPOCH, 15), 'bf16': _trainer_state('bfloat16')}

  def trainer_steps(n):
    for _ in range(n):
      holder['trainer'], m = train.train_step(holder['trainer'], batch, dropout_rng)
    jax.block_until_ready(m)

  def minimal_steps(n):
    for _ in range(n):
      holder['minimal'], m = baselines.minimal_step(
          holder['minimal'], batch['x'], batch['y'], dropout_rng)
    jax.block_until_ready(m)

  def trainer_epoch(key='trainer'):
    holder[key], m = step_lib.train_steps(holder[key], index, dropout_rng,
                                       STEPS_PER_EPOCH, {'x': images, 'y': labels})
    jax.block_until_ready(m)

  def minimal_epoch():
    holder['minimal'], m = baselines.minimal_epoch(holder['minimal'], images, labels,
                                                   dropout_rng)
    jax.block_until_ready(m)

  weights = baselines.matmul_weights()

  def matmul_epoch():
    jax.block_until_ready(baselines.matmul_epoch(images[:STEPS_PER_EPOCH * 128], weights))

  return {'trainer_step_s': (trainer_steps, 200), 'minimal_step_s': (minimal_steps, 200),
          'trainer_epoch_s': (trainer_epoch, None), 'minimal_epoch_s': (minimal_epoch, None),
          'trainer_bf16_epoch_s': (lambda: trainer_epoch('bf16'), None),
          'matmul_epoch_s': (matmul_epoch, None)}


def part_steps():
  """Per-step speed of the trainer's step against the minimal step."""
  import jax  # pylint: disable=g-import-not-at-top
  runs = _step_runs()
  for run, steps in runs.values():
    run(20) if steps else run()  # Compile and warm up.
  results = {name: [] for name in runs}
  for _ in range(3):  # Interleaved, so drift of the machine hits both alike.
    for name, (run, steps) in runs.items():
      timed = functools.partial(run, steps) if steps else run
      results[name].append(_median_time(timed, 1) / (steps or 1))
  out = {k: statistics.median(v) for k, v in results.items()}
  out['device'] = str(jax.devices()[0].device_kind)
  return out


def part_minimal_loop(manual_dir, epochs):
  from benchmarks import baselines  # pylint: disable=g-import-not-at-top
  train_split, test_split = _load_mnist(manual_dir)
  return {'epochs': baselines.run_minimal_loop(train_split, test_split, epochs)}


def _run_minimal_loop(manual_dir, epochs):
  """The minimal loop in a fresh process, in the trainer's terms."""
  result = _run_part('minimal_loop', f'--manual_dir={manual_dir}', f'--epochs={epochs}')
  runs = result['epochs']
  return {'epoch_s': [e['epoch_s'] for e in runs],
          'to_98_s': next((e['time'] - result['launch_time'] for e in runs
                           if e['accuracy'] >= 0.98), None),
          'wall_s': result['wall_s'], 'eval_accuracy': runs[-1]['accuracy'],
          'first_epoch_s': runs[0]['epoch_s'], 'peak_rss_mb': result['peak_rss_mb']}


def _combine(runs):
  """One summary of repeated runs: medians over runs and steady epochs."""
  median = lambda key: (None if any(r.get(key) is None for r in runs)
                        else statistics.median(r[key] for r in runs))
  steady = [t for r in runs for t in r['epoch_s'][1:]]
  return {**{k: v for k, v in runs[0].items() if isinstance(v, str)}, 'runs': runs,
          'steady_epoch_s': statistics.median(steady) if steady else None,
          'first_epoch_s': median('first_epoch_s'), 'to_98_s': median('to_98_s'),
          'wall_s': median('wall_s'), 'eval_accuracy': min(r['eval_accuracy'] for r in runs),
          'peak_rss_mb': max(r['peak_rss_mb'] for r in runs)}


def part_torch():
  from benchmarks import baselines  # pylint: disable=g-import-not-at-top
  try:
    return baselines.torch_steps_per_s(300)
  except ImportError as e:
    return {'skipped': f'torch not installed ({e})'}


def _run_part(name, *args):
  """Runs one part in a fresh process; returns its JSON, wall time and peak RSS."""
  with tempfile.TemporaryDirectory() as tmp:
    out_path = os.path.join(tmp, 'out.json')
    launch, wall, rss = whole_command.spawn(
        [sys.executable, '-m', 'benchmarks.benchmark', f'--part={name}',
         f'--json={out_path}', *args], os.path.join(tmp, 'log'))
    with open(out_path) as f:
      result = json.load(f)
  result.update(wall_s=wall, peak_rss_mb=rss, launch_time=launch)
  return result


def _run_first():
  """benchmarks/first_command.py in a process of its own; its results."""
  with tempfile.TemporaryDirectory() as directory:
    out = os.path.join(directory, 'first.json')
    runs = ['trainer', 'search'] + (list(whole_command.PEERS)
                                    if shutil.which(FLAGS.peers_python) else [])
    whole_command.spawn(
        [sys.executable, '-m', 'benchmarks.first_command', f'--manual_dir={FLAGS.manual_dir}',
         f'--peers_python={FLAGS.peers_python}', f'--repeats={FLAGS.repeats}',
         f'--runs={",".join(runs)}', f'--json={out}'], os.path.join(directory, 'first.log'))
    with open(out) as f:
      return json.load(f)


def _describe_machine():
  import jax  # pylint: disable=g-import-not-at-top
  device = jax.devices()[0]
  return {'platform': platform.platform(), 'cpus': os.cpu_count(),
          'backend': jax.default_backend(), 'device': device.device_kind,
          'jax': jax.__version__, 'python': platform.python_version()}


def _commands(data_dir, cache_dir):
  """The whole commands to alternate, by name, as the parts ask."""
  manual_dir, epochs = FLAGS.manual_dir, FLAGS.epochs
  runs = {}
  if 'minimal_loop' in FLAGS.parts:
    runs['minimal_loop'] = lambda: _run_minimal_loop(manual_dir, epochs)
  for n in (1, epochs):
    suffix = '' if n == epochs else f'_{n}'
    if 'trainer' in FLAGS.parts:
      runs['trainer' + suffix] = functools.partial(
          whole_command.run_trainer, data_dir, manual_dir, cache_dir, n)
    if 'peers' in FLAGS.parts:
      if not shutil.which(FLAGS.peers_python):
        print(f'peers skipped: no {FLAGS.peers_python} (see benchmarks/requirements-peers.txt)')
        continue
      for peer in whole_command.PEERS:
        runs[peer + suffix] = functools.partial(
            whole_command.run_peer, peer, FLAGS.peers_python, manual_dir, n)
  return runs


def main(argv):
  del argv
  if FLAGS.part:
    start = {'steps': part_steps, 'torch': part_torch,
             'minimal_loop': lambda: part_minimal_loop(FLAGS.manual_dir, FLAGS.epochs)}
    with open(FLAGS.json, 'w') as f:
      json.dump(start[FLAGS.part](), f)
    return
  from trainkit.data.sources import tfds_prepare as offline_data  # pylint: disable=g-import-not-at-top
  data_dir = FLAGS.data_dir or tempfile.mkdtemp(prefix='bench_tfds_')
  offline_data.prepare('mnist', data_dir, FLAGS.manual_dir)  # Not timed.
  cache_dir = tempfile.mkdtemp(prefix='bench_cache_')
  results = {'machine': _describe_machine()}
  for name in ('steps', 'torch'):
    if name in FLAGS.parts:
      print(f'running {name} ...', flush=True)
      results[name] = _run_part(name)
  if 'trainer' in FLAGS.parts:
    print('running trainer_cold (1 epoch, empty caches) ...', flush=True)
    results['trainer_cold'] = whole_command.run_trainer(
        data_dir, FLAGS.manual_dir, tempfile.mkdtemp(prefix='bench_cold_'), 1)
    # The run above warmed nothing of `cache_dir`: warm it, untimed.
    whole_command.run_trainer(data_dir, FLAGS.manual_dir, cache_dir, 1)
  runs = _commands(data_dir, cache_dir)
  collected = {name: [] for name in runs}
  for repeat in range(FLAGS.repeats):
    for name, run in runs.items():
      print(f'running {name} ({repeat + 1}/{FLAGS.repeats}) ...', flush=True)
      collected[name].append(run())
  results.update({name: _combine(r) for name, r in collected.items()})
  if 'first' in FLAGS.parts:
    print('running first (empty homes) ...', flush=True)
    results['first'] = _run_first()
  if 'latency' in FLAGS.parts:
    print('running latency ...', flush=True)
    results['latency'] = whole_command.trainer_latencies(data_dir, FLAGS.manual_dir,
                                                         cache_dir)
  table = tables.table(results, STEPS_PER_EPOCH)
  print(json.dumps(results['machine']))
  print(table)
  if FLAGS.json:
    with open(FLAGS.json, 'w') as f:
      json.dump(results, f, indent=2)


if __name__ == '__main__':
  app.run(main)
