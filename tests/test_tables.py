"""Tables as datasets: CSV and Parquet, their encoding, the binary task, weights, bad tables."""

import csv
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pyarrow as pa
from pyarrow import csv as pa_csv
from pyarrow import parquet as pq
import pytest

from tests.helpers import main_command, session_cache_dir
from tests.helpers import run_export, sigkill_then_resume
from tests.helpers import tiny_config
from trainkit import cli
from trainkit.data import pipeline as input_pipeline
from trainkit.data import sources
from trainkit.data import statistics as training_statistics
from trainkit.data.sources import host_tensorflow
from trainkit.data.sources import table_files
from trainkit.serving import jax_export
from trainkit import errors
from trainkit.serving import onnx_export
from trainkit.serving import predict_rows as predictions
from trainkit.serving import restore as restore_lib
from trainkit.serving import row_inputs as prediction_inputs
from trainkit.serving import saved_model
from trainkit.tasks import binary
from trainkit.tasks import classification
from trainkit.training import evaluation
from trainkit.training import optimizers
import train

_RNG = np.random.default_rng(0)


def _columns(n: int, seed: int = 0) -> dict:
  """A table's columns: an id, numbers (some missing), strings (some missing), a flag, targets."""
  rng = np.random.default_rng(seed)
  a, b = rng.normal(size=n), rng.normal(size=n)
  b[rng.random(n) < 0.1] = np.nan
  colour = rng.choice(['red', 'green', 'blue', 'teal'], n, p=[0.4, 0.3, 0.2, 0.1]).astype(object)
  colour[rng.random(n) < 0.05] = None
  logit = 2.0 * a - np.nan_to_num(b) + 1.5 * (colour == 'red')
  return {'id': np.arange(n) + 1000, 'a': a, 'b': b, 'colour': list(colour),
          'flag': rng.random(n) < 0.5,
          'label': (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64),
          'value': logit + rng.normal(size=n) * 0.1}


def _write(columns: dict, path) -> str:
  table = pa.table({k: pa.array(v) for k, v in columns.items()})
  if str(path).endswith('.csv'):
    pa_csv.write_csv(table, str(path))
  else:
    pq.write_table(table, str(path), row_group_size=97)  # Several row groups.
  return str(path)


# A binary task on the table's columns, split 70/15/15 by a seeded stratified shuffle.
_FIELDS = {'task': 'binary', 'target_column': 'label', 'id_columns': ('id',),
           'feature_columns': ('a', 'b', 'colour', 'flag'), 'train_split': 'train[:70%]',
           'validation_split': 'train[70%:85%]', 'test_split': 'train[85%:]', 'split_seed': 0,
           'normalization': 'per_feature', 'best_metric': 'roc_auc',
           'early_stopping_metric': 'log_loss', 'batch_size': 16, 'num_epochs': 3,
           'learning_rate': 1e-2, 'schedule': 'constant'}


def _config(dataset, **overrides):
  return tiny_config(dataset=str(dataset), **{**_FIELDS, **overrides})


def test_the_encoding_is_fitted_on_the_training_rows_only(tmp_path):
  columns = _columns(200)
  # The validation rows (the last 40, in file order) are far off, with a level of their own.
  columns['a'][160:] += 1000.0
  columns['colour'][160:] = ['violet'] * 40
  path = _write(columns, tmp_path / 't.csv')
  config = _config(path, train_split='train[:160]', validation_split='train[160:]',
                   test_split='train[160:]', split_seed=-1, num_epochs=1)
  train.train_and_evaluate(config, str(tmp_path / 'run'))
  spec = json.loads((tmp_path / 'run' / 'model.json').read_text())
  by_name = {c[0]: c for c in spec['columns']}
  b = np.asarray(columns['b'][:160])
  assert by_name['a'][2] == pytest.approx(np.mean(columns['a'][:160]))
  assert by_name['b'][2] == pytest.approx(np.nanmean(b)) and by_name['b'][3] is True
  assert 'violet' not in by_name['colour'][4]
  # The training rows' levels, most frequent first.
  seen = [c for c in columns['colour'][:160] if c is not None]
  assert by_name['colour'][4] == sorted(set(seen), key=lambda c: (-seen.count(c), c))
  # The input scaling too: feature 0 is 'a', standardised by the training rows alone.
  assert spec['shift'][0] == pytest.approx(np.mean(columns['a'][:160]), rel=1e-6)
  assert spec['scale'][0] == pytest.approx(np.std(columns['a'][:160]), rel=1e-5)


