"""A pruned search against the grid over the same ranges: accuracy, epochs, wall time.

  python -m benchmarks.search --data_dir=DIR [--seeds=0,1,2] [--replicates=3]
      [--json=out.json]

Both are whole `sweep.py` commands on real MNIST, one after the other on this
machine, each from an empty sweep directory and cache directory: the example search
(configs/sweeps/search.py: TPE + Hyperband) and the 27-point grid of the same
space (3 values a dimension, every trial trained its full 5 epochs). Reported:
the best validation accuracy of each, the member-epochs each trained, their
wall times, and the search's share of the grid's epochs and time. With several
`--seeds`, the pair runs once per seed (the training seed and the sampler's), and
the mean of each figure is reported too: one validation accuracy has a standard
error near 0.17 points, and the best of 27 noisy grid points is biased upwards.
"""

import csv
import json
import os
import shutil
import sys
import tempfile

from absl import app
from absl import flags

from benchmarks import whole_command

FLAGS = flags.FLAGS
flags.DEFINE_string('manual_dir', os.path.join(whole_command.ROOT, '..', 'shared', 'data',
                                               'mnist'), 'The MNIST IDX files.')
flags.DEFINE_string('data_dir', None, 'TFDS data dir (MNIST prepared there once).')
flags.DEFINE_string('json', None, 'Write the results here as JSON.')
flags.DEFINE_list('runs', ['search', 'grid'], 'Which commands to run.')
flags.DEFINE_string('changes', '', 'dataclasses.replace arguments for the search, '
                    'e.g. "num_trials=24, reduction_factor=5" (to try other settings).')
flags.DEFINE_string('keep', None, 'Keep the sweep directories here.')
flags.DEFINE_list('seeds', ['0'], 'Run the pair once per seed (config.seed and the '
                  "search's sampler seed).")
flags.DEFINE_integer('replicates', 0, "Then train each pair's two best configurations "
                     'with this many other seeds (1000, 1001, ...): how good the '
                     'configuration each picked is, rather than its one lucky or unlucky draw.')

_SWEEP_FILE = '''
import dataclasses
from configs.sweeps import search as example
get_config = example.get_config
def get_search():
  return dataclasses.replace(example.get_search(), seed={seed}, {changes})
'''
GRID = "sampler='grid', pruner='none'"
_REPLICATE_FILE = '''
from configs.sweeps import search as example
from trainkit.search import space as search_space
def get_config():
  return search_space.trial_config(example.get_config(), {params!r}, 'accuracy')
def get_sweep():
  return [{{'seed': seed}} for seed in {seeds!r}]
'''


def run(name: str, seed: int, data_dir: str, manual_dir: str, directory: str) -> dict:
  """One whole sweep.py command; its figures from the sweep summary."""
  changes = GRID if name == 'grid' else FLAGS.changes
  name = f'{name}_seed{seed}'
  sweep_file = os.path.join(directory, f'{name}_sweep.py')
  with open(sweep_file, 'w') as f:
    f.write(_SWEEP_FILE.format(seed=seed, changes=changes))
  workdir = os.path.join(directory, name)
  cmd = [sys.executable, os.path.join(whole_command.ROOT, 'sweep.py'),
         f'--config={sweep_file}', f'--workdir={workdir}', f'--config.data_dir={data_dir}',
         f'--config.manual_dir={manual_dir}', f'--config.seed={seed}',
         # A cache of its own, empty at the start, as a user's first command has.
         f'--config.cache_dir={os.path.join(directory, name + "_cache")}']
  _, wall, rss = whole_command.spawn(cmd, os.path.join(directory, f'{name}.log'))
  with open(os.path.join(workdir, 'sweep_summary.csv')) as f:
    rows = list(csv.DictReader(f))
  complete = [r for r in rows if r['state'] == 'complete']
  best = max(complete, key=lambda r: float(r['value']))
  return {'trials': len(rows),
          'states': {s: sum(r['state'] == s for r in rows) for s in {r['state'] for r in rows}},
          'member_epochs': sum(float(r['epochs']) for r in rows),
          'best_validation_accuracy': float(best['value']),
          'best_params': json.loads(best['params']),
          'best_test_accuracy': float(best['test_accuracy']),
          'wall_s': wall, 'peak_rss_mb': rss}


