r"""The first command on a new machine, from an empty home, beside Keras 3's and Lightning's.

  python -m benchmarks.first_command --manual_dir=../shared/data/mnist \
      [--repeats=3] [--json=out.json]

Every command runs with HOME set to a new, empty folder: no TFDS data dir, no
decoded splits, no compiled programs, no matplotlib font cache. Timed from
launch to exit, alternated `--repeats` times, each round in another order
(rotated), so a slow spell of the shared machine, or a warm page cache left
by the command before, hits all alike:

  trainer     the README's command with manual_dir, 1 epoch, on the peers'
              workload: `main.py --config=configs/default.py --workdir=W
              --config.manual_dir=M --config.num_epochs=1
              --config.train_split=train --config.validation_split=` (all
              60,000 training images, the test split evaluated after the
              epoch, as the peers do; prepares MNIST from the IDX files,
              trains, evaluates, saves, plots);
  keras       Keras 3 `fit` (JAX backend) on the same IDX files, 1 epoch
              (benchmarks/peers/, in the peers' venv, see
              benchmarks/requirements-peers.txt);
  lightning   PyTorch Lightning, the same;
  trainer_again  the trainer's command once more in the home its first run
              filled (the second command a user types);
  search      a search's first command: `sweep.py` with the example search
              (configs/sweeps/search.py) cut to `--search_trials` trials of 1
              epoch, from an empty home; `search_again` is the same command in
              the home it filled. The difference is the cold start the trials
              share.

Prints the figures, the issue's targets as checks, and writes them as JSON.
`python -m benchmarks.benchmark` runs it as its part `first` and puts its
rows in its table.
"""

import json
import os
import shutil
import statistics
import sys
import tempfile

from absl import app
from absl import flags

from benchmarks import tables
from benchmarks import whole_command

FLAGS = flags.FLAGS
flags.DEFINE_string('manual_dir', os.path.join(whole_command.ROOT, '..', 'shared', 'data',
                                               'mnist'), 'The MNIST IDX files.')
flags.DEFINE_string('peers_python', os.path.join(whole_command.ROOT, '.venv-peers', 'bin',
                                                 'python'),
                    'The Python of the venv with benchmarks/requirements-peers.txt.')
flags.DEFINE_integer('repeats', 3, 'Runs of each command, alternated.')
flags.DEFINE_integer('search_trials', 4, "Trials of the search's first command.")
flags.DEFINE_list('runs', ['trainer', 'keras', 'lightning', 'search'], 'What to run.')
flags.DEFINE_string('json', None, 'Write the results here as JSON.')

_SEARCH_FILE = '''
import dataclasses
from configs.sweeps import search as example
get_config = example.get_config
def get_search():
  return dataclasses.replace(example.get_search(), num_trials={trials}, pruner='none')
'''


def _trainer(home: str) -> dict:
  """The README's command, 1 epoch, with `home` as HOME."""
  workdir = tempfile.mkdtemp(prefix='bench_first_')
  cmd = [sys.executable, os.path.join(whole_command.ROOT, 'main.py'),
         '--config=configs/default.py', f'--workdir={workdir}',
         f'--config.manual_dir={FLAGS.manual_dir}', '--config.num_epochs=1',
         '--config.train_split=train', '--config.validation_split=']
  try:
    _, wall, rss = whole_command.spawn(cmd, os.path.join(home, 'trainer.log'),
                                       env={'HOME': home})
    with open(os.path.join(workdir, 'summary.json')) as f:
      accuracy = json.load(f)['test_accuracy']
  finally:
    shutil.rmtree(workdir)
  return {'wall_s': wall, 'peak_rss_mb': rss, 'test_accuracy': accuracy}


def _search(home: str) -> dict:
  """A search of `--search_trials` 1-epoch trials, with `home` as HOME."""
  directory = tempfile.mkdtemp(prefix='bench_search_')
  search_file = os.path.join(directory, 'search.py')
  with open(search_file, 'w') as f:
    f.write(_SEARCH_FILE.format(trials=FLAGS.search_trials))
  cmd = [sys.executable, os.path.join(whole_command.ROOT, 'sweep.py'),
         f'--config={search_file}', f'--workdir={os.path.join(directory, "w")}',
         f'--config.manual_dir={FLAGS.manual_dir}', '--config.num_epochs=1']
  try:
    _, wall, rss = whole_command.spawn(cmd, os.path.join(home, 'search.log'),
                                       env={'HOME': home})
  finally:
    shutil.rmtree(directory)
  return {'wall_s': wall, 'peak_rss_mb': rss}


def _peer(name: str, home: str) -> dict:
  return whole_command.run_peer(name, FLAGS.peers_python, FLAGS.manual_dir, 1,
                                env={'HOME': home})


def _one_round(first: int = 0) -> dict:
  """Each command once, each from a home of its own (then again where they ran).

  `first`: the round's first command (the order is rotated from round to round).
  """
  out = {}
  order = FLAGS.runs[first % len(FLAGS.runs):] + FLAGS.runs[:first % len(FLAGS.runs)]
  for name in order:
    home = tempfile.mkdtemp(prefix='bench_home_')
    try:
      print(f'running {name} ...', flush=True)
      if name == 'trainer':
        out['trainer'] = _trainer(home)
        out['trainer_again'] = _trainer(home)
      elif name == 'search':
        out['search'] = _search(home)
        out['search_again'] = _search(home)
      else:
        out[name] = _peer(name, home)
    finally:
      shutil.rmtree(home)
  return out


def main(argv):
  del argv
  if {'keras', 'lightning'} & set(FLAGS.runs) and not shutil.which(FLAGS.peers_python):
    raise app.UsageError(f'no {FLAGS.peers_python}: see benchmarks/requirements-peers.txt')
  rounds = [_one_round(first=i) for i in range(FLAGS.repeats)]
  median = {name: statistics.median(r[name]['wall_s'] for r in rounds) for name in rounds[0]}
  results = {'repeats': rounds, 'median_wall_s': median}
  for name, wall in median.items():
    runs = ', '.join(f'{r[name]["wall_s"]:.2f}' for r in rounds)
    print(f'{name:14s} {wall:7.2f} s  (runs: {runs})')
  if 'search' in median:
    print(f'search cold start shared by its trials: '
          f'{median["search"] - median["search_again"]:.2f} s')
  for text, ok in tables.checks({'first': results}):
    print(f'{"PASS" if ok else "FAIL"}: {text}')
  if FLAGS.json:
    with open(FLAGS.json, 'w') as f:
      json.dump(results, f, indent=2)


if __name__ == '__main__':
  app.run(main)
