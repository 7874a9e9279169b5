"""Config sweeps: members from a sweep file, their workdirs, and the summary.

A sweep file is a config file with `get_config()` (the base) and
`get_sweep()`, a list of {dotted field: value} overrides, one per member.
`product` and `zip_axes` build such lists. Each member trains in
`DIR/<name>/` with exactly what `main.py` writes there.
"""

import csv
import importlib.util
import io
import itertools
import json
import os
import re
import shlex
import sys

from absl import logging
import jax

from trainkit import errors
from trainkit import tasks
from trainkit.data import pipeline as input_pipeline
from trainkit.data import sources
from trainkit.runtime import preemption
from trainkit.search import groups as grouping
from trainkit.tasks import metric_catalogue as metrics_lib
from trainkit.tasks import selection
from trainkit.tracking import mlflow_run as tracking
from trainkit.tracking import plots
from trainkit.tracking import progress
from trainkit.training import carried_values
from trainkit.training import compile_ahead
from trainkit.training import config_checks
from trainkit.training import divergence
from trainkit.training import train
from trainkit.workdirs import config_history
from trainkit.workdirs import layout as workdir_lib
from trainkit.workdirs import lock as workdir_lock


def product(**axes) -> list:
  """Every combination: product(learning_rate=[1e-3, 1e-2], seed=[0, 1]) -> 4."""
  keys = [k.replace('__', '.') for k in axes]
  return [dict(zip(keys, values)) for values in itertools.product(*axes.values())]


def zip_axes(**axes) -> list:
  """Values taken together: zip_axes(learning_rate=[1e-3, 1e-2], seed=[0, 1]) -> 2."""
  lengths = {len(v) for v in axes.values()}
  if len(lengths) > 1:
    raise ValueError(f'zip_axes needs lists of one length, got {sorted(lengths)}')
  keys = [k.replace('__', '.') for k in axes]
  return [dict(zip(keys, values)) for values in zip(*axes.values())]


