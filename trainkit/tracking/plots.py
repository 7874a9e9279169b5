"""Pictures of a run, drawn with matplotlib (Agg) into `WORKDIR/plots/`.

- learning_curves.png: train and eval loss and accuracy (or, for the
  real-valued tasks, their NLL or RMSE) against step;

A classifier's, besides:

- confusion_matrix.png: test-split counts, true class against predicted;
- worst_errors.png: the test images the model is most confidently wrong about.

The test predictions are kept in `plots/predictions.npz` (labels,
probabilities and the worst images), so `report.py` redraws everything from
the workdir alone, without JAX or the dataset. The real-valued tasks draw
theirs with trainkit/tracking/regression_plots.py.
"""

import os

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

from trainkit import errors  # pylint: disable=g-import-not-at-top,wrong-import-position
from trainkit import tasks  # pylint: disable=g-import-not-at-top,wrong-import-position
from trainkit.tasks import metric_catalogue as metrics_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from trainkit.tracking import regression_plots  # pylint: disable=g-import-not-at-top,wrong-import-position
from trainkit.workdirs import config_history  # pylint: disable=g-import-not-at-top,wrong-import-position
from trainkit.workdirs import layout as workdir_lib  # pylint: disable=g-import-not-at-top,wrong-import-position

PREDICTIONS = workdir_lib.PREDICTIONS
_WORST = 25  # Images in the worst-errors grid (5 x 5).


def _run_config(workdir: str) -> dict:
  """The run's config.json as a dict ({} where it cannot be read)."""
  try:
    return config_history.stored(workdir) or {}
  except errors.ConfigError:
    return {}


def _panels(config: dict, records: list) -> tuple:
  """The two metrics a run's learning curves show: its task's (config.json's).

  A config that names no task is the default task's (older workdirs). With
  no config.json, or an unknown task, the first task's whose two metrics the
  run logged, else the default task's.
  """
  if config and config.get('task', tasks.DEFAULT) in tasks.TASKS:
    return tasks.of(config).curves(config)
  logged = {k for r in records if isinstance(r.get('metrics'), dict) for k in r['metrics']}
  return next((task.curves({}) for task in tasks.TASKS.values()
               if set(task.curves({})) <= logged), tasks.TASKS[tasks.DEFAULT].curves({}))


def read_metrics(workdir: str) -> dict:
  """{'train': {...}, 'eval': {...}, 'eval_split', 'panels'}: curves {'step': [...], metric: [...]}.

  'eval_split' names the split the 'eval' curve was computed on (the
  validation split, or the test split without one); 'panels' the two
  metrics the run's task draws its learning curves of.
  """
  config = _run_config(workdir)
  records = workdir_lib.read_records(os.path.join(workdir, workdir_lib.METRICS))
  panels = _panels(config, records)
  curves = {'train': {}, 'eval': {}, 'panels': panels,
            'eval_split': config.get('validation_split') or config.get('test_split') or 'eval'}
  keys = tuple(dict.fromkeys(('loss', *panels)))
  for record in records:
    curve = curves.get(record.get('split'))
    if curve is None or not isinstance(record.get('metrics'), dict):
      continue
    # A re-evaluation logs the same step again: keep the latest.
    if curve.get('step') and curve['step'][-1] == record.get('step'):
      for values in curve.values():
        values.pop()
    curve.setdefault('step', []).append(record.get('step'))
    for key in keys:
      curve.setdefault(key, []).append(record['metrics'].get(key, np.nan))
  return curves