def test_a_number_split_column_names_each_value_exactly(tmp_path):
  columns = _columns(60)
  columns['day'] = np.repeat([20200101, 20200102, 20200103], [30, 20, 10])
  path = _write(columns, tmp_path / 't.csv')
  config = _config(path, split_column='day', train_split='20200101',
                   validation_split='20200102', test_split='20200103')
  source = sources.open_source(config)
  assert [len(source.records(name)) for name in ('20200101', '20200102', '20200103')] == [
      30, 20, 10]  # Not one split '2.02001e+07' of the last value's 10 rows.


def test_csv_parquet_and_a_folder_of_parquet_files_train_alike(tmp_path):
  columns = _columns(300)
  folder = tmp_path / 'parts'
  folder.mkdir()
  for i, (lo, hi) in enumerate(((0, 120), (120, 300))):
    _write({k: v[lo:hi] for k, v in columns.items()}, folder / f'part{i}.parquet')
  summaries = {}
  for name, path in (('csv', _write(columns, tmp_path / 't.csv')),
                     ('parquet', _write(columns, tmp_path / 't.parquet')),
                     ('folder', str(folder))):
    config = _config(path, cache_dir=str(tmp_path / 'cache'))
    summaries[name] = train.train_and_evaluate(config, str(tmp_path / name))[1]
  keys = [k for k in summaries['csv'] if k.startswith(('eval_', 'test_', 'best_'))]
  assert 'test_roc_auc' in keys and summaries['csv']['test_roc_auc'] > 0.7
  for name in ('parquet', 'folder'):
    assert {k: summaries[name][k] for k in keys} == {k: summaries['csv'][k] for k in keys}
  # Converted once each, into memory-mapped columns keyed by the files' content.
  assert len(os.listdir(tmp_path / 'cache' / 'tables')) == 3


def test_a_parquet_file_with_an_empty_column_takes_its_kind_from_a_later_file(tmp_path):
  columns = _columns(200)
  typed, untyped = tmp_path / 'typed', tmp_path / 'untyped'
  for folder in (typed, untyped):
    folder.mkdir()
    _write({k: v[100:] for k, v in columns.items()}, folder / 'part1.parquet')
  first = {k: v[:100] for k, v in columns.items()}
  first['colour'], first['b'] = [None] * 100, np.full(100, np.nan)
  _write(first, typed / 'part0.parquet')
  # As pandas writes a column without a value: of type null, not string or double.
  pq.write_table(pa.table({k: pa.nulls(100) if k in ('colour', 'b') else pa.array(v)
                           for k, v in first.items()}), str(untyped / 'part0.parquet'))
  assert pq.read_schema(untyped / 'part0.parquet').field('colour').type == pa.null()
  want, got = (table_files.load(str(f), '') for f in (typed, untyped))
  assert got[0]['kinds'] == want[0]['kinds'] and got[0]['problems'] == {}
  assert got[0]['levels'] == want[0]['levels']
  every = range(len(want[0]['names']))
  for mine, theirs in zip(got[1].take(every), want[1].take(every)):
    np.testing.assert_array_equal(mine, theirs)
  # A later file that is no Parquet file is refused naming it, as ever (not a traceback).
  (untyped / 'part1.parquet').write_bytes(b'not parquet')
  with pytest.raises(sources.DataError, match=r'part1.parquet cannot be read as a table'):
    table_files.load(str(untyped), '')


