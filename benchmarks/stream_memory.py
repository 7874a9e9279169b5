r"""Peak memory of streamed training as the dataset grows: 1x, 4x and 16x MNIST.

  python -m benchmarks.stream_memory --manual_dir=../shared/data/mnist \
      [--scales=1,4,16] [--json=out.json]

For each scale, MNIST's training images are repeated (each copy with its
pixels rolled, so copies differ) into IDX files of that many examples, which
are prepared as a TFDS dataset (not timed) and trained on with
`input_mode=stream` for one epoch, or as many as make `--min_steps` (so a small
dataset runs as long as the others and its workers reach their steady size).
The resident memory of the training process and of its Grain workers is
sampled from /proc every 0.1 s; host memory must not grow with the dataset,
since nothing holds more than a few batches of it.
"""

import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags
import numpy as np

from benchmarks import whole_command
from trainkit.data.sources import tfds_prepare as offline_data

FLAGS = flags.FLAGS
flags.DEFINE_string('manual_dir', os.path.join(whole_command.ROOT, '..', 'shared', 'data',
                                               'mnist'), 'The MNIST IDX files.')
flags.DEFINE_list('scales', ['1', '4', '16'], 'Training-set sizes, in MNISTs.')
flags.DEFINE_string('json', None, 'Write the results here as JSON.')
flags.DEFINE_integer('min_steps', 1875, 'Train each scale for at least this many steps.')
flags.DEFINE_string('work', None, 'Where the generated datasets go (default: a temporary dir).')
flags.DEFINE_string('train_split', 'train[:95%]', 'The streamed training split.')
flags.DEFINE_string('validation_split', 'train[95%:]',
                    'Evaluated every epoch, streamed too (grows with the scale).')
flags.DEFINE_float('every_s', 0.05, 'Sampling period of the resident memory.')


def _scaled_idx(directory, scale):
  """IDX files with `scale` copies of MNIST's training split (the test split as is)."""
  os.makedirs(directory, exist_ok=True)
  images, labels = offline_data.load_idx_split(FLAGS.manual_dir, 'train')
  copies = [np.roll(images[..., 0], shift=k, axis=2) for k in range(scale)]
  image_file, label_file = offline_data.IDX_FILES['train']
  offline_data.write_idx(os.path.join(directory, image_file), np.concatenate(copies))
  offline_data.write_idx(os.path.join(directory, label_file), np.tile(labels, scale))
  for name in offline_data.IDX_FILES['test']:
    shutil.copy(os.path.join(FLAGS.manual_dir, name), directory)


def _rss_mb(pid, field='VmRSS'):
  """Resident MB of `pid` (`field` 'RssAnon': its own memory, not file pages)."""
  try:
    with open(f'/proc/{pid}/status') as f:
      return next(int(line.split()[1]) for line in f if line.startswith(field)) / 1024
  except (OSError, StopIteration):
    return 0.0


def _children(pid):
  """Every child process of `pid`, whichever of its threads started it."""
  children = []
  for task in glob.glob(f'/proc/{pid}/task/*/children'):
    try:
      with open(task) as f:
        children += [int(c) for c in f.read().split()]
    except OSError:
      pass
  return children


def _train_streamed(idx_dir, data_dir, workdir, epochs):
  """One epoch streamed; peak RSS of the trainer, of its largest worker, and of all."""
  cmd = [sys.executable, os.path.join(whole_command.ROOT, 'main.py'),
         '--config=configs/default.py', f'--workdir={workdir}',
         f'--config.manual_dir={idx_dir}', f'--config.data_dir={data_dir}',
         '--config.input_mode=stream', f'--config.num_epochs={epochs}', '--config.plots=False',
         f'--config.train_split={FLAGS.train_split}',
         f'--config.validation_split={FLAGS.validation_split}',
         '--config.progress=off', '--config.cache_dir=']
  shutil.rmtree(workdir, ignore_errors=True)  # From scratch, not a re-evaluation.
  start = time.time()
  with open(os.path.join(workdir + '.log'), 'w') as log:
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                            cwd=whole_command.ROOT)
    peak = dict.fromkeys(('trainer_mb', 'worker_mb', 'total_mb', 'trainer_anon_mb',
                           'worker_anon_mb', 'total_anon_mb'), 0.0)
    while proc.poll() is None:
      for suffix, field in (('', 'VmRSS'), ('_anon', 'RssAnon')):
        own = _rss_mb(proc.pid, field)
        workers = [_rss_mb(c, field) for c in _children(proc.pid)]
        peak[f'trainer{suffix}_mb'] = max(peak[f'trainer{suffix}_mb'], own)
        peak[f'worker{suffix}_mb'] = max([peak[f'worker{suffix}_mb'], *workers])
        peak[f'total{suffix}_mb'] = max(peak[f'total{suffix}_mb'], own + sum(workers))
      time.sleep(FLAGS.every_s)
  if proc.returncode:
    raise RuntimeError(f'{" ".join(cmd)} failed; see {workdir}.log')
  with open(os.path.join(workdir, 'summary.json')) as f:
    summary = json.load(f)
  return {**peak, 'wall_s': time.time() - start, 'steps': summary['step'],
          'eval_accuracy': summary['eval_accuracy']}


def main(argv):
  del argv
  work = FLAGS.work or tempfile.mkdtemp(prefix='stream_memory_')
  results = {}
  for scale in map(int, FLAGS.scales):
    idx_dir, data_dir = (os.path.join(work, f'{scale}x', d) for d in ('idx', 'tfds'))
    print(f'preparing {scale}x MNIST ({scale * 60_000} training examples) ...', flush=True)
    _scaled_idx(idx_dir, scale)
    offline_data.prepare('mnist', data_dir, idx_dir)
    print(f'training on {scale}x, streamed ...', flush=True)
    epochs = -(-FLAGS.min_steps // (scale * 57_000 // 128))
    results[f'{scale}x'] = _train_streamed(idx_dir, data_dir,
                                           os.path.join(work, f'{scale}x', 'run'), epochs)
    print(json.dumps(results[f'{scale}x']), flush=True)
  base = results[f'{FLAGS.scales[0]}x']
  print('| training set | steps | peak RSS trainer (MB) | largest worker (MB) | '
        'all processes (MB) | vs smallest | all, anonymous (MB) | vs smallest | wall (s) |')
  print('|---|---|---|---|---|---|---|---|---|')
  for name, r in results.items():
    print(f'| {name} MNIST | {r["steps"]} | {r["trainer_mb"]:.0f} | {r["worker_mb"]:.0f} | '
          f'{r["total_mb"]:.0f} | {r["total_mb"] / base["total_mb"]:.3f} | '
          f'{r["total_anon_mb"]:.0f} | {r["total_anon_mb"] / base["total_anon_mb"]:.3f} | '
          f'{r["wall_s"]:.1f} |')
  if FLAGS.json:
    with open(FLAGS.json, 'w') as f:
      json.dump(results, f, indent=2)


if __name__ == '__main__':
  app.run(main)