def learning_curves(runs: dict, path: str, splits=('train', 'eval')) -> None:
  """The first run's task's two metrics against step; `runs`: labels to read_metrics().

  A classifier's are its loss and accuracy; a real-valued task's its NLL (or
  MSE) and RMSE, which are logged in the targets' units for training as for
  evaluation (its loss, on standardised targets, is not).
  """
  first, second = next(iter(runs.values()))['panels']
  fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
  colors = plt.rcParams['axes.prop_cycle'].by_key()['color']
  for i, (label, curves) in enumerate(runs.items()):
    color = colors[i % len(colors)]
    prefix = f'{label}: ' if len(runs) > 1 else ''
    for ax, key in zip(axes, (first, second)):
      # Runs of other tasks or losses have other curves: each panel draws those that have it.
      train, evaluation = curves['train'], curves['eval']
      # A curve logged for evaluation only (a regression's RMSE) is NaN in training.
      if 'train' in splits and train.get('step') and key in train and (
          np.isfinite(np.asarray(train[key], np.float64)).any()):
        ax.plot(train['step'], train[key], color=color, alpha=0.45, linewidth=1,
                label=f'{prefix}train')
      if 'eval' in splits and evaluation.get('step') and key in evaluation:
        ax.plot(evaluation['step'], evaluation[key], color=color, marker='o',
                markersize=3, linewidth=2, label=f'{prefix}{curves.get("eval_split", "eval")}')
  first, second = metrics_lib.get(first), metrics_lib.get(second)
  if second.percent:  # Beside a percentage, a loss that falls by orders of magnitude.
    axes[0].set_yscale('log')
    axes[0].set_title(f'{first.title} (log scale)')
    axes[1].yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    _zoom_percent(axes[1], runs, second.name)
  else:  # In the targets' units; an NLL can be negative, so no log scale.
    axes[0].set_title(first.title)
  axes[1].set_title(second.title)
  for ax in axes:
    ax.set_xlabel('step')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  # Fixed margins: tight_layout measures every label and costs a draw.
  # Room on the left for a log scale's 2.4x10^-1 (0.06 cut its first digit).
  fig.subplots_adjust(left=0.075, right=0.98, bottom=0.11, top=0.92, wspace=0.2)
  fig.savefig(path, dpi=110)
  plt.close(fig)


def _zoom_percent(ax, runs: dict, key: str) -> None:
  """Shows percentages from a little below the lowest evaluated one up to 100 %."""
  evals = [a for curves in runs.values() for a in curves['eval'].get(key, [])]
  if evals:
    low = max(0.0, min(evals) - 0.05)
    ax.set_ylim(low, 1.0 + (1.0 - low) * 0.02)


def confusion_counts(labels, predicted, num_classes: int) -> np.ndarray:
  """[true, predicted] counts."""
  counts = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(counts, (labels, predicted), 1)
  return counts


def confusion_matrix(labels, probs, path: str, class_names=()) -> None:
  """The test split's confusion matrix, counts written in each cell; a table's classes by name."""
  num_classes = probs.shape[1]
  counts = confusion_counts(labels, probs.argmax(-1), num_classes)
  accuracy = np.trace(counts) / counts.sum()
  fig, ax = plt.subplots(figsize=(7, 6))
  # Colour by the share of each true class, so errors in small classes show.
  shares = counts / np.maximum(counts.sum(1, keepdims=True), 1)
  image = ax.imshow(np.sqrt(shares), cmap='Blues', vmin=0, vmax=1)
  for t in range(num_classes):
    for p in range(num_classes):
      if counts[t, p]:
        ax.text(p, t, str(counts[t, p]), ha='center', va='center', fontsize=7,
                color='white' if shares[t, p] > 0.5 else 'black')
  ax.set_xticks(range(num_classes))
  ax.set_yticks(range(num_classes))
  if len(class_names) == num_classes:
    names = [str(n)[:12] for n in class_names]
    ax.set_xticks(range(num_classes), names, rotation=45, ha='right')
    ax.set_yticks(range(num_classes), names)
  ax.set_xlabel('predicted class')
  ax.set_ylabel('true class')
  ax.set_title(f'Confusion matrix, test split ({counts.sum()} examples, '
               f'{accuracy:.2%} correct)')
  colorbar = fig.colorbar(image, ax=ax, fraction=0.046)
  colorbar.set_ticks(np.sqrt([0, 0.01, 0.1, 0.5, 1]))
  colorbar.set_ticklabels(['0', '1%', '10%', '50%', '100%'])
  colorbar.set_label('share of the true class')
  fig.subplots_adjust(left=0.1, right=0.86, bottom=0.09, top=0.93)
  fig.savefig(path, dpi=110)
  plt.close(fig)


