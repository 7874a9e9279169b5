r"""Speed and memory of the trainer against a minimal loop and PyTorch.

  python -m benchmarks.benchmark --manual_dir=../shared/data/mnist \
      [--json=results.json] [--parts=steps,minimal_loop,trainer,torch]

(from the project root, so that the trainer's modules import).

Each part runs in a fresh subprocess (so start-up times and peak memory are
per part), one after another in one run of this script, and the ratios compare
figures of that run only. The minimal loop and the trainer alternate
`--repeats` times; an epoch time is the median over every epoch but the first
(which compiles) of their runs:

  steps         samples/s of the trainer's train step and of a minimal
                hand-written Flax/Optax step of the same model (per-call and
                scanned over a whole epoch), and the bfloat16 variant;
  minimal_loop  MNIST in memory, each epoch one jitted lax.scan, evaluated
                after each epoch (the yardstick for the trainer's epoch);
  trainer       `main.py --config=configs/default.py` from an empty workdir:
                epoch wall time (input, steps, eval, checkpoint), time from
                process start to 98 % test accuracy and to the end, peak RSS;
  torch         bare PyTorch CPU training steps of the same model (if torch
                is installed: pip install -r benchmarks/requirements.txt).

Prints a table and writes every figure as JSON.
"""

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FLAGS = flags.FLAGS
flags.DEFINE_string('manual_dir', os.path.join(ROOT, '..', 'shared', 'data', 'mnist'),
                    'Folder with the MNIST IDX files (prepared into --data_dir).')
flags.DEFINE_string('data_dir', None, 'TFDS data dir; default: a temporary one.')
flags.DEFINE_list('parts', ['steps', 'minimal_loop', 'trainer', 'torch'], 'What to run.')
flags.DEFINE_string('json', None, 'Write the results here as JSON.')
flags.DEFINE_integer('epochs', 15, 'Epochs of the minimal loop (the default config has 15).')
flags.DEFINE_integer('repeats', 2, 'Runs of the minimal loop and the trainer, alternated.')
flags.DEFINE_string('part', None, 'Internal: run one part in this process.')

STEPS_PER_EPOCH = 60_000 // 128


def _load_mnist(data_dir):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return [tfds.as_numpy(tfds.load('mnist', split=s, batch_size=-1, data_dir=data_dir))
          for s in ('train', 'test')]


