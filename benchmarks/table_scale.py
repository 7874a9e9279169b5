"""Tables at scale: conversion memory, a device epoch against scikit-learn, streamed memory.

    python -m benchmarks.table_scale [--rows=250000,2000000] [--out=FILE.json]

Generated Parquet tables of 40 columns (30 numbers with 1 % missing, 10
strings of up to 50 levels) and a binary target, at each row count:

- conversion: the peak RSS of a process converting the table into its
  memory-mapped columns (trainkit/data/sources/table_files.py), which reads it one
  row group at a time and so should not grow with the rows;
- a device-mode epoch of `main.py --config=configs/table.py` (hidden 256-256,
  batch 256, float32) on the largest table, against scikit-learn's
  MLPClassifier.partial_fit over the same encoded, standardised arrays (same
  model and batch, one pass = one epoch), in the same run;
- streamed training (`input_mode=stream`, two Grain workers): the peak RSS
  of the trainer and its workers together, sampled every 0.1 s, and the same
  for their anonymous memory (the memory-mapped columns are file pages the
  kernel can drop), each run for the same number of steps.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from benchmarks import stream_memory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CHUNK = 250_000


def generate(path: str, rows: int, seed: int = 0) -> None:
  """A Parquet table of `rows` rows, written a chunk at a time."""
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  from pyarrow import parquet as pq  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  weights = rng.normal(size=30) / 4
  levels = [[f'c{j}_{k}' for k in range(5 + 5 * j)] for j in range(10)]  # 5 to 50 levels.
  effects = [rng.normal(size=len(lv)) / 2 for lv in levels]
  writer = None
  for lo in range(0, rows, _CHUNK):
    n = min(_CHUNK, rows - lo)
    numbers = rng.normal(size=(n, 30))
    codes = [rng.integers(0, len(lv), n) for lv in levels]
    logit = numbers @ weights + sum(e[c] for e, c in zip(effects, codes))
    numbers[rng.random((n, 30)) < 0.01] = np.nan
    columns = {f'x{i}': pa.array(numbers[:, i], from_pandas=True) for i in range(30)}
    columns.update({f's{j}': pa.array(np.asarray(levels[j])[codes[j]]) for j in range(10)})
    columns['target'] = pa.array((rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64))
    table = pa.table(columns)
    writer = writer or pq.ParquetWriter(path, table.schema)
    writer.write_table(table, row_group_size=65_536)
  writer.close()


def conversion_rss_mb(path: str, cache: str) -> tuple:
  """(peak RSS MB of a process converting `path`, its wall seconds)."""
  code = ('import resource, sys, time\n'
          'from trainkit.data.sources import table_files\n'
          'start = time.perf_counter()\n'
          'table_files.load(sys.argv[1], sys.argv[2])\n'
          'print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,'
          ' time.perf_counter() - start)\n')
  done = subprocess.run([sys.executable, '-c', code, path, cache], cwd=ROOT, check=True,
                        capture_output=True, text=True)
  peak, wall = done.stdout.split()
  return float(peak), float(wall)


def _table_flags(path: str, workdir: str, cache: str) -> list:
  return [sys.executable, 'main.py', '--config=configs/table.py', f'--workdir={workdir}',
          f'--config.dataset={path}', '--config.target_column=target', '--config.task=binary',
          '--config.model.hidden_sizes=(256,256)', '--config.model.dropout_rates=(0.0,0.0)',
          '--config.batch_size=256', '--config.eval_batch_size=4096',
          '--config.schedule=constant', f'--config.cache_dir={cache}',
          '--config.progress=off', '--config.checkpoint_every_epochs=1000']


def device_epoch_s(path: str, workdir: str, cache: str) -> float:
  """The second (steady) epoch's seconds of main.py in device mode."""
  subprocess.run(_table_flags(path, workdir, cache) + [
      '--config.input_mode=device', '--config.num_epochs=2', '--config.steps_per_call=500'],
      cwd=ROOT, check=True, capture_output=True)
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    epochs = [r['metrics']['wall_s'] for r in map(json.loads, f) if r['split'] == 'epoch']
  return epochs[-1]