def test_a_changed_table_is_converted_again_and_its_stale_copy_removed(tmp_path):
  columns = _columns(50)
  path = _write(columns, tmp_path / 't.csv')
  cache = str(tmp_path / 'cache')
  meta, first = table_files.load(path, cache)
  assert meta['rows'] == 50 and first[1][:3].tolist() == pytest.approx(columns['a'][:3])
  assert table_files.load(path, cache)[1][1].tolist() == first[1].tolist()  # Read back.
  _write({**columns, 'a': columns['a'] + 1.0}, tmp_path / 't.csv')
  changed = table_files.load(path, cache)[1][1].tolist()
  assert changed == pytest.approx((columns['a'] + 1.0).tolist())
  assert len(os.listdir(tmp_path / 'cache' / 'tables')) == 1
  # A damaged copy (cut short) is converted again.
  folder = os.path.join(cache, 'tables', os.listdir(tmp_path / 'cache' / 'tables')[0])
  with open(os.path.join(folder, 'rows.bin'), 'r+b') as f:
    f.truncate(100)
  assert table_files.load(path, cache)[1][1].tolist() == changed


@pytest.mark.slow  # Plots, the SavedModel (TensorFlow's import) and two more exports.
def test_predict_carries_ids_and_counts_unseen_levels(tmp_path):
  columns = _columns(240)
  path = _write(columns, tmp_path / 't.parquet')
  config = _config(path, num_epochs=2, plots=True)
  train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert sorted(os.listdir(tmp_path / 'run' / 'plots')) == [
      'confusion_matrix.png', 'learning_curves.png', 'predictions.npz']
  new = {'id': [7, 8, 9, 10], 'a': [0.5, None, -1.0, 2.0], 'b': [None, 1.0, 0.0, -2.0],
         'colour': ['red', 'purple', None, 'purple'], 'flag': [True, False, True, False],
         'extra': ['x', 'y', 'z', 'w']}  # A column the model does not take: ignored.
  rows = _write(new, tmp_path / 'new.csv')
  out = str(tmp_path / 'out.csv')
  written, table = predictions.predict_rows(config, str(tmp_path / 'run'), rows, output=out)
  assert written == out
  with open(out) as f:
    lines = list(csv.DictReader(f))
  assert [r['id'] for r in lines] == ['7', '8', '9', '10']
  assert list(lines[0]) == ['row', 'id', 'class', 'prob_1']
  assert 'colour in 2 rows' in table
  # The same encoding as training: purple and a missing level are 'other', a
  # missing number the mean of the training rows' values (with its indicator
  # for b, which training rows miss), computed here from the table itself.
  state, _, spec = restore_lib.restore(config, str(tmp_path / 'run'))
  features, _, _ = prediction_inputs.read_table(config, spec, rows)
  order = sources.open_source(config).records('train').order
  training = order[:int(len(order) * 0.7)]
  assert features[1, 0] == np.float32(np.mean(columns['a'][training]))
  assert features[0, 1] == np.float32(np.nanmean(columns['b'][training]))
  assert features[:, 2].tolist() == [1.0, 0.0, 0.0, 0.0]  # b:missing.
  assert features[[0, 2, 3], 1].tolist() == [features[0, 1], 0.0, -2.0]
  other = features[:, 2 + 1 + 4]  # a, b, b:missing, then red green blue teal other.
  assert other.tolist() == [0.0, 1.0, 1.0, 1.0]
  # In one batch of eval_batch_size rows, as predict runs it: XLA's CPU code may
  # round a row differently in a batch of another shape.
  batch = np.zeros((1, config.eval_batch_size, features.shape[1]), np.float32)
  batch[0, :len(features)] = features
  expected = jax.device_get(evaluation.predict_steps(
      optimizers.params_for_eval(state), {'x': batch}))['prob'][0, :len(features)]
  np.testing.assert_array_equal([np.float32(r['prob_1']) for r in lines], expected)  # Exactly.
  # The SavedModel takes the encoded features and serves the same.
  tf = host_tensorflow.tensorflow()
  serve = tf.saved_model.load(saved_model.export_saved_model(config, str(tmp_path / 'run')))
  served = serve.signatures['serving_default'](features=tf.constant(features))
  np.testing.assert_allclose(served['prob'].numpy(), expected, rtol=1e-4)
  # And the jax.export artifact and the ONNX model, each run by its runtime alone in a
  # fresh process on the raw CSV columns (a missing number, a missing and an unseen
  # level among them), at batch sizes 1 and 37.
  for kind, export in (('jax', jax_export.export), ('onnx', onnx_export.export)):
    got = run_export(kind, export(config, str(tmp_path / 'run')), rows, str(tmp_path))
    for n in (1, 37):
      np.testing.assert_allclose(got[f'b{n}_prob'], expected[np.arange(n) % 4], rtol=1e-5,
                                 err_msg=kind)
      assert (got[f'b{n}_class'] == (expected[np.arange(n) % 4] > 0.5)).all(), kind
  # A workdir without checkpoints: refused in one line, the workdir left as it was.
  bare = tmp_path / 'bare'
  bare.mkdir()
  (bare / 'model.json').write_text((tmp_path / 'run' / 'model.json').read_text())
  (bare / 'config.json').write_text((tmp_path / 'run' / 'config.json').read_text())
  for export in (jax_export.export, onnx_export.export, saved_model.export_saved_model):
    with pytest.raises(cli.INPUT_ERRORS, match='has no checkpoint .train first.'):
      export(config, str(bare))
    # No checkpoint folder made (the lock file is the workdir's, as every command takes it).
    assert set(os.listdir(bare)) - {'.lock'} == {'config.json', 'model.json'}
  # A CSV's column is read as the model's kind (a string column's '1.5' is a
  # level); a Parquet file's types are its own.
  for bad, suffix, message in (
      ({k: v for k, v in new.items() if k != 'b'}, '.csv', "has no column 'b'"),
      ({**new, 'a': ['x', '1', '2', '3']}, '.csv', "column 'a' holds 'x', not a number"),
      ({**new, 'colour': [1.5, 2.5, 3.5, 4.5]}, '.parquet',
       "column 'colour' holds double values; the model was trained on string"),
      ({**new, 'b': [0.0, 1.0, float('-inf'), 2.0]}, '.csv',
       r"column 'b' holds an infinite value \(-inf, the first in row 2\)$"),
      ({**new, 'a ': new['a']}, '.dup.csv', "has more than one column named 'a'$")):
    path = _write(bad, tmp_path / f'bad{suffix}')
    if suffix == '.dup.csv':  # Two columns named 'a'.
      with open(path) as f:
        text = f.read()
      with open(path, 'w') as f:
        f.write(text.replace('"a "', '"a"', 1))
    with pytest.raises(cli.INPUT_ERRORS, match=message):
      predictions.predict_rows(config, str(tmp_path / 'run'), path)


