r"""What MLflow tracking costs a run: epochs with trackers='mlflow' against without.

  python -m benchmarks.tracking [--manual_dir=../shared/data/mnist] [--epochs=8] \
      [--pairs=3] [--json=out.json]

The README's MNIST command (config/default.py, device-resident data) is run
`--pairs` times with tracking off and on, alternated (off-on, then on-off, ...)
so that a drift of this shared machine falls on both alike; each run is a
fresh process with a fresh workdir, so every tracked run creates its default
store (a SQLite file in the workdir). From each run's metrics.jsonl: the first
epoch and epochs 2-3 (MLflow's start-up in its process, about 4 s of CPU: its
import and the new store's schema, overlaps the first epoch on 2 cores), and
the steady epochs 4 and later (only the sends); and the whole command. Then
one run against a server that takes connections and never answers: what it
costs the whole command.

And the same run, alternated: one tracked run of `--alternated_epochs` whose
MLflow process is stopped (SIGSTOP) in every odd epoch from epoch 5 and runs
in every even one, which then sends the stopped epoch's metrics too: the even
epochs' time against the odd ones' is what tracking costs an epoch, with the
machine's drift on both sides alike.
"""

import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

from benchmarks import whole_command
from trainkit.data.sources import tfds_prepare as offline_data

FLAGS = flags.FLAGS
flags.DEFINE_string('manual_dir', os.path.join(whole_command.ROOT, '..', 'shared', 'data',
                                               'mnist'), 'The MNIST IDX files.')
flags.DEFINE_integer('epochs', 8, 'Epochs per run.')
flags.DEFINE_integer('pairs', 3, 'Runs with tracking off and on, each.')
flags.DEFINE_integer('alternated_epochs', 20, 'Epochs of the run with MLflow alternated.')
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


def _worker_pids() -> list:
  """This process's MLflow worker processes (trainkit/tracking/mlflow_worker.py)."""
  found = []
  for pid in os.listdir('/proc'):
    try:
      with open(f'/proc/{pid}/cmdline', 'rb') as f:
        command = f.read()
      with open(f'/proc/{pid}/stat') as f:
        parent = int(f.read().rsplit(')', 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
      continue
    if parent == os.getpid() and b'mlflow_worker.py' in command:
      found.append(int(pid))
  return found


def _alternated_in_one_run(work) -> dict:
  """One tracked run whose MLflow process is stopped in odd epochs from epoch 5 on.

  In those the process is stopped (SIGSTOP): what the trainer logs waits in
  its pipe, and the next (even) epoch, in which it runs, sends that too. Epochs side by
  side in one process: the machine's drift falls on both alike.
  """
  import train  # pylint: disable=g-import-not-at-top
  from configs import default  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  config.update(dict(manual_dir=FLAGS.manual_dir, data_dir=os.path.join(work, 'tfds'),
                     cache_dir=os.path.join(work, 'cache'), num_epochs=FLAGS.alternated_epochs,
                     plots=False, progress='off', trackers='mlflow'))
  workdir = os.path.join(work, 'alternated')
  shutil.rmtree(workdir, ignore_errors=True)

  def toggle(epoch, metrics):  # After epoch `epoch`'s evaluation: how epoch + 1 runs.
    del metrics
    stop = epoch >= 4 and epoch % 2 == 0 and epoch < config.num_epochs
    for pid in _worker_pids():
      os.kill(pid, signal.SIGSTOP if stop else signal.SIGCONT)
  train.train_and_evaluate(config, workdir, epoch_hook=toggle)
  walls = {}
  with open(os.path.join(workdir, 'model.json')) as f:
    steps_per_epoch = json.load(f)['steps_per_epoch']  # The run's own, not assumed.
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    for line in f:
      record = json.loads(line)
      if record['split'] == 'epoch':
        walls[record['step'] // steps_per_epoch] = record['metrics']['wall_s']
  # The hook after epoch 4 stops it for epoch 5: stopped in odd epochs, running in even.
  on = [w for e, w in walls.items() if e > 5 and e % 2 == 0]
  off = [w for e, w in walls.items() if e > 4 and e % 2 == 1]
  return {'epochs': walls, 'on_s': statistics.median(on), 'off_s': statistics.median(off),
          'ratio': statistics.median(on) / statistics.median(off)}


def main(argv):
  del argv
  work = FLAGS.work or tempfile.mkdtemp(prefix='tracking_')
  offline_data.prepare('mnist', os.path.join(work, 'tfds'), FLAGS.manual_dir)
  _run(work, 'warmup')  # Fills the decoded-data and compilation caches.
  alternated = _alternated_in_one_run(work)
  print(f'one run, epochs 5 and later: MLflow running (even epochs) {alternated["on_s"]:.3f} '
        f's, stopped (odd) {alternated["off_s"]:.3f} s: {alternated["ratio"]:.3f}x', flush=True)
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
  def figures(epochs: list, whole: list) -> dict:
    return {'first_epoch_s': statistics.median(e[0] for e in epochs),
            'epochs_2_3_s': statistics.median(x for e in epochs for x in e[1:3]),
            'steady_epoch_s': statistics.median(x for e in epochs for x in e[3:]),
            'whole_s': statistics.median(whole)}
  results = {which: figures([e for e, _ in got], [t for _, t in got])
             for which, got in runs.items()}
  results['silent_server'] = figures([silent_epochs], [silent_took])
  off = results['off']
  print('| tracking | epoch 1 (s) | epochs 2-3 (s) | vs off | steady epoch, 4+ (s) | vs off | '
        'whole command (s) | vs off |')
  print('|---|---|---|---|---|---|---|---|')
  for name, r in results.items():
    print(f'| {name} | {r["first_epoch_s"]:.3f} | {r["epochs_2_3_s"]:.3f} | '
          f'{r["epochs_2_3_s"] / off["epochs_2_3_s"]:.3f} | {r["steady_epoch_s"]:.3f} | '
          f'{r["steady_epoch_s"] / off["steady_epoch_s"]:.3f} | {r["whole_s"]:.1f} | '
          f'{r["whole_s"] / off["whole_s"]:.3f} |')
  print(f'| one run, alternated (epochs 5+) | | | | {alternated["on_s"]:.3f} | '
        f'{alternated["ratio"]:.3f} (vs {alternated["off_s"]:.3f} s stopped) | | |')
  if FLAGS.json:
    with open(FLAGS.json, 'w') as f:
      json.dump({**results, 'runs': runs, 'alternated': alternated}, f, indent=2)


if __name__ == '__main__':
  app.run(main)
