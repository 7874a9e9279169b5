"""What the model learns of the training split before it trains: scaling, target units, weights.

Each is computed once per run from the training split alone (never from the
validation or test rows) and kept in the workdir's model.json, so eval,
predict and export apply the same: the input scaling (`normalization`), the
standardisation of real-valued targets, and the class weights of the loss.
A streamed split is read a chunk at a time, never whole.
"""

import math

import numpy as np

from trainkit import errors
from trainkit import tasks
from trainkit.data.sources import tables

NORMALIZATIONS = ('unit', 'standardize', 'raw', 'per_feature')
# Examples used to estimate the mean and std-dev for 'standardize'.
_STATS_EXAMPLES = 10_000


def _per_element(chunks) -> tuple:
  """(mean, std-dev) of each element over the rows of `chunks` ([n, ...] each), as tuples.

  Chunks are merged with Chan et al.'s pairwise update, so a streamed split
  is never held whole. A constant element gets std-dev 1: it is centred,
  not blown up.
  """
  count, mean, m2 = 0, 0.0, 0.0
  for values in chunks:
    values = np.asarray(values, np.float64).reshape(len(values), -1)
    n, chunk_mean = len(values), values.mean(0)
    chunk_m2 = np.square(values - chunk_mean).sum(0)
    if count == 0:
      count, mean, m2 = n, chunk_mean, chunk_m2
      continue
    delta = chunk_mean - mean
    total = count + n
    mean = mean + delta * (n / total)
    m2 = m2 + chunk_m2 + np.square(delta) * (count * n / total)
    count = total
  std = np.sqrt(m2 / count)
  return tuple(mean.tolist()), tuple(np.where(std > 0, std, 1.0).tolist())


# Rows read at a time for a streamed split's statistics.
_STATS_CHUNK = 65_536


def _training_column(data, key: str):
  """The training split's 'x' or 'y' in chunks: resident (one), or read from its source."""
  if data.mode == 'device':
    yield data.train[key]
    return
  for lo in range(0, data.num_train, _STATS_CHUNK):
    yield data.train.read(range(lo, min(lo + _STATS_CHUNK, data.num_train)))[key]


def normalization_constants(config, data):
  """Returns (shift, scale) such that inputs are (x - shift) / scale.

  Numbers, or for 'per_feature' a tuple with one per input feature, from
  the whole training split.
  """
  if config.normalization == 'per_feature':
    return _per_element(_training_column(data, 'x'))
  if config.normalization == 'unit':
    return 0.0, 255.0
  if config.normalization == 'raw':
    return 0.0, 1.0
  if config.normalization == 'standardize':
    if data.mode == 'device':
      inputs = np.asarray(data.train['x'][:_STATS_EXAMPLES])
    else:
      inputs = data.train.read(range(min(_STATS_EXAMPLES, data.num_train)))['x']
    inputs = inputs.astype(np.float64)
    return float(inputs.mean()), float(inputs.std())
  raise ValueError(f'normalization={config.normalization!r} is not one of '
                   f'{", ".join(NORMALIZATIONS)}')


# Training rows whose values place the bins: the first ones, so a large split is not read whole.
_BIN_ROWS = 200_000


def _number_features(columns: tuple, input_shape: tuple) -> list:
  """The positions of the features that are a number's value: a table's number columns, or all."""
  if not columns:
    return list(range(math.prod(input_shape)))
  positions, at = [], 0
  for column in map(tables.Column.from_tuple, columns):
    if column.kind != 'string':
      positions.append(at)  # Its value; a missing indicator may follow.
    at += len(column.features())
  return positions


def _binned(config) -> bool:
  """Whether the model embeds numbers over bins: TabM with model.num_bins set."""
  return config.model.get('family', 'mlp') == 'tabm' and bool(config.model.num_bins)