def test_class_weights_change_the_loss_as_defined():
  logits = jnp.asarray(_RNG.normal(size=(12, 3)), jnp.float32)
  labels = jnp.asarray([0, 1, 2, 2] * 3)
  sample = jnp.asarray(_RNG.uniform(0.5, 2.0, 12), jnp.float32)
  task = classification.Classification(3, class_weights=(1.0, 2.0, 0.5))
  p = np.exp(np.asarray(logits)) / np.exp(np.asarray(logits)).sum(-1, keepdims=True)
  ce = -np.log(p[np.arange(12), np.asarray(labels)])
  w = np.array([1.0, 2.0, 0.5])[np.asarray(labels)] * np.asarray(sample)
  assert float(task.objective(logits, labels, sample)) == pytest.approx(
      np.sum(w * ce) / np.sum(w), rel=1e-5)
  assert float(classification.Classification(3).objective(logits, labels)) == pytest.approx(
      ce.mean(), rel=1e-5)
  # Binary: the weighted sigmoid cross-entropy.
  z = np.asarray(logits[:, 0])
  y = np.asarray(labels) % 2
  bce = np.log1p(np.exp(-z)) * y + np.log1p(np.exp(z)) * (1 - y)
  wb = np.array([1.0, 4.0])[y]
  got = binary.Binary(class_weights=(1.0, 4.0)).objective(logits[:, 0], jnp.asarray(y))
  assert float(got) == pytest.approx(np.sum(wb * bce) / np.sum(wb), rel=1e-5)
  # 'balanced' as scikit-learn defines it: n / (classes * rows of the class).
  data = input_pipeline.Data(mode='device', train={'y': np.array([0, 0, 0, 1])}, test=None,
                             num_train=4, num_test=0, num_classes=2, input_shape=(1,),
                             mesh=None)
  assert training_statistics.class_weights(tiny_config(class_weight='balanced'), data) == (
      pytest.approx(4 / 6), pytest.approx(2.0))
  assert training_statistics.class_weights(tiny_config(class_weight='1,3'), data) == (1.0, 3.0)


