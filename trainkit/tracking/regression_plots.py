"""Pictures of a regression or mixture density run, from its test predictions.

Drawn by trainkit/tracking/plots.py's `draw` for `task='regression'` or
`'mixture_density'`, from `plots/predictions.npz` (the test inputs, targets
and predictions, in the targets' units), so report.py redraws them too:

- predicted_vs_true.png: the predicted mean against the target, and the
  residuals against the prediction (every target element pooled);
- for a 1-D input and a scalar target, as the Elegy example draws them:
  fit.png, the test points with each mixture component's mean and +-1 std-dev
  where its gate weight exceeds 0.02 (a regression's one Gaussian: always),
  and, for a mixture, gates.png: the stacked gate probabilities P(z = k | x)
  over x.
"""

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

# Components drawn where their gate weight exceeds this (the Elegy example's).
_SHOWN_WEIGHT = 0.02
_POINTS = 4000  # At most this many test points in a scatter.


def files(p) -> tuple:
  """The files `draw` writes for saved predictions `p`."""
  one_d = p['x'].reshape(len(p['x']), -1).shape[1] == 1 and p['y'][0].size == 1
  return ('predicted_vs_true.png', *(('fit.png',) if one_d else ()),
          *(('gates.png',) if one_d and 'weights' in p else ()))


def _sample(n: int) -> np.ndarray:
  return np.random.default_rng(0).permutation(n)[:_POINTS]


def predicted_vs_true(p, path: str) -> None:
  """The predicted mean against the target, and the residuals against the prediction."""
  mean, y = p['mean'].reshape(-1), p['y'].reshape(-1).astype(np.float64)
  rows = _sample(len(y))
  fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
  axes[0].scatter(y[rows], mean[rows], s=3, alpha=0.4)
  low, high = min(y.min(), mean.min()), max(y.max(), mean.max())
  axes[0].plot([low, high], [low, high], color='black', linewidth=1)
  axes[0].set_xlabel('target')
  axes[0].set_ylabel('predicted mean')
  rmse = np.sqrt(np.mean((mean - y) ** 2))
  axes[0].set_title(f'Test split: predicted against true (RMSE {rmse:.4g})')
  axes[1].scatter(mean[rows], (y - mean)[rows], s=3, alpha=0.4)
  axes[1].axhline(0, color='black', linewidth=1)
  axes[1].set_xlabel('predicted mean')
  axes[1].set_ylabel('residual (target - prediction)')
  axes[1].set_title('Residuals')
  for ax in axes:
    ax.grid(alpha=0.3)
  fig.subplots_adjust(left=0.07, right=0.98, bottom=0.12, top=0.92, wspace=0.22)
  fig.savefig(path, dpi=110)
  plt.close(fig)


def fit(p, path: str) -> None:
  """The test points, and each component's mean +- 1 std-dev over x."""
  x, y = p['x'].reshape(-1), p['y'].reshape(-1)
  order = np.argsort(x)
  if 'weights' in p:
    means, stds, weights = (p[k].reshape(len(x), -1) for k in ('means', 'stds', 'weights'))
  else:
    means, stds = p['mean'].reshape(-1, 1), p['std'].reshape(-1, 1)
    weights = np.ones_like(means)
  rows = _sample(len(x))
  fig, ax = plt.subplots(figsize=(8, 5.5))
  ax.scatter(x[rows], y[rows], s=3, alpha=0.25, color='grey', label='test points')
  colors = plt.rcParams['axes.prop_cycle'].by_key()['color']
  for k in range(means.shape[1]):
    shown = weights[order, k] > _SHOWN_WEIGHT
    mean = np.where(shown, means[order, k], np.nan)
    std = stds[order, k]
    color = colors[k % len(colors)]
    ax.plot(x[order], mean, color=color, linewidth=2, label=f'component {k}')
    ax.fill_between(x[order], mean - std, mean + std, color=color, alpha=0.2)
  ax.set_xlabel('x')
  ax.set_ylabel('y')
  ax.set_title(f'Mean +- 1 std-dev of each component where its weight > {_SHOWN_WEIGHT}')
  ax.legend(fontsize=8, markerscale=3)
  ax.grid(alpha=0.3)
  fig.subplots_adjust(left=0.09, right=0.98, bottom=0.1, top=0.93)
  fig.savefig(path, dpi=110)
  plt.close(fig)


def gates(p, path: str) -> None:
  """The gate's probabilities P(z = k | x), stacked, over x."""
  x = p['x'].reshape(-1)
  order = np.argsort(x)
  weights = p['weights'].reshape(len(x), -1)[order]
  fig, ax = plt.subplots(figsize=(8, 4))
  ax.stackplot(x[order], weights.T, labels=[f'P(z={k} | x)' for k in range(weights.shape[1])])
  ax.set_xlim(x.min(), x.max())
  ax.set_ylim(0, 1)
  ax.set_xlabel('x')
  ax.set_title('Gate probabilities')
  ax.legend(fontsize=8, loc='upper right')
  fig.subplots_adjust(left=0.08, right=0.98, bottom=0.12, top=0.92)
  fig.savefig(path, dpi=110)
  plt.close(fig)


DRAW = {'predicted_vs_true.png': predicted_vs_true, 'fit.png': fit, 'gates.png': gates}