def sklearn_epoch_s(path: str, cache: str) -> float:
  """MLPClassifier.partial_fit, one pass over the trainer's own encoded training rows."""
  from sklearn import neural_network  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  from configs import table  # pylint: disable=g-import-not-at-top
  from trainkit.data import sources  # pylint: disable=g-import-not-at-top
  config = table.get_config()
  config.update({'dataset': path, 'target_column': 'target', 'cache_dir': cache})
  train = sources.open_source(ml_collections.FrozenConfigDict(config)).arrays('train')
  x = train['x']
  x = ((x - x.mean(0)) / np.where(x.std(0) > 0, x.std(0), 1)).astype(np.float32)
  model = neural_network.MLPClassifier(hidden_layer_sizes=(256, 256), batch_size=256,
                                       learning_rate_init=1e-3, alpha=0.0)
  model.partial_fit(x[:256], train['y'][:256], classes=[0, 1])  # Set up, not timed.
  start = time.perf_counter()
  model.partial_fit(x, train['y'])
  return time.perf_counter() - start


def streamed_peaks(path: str, workdir: str, cache: str, epochs: int) -> dict:
  """Peak RSS (all, and anonymous) of a streamed run with two Grain workers, in MB."""
  cmd = _table_flags(path, workdir, cache) + [
      '--config.input_mode=stream', '--config.input_workers=2', f'--config.num_epochs={epochs}',
      '--config.model.hidden_sizes=(64,)', '--config.model.dropout_rates=(0.0,)']
  start = time.perf_counter()
  proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  peak = {'total_mb': 0.0, 'total_anon_mb': 0.0}
  while proc.poll() is None:
    for key, field in (('total_mb', 'VmRSS'), ('total_anon_mb', 'RssAnon')):
      pids = [proc.pid, *stream_memory._children(proc.pid)]  # pylint: disable=protected-access
      peak[key] = max(peak[key], sum(stream_memory._rss_mb(p, field) for p in pids))  # pylint: disable=protected-access
    time.sleep(0.1)
  if proc.returncode:
    raise RuntimeError(proc.stderr.read().decode()[-3000:])
  with open(os.path.join(workdir, 'summary.json')) as f:
    return {**peak, 'steps': json.load(f)['step'], 'wall_s': time.perf_counter() - start}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--rows', default='250000,2000000')
  parser.add_argument('--out', default='')
  parser.add_argument('--work', default='')
  args = parser.parse_args()
  sizes = [int(r) for r in args.rows.split(',')]
  work = args.work or tempfile.mkdtemp(prefix='table_scale_')
  os.makedirs(work, exist_ok=True)
  results = {'rows': sizes, 'conversion': {}, 'streamed': {}}
  paths = {}
  for rows in sizes:
    paths[rows] = os.path.join(work, f'table-{rows}.parquet')
    if not os.path.exists(paths[rows]):
      generate(paths[rows], rows)
    peak, wall = conversion_rss_mb(paths[rows], os.path.join(work, f'cache-convert-{rows}'))
    results['conversion'][rows] = {'peak_rss_mb': peak, 'wall_s': wall,
                                   'file_mb': os.path.getsize(paths[rows]) / 2**20}
    print(f'{rows} rows: converted in {wall:.1f} s, peak RSS {peak:.0f} MB', flush=True)
  largest, smallest = max(sizes), min(sizes)
  cache = os.path.join(work, 'cache')
  results['trainer_epoch_s'] = device_epoch_s(paths[largest], os.path.join(work, 'device'),
                                              cache)
  print(f'trainer device epoch: {results["trainer_epoch_s"]:.1f} s', flush=True)
  results['sklearn_epoch_s'] = sklearn_epoch_s(paths[largest], cache)
  print(f'sklearn partial_fit epoch: {results["sklearn_epoch_s"]:.1f} s', flush=True)
  for rows in sizes:  # The same steps: the smaller table for as many epochs as make them.
    epochs = max(1, round(largest / rows)) if rows != largest else 1
    results['streamed'][rows] = streamed_peaks(paths[rows], os.path.join(work, f's{rows}'),
                                               cache, epochs)
    print(f'{rows} rows streamed: {results["streamed"][rows]}', flush=True)
  conv = results['conversion']
  results['conversion_ratio'] = conv[largest]['peak_rss_mb'] / conv[smallest]['peak_rss_mb']
  results['speedup_vs_sklearn'] = results['sklearn_epoch_s'] / results['trainer_epoch_s']
  streamed = results['streamed']
  results['streamed_ratio'] = streamed[largest]['total_mb'] / streamed[smallest]['total_mb']
  results['streamed_anon_ratio'] = (streamed[largest]['total_anon_mb']
                                    / streamed[smallest]['total_anon_mb'])
  print(json.dumps({k: v for k, v in results.items() if 'ratio' in k or 'speedup' in k},
                   indent=1))
  if args.out:
    with open(args.out, 'w') as f:
      json.dump(results, f, indent=1)


if __name__ == '__main__':
  main()