@pytest.mark.slow  # Four table runs.
def test_a_weight_column_weighs_the_loss_and_class_weights_are_kept(tmp_path):
  columns = _columns(200)
  runs = {}
  for name, weights in (('ones', np.ones(200)), ('twos', np.full(200, 2.0)),
                        ('half', np.r_[np.ones(100), np.zeros(100)])):
    path = _write({**columns, 'w': weights}, tmp_path / f'{name}.csv')
    config = _config(path, weight_column='w', class_weight='balanced', num_epochs=2)
    state, _ = train.train_and_evaluate(config, str(tmp_path / name))
    runs[name] = np.concatenate([np.ravel(p) for p in jax.tree.leaves(state.params)])
  # sum(w * loss) / sum(w): doubling every weight changes nothing, to the bit.
  np.testing.assert_array_equal(runs['twos'], runs['ones'])
  assert not np.allclose(runs['half'], runs['ones'])
  # Rows of weight 0 contribute nothing: flipping their labels changes no
  # parameter, to the bit (rows as stored, so the splits do not move).
  half = np.r_[np.ones(100), np.zeros(100)]
  trained = []
  for name, label in (('kept', columns['label']),
                      ('flipped', np.where(half == 0, 1 - columns['label'], columns['label']))):
    path = _write({**columns, 'label': label, 'w': half}, tmp_path / f'{name}.csv')
    state, _ = train.train_and_evaluate(
        _config(path, weight_column='w', split_seed=-1, num_epochs=2), str(tmp_path / name))
    trained.append(np.concatenate([np.ravel(p) for p in jax.tree.leaves(state.params)]))
  np.testing.assert_array_equal(trained[0], trained[1])
  # 'balanced' from the training rows, kept in model.json with the run.
  labels = np.asarray(input_pipeline.create_datasets(config).train['y'])
  counts = np.bincount(labels, minlength=2)
  spec = json.loads((tmp_path / 'half' / 'model.json').read_text())
  assert spec['class_weights'] == pytest.approx((len(labels) / (2 * counts)).tolist())
  with pytest.raises(cli.INPUT_ERRORS, match="weight_column='w' must hold numbers >= 0"):
    path = _write({**columns, 'w': -np.ones(200)}, tmp_path / 'negative.csv')
    train.train_and_evaluate(_config(path, weight_column='w'), str(tmp_path / 'negative'))


def test_binary_metrics_match_a_direct_computation():
  labels = _RNG.integers(0, 2, 500)
  scores = np.round(_RNG.normal(size=500) + labels, 1)  # Many ties.
  pos, neg = scores[labels == 1], scores[labels == 0]
  pairs = (pos[:, None] > neg[None]).mean() + 0.5 * (pos[:, None] == neg[None]).mean()
  assert binary.roc_auc(labels, scores) == pytest.approx(pairs, rel=1e-12)
  ap = 0.0
  for t in np.unique(scores)[::-1]:  # Each distinct threshold, high to low.
    chosen = scores >= t
    recall_gain = np.sum(labels[scores == t]) / labels.sum()
    ap += recall_gain * labels[chosen].mean()
  assert binary.average_precision(labels, scores) == pytest.approx(ap, rel=1e-12)
  task = binary.Binary(threshold=0.7)
  logits = jnp.asarray(scores, jnp.float32)
  mask = jnp.ones(500)
  sums = jax.device_get(task.eval_sums(logits, jnp.asarray(labels), mask))
  metrics = task.metrics_from_sums(sums, 500, {'logit': scores, 'label': labels})
  assert metrics['accuracy'] == pytest.approx(np.mean((1 / (1 + np.exp(-scores)) >= 0.7)
                                                      == labels), abs=1e-9)
  bce = np.log1p(np.exp(-scores)) * labels + np.log1p(np.exp(scores)) * (1 - labels)
  assert metrics['log_loss'] == pytest.approx(bce.mean(), rel=1e-5)
  assert metrics['roc_auc'] == pytest.approx(pairs, rel=1e-6)