def _median_time(fn, repeats):
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def part_steps():
  """Per-step speed of the trainer's step against the minimal step."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from benchmarks import baselines  # pylint: disable=g-import-not-at-top
  from configs import default  # pylint: disable=g-import-not-at-top
  import models  # pylint: disable=g-import-not-at-top
  import train  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(0)
  images = jax.device_put(rng.integers(0, 256, (60_000, 28, 28, 1), dtype=np.uint8))
  labels = jax.device_put(rng.integers(0, 10, (60_000,), dtype=np.int32))
  batch = {'image': images[:128], 'label': labels[:128]}
  index = {'index': jax.device_put(
      rng.permutation(60_000)[:STEPS_PER_EPOCH * 128].reshape(STEPS_PER_EPOCH, 128)
      .astype(np.int32))}
  dropout_rng = jax.random.key(1)

  def trainer_state(dtype='float32'):
    config = default.get_config()
    config.dtype = dtype
    model = models.create_model(config.model, 10, dtype=dtype)
    return train.create_train_state(jax.random.key(0), config, model, (28, 28, 1),
                                    STEPS_PER_EPOCH)

  holder = {'trainer': trainer_state(), 'minimal': baselines.minimal_state(
      STEPS_PER_EPOCH, 15), 'bf16': trainer_state('bfloat16')}

  def trainer_steps(n):
    for _ in range(n):
      holder['trainer'], m = train.train_step(holder['trainer'], batch, dropout_rng)
    jax.block_until_ready(m)

  def minimal_steps(n):
    for _ in range(n):
      holder['minimal'], m = baselines.minimal_step(
          holder['minimal'], batch['image'], batch['label'], dropout_rng)
    jax.block_until_ready(m)

  def trainer_epoch(key='trainer'):
    holder[key], m = train.train_steps(holder[key], index, dropout_rng,
                                       STEPS_PER_EPOCH, {'image': images, 'label': labels})
    jax.block_until_ready(m)

  def minimal_epoch():
    holder['minimal'], m = baselines.minimal_epoch(holder['minimal'], images, labels,
                                                   dropout_rng)
    jax.block_until_ready(m)

  for fn in (lambda: trainer_steps(20), lambda: minimal_steps(20), trainer_epoch,
             minimal_epoch, lambda: trainer_epoch('bf16')):
    fn()  # Compile and warm up.
  n = 200
  results = {'trainer_step_s': [], 'minimal_step_s': [], 'trainer_epoch_s': [],
             'minimal_epoch_s': [], 'trainer_bf16_epoch_s': []}
  for _ in range(3):  # Interleaved, so drift of the machine hits both alike.
    results['trainer_step_s'].append(_median_time(lambda: trainer_steps(n), 1) / n)
    results['minimal_step_s'].append(_median_time(lambda: minimal_steps(n), 1) / n)
    results['trainer_epoch_s'].append(_median_time(trainer_epoch, 1))
    results['minimal_epoch_s'].append(_median_time(minimal_epoch, 1))
    results['trainer_bf16_epoch_s'].append(_median_time(lambda: trainer_epoch('bf16'), 1))
  out = {k: statistics.median(v) for k, v in results.items()}
  out['device'] = str(jax.devices()[0].device_kind)
  return out


def part_minimal_loop(data_dir, epochs):
  from benchmarks import baselines  # pylint: disable=g-import-not-at-top
  train_split, test_split = _load_mnist(data_dir)
  return {'epochs': baselines.run_minimal_loop(train_split, test_split, epochs)}


def _run_minimal_loop(data_dir, epochs):
  """The minimal loop in a fresh process, in the trainer's terms."""
  result = _run_part('minimal_loop', f'--data_dir={data_dir}', f'--epochs={epochs}')
  runs = result['epochs']
  return {'epoch_s': [e['epoch_s'] for e in runs],
          'to_98_s': next((e['time'] - result['launch_time'] for e in runs
                           if e['accuracy'] >= 0.98), None),
          'wall_s': result['wall_s'], 'eval_accuracy': runs[-1]['accuracy'],
          'first_epoch_s': runs[0]['epoch_s'], 'peak_rss_mb': result['peak_rss_mb']}


def _combine(runs):
  """One summary of repeated runs: medians over runs and steady epochs."""
  median = lambda key: (None if any(r[key] is None for r in runs)
                        else statistics.median(r[key] for r in runs))
  return {'runs': runs,
          'steady_epoch_s': statistics.median(
              t for r in runs for t in r['epoch_s'][1:]),
          'first_epoch_s': median('first_epoch_s'), 'to_98_s': median('to_98_s'),
          'wall_s': median('wall_s'), 'eval_accuracy': min(r['eval_accuracy'] for r in runs),
          'peak_rss_mb': max(r['peak_rss_mb'] for r in runs)}


def part_torch():
  from benchmarks import baselines  # pylint: disable=g-import-not-at-top
  try:
    return baselines.torch_steps_per_s(300)
  except ImportError as e:
    return {'skipped': f'torch not installed ({e})'}


