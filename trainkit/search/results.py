"""A search's results: the ranked table of trials, the best command, the plots."""

import csv
import io
import json
import os

from absl import logging
import optuna
from optuna.trial import TrialState

from trainkit.search import optuna_search as search
from trainkit.search import samplers
from trainkit.search import space as search_space
from trainkit.search import sweeps
from trainkit.tasks import metric_catalogue as metrics_lib
from trainkit.tasks import selection
from trainkit.tracking import progress
from trainkit.workdirs import layout as workdir_lib

_STATES = {TrialState.COMPLETE: 'complete', TrialState.PRUNED: 'pruned',
           TrialState.RUNNING: 'running', TrialState.WAITING: 'waiting'}
PLOTS = ('search_history.png', 'search_importances.png', 'search_curves.png')


def _columns(metrics) -> tuple:
  return ('rank', 'trial', 'state', 'value', 'params', 'epochs', *metrics, 'attempts',
          'workdir')


def rows(study: optuna.Study, directory: str, metrics) -> list:
  """One row per trial (its last attempt), ranked: complete, then pruned, then the rest.

  Each row holds the summary figures `metrics` (sweeps.summary_metrics of
  the base config: the task's metrics) of the trial's workdir.
  """
  attempts = {}
  for frozen in study.get_trials(deepcopy=False):
    attempts.setdefault(search.trial_name(frozen), []).append(frozen)
  sign = 1 if study.direction == optuna.study.StudyDirection.MINIMIZE else -1
  out = []
  for name, tries in attempts.items():
    last = max(tries, key=lambda t: t.number)
    state = _STATES.get(last.state) or last.user_attrs.get('status', 'failed')
    if last.state == TrialState.FAIL and state == 'interrupted':
      # The last attempt, yet interrupted ones are queued again: one that inherited the
      # status and whose worker died past max_retry. It will not resume.
      state = 'failed'
    summary = workdir_lib.read_summary(os.path.join(directory, name)) or {}
    value = last.value if last.value is not None else (
        last.intermediate_values[max(last.intermediate_values)]
        if last.intermediate_values else float('nan'))
    out.append({
        'trial': name, 'state': state, 'value': value,
        'params': last.params,
        'epochs': summary.get('epoch', len(last.intermediate_values)),
        **{m: summary.get(m, float('nan')) for m in metrics},
        'attempts': len(tries), 'workdir': os.path.join(directory, name)})
  order = {'complete': 0, 'pruned': 1}
  out.sort(key=lambda r: (order.get(r['state'], 2),
                          sign * r['value'] if r['value'] == r['value'] else float('inf'),
                          r['trial']))
  for rank, row in enumerate(out, 1):
    row['rank'] = rank
  return out


def write(study: optuna.Study, directory: str, ranked: list, metrics) -> None:
  """sweep_summary.csv and .md (ranked) in the sweep directory; `metrics` as for rows()."""
  buffer = io.StringIO()
  writer = csv.DictWriter(buffer, fieldnames=_columns(metrics), extrasaction='ignore')
  writer.writeheader()
  writer.writerows({**row, 'params': json.dumps(row['params'], sort_keys=True)}
                   for row in ranked)
  workdir_lib.write_text(os.path.join(directory, sweeps.SUMMARY_CSV), buffer.getvalue())
  metric = study.user_attrs.get('search', {}).get('metric', selection.DEFAULT)
  test = next(m for m in metrics if m.startswith('test_')).removeprefix('test_')
  short = metrics_lib.short(test)
  lines = [f'| rank | trial | state | objective (validation {metric}) | params | epochs | '
           f'test {short} (info) | attempts |', '|---|---|---|---|---|---|---|---|']
  for row in ranked:
    params = ', '.join(f'{k}={_short(v)}' for k, v in row['params'].items())
    lines.append(f'| {row["rank"]} | {row["trial"]} | {row["state"]} | {row["value"]:.4f} | '
                 f'{params} | {row["epochs"]:g} | {progress.figure(test, row["test_" + test])} | '
                 f'{row["attempts"]} |')
  workdir_lib.write_text(os.path.join(directory, sweeps.SUMMARY_MD), '\n'.join(lines) + '\n')


def _short(value):
  return f'{value:.4g}' if isinstance(value, float) else value


def best_command(study, base, sweep_path: str, directory: str, common: list) -> str | None:
  """The main.py command that trains the best complete trial alone, or None."""
  try:
    best = study.best_trial
  except ValueError:  # No complete trial.
    return None
  overrides = search_space.overrides(base, best.params)
  metric = study.user_attrs.get('search', {}).get('metric', base.best_metric)
  if metric != base.best_metric:
    overrides['best_metric'] = metric
  return sweeps.command_line(sweep_path, os.path.join(directory, 'best'), common, overrides)


def plot(study: optuna.Study, directory: str) -> list:
  """Optuna's optimisation history, parameter importances and trial curves; the files."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  from optuna.visualization import matplotlib as optuna_plots  # pylint: disable=g-import-not-at-top
  written = []
  for name, draw in zip(PLOTS, (optuna_plots.plot_optimization_history,
                                optuna_plots.plot_param_importances,
                                optuna_plots.plot_intermediate_values)):
    try:
      with samplers.experimental():
        axes = draw(study)
    except (ValueError, RuntimeError) as e:  # Too few finished trials for it.
      logging.info('No %s: %s', name, e)
      continue
    figure = axes.figure if hasattr(axes, 'figure') else axes.flat[0].figure
    figure.set_size_inches(8, 5)
    figure.savefig(os.path.join(directory, name), dpi=100, bbox_inches='tight')
    plt.close(figure)
    written.append(name)
  return written