@pytest.mark.slow
def test_a_table_run_sigkilled_in_training_resumes_to_the_uninterrupted_result(tmp_path):
  path = _write(_columns(2000, seed=1), tmp_path / 't.parquet')
  fields = {'num_epochs': 6, 'checkpoint_every_epochs': 1, 'checkpoint_every_steps': 10,
            'steps_per_call': 1, 'keep_checkpoints': 2, 'cache_dir': session_cache_dir(),
            'input_mode': 'stream'}
  _, expected = train.train_and_evaluate(_config(path, **fields), str(tmp_path / 'straight'))
  killed = tmp_path / 'killed'
  # tiny_config's model and fields, then the table's.
  given = {'model.hidden_sizes': (16,), 'model.dropout_rates': (0.1,), 'eval_batch_size': 16,
           'log_every_steps': 2, 'plots': False, 'input_workers': 0, 'progress': 'off',
           'dataset': path, **_FIELDS, **fields}
  command = main_command('--config=configs/default.py', f'--workdir={killed}',
                         *(f'--config.{k}={v}' for k, v in given.items()))
  got = sigkill_then_resume(command, killed, tmp_path / 'kill.log', expected['step'])
  for key in ('step', 'eval_roc_auc', 'eval_log_loss', 'test_roc_auc', 'best_step',
              'best_test_pr_auc'):
    assert got[key] == expected[key], key


def _bad(tmp_path, name):
  """Tables that are refused, written on demand."""
  columns = _columns(40)
  if name == 'duplicate':
    path = tmp_path / 'dup.csv'
    path.write_text('a,a,label\n1,2,0\n3,4,1\n')
    return str(path)
  if name == 'garbage':
    path = tmp_path / 'garbage.parquet'
    path.write_bytes(b'not a parquet file at all')
    return str(path)
  if name == 'infinite':
    columns['a'][6] = np.inf  # Written as 'inf', which CSV readers take as a number.
  if name == 'infinite_target':
    columns['value'][2] = -np.inf
    return _write(columns, tmp_path / 'inf.parquet')
  if name == 'one_value':
    columns['label'] = np.zeros(40, np.int64)
  if name == 'all_missing':
    columns['b'] = np.full(40, np.nan)
  if name in ('row_numbers', 'pandas_index'):  # R's write.csv, pandas' to_csv read and written.
    columns = {'' if name == 'row_numbers' else 'Unnamed: 0': np.arange(1, 41), **columns}
  return _write(columns, tmp_path / f'{name}.csv')