def quantile_bins(config, data) -> tuple:
  """Per input feature the edges of `model.num_bins` quantile bins of its training values.

  For model.family='tabm' (its piecewise-linear embeddings), of the number
  features only (one-hot levels and missing indicators get none), from the
  first _BIN_ROWS training rows; () for a feature with one value, and for
  every feature of other models. Edges are float32 values, distinct as
  float32, so no bin of the model's float32 code is empty.
  """
  if not _binned(config):
    return ()
  numbers, rows, count = _number_features(data.columns, data.input_shape), [], 0
  for chunk in _training_column(data, 'x'):
    chunk = np.asarray(chunk).reshape(len(chunk), -1)[:_BIN_ROWS - count]
    rows.append(chunk[:, numbers].astype(np.float64))
    count += len(chunk)
    if count >= _BIN_ROWS:
      break
  values = np.concatenate(rows)
  quantiles = np.linspace(0.0, 1.0, config.model.num_bins + 1)
  bins = [()] * math.prod(data.input_shape)
  for j, feature in enumerate(numbers):
    edges = np.unique(np.quantile(values[:, j], quantiles).astype(np.float32))
    bins[feature] = tuple(edges.tolist()) if len(edges) >= 2 else ()
  return tuple(bins)


def bins_of_shape(config, columns: tuple, input_shape: tuple) -> tuple:
  """Bins of the most edges `quantile_bins` gives each number feature: their shapes, not values.

  For a model summary before training (no training values to fit), so its
  counts are the most training can build: a number feature with fewer
  distinct values gets fewer bins when fitted, and one of a single value none.
  """
  if not _binned(config):
    return ()
  bins = [()] * math.prod(input_shape)
  for feature in _number_features(columns, input_shape):
    bins[feature] = tuple(float(i) for i in range(config.model.num_bins + 1))
  return tuple(bins)


def target_constants(config, data) -> tuple:
  """(shift, scale) per target element where the task scales targets; ((), ()) otherwise.

  The training split's mean and std-dev: the model predicts standardised
  targets, and the tasks report their metrics in the targets' own units.
  """
  if not tasks.scales_targets(config):
    return (), ()
  return _per_element(_training_column(data, 'y'))


def parse_class_weight(text: str) -> tuple | str:
  """config.class_weight as given: '', 'balanced', or one float per class; ValueError if not."""
  if text in ('', 'balanced'):
    return text
  weights = tuple(float(w) for w in text.split(','))
  if any(not math.isfinite(w) or w < 0 for w in weights) or not any(weights):
    raise ValueError(text)
  return weights


def class_weights(config, data) -> tuple:
  """The weight of each class in the training loss; () for none.

  'balanced': n / (classes * rows of the class) over the training split, as
  scikit-learn's class_weight='balanced' (a class with no rows weighs 0).
  """
  given = parse_class_weight(config.class_weight)
  if given != 'balanced':
    return tuple(given)
  counts = sum(np.bincount(np.asarray(y).reshape(-1), minlength=data.num_classes)
               for y in _training_column(data, 'y')).astype(np.float64)
  weights = np.where(counts > 0, counts.sum() / (len(counts) * np.maximum(counts, 1)), 0.0)
  return tuple(weights.tolist())


def check_config(config) -> None:
  """Refuses a normalization that is not one, or a class_weight that cannot be read."""
  errors.one_of(config, 'normalization', NORMALIZATIONS)
  try:
    parse_class_weight(config.class_weight)
  except (ValueError, TypeError, AttributeError):
    raise errors.ConfigError(
        f'class_weight={config.class_weight!r}: must be \'\', \'balanced\' or '
        "one weight >= 0 per class, e.g. '1,5'") from None


def check_data(config, data) -> None:
  """Class weights must be one per class; 'unit' scaling is for uint8 pixels."""
  weights = parse_class_weight(config.class_weight)
  if weights and weights != 'balanced':
    errors.require(len(weights) == data.num_classes, 'class_weight', config.class_weight,
                   f'gives {len(weights)} weights; dataset={config.dataset!r} has '
                   f'{data.num_classes} classes')
  errors.require(config.normalization != 'unit' or data.input_dtype == 'uint8',
                 'normalization', config.normalization,
                 f'divides uint8 pixels by 255; dataset={config.dataset!r} '
                 f"has {data.input_dtype} features (use 'per_feature')")
