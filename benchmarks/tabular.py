"""Tables against scikit-learn: the trainer on its bundled datasets, from CSV and from Parquet.

    python -m benchmarks.tabular [--seeds=0,1,2,3,4] [--epochs=200] [--out=FILE.json]

scikit-learn (benchmarks/requirements.txt) is the peer, never a dependency of
the trainer. Each bundled dataset (breast_cancer: binary; wine and digits:
classes; diabetes: regression) is written, per seed, as a CSV and a Parquet
file with a 'split' column (70 / 15 / 15; stratified by class), and trained:

- by `main.py --config=configs/table.py` and a few overrides, as a user runs
  it (whole command, start to exit), once from each file;
- by MLPClassifier / MLPRegressor with the same model and training: one
  hidden layer of 100 ReLUs, Adam at 1e-3, batch 32, the same epochs, no L2
  penalty, a StandardScaler fitted on the training rows (and, for the
  regression, on the training targets, as the trainer standardises them);
- by HistGradientBoostingClassifier / Regressor with their defaults.

Each reports the test split's accuracy (R² for diabetes) of its final model;
the trainer also that of its best checkpoint by validation loss. The table
gives the means over the seeds, and the trainer's CSV and Parquet figures are
checked to be identical.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# name: (loader, task, the summary's test metric).
DATASETS = {
    'breast_cancer': ('load_breast_cancer', 'binary', 'accuracy'),
    'wine': ('load_wine', 'classification', 'accuracy'),
    'digits': ('load_digits', 'classification', 'accuracy'),
    'diabetes': ('load_diabetes', 'regression', 'r2'),
}


def split_column(y, seed: int, stratify: bool) -> np.ndarray:
  """'train', 'validation' or 'test' per row: 70 / 15 / 15, per class when stratified."""
  rng = np.random.default_rng(seed)
  out = np.empty(len(y), object)
  groups = [np.flatnonzero(y == c) for c in np.unique(y)] if stratify else [np.arange(len(y))]
  for rows in groups:
    rows = rng.permutation(rows)
    a, b = round(0.7 * len(rows)), round(0.85 * len(rows))
    out[rows[:a]], out[rows[a:b]], out[rows[b:]] = 'train', 'validation', 'test'
  return out


def write_tables(name: str, seed: int, folder: str) -> tuple:
  """The dataset as CSV and Parquet files with a 'split' column; (paths, x, y, split)."""
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  from pyarrow import csv as pa_csv  # pylint: disable=g-import-not-at-top
  from pyarrow import parquet as pq  # pylint: disable=g-import-not-at-top
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  x, y = getattr(datasets, DATASETS[name][0])(return_X_y=True)
  split = split_column(y, seed, DATASETS[name][1] != 'regression')
  columns = {f'f{i}': x[:, i] for i in range(x.shape[1])}
  columns['target'] = y
  columns['split'] = list(split)
  table = pa.table(columns)
  paths = {'csv': os.path.join(folder, f'{name}-{seed}.csv'),
           'parquet': os.path.join(folder, f'{name}-{seed}.parquet')}
  pa_csv.write_csv(table, paths['csv'])
  pq.write_table(table, paths['parquet'])
  return paths, x, y, split


# configs/table.py made scikit-learn's MLP: one hidden layer of 100 ReLUs, Adam at
# a constant 1e-3, batch 32, no dropout, weight decay, step budget or early stopping.
MLP_FLAGS = ('--config.model.family=mlp', '--config.max_steps=0',
             '--config.early_stopping_patience=0', '--config.optimizer=adam',
             '--config.weight_decay=0.0', '--config.model.hidden_sizes=(100,)',
             '--config.model.dropout_rates=(0.0,)', '--config.schedule=constant',
             '--config.learning_rate=1e-3', '--config.batch_size=32')


def trainer(name: str, path: str, seed: int, epochs: int, workdir: str, cache: str) -> dict:
  """main.py on the table: its test figures (final and best checkpoint) and wall seconds."""
  task, metric = DATASETS[name][1:]
  command = [sys.executable, 'main.py', '--config=configs/table.py', f'--workdir={workdir}',
             f'--config.dataset={path}', '--config.target_column=target',
             f'--config.task={task}', '--config.split_column=split',
             '--config.train_split=train', '--config.validation_split=validation',
             '--config.test_split=test', *MLP_FLAGS,
             f'--config.num_epochs={epochs}', f'--config.seed={seed}',
             f'--config.cache_dir={cache}', '--config.progress=off']
  start = time.perf_counter()
  done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                        env={**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2'})
  wall = time.perf_counter() - start
  if done.returncode:
    raise RuntimeError(f'{" ".join(command)} failed:\n{done.stderr[-3000:]}')
  with open(os.path.join(workdir, 'summary.json')) as f:
    summary = json.load(f)
  return {'final': summary[f'test_{metric}'], 'best': summary[f'best_test_{metric}'],
          'wall_s': wall, 'figures': {k: v for k, v in summary.items()
                                      if k.startswith(('eval_', 'test_', 'best_'))}}


def peers(name: str, x, y, split, seed: int, epochs: int) -> dict:
  """scikit-learn's MLP (the same training) and gradient boosting: test figure, fit+predict s."""
  import warnings  # pylint: disable=g-import-not-at-top
  from sklearn import compose, ensemble, exceptions, metrics  # pylint: disable=g-import-not-at-top
  from sklearn import neural_network, pipeline, preprocessing  # pylint: disable=g-import-not-at-top
  regression = DATASETS[name][1] == 'regression'
  train, test = split == 'train', split == 'test'
  mlp_args = dict(hidden_layer_sizes=(100,), solver='adam', learning_rate_init=1e-3,
                  batch_size=32, max_iter=epochs, alpha=0.0, tol=0.0,
                  n_iter_no_change=epochs + 1, random_state=seed)
  if regression:
    mlp = compose.TransformedTargetRegressor(
        regressor=pipeline.make_pipeline(preprocessing.StandardScaler(),
                                         neural_network.MLPRegressor(**mlp_args)),
        transformer=preprocessing.StandardScaler())
    boosting = ensemble.HistGradientBoostingRegressor(random_state=seed)
    score = metrics.r2_score
  else:
    mlp = pipeline.make_pipeline(preprocessing.StandardScaler(),
                                 neural_network.MLPClassifier(**mlp_args))
    boosting = ensemble.HistGradientBoostingClassifier(random_state=seed)
    score = metrics.accuracy_score
  out = {}
  for key, model in (('mlp', mlp), ('boosting', boosting)):
    start = time.perf_counter()
    with warnings.catch_warnings():
      warnings.simplefilter('ignore', exceptions.ConvergenceWarning)
      model.fit(x[train], y[train])
    predicted = model.predict(x[test])
    out[key] = {'test': float(score(y[test], predicted)),
                'fit_predict_s': time.perf_counter() - start}
  return out


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--seeds', default='0,1,2,3,4')
  parser.add_argument('--epochs', type=int, default=200)
  parser.add_argument('--datasets', default=','.join(DATASETS))
  parser.add_argument('--out', default='')
  args = parser.parse_args()
  seeds = [int(s) for s in args.seeds.split(',')]
  results = {}
  with tempfile.TemporaryDirectory() as tmp:
    cache = os.path.join(tmp, 'cache')
    for name in args.datasets.split(','):
      runs = []
      for seed in seeds:
        paths, x, y, split = write_tables(name, seed, tmp)
        got = {fmt: trainer(name, path, seed, args.epochs,
                            os.path.join(tmp, f'{name}-{seed}-{fmt}'), cache)
               for fmt, path in paths.items()}
        identical = got['csv']['figures'] == got['parquet']['figures']
        runs.append({'seed': seed, 'csv': got['csv'], 'parquet': got['parquet'],
                     'identical': identical, **peers(name, x, y, split, seed, args.epochs)})
        print(f'{name} seed {seed}: trainer {got["csv"]["final"]:.4f} (best '
              f'{got["csv"]["best"]:.4f}), sklearn MLP {runs[-1]["mlp"]["test"]:.4f}, '
              f'boosting {runs[-1]["boosting"]["test"]:.4f}; CSV = Parquet: {identical}',
              flush=True)
      mean = lambda get, runs=runs: statistics.mean(get(r) for r in runs)
      results[name] = {
          'metric': DATASETS[name][2], 'runs': runs,
          'trainer_final': mean(lambda r: r['csv']['final']),
          'trainer_best': mean(lambda r: r['csv']['best']),
          'sklearn_mlp': mean(lambda r: r['mlp']['test']),
          'boosting': mean(lambda r: r['boosting']['test']),
          'trainer_wall_s': mean(lambda r: r['csv']['wall_s']),
          'parquet_wall_s': mean(lambda r: r['parquet']['wall_s']),
          'sklearn_mlp_s': mean(lambda r: r['mlp']['fit_predict_s']),
          'boosting_s': mean(lambda r: r['boosting']['fit_predict_s']),
          'csv_equals_parquet': all(r['identical'] for r in runs)}
  print('\n| dataset (metric) | trainer final | trainer best | sklearn MLP | HistGB | '
        'trainer command (CSV / Parquet) | MLP fit+predict | HistGB fit+predict | '
        'CSV = Parquet |\n|---|---|---|---|---|---|---|---|---|')
  for name, r in results.items():
    print(f'| {name} ({r["metric"]}) | {r["trainer_final"]:.4f} | {r["trainer_best"]:.4f} | '
          f'{r["sklearn_mlp"]:.4f} | {r["boosting"]:.4f} | {r["trainer_wall_s"]:.1f} s / '
          f'{r["parquet_wall_s"]:.1f} s | {r["sklearn_mlp_s"]:.2f} s | {r["boosting_s"]:.2f} s | '
          f'{r["csv_equals_parquet"]} |')
  if args.out:
    with open(args.out, 'w') as f:
      json.dump(results, f, indent=1)


if __name__ == '__main__':
  main()
