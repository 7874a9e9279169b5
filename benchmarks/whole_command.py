"""Whole commands timed from launch to exit: the trainer's, and its peers' in their venv.

What a user feels: imports, data loading, compilation, training, evaluation,
checkpoints, plots and exit. Each command runs in a fresh process; its wall
time and peak resident memory come from the operating system.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEERS = {'keras': 'keras_fit.py', 'lightning': 'lightning_fit.py'}


def spawn(cmd, log_path, env=None):
  """Runs `cmd` from the project root; returns (launch time, wall s, peak RSS MB)."""
  launch = time.time()
  with open(log_path, 'w') as log:
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                            env={**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2', **(env or {})})
    _, status, usage = os.wait4(proc.pid, 0)
  if status:
    with open(log_path) as f:
      raise RuntimeError(f'{" ".join(cmd)} failed:\n{f.read()[-3000:]}')
  return launch, time.time() - launch, usage.ru_maxrss / 1024


def _main_py(workdir, data_dir, cache_dir, *args):
  # As the peers train: on all 60,000 training images, the test split
  # evaluated after each epoch (the default holds 5,000 out for validation).
  return [sys.executable, os.path.join(ROOT, 'main.py'), '--config=configs/default.py',
          f'--workdir={workdir}', f'--config.data_dir={data_dir}',
          f'--config.cache_dir={cache_dir}', '--config.progress=off',
          '--config.train_split=train', '--config.validation_split=', *args]


def run_trainer(data_dir, manual_dir, cache_dir, epochs, workdir=None):
  """The default config for `epochs` from an empty workdir, as a user runs it."""
  own = workdir is None
  workdir = workdir or tempfile.mkdtemp(prefix='bench_trainer_')
  launch, wall, rss = spawn(
      _main_py(workdir, data_dir, cache_dir, f'--config.manual_dir={manual_dir}',
               f'--config.num_epochs={epochs}'), os.path.join(workdir, 'stdout.log'))
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    events = [json.loads(line) for line in f]
  with open(os.path.join(workdir, 'summary.json')) as f:
    summary = json.load(f)
  if own:
    shutil.rmtree(workdir)
  evals = [e for e in events if e['split'] == 'eval']
  epoch_s = [e['metrics']['wall_s'] for e in events if e['split'] == 'epoch']
  to_98 = next((e['time'] - launch for e in evals if e['metrics']['accuracy'] >= 0.98),
               None)
  return {'epoch_s': epoch_s, 'first_epoch_s': epoch_s[0], 'to_98_s': to_98,
          'wall_s': wall, 'eval_accuracy': summary['eval_accuracy'], 'peak_rss_mb': rss}


def trainer_latencies(data_dir, manual_dir, cache_dir, repeats=3):
  """Median wall time of a finished re-run, --mode=eval and --mode=predict of one image."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory() as workdir:
    run_trainer(data_dir, manual_dir, cache_dir, 1, workdir=workdir)
    image = os.path.join(workdir, 'digit.png')
    digit = np.zeros((28, 28), np.uint8)
    digit[4:24, 13:16] = 255  # A one.
    Image.fromarray(digit).save(image)
    commands = {
        'rerun_s': _main_py(workdir, data_dir, cache_dir, '--config.num_epochs=1'),
        'eval_s': _main_py(workdir, data_dir, cache_dir, '--config.num_epochs=1',
                           '--mode=eval'),
        'predict_s': _main_py(workdir, data_dir, cache_dir, '--config.num_epochs=1',
                              '--mode=predict', f'--input={image}'),
    }
    times = {name: [] for name in commands}
    for _ in range(repeats):
      for name, cmd in commands.items():
        times[name].append(spawn(cmd, os.path.join(workdir, f'{name}.log'))[1])
  return {name: float(np.median(t)) for name, t in times.items()}


def run_peer(name, python, idx_dir, epochs, env=None):
  """A peer's script (benchmarks/peers/) in its venv: wall time, accuracy, epochs."""
  with tempfile.TemporaryDirectory() as workdir:
    log = os.path.join(workdir, 'stdout.log')
    _, wall, rss = spawn(
        [python, os.path.join(ROOT, 'benchmarks', 'peers', PEERS[name]),
         f'--idx_dir={idx_dir}', f'--epochs={epochs}', f'--workdir={workdir}'], log,
        env={'KERAS_BACKEND': 'jax', **(env or {})})
    with open(log) as f:
      line = next(line for line in f if line.startswith('RESULT '))
  result = json.loads(line[len('RESULT '):])
  return {'framework': result['framework'], 'eval_accuracy': result['accuracy'],
          'epoch_s': result['epoch_s'], 'first_epoch_s': result['epoch_s'][0],
          'wall_s': wall, 'peak_rss_mb': rss}