def replicate(name: str, params: dict, data_dir: str, manual_dir: str,
              directory: str) -> list:
  """The best validation accuracy of `params` trained with FLAGS.replicates other seeds."""
  sweep_file = os.path.join(directory, f'{name}_replicates.py')
  with open(sweep_file, 'w') as f:
    f.write(_REPLICATE_FILE.format(params=params,
                                   seeds=[1000 + k for k in range(FLAGS.replicates)]))
  workdir = os.path.join(directory, f'{name}_replicates')
  cmd = [sys.executable, os.path.join(whole_command.ROOT, 'sweep.py'),
         f'--config={sweep_file}', f'--workdir={workdir}', f'--config.data_dir={data_dir}',
         f'--config.manual_dir={manual_dir}',
         f'--config.cache_dir={os.path.join(directory, "replicates_cache")}']
  whole_command.spawn(cmd, os.path.join(directory, f'{name}_replicates.log'))
  with open(os.path.join(workdir, 'sweep_summary.csv')) as f:
    return [float(r['best_eval_accuracy']) for r in csv.DictReader(f)]


def _ratios(search: dict, grid: dict) -> dict:
  ratios = {'accuracy_gap_points': 100 * (grid['best_validation_accuracy']
                                          - search['best_validation_accuracy']),
            'epochs_share': search['member_epochs'] / grid['member_epochs'],
            'wall_share': search['wall_s'] / grid['wall_s']}
  if 'replicates' in search:
    mean = lambda r: sum(r['replicates']) / len(r['replicates'])
    ratios['replicated_gap_points'] = 100 * (mean(grid) - mean(search))
  return ratios


def main(argv):
  del argv
  data_dir = FLAGS.data_dir or tempfile.mkdtemp(prefix='bench_tfds_')
  directory = FLAGS.keep or tempfile.mkdtemp(prefix='bench_search_')
  os.makedirs(directory, exist_ok=True)
  results = {}
  try:
    for seed in map(int, FLAGS.seeds):
      for name in FLAGS.runs:
        results.setdefault(seed, {})[name] = run(name, seed, data_dir, FLAGS.manual_dir,
                                                 directory)
        print(name, seed, json.dumps(results[seed][name]), flush=True)
      for name, result in results[seed].items():
        if FLAGS.replicates:
          result['replicates'] = replicate(f'{name}_seed{seed}', result['best_params'],
                                           data_dir, FLAGS.manual_dir, directory)
          print(name, seed, 'replicates', result['replicates'], flush=True)
  finally:
    if not FLAGS.keep:
      shutil.rmtree(directory, ignore_errors=True)
  if {'search', 'grid'} <= set(FLAGS.runs):
    print('| seed | | best validation acc | member-epochs | wall (s) |\n|---|---|---|---|---|')
    for seed, pair in results.items():
      pair['ratios'] = _ratios(pair['search'], pair['grid'])
      for name in ('search', 'grid'):
        r = pair[name]
        print(f'| {seed} | {name} | {r["best_validation_accuracy"]:.2%} | '
              f'{r["member_epochs"]:g} | {r["wall_s"]:.1f} |')
      print(seed, json.dumps(pair['ratios']))
    means = {key: sum(p['ratios'][key] for p in results.values()) / len(results)
             for key in next(iter(results.values()))['ratios']}
    results['mean_ratios'] = means
    print('mean over seeds', json.dumps(means))
  if FLAGS.json:
    with open(FLAGS.json, 'w') as f:
      json.dump(results, f, indent=1)


if __name__ == '__main__':
  app.run(main)