def worst_errors(images, labels, probs, indices, path: str) -> None:
  """A grid of wrongly classified images, most confident first.

  One mosaic image in one Axes, captions as text: a grid of 25 Axes costs
  matplotlib most of a second to lay out.
  """
  n, cols = len(images), 5
  rows = max(1, -(-n // cols))
  height, width = images.shape[1:3] if n else (28, 28)
  gap_y, gap_x = height // 2 + 6, width // 4
  cell_y, cell_x = height + gap_y, width + gap_x
  mosaic = np.zeros((rows * cell_y, cols * cell_x), np.float32)
  fig = plt.figure(figsize=(cols * 1.9, rows * 2.15 + 0.5))
  ax = fig.add_axes((0.01, 0.01, 0.98, 0.98 - 0.5 / (rows * 2.15 + 0.5)))
  for k, (image, label, p, index) in enumerate(zip(images, labels, probs, indices)):
    top, left = (k // cols) * cell_y + gap_y, (k % cols) * cell_x + gap_x // 2
    mosaic[top:top + height, left:left + width] = image[..., 0]
    ax.text(left + width / 2, top - 1, f'#{index}: true {label}\n'
            f'pred {p.argmax()} ({p.max():.1%})', ha='center', va='bottom',
            fontsize=8, color='firebrick')
  # Pixels as stored: 0-255 in uint8, else their own range (floats in [0, 1] were all white).
  top = 255.0 if images.dtype == np.uint8 or not n else max(float(images.max()), 1e-6)
  ax.imshow(mosaic, cmap='gray_r', vmin=min(0.0, float(images.min()) if n else 0.0), vmax=top,
            interpolation='nearest')
  ax.axis('off')
  fig.suptitle('Most confident mistakes on the test split' if n else
               'No mistakes on the test split')
  fig.savefig(path, dpi=110)
  plt.close(fig)


def select_worst(labels, probs, k: int = _WORST) -> np.ndarray:
  """Indices of up to `k` wrong predictions, highest predicted probability first."""
  wrong = np.flatnonzero(probs.argmax(-1) != labels)
  return wrong[np.argsort(-probs[wrong].max(-1), kind='stable')][:k]


def write_run_plots(workdir: str, predictions: dict, config) -> None:
  """Keeps the test predictions in the workdir and draws the run's plots.

  Args:
    workdir: the run's workdir.
    predictions: the test split's inputs 'x', targets 'y' and the task's
      predictions, in order.
    config: the run's config; its task's PLOTS say what is drawn.
  """
  os.makedirs(os.path.join(workdir, workdir_lib.PLOTS), exist_ok=True)
  task = tasks.of(config)
  if task.PLOTS == 'values':  # Saved with the task's name, which draw() looks for.
    np.savez_compressed(os.path.join(workdir, workdir_lib.PLOTS, PREDICTIONS),
                        task=config.task, **{k: np.asarray(v) for k, v in predictions.items()})
    draw(workdir)
    return
  predictions = task.class_probabilities(predictions)
  worst = select_worst(predictions['y'], predictions['probs'])
  np.savez_compressed(
      os.path.join(workdir, workdir_lib.PLOTS, PREDICTIONS), label=predictions['y'],
      probs=predictions['probs'].astype(np.float32), worst_index=worst,
      worst_image=predictions['x'][worst])
  draw(workdir)


def _class_names(workdir: str) -> tuple:
  """A table's class names (model.json), () for others or where it cannot be read."""
  try:
    return workdir_lib.ModelSpec.read(workdir).class_names
  except (OSError, ValueError):
    return ()


def draw(workdir: str) -> list:
  """(Re)draws a run's plots from its workdir; returns the files written."""
  directory = os.path.join(workdir, workdir_lib.PLOTS)
  os.makedirs(directory, exist_ok=True)
  written = [os.path.join(directory, 'learning_curves.png')]
  learning_curves({os.path.basename(os.path.abspath(workdir)): read_metrics(workdir)},
                  written[0])
  saved = os.path.join(directory, PREDICTIONS)
  if os.path.exists(saved):
    with np.load(saved) as p:
      if 'task' in p.files:  # A real-valued task's.
        p = {k: p[k] for k in p.files}
        for name in regression_plots.files(p):
          written.append(os.path.join(directory, name))
          regression_plots.DRAW[name](p, written[-1])
        return written
      written.append(os.path.join(directory, 'confusion_matrix.png'))
      confusion_matrix(p['label'], p['probs'], written[-1], _class_names(workdir))
      if p['worst_image'].ndim < 3:  # Features, not images: no pictures of them.
        return written
      written.append(os.path.join(directory, 'worst_errors.png'))
      worst = p['worst_index']
      worst_errors(p['worst_image'], p['label'][worst], p['probs'][worst], worst,
                   written[-1])
  return written