@pytest.mark.parametrize('table, overrides, message', [
    ('missing', {}, "dataset='.*missing.csv': no such file"),
    ('garbage', {}, 'garbage.parquet cannot be read as a table'),
    ('ok', {'target_column': 'labl'}, "target_column='labl' is not a column .did you mean 'label'"),
    ('ok', {'target_column': ''}, 'a table needs target_column'),
    ('one_value', {}, r"target_column='label' holds one value only \('0'\)$"),
    ('ok', {'task': 'classification', 'target_column': 'value', 'best_metric': 'accuracy',
            'early_stopping_metric': 'loss'}, "task='classification': needs integer class"),
    ('all_missing', {}, "column 'b' has no values .all missing."),
    ('infinite', {},
     r"feature_columns: column 'a' holds an infinite value \(inf, the first in row 6\)"),
    ('infinite_target', {'task': 'regression', 'target_column': 'value', 'best_metric': 'loss',
                         'early_stopping_metric': 'loss'},
     r"target_column: column 'value' holds an infinite value \(-inf, the first in row 2\)"),
    ('ok', {'feature_columns': ('a', 'label')}, "feature_columns: 'label' is also the target"),
    ('duplicate', {'feature_columns': ()}, "duplicate column names: 'a'"),
    ('ok', {'class_weight': '1,2,3'}, "class_weight='1,2,3': gives 3 weights; .* has 2 classes"),
    ('ok', {'class_weight': 'heavy'}, "class_weight='heavy': must be"),
    # Trained on, row numbers would be a feature, and a predicted file must have them.
    ('row_numbers', {'feature_columns': ()}, "column '' has no name: row numbers, .* Set "
     'id_columns'),
    ('pandas_index', {'feature_columns': ()}, "column 'Unnamed: 0' has no name: row numbers"),
])
def test_bad_tables_are_refused_before_any_work(tmp_path, table, overrides, message):
  path = str(tmp_path / 'missing.csv') if table == 'missing' else _bad(tmp_path, table)
  config = _config(path, **overrides)
  with pytest.raises(cli.INPUT_ERRORS, match=message):
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()
  assert issubclass(sources.DataError, ValueError)


@pytest.mark.parametrize('labels, task, names', [
    ((1, 2), 'binary', ('1', '2')),  # Refused as 3 classes, 0 among them.
    ((-1, 1), 'binary', ('-1', '1')),  # Refused as 'not class labels'.
    ((0, 1, 2), 'classification', ('0', '1', '2')),  # As before.
    ((1, 3), 'classification', ('0', '1', '2', '3')),  # From 0, as trained workdirs have it.
    ((10, -5, 3), 'classification', ('-5', '3', '10')),  # Refused; in numeric order now.
])
def test_whole_number_targets_are_classes(tmp_path, labels, task, names):
  columns = _columns(60)
  # Each label as often as its place: the classes' counts say which row went where.
  columns['label'] = np.repeat(labels, [10 * (i + 1) for i in range(len(labels))])[
      np.random.default_rng(0).permutation(10 * sum(range(1, len(labels) + 1)))[:60]] if len(
          labels) == 3 else np.array(labels)[np.arange(60) % len(labels)]
  config = _config(_write(columns, tmp_path / 't.csv'), task=task, best_metric='accuracy',
                   early_stopping_metric='loss', train_split='train', validation_split='',
                   test_split='train')
  data = input_pipeline.create_datasets(config)
  assert data.class_names == names
  counts = np.bincount(np.asarray(data.train['y']), minlength=len(names))
  assert dict(zip(names, counts)) == {
      str(v): int((columns['label'] == v).sum()) for v in map(int, names)}


def test_a_split_columns_splits_that_no_split_reads_are_warned_of(tmp_path, caplog):
  columns = _columns(200)
  columns['part'] = np.array(['train', 'train', 'train', 'validation', 'test'] * 40)
  path = _write(columns, tmp_path / 't.csv')
  # The table config's slices of 'train' left as they are: 80 rows never read.
  input_pipeline.create_datasets(_config(path, split_column='part'))
  assert ("split_column='part' has rows that no split reads: 'validation' (40 rows), "
          "'test' (40 rows); train_split='train[:70%]'") in caplog.text
  caplog.clear()
  input_pipeline.create_datasets(_config(path, split_column='part', train_split='train',
                                         validation_split='validation', test_split='test'))
  assert 'no split reads' not in caplog.text


def test_an_exports_signature_gives_a_date_columns_unit():
  from trainkit.data.sources import tables  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  from trainkit.serving import table_inputs  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  day, amount = table_inputs.signature(
      [tables.Column('day', 'date', fill=19000.0), tables.Column('amount', 'float')], 'float64')
  # ONNX takes it as a float64 number, which the user must compute from a date.
  assert day['unit'] == 'days since 1970-01-01 UTC' and day['dtype'] == 'float64'
  assert 'unit' not in amount


