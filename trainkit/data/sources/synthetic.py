"""Generated datasets, deterministic in their seed: `dataset='synthetic:<name>'`.

Each split ('train', 'validation', 'test') is a fresh draw of the same
process, from a seed derived from (data_seed, split), so a validation or test
figure measures generalisation to new points, never to the training ones.

- `inverse_sine`: the mixture density network's classic inverse problem (the
  Elegy example this project grew from): y ~ U(-10.5, 10.5),
  x = 7 sin(0.75 y) + 0.5 y + N(0, 1), and y is predicted from x. For many x
  several y are likely, so a single Gaussian cannot fit it.
- `linear`: y = x . w + N(0, 0.5^2) with 8 standard-normal features.
- `blobs`: 3 classes, 2-D Gaussian blobs (unit std-dev, centres 4 apart).
"""

import math

import numpy as np

PREFIX = 'synthetic:'
SPLITS = ('train', 'validation', 'test')
# inverse_sine's range of y, and its noise.
Y_LIMIT = 10.5
NOISE_STD = 1.0


def _inverse_sine(n: int, rng) -> tuple:
  y = rng.uniform(-Y_LIMIT, Y_LIMIT, n)
  x = inverse_sine_mean(y) + rng.normal(0.0, NOISE_STD, n)
  return x[:, None].astype(np.float32), y.astype(np.float32)


def inverse_sine_mean(y):
  """E[x | y] of inverse_sine."""
  return 7.0 * np.sin(0.75 * y) + 0.5 * y


def inverse_sine_nll(x, y, grid_points: int = 20_001) -> np.ndarray:
  """-log p(y | x) of inverse_sine's own process, per point: the best any model can do.

  p(y | x) = p(x | y) p(y) / p(x), with p(x) by quadrature over y's range.
  """
  x, y = np.asarray(x, np.float64).reshape(-1), np.asarray(y, np.float64).reshape(-1)
  grid = np.linspace(-Y_LIMIT, Y_LIMIT, grid_points)
  log_norm = -0.5 * math.log(2 * math.pi) - math.log(NOISE_STD)
  density = lambda x_, y_: np.exp(log_norm - 0.5 * ((x_ - inverse_sine_mean(y_)) / NOISE_STD) ** 2)
  step = grid[1] - grid[0]
  p_x = np.array([np.trapezoid(density(v, grid), dx=step) for v in x]) / (2 * Y_LIMIT)
  p_xy = density(x, y) / (2 * Y_LIMIT)
  return -np.log(p_xy / p_x)


_WEIGHTS = np.linspace(-1.0, 1.0, 8)


def _linear(n: int, rng) -> tuple:
  x = rng.normal(size=(n, 8))
  y = x @ _WEIGHTS + rng.normal(0.0, 0.5, n)
  return x.astype(np.float32), y.astype(np.float32)


_CENTRES = np.array([[0.0, 0.0], [4.0, 0.0], [2.0, 3.5]])


def _blobs(n: int, rng) -> tuple:
  y = rng.integers(0, len(_CENTRES), n)
  x = _CENTRES[y] + rng.normal(size=(n, 2))
  return x.astype(np.float32), y.astype(np.int32)


GENERATORS = {'inverse_sine': _inverse_sine, 'linear': _linear, 'blobs': _blobs}


def splits(name: str, sizes, seed: int) -> dict:
  """{split: {'x', 'y'}} of generator `name`, `sizes` examples per split of SPLITS."""
  return {split: dict(zip(('x', 'y'), GENERATORS[name](int(n), np.random.default_rng([seed, i]))))
          for i, (split, n) in enumerate(zip(SPLITS, sizes))}