def _spawn(cmd, log_path):
  """Runs `cmd` from the repo root; returns (launch time, wall s, peak RSS MB)."""
  launch = time.time()
  with open(log_path, 'w') as log:
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                            env={**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2'})
    _, status, usage = os.wait4(proc.pid, 0)
  if status:
    with open(log_path) as f:
      raise RuntimeError(f'{" ".join(cmd)} failed:\n{f.read()[-3000:]}')
  return launch, time.time() - launch, usage.ru_maxrss / 1024


def _run_part(name, *args):
  """Runs one part in a fresh process; returns its JSON, wall time and peak RSS."""
  with tempfile.TemporaryDirectory() as tmp:
    out_path = os.path.join(tmp, 'out.json')
    launch, wall, rss = _spawn(
        [sys.executable, '-m', 'benchmarks.benchmark', f'--part={name}',
         f'--json={out_path}', *args], os.path.join(tmp, 'log'))
    with open(out_path) as f:
      result = json.load(f)
  result.update(wall_s=wall, peak_rss_mb=rss, launch_time=launch)
  return result


def _run_trainer(data_dir, manual_dir):
  """The default config from an empty workdir, as a user runs it."""
  with tempfile.TemporaryDirectory() as workdir:
    launch, wall, rss = _spawn(
        [sys.executable, os.path.join(ROOT, 'main.py'), '--config=configs/default.py',
         f'--workdir={workdir}', f'--config.data_dir={data_dir}',
         f'--config.manual_dir={manual_dir}'], os.path.join(workdir, 'stdout.log'))
    with open(os.path.join(workdir, 'metrics.jsonl')) as f:
      events = [json.loads(line) for line in f]
    with open(os.path.join(workdir, 'summary.json')) as f:
      summary = json.load(f)
  evals = [e for e in events if e['split'] == 'eval']
  epochs = [e['metrics']['wall_s'] for e in events if e['split'] == 'epoch']
  to_98 = next((e['time'] - launch for e in evals if e['metrics']['accuracy'] >= 0.98),
               None)
  return {'epoch_s': epochs, 'first_epoch_s': epochs[0], 'to_98_s': to_98,
          'wall_s': wall, 'eval_accuracy': summary['eval_accuracy'], 'peak_rss_mb': rss}


def _describe_machine():
  import jax  # pylint: disable=g-import-not-at-top
  device = jax.devices()[0]
  return {'platform': platform.platform(), 'cpus': os.cpu_count(),
          'backend': jax.default_backend(), 'device': device.device_kind,
          'jax': jax.__version__, 'python': platform.python_version()}


def _ratio(a, b):
  return None if a is None or b is None else a / b


def _report(results):
  steps, minimal, trainer, torch = (results.get(k, {}) for k in
                                    ('steps', 'minimal_loop', 'trainer', 'torch'))
  rows = []
  if steps:
    rows += [
        ('trainer step, per call (samples/s)', 128 / steps['trainer_step_s'],
         'minimal Flax step', 128 / steps['minimal_step_s'],
         steps['minimal_step_s'] / steps['trainer_step_s']),
        ('trainer steps, one scan per epoch (samples/s)',
         60_000 // 128 * 128 / steps['trainer_epoch_s'], 'minimal scan epoch',
         60_000 // 128 * 128 / steps['minimal_epoch_s'],
         steps['minimal_epoch_s'] / steps['trainer_epoch_s']),
        ('trainer steps, bfloat16 (samples/s)',
         60_000 // 128 * 128 / steps['trainer_bf16_epoch_s'], 'trainer float32',
         60_000 // 128 * 128 / steps['trainer_epoch_s'],
         steps['trainer_epoch_s'] / steps['trainer_bf16_epoch_s']),
    ]
  if trainer and steps:
    rows.append(('trainer full epoch, median (s)', trainer['steady_epoch_s'],
                 'its steps only (s)', steps['trainer_epoch_s'],
                 _ratio(trainer['steady_epoch_s'], steps['trainer_epoch_s'])))
  if trainer and minimal:
    minimal_epoch = minimal['steady_epoch_s']
    rows += [
        ('trainer full epoch (s)', trainer['steady_epoch_s'],
         'minimal in-memory scan loop epoch (s)', minimal_epoch,
         _ratio(trainer['steady_epoch_s'], minimal_epoch)),
        ('trainer: start to 98 % (s)', trainer['to_98_s'],
         'minimal loop: start to 98 % (s)', minimal['to_98_s'],
         _ratio(trainer['to_98_s'], minimal['to_98_s'])),
        ('trainer: start to end, 15 epochs (s)', trainer['wall_s'],
         'minimal loop (s)', minimal['wall_s'], _ratio(trainer['wall_s'], minimal['wall_s'])),
        ('trainer peak RSS (MB)', trainer['peak_rss_mb'], 'minimal loop peak RSS (MB)',
         minimal['peak_rss_mb'], _ratio(trainer['peak_rss_mb'], minimal['peak_rss_mb'])),
    ]
  if trainer and torch and 'samples_per_s' in torch:
    torch_epoch = STEPS_PER_EPOCH * torch['step_ms'] / 1000
    rows.append(('trainer full epoch (s)', trainer['steady_epoch_s'],
                 f'PyTorch {torch["version"]} bare steps, one epoch (s)', torch_epoch,
                 _ratio(trainer['steady_epoch_s'], torch_epoch)))
  fmt = lambda v: '-' if v is None else f'{v:,.3f}' if v < 100 else f'{v:,.0f}'
  lines = ['| measure | value | compared with | value | ratio |', '|---|---|---|---|---|']
  lines += [f'| {a} | {fmt(b)} | {c} | {fmt(d)} | {fmt(e)} |' for a, b, c, d, e in rows]
  lines.append('\nratio = value / compared value (samples/s: > 1 is faster; '
               'seconds, MB: < 1 is less).')
  if trainer:
    lines.append(f'Trainer default run: test accuracy {trainer["eval_accuracy"]:.4f}, '
                 f'first epoch (compiles) {trainer["first_epoch_s"]:.2f} s.')
  results['checks'] = _checks(results)
  lines += [f'{"PASS" if ok else "FAIL"}: {text}' for text, ok in results['checks']]
  return '\n'.join(lines)


def _checks(results):
  """The speed issue's acceptance figures, from this run."""
  trainer, minimal, torch = (results.get(k, {}) for k in ('trainer', 'minimal_loop', 'torch'))
  checks = []
  if trainer and 'steady_epoch_s' in minimal:
    r = trainer['steady_epoch_s'] / minimal['steady_epoch_s']
    checks.append((f'full trainer epoch / minimal scan-loop epoch = {r:.3f} (<= 1.15)',
                   r <= 1.15))
  if trainer and 'step_ms' in torch:
    r = STEPS_PER_EPOCH * torch['step_ms'] / 1000 / trainer['steady_epoch_s']
    checks.append((f'PyTorch bare-step epoch / trainer full epoch = {r:.2f}x (>= 1.6x)',
                   r >= 1.6))
  if trainer:
    checks.append((f'peak RSS of the default run {trainer["peak_rss_mb"]:.0f} MB (<= 2048)',
                   trainer['peak_rss_mb'] <= 2048))
    checks.append((f'default test accuracy {trainer["eval_accuracy"]:.4f} (>= 0.985)',
                   trainer['eval_accuracy'] >= 0.985))
  return checks


def main(argv):
  del argv
  if FLAGS.part:
    start = {'steps': part_steps, 'torch': part_torch,
             'minimal_loop': lambda: part_minimal_loop(FLAGS.data_dir, FLAGS.epochs)}
    with open(FLAGS.json, 'w') as f:
      json.dump(start[FLAGS.part](), f)
    return
  from trainkit import offline_data  # pylint: disable=g-import-not-at-top
  data_dir = FLAGS.data_dir or tempfile.mkdtemp(prefix='bench_tfds_')
  offline_data.prepare('mnist', data_dir, FLAGS.manual_dir)  # Not timed.
  results = {'machine': _describe_machine()}
  paired = {'minimal_loop': lambda: _run_minimal_loop(data_dir, FLAGS.epochs),
            'trainer': lambda: _run_trainer(data_dir, FLAGS.manual_dir)}
  paired = {k: v for k, v in paired.items() if k in FLAGS.parts}
  for name in FLAGS.parts:
    if name not in paired:
      print(f'running {name} ...', flush=True)
      results[name] = _run_part(name)
  # The loops alternate, so a slow spell of the machine hits both alike.
  runs = {name: [] for name in paired}
  for repeat in range(FLAGS.repeats):
    for name, run in paired.items():
      print(f'running {name} ({repeat + 1}/{FLAGS.repeats}) ...', flush=True)
      runs[name].append(run())
  results.update({name: _combine(r) for name, r in runs.items()})
  table = _report(results)
  print(json.dumps(results['machine']))
  print(table)
  if FLAGS.json:
    with open(FLAGS.json, 'w') as f:
      json.dump(results, f, indent=2)


if __name__ == '__main__':
  app.run(main)
