r"""What MLflow tracking costs a run: epochs with trackers='mlflow' against without.

  python -m benchmarks.tracking [--manual_dir=../shared/data/mnist] [--epochs=4] \
      [--pairs=3] [--json=out.json]

The README's MNIST command (config/default.py, device-resident data) is run
`--pairs` times with tracking off and on, alternated (off-on, then on-off, ...)
so that a drift of this shared machine falls on both alike; each run is a
fresh process with a fresh workdir, so every tracked run creates its default
store (a SQLite file in the workdir). From each run's metrics.jsonl: the first
epoch (MLflow's import and the store's creation happen in its time, in the
tracking thread) and the steady epochs after it; and the whole command. Then
one run against a server that takes connections and never answers: what it
costs the whole command.
"""

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

from benchmarks import whole_command
from trainkit import offline_data

FLAGS = flags.FLAGS
flags.DEFINE_string('manual_dir', os.path.join(whole_command.ROOT, '..', 'shared', 'data',
                                               'mnist'), 'The MNIST IDX files.')
flags.DEFINE_integer('epochs', 4, 'Epochs per run (the first is reported on its own).')
flags.DEFINE_integer('pairs', 3, 'Runs with tracking off and on, each.')
flags.DEFINE_string('json', None, 'Write the results here as JSON.')
flags.DEFINE_string('work', None, 'Where data and workdirs go (default: a temporary dir).')


def _run(work, name, *overrides):
  """One main.py run in a fresh workdir: (epoch wall times, whole command seconds)."""
  workdir = os.path.join(work, name)
  shutil.rmtree(workdir, ignore_errors=True)
  cmd = [sys.executable, os.path.join(whole_command.ROOT, 'main.py'),
         '--config=configs/default.py', f'--workdir={workdir}',
         f'--config.manual_dir={FLAGS.manual_dir}',
         f'--config.data_dir={os.path.join(work, "tfds")}',
         f'--config.cache_dir={os.path.join(work, "cache")}',
         f'--config.num_epochs={FLAGS.epochs}', '--config.plots=False',
         '--config.progress=off', *overrides]
  start = time.perf_counter()
  with open(workdir + '.log', 'w') as log:
    done = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=whole_command.ROOT,
                          check=False)
  took = time.perf_counter() - start
  if done.returncode:
    raise RuntimeError(f'{" ".join(cmd)} failed; see {workdir}.log')
  epochs = []
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    for line in f:
      record = json.loads(line)
      if record['split'] == 'epoch':
        epochs.append(record['metrics']['wall_s'])
  return epochs, took


def main(argv):
  del argv
  work = FLAGS.work or tempfile.mkdtemp(prefix='tracking_')
  offline_data.prepare('mnist', os.path.join(work, 'tfds'), FLAGS.manual_dir)
  _run(work, 'warmup')  # Fills the decoded-data and compilation caches.
  runs = {'off': [], 'on': []}
  for pair in range(FLAGS.pairs):
    for which in (('off', 'on') if pair % 2 == 0 else ('on', 'off')):
      extra = ['--config.trackers=mlflow'] if which == 'on' else []
      runs[which].append(_run(work, f'{which}_{pair}', *extra))
      epochs, took = runs[which][-1]
      print(f'{which}: epochs {", ".join(f"{e:.3f}" for e in epochs)} s; '
            f'whole {took:.1f} s', flush=True)
  with socket.socket() as silent:  # Takes connections, never answers.
    silent.bind(('127.0.0.1', 0))
    silent.listen(16)
    silent_epochs, silent_took = _run(
        work, 'silent', '--config.trackers=mlflow',
        f'--config.mlflow_uri=http://127.0.0.1:{silent.getsockname()[1]}')
  results = {}
  for which, got in runs.items():
    results[which] = {
        'first_epoch_s': statistics.median(e[0] for e, _ in got),
        'steady_epoch_s': statistics.median(x for e, _ in got for x in e[1:]),
        'whole_s': statistics.median(t for _, t in got)}
  results['silent_server'] = {'first_epoch_s': silent_epochs[0],
                              'steady_epoch_s': statistics.median(silent_epochs[1:]),
                              'whole_s': silent_took}
  off = results['off']
  print('| tracking | first epoch (s) | steady epoch (s) | vs off | whole command (s) | '
        'vs off |')
  print('|---|---|---|---|---|---|')
  for name, r in results.items():
    print(f'| {name} | {r["first_epoch_s"]:.3f} | {r["steady_epoch_s"]:.3f} | '
          f'{r["steady_epoch_s"] / off["steady_epoch_s"]:.3f} | {r["whole_s"]:.1f} | '
          f'{r["whole_s"] / off["whole_s"]:.3f} |')
  if FLAGS.json:
    with open(FLAGS.json, 'w') as f:
      json.dump({**results, 'runs': runs}, f, indent=2)


if __name__ == '__main__':
  app.run(main)