def test_amounts_or_ids_are_refused_as_classes(tmp_path):
  columns = _columns(2000)
  columns['label'] = np.arange(2000) * 7 + 1000  # Prices, the task left at classes.
  config = _config(_write(columns, tmp_path / 'prices.csv'), task='classification',
                   best_metric='accuracy', early_stopping_metric='loss')
  with pytest.raises(sources.DataError, match=r"target_column='label' makes 14,994 classes of "
                     "2,000 rows: too many for task='classification'; for amounts or counts "
                     "set task='regression'"):
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()
  columns['label'] = np.full(2000, 20200101)  # Dates: 20 million names were built first.
  columns['label'][::2] = 20200102
  config.dataset = _write(columns, tmp_path / 'dates.csv')
  with pytest.raises(sources.DataError, match="holds whole numbers up to 20,200,102: as "
                     'classes 0..max, too many'):
    input_pipeline.create_datasets(config)


@pytest.mark.slow
def test_auc_agrees_on_one_and_four_devices_and_two_processes(tmp_path):
  from tests import test_arrays  # pylint: disable=g-import-not-at-top
  from tests import test_parallel  # pylint: disable=g-import-not-at-top
  path = _write(_columns(1000, seed=2), tmp_path / 't.parquet')
  configs = {mode: _config(path, input_mode=mode, num_epochs=2, eval_batch_size=40)
             for mode in ('device', 'stream')}
  runs = test_parallel._devices_run(  # pylint: disable=protected-access
      tmp_path, **{f'{mode}_{n}': (config, n) for mode, config in configs.items()
                   for n in (1, 4)})
  for mode in configs:
    one, four = runs[f'{mode}_1']['summary'], runs[f'{mode}_4']['summary']
    assert four['step'] == one['step'] == 2 * (700 // 16)
    for key in ('eval_roc_auc', 'eval_pr_auc', 'test_roc_auc', 'test_log_loss'):
      assert four[key] == pytest.approx(one[key], abs=2e-3), (mode, key)
  # Two processes, each reading its own rows: every example's logit gathered.
  flags = [f'--config.{k}={v}' for k, v in {
      'model.hidden_sizes': (16,), 'model.dropout_rates': (0.1,), 'eval_batch_size': 40,
      'input_workers': 0, 'plots': False, 'progress': 'off', 'cache_dir': '',
      'dataset': path, 'input_mode': 'stream', **{**_FIELDS, 'num_epochs': 2}}.items()]
  one = test_arrays._main_py(tmp_path / 'one', 'configs/default.py', *flags)  # pylint: disable=protected-access
  two = test_arrays._main_py(tmp_path / 'two', 'configs/default.py', *flags, processes=2)  # pylint: disable=protected-access
  assert two['step'] == one['step']
  for key in ('eval_roc_auc', 'eval_pr_auc', 'test_roc_auc', 'best_test_roc_auc'):
    assert two[key] == pytest.approx(one[key], abs=2e-3), key


@pytest.mark.slow  # Over five seconds here: the full suite runs it.
def test_an_onnx_export_of_columns_it_cannot_name_is_refused(tmp_path):
  """An ONNX input needs a name of its own: not '' (a CSV's unnamed index, as R writes
  one), nor that of an output ('prob')."""
  for name, message in (('prob', "table column 'prob' is named as an output"),
                        ('', 'column at position 1 has no name')):
    columns = _columns(120)
    columns[name] = columns.pop('a')
    config = _config(_write(columns, tmp_path / f't{name}.csv'), num_epochs=1,
                     feature_columns=(name, 'b', 'colour', 'flag'))
    workdir = str(tmp_path / f'run{name}')
    train.train_and_evaluate(config, workdir)
    with pytest.raises(errors.ConfigError, match=message):
      onnx_export.export(config, workdir)
    assert not os.path.exists(os.path.join(workdir, 'export', 'onnx'))
    jax_export.export(config, workdir)  # A pytree's keys need no such names.