def load_sweep_file(path: str):
  """The module of sweep file `path` (its get_config() and get_sweep() or get_search())."""
  spec = importlib.util.spec_from_file_location('sweep_config', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def called(path: str, name: str, function):
  """`function()`, sweep file `path`'s `name`; what it raises is refused in one line."""
  try:
    return function()
  except errors.ConfigError:
    raise
  except Exception as e:  # pylint: disable=broad-except  # Whatever the user's code raised.
    raise errors.ConfigError(f'--config={path!r}: {name}() raised {errors.raised(e)}') from None


def load_sweep(path: str, module=None) -> list:
  """The member overrides of sweep file `path` (its get_sweep())."""
  module = module or load_sweep_file(path)
  if not hasattr(module, 'get_sweep'):
    raise errors.ConfigError(f'--config={path!r} has no get_sweep() or get_search()')
  members = called(path, 'get_sweep', module.get_sweep)
  members = list(members) if hasattr(members, '__iter__') and not isinstance(
      members, (str, dict)) else None
  if not members or not all(isinstance(m, dict) for m in members):
    raise errors.ConfigError(
        f'--config={path!r}: get_sweep() must return a non-empty list of dicts')
  return members


def member_name(index: int, overrides: dict) -> str:
  """A folder name: the index, then the overrides, e.g. 03_learning_rate=0.01_seed=1."""
  parts = [f'{k}={v}' for k, v in overrides.items()]
  name = re.sub(r'[^\w.=,+-]+', '', '_'.join([f'{index:02d}'] + parts))
  return name[:120]


# A copy of a config with dotted overrides set: trainkit/training/config_checks.py's.
member_config = config_checks.overridden


def build_members(base, overrides_list: list) -> list:
  """[(name, overrides, config)], or ConfigError listing every invalid member."""
  out, problems = [], []
  for i, overrides in enumerate(overrides_list):
    name = member_name(i, overrides)
    try:
      out.append((name, overrides, member_config(base, overrides)))
    except errors.ConfigError as e:
      problems.append(f'member {name}: {e}')
  if problems:
    raise errors.ConfigError('; '.join(problems))
  return out


def command_line(sweep_path: str, workdir: str, common: list, overrides: dict) -> str:
  """The command that trains one member alone: `trainkit`, or main.py from sweep.py."""
  installed = os.path.basename(sys.argv[0]).startswith('trainkit')
  args = [*(['trainkit'] if installed else ['python', 'main.py']),
          f'--config={sweep_path}', f'--workdir={workdir}']
  args += common
  for key, value in overrides.items():
    args.append(f'--config.{key}={value}')
  return ' '.join(shlex.quote(a) for a in args)


# The sweep directory's summaries, beside the members' workdirs.
SUMMARY_CSV = 'sweep_summary.csv'
SUMMARY_MD = 'sweep_summary.md'

# Ranked by `objective`: the member's best_metric at its best checkpoint
# (selection.py), or of its final one without a validation split. The test
# split's figure is shown for information only.


def summary_metrics(config) -> tuple:
  """The summary figures a sweep's table shows, by the task's metrics.

  A classifier's: best_eval_accuracy, best_eval_loss, eval_accuracy,
  eval_loss, test_accuracy, train_wall_s.
  """
  # The task's own figures first (the loss often repeats one of them: an NLL).
  metrics = sorted(tasks.metrics(config), key=lambda m: m == 'loss')
  return (*(f'best_eval_{m}' for m in metrics), *(f'eval_{m}' for m in metrics),
          f'test_{metrics[0]}', 'train_wall_s')


def _columns(metrics) -> tuple:
  return ('rank', 'name', 'status', 'overrides', 'best_metric', 'objective', *metrics,
          'workdir')


def objective(summary: dict, metric: str):
  """What ranks a finished run: `metric` of its best checkpoint, or of its final one."""
  best = summary.get(f'best_{selection.key(metric)}')
  return best if best is not None else summary.get(selection.key(metric), float('nan'))


def write_summary(directory: str, rows: list, metrics) -> list:
  """Writes sweep_summary.csv (sweep order) and .md (ranked); returns ranked rows.

  Each row: name, status, overrides (dict), best_metric, objective, the
  `metrics` (summary_metrics()) and workdir.
  """
  first, second = [m.removeprefix('eval_') for m in metrics if m.startswith('eval_')][:2]
  # Diverged members (NaN) rank last.
  ranked = sorted(rows, key=lambda r: (r['status'] != 'finished',
                                       -selection.score(r['best_metric'], r['objective'])))
  for rank, row in enumerate(ranked, 1):
    row['rank'] = rank
  buffer = io.StringIO()
  writer = csv.DictWriter(buffer, fieldnames=_columns(metrics))
  writer.writeheader()
  for row in rows:
    writer.writerow({**row, 'overrides': json.dumps(row['overrides'], sort_keys=True)})
  workdir_lib.write_text(os.path.join(directory, SUMMARY_CSV), buffer.getvalue())
  short = metrics_lib.short
  lines = [f'| rank | member | overrides | objective | best eval {short(first)} | '
           f'final eval {short(first)} | final eval {short(second)} | '
           f'test {short(first)} (info) | train time (s) |',
           '|---|---|---|---|---|---|---|---|---|']
  for row in ranked:
    overrides = ', '.join(f'{k}={v}' for k, v in row['overrides'].items())
    objective = (f'{row["best_metric"]} {row["objective"]:.4f}'
                 if row['status'] == 'finished' else row['status'])  # 'diverged', not nan.
    lines.append(f'| {row["rank"]} | {row["name"]} | {overrides} | {objective} | '
                 f'{progress.figure(first, row["best_eval_" + first])} | '
                 f'{progress.figure(first, row["eval_" + first])} | '
                 f'{progress.figure(second, row["eval_" + second])} | '
                 f'{progress.figure(first, row["test_" + first])} | '
                 f'{row["train_wall_s"]:.1f} |')
  workdir_lib.write_text(os.path.join(directory, SUMMARY_MD), '\n'.join(lines) + '\n')
  return ranked


PARALLEL = ('auto', 'vmap', 'sequential')


def resolve_parallel(parallel: str) -> str:
  """'auto' is 'vmap' on an accelerator and 'sequential' on CPU.

  On CPU a vmapped group is memory-bound and measured slower than the same
  members one after another, which compile their step once per process too
  (docs/sweeps.md).
  """
  if parallel != 'auto':
    return parallel
  return 'sequential' if jax.default_backend() == 'cpu' else 'vmap'


def shared_data(config, datasets: dict):
  """The config's datasets, loaded once per sweep (`datasets` holds them by data_config)."""
  key = input_pipeline.data_config(config)
  if key not in datasets:
    # The members' programs are the same for every member that trains alone
    # (their values are carried, trainkit/training/carried_values.py): compiled meanwhile.
    with compile_ahead.while_loading(config):
      datasets[key] = input_pipeline.create_datasets(config)
  return datasets[key]


def _train_alone(config, workdir, datasets: dict, continue_with_changes: bool):
  """A member trained by itself; None if it diverged."""
  try:
    return train.train_and_evaluate(config, workdir, shared_data(config, datasets),
                                    continue_with_changes)[1]
  except divergence.Diverged as e:
    logging.warning('Member %s stopped: %s', workdir, e)
    return None


def _train(todo: list, parallel: str, changes: dict, continue_with_changes: bool) -> dict:
  """Trains [(name, config, workdir)]; returns {name: summary or None}.

  `changes`: {name: config changes its resume makes} (config_history).
  """
  results, groups, datasets = {}, {}, {}
  # Each member's data checked before any trains (the data is kept for the
  # sweep anyway): a batch larger than a split refuses the sweep, not member 3.
  problems = []
  for name, config, member_dir in todo:
    try:
      config_checks.check_data(config, shared_data(config, datasets))
      config_checks.check_new_run_data(config, shared_data(config, datasets), member_dir)
    except (errors.ConfigError, sources.DataError) as e:
      problems.append(f'member {name}: {e}')
  if problems:
    raise errors.ConfigError('; '.join(problems))
  for item in todo:
    key = carried_values.structure_key(item[1]) if parallel == 'vmap' else item[0]
    groups.setdefault(key, []).append(item)
  for group in groups.values():
    names, configs, workdirs = zip(*group)
    if len(group) > 1:
      logging.info('Training %d members together: %s', len(group), ', '.join(names))
      try:
        results.update(zip(names, grouping.train_group(
            configs, workdirs, shared_data(configs[0], datasets),
            [changes[name] for name in names])))
        continue
      except grouping.NotGroupable as e:
        logging.warning('Members %s train one by one: %s', ', '.join(names), e)
    for name, config, workdir in group:
      logging.info('Training member %s.', name)
      results[name] = _train_alone(config, workdir, datasets, continue_with_changes)
  return results


def run_sweep(base, member_overrides: list, workdir: str, parallel: str = 'auto',
              continue_with_changes: bool = False) -> list:
  """Trains every unfinished member; returns the summary rows, ranked.

  Every member is validated before any trains, its workdir's config too (a
  member resumed with another config is refused as main.py refuses it, or
  continues with `continue_with_changes`). The sweep's folder and each
  member's workdir are locked while they are written. With parallel='vmap',
  members that differ only in values the train state carries train together
  (trainkit.search.groups); the others, and every member with 'sequential', one by
  one; 'auto' is one of the two (resolve_parallel).
  """
  parallel = resolve_parallel(parallel)
  members = build_members(base, member_overrides)
  workdir_lib.check_workdir(workdir)
  if os.path.isdir(workdir):
    workdir_lib.check_kinds(workdir, files=(SUMMARY_CSV, SUMMARY_MD), folders=())
  # As a lone run's, and a finished member's too: one trained on other data is refused.
  changes = {name: train.check_before_work(config, os.path.join(workdir, name),
                                           continue_with_changes)
             for name, _, config in members}
  with workdir_lock.hold(workdir, 'sweep'):
    # Its members' MLflow runs nest under this one (trainkit/tracking/mlflow_run.py).
    parent = tracking.open_parent(base, workdir, 'sweep')
    try:
      ranked = _run_members(members, workdir, parallel, changes, continue_with_changes)
    except BaseException as e:
      if parent:
        parent.end('KILLED' if isinstance(e, preemption.Interrupted) else 'FAILED')
      raise
    if parent:
      parent.set_tags({'best_member': ranked[0]['name']})
      parent.log_artifacts([os.path.join(workdir, name) for name in (
          SUMMARY_CSV, SUMMARY_MD, 'sweep_eval_curves.png')])
      parent.end()
    return ranked


def _run_members(members, workdir, parallel, changes, continue_with_changes) -> list:
  """run_sweep's work, under the sweep folder's lock."""
  summaries, todo = {}, []
  for name, _, config in members:
    member_dir = os.path.join(workdir, name)
    summaries[name] = (None if changes[name]
                       else config_history.finished_summary(member_dir, config))
    if summaries[name]:
      logging.info('Member %s finished before: skipped.', name)
    else:
      todo.append((name, config, member_dir))
  summaries.update(_train(todo, parallel, changes, continue_with_changes))
  rows = []
  metrics = summary_metrics(members[0][2])
  for name, overrides, config in members:
    summary = summaries[name] or dict.fromkeys(metrics, float('nan'))
    rows.append({'name': name, 'overrides': overrides,
                 'workdir': os.path.join(workdir, name),
                 'status': 'finished' if summaries[name] else 'diverged',
                 'best_metric': config.best_metric,
                 'objective': objective(summary, config.best_metric),
                 **{k: summary.get(k, float('nan')) for k in metrics}})
  ranked = write_summary(workdir, rows, metrics)
  plots.learning_curves({r['name']: plots.read_metrics(r['workdir']) for r in rows},
                        os.path.join(workdir, 'sweep_eval_curves.png'), splits=('eval',))
  return ranked
