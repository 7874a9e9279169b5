"""A trained workdir is a contract: what it is handed is read as trained on, or refused.

Rows of another width, guessed headers, a table changed since training, text
targets of a real-valued task, whole-number regression targets, ids, the
binary task's positive class, the loss a weight column would replace, and
table files of every common shape (separators, encodings, compression,
dates, decimals, kinds that change late in a file).
"""

import csv
import datetime
import gzip
import json
import os

import numpy as np
import pyarrow as pa
from pyarrow import parquet as pq
import pytest

from tests.helpers import digest, mdn_config, tiny_config
from trainkit import cli
from trainkit.data import pipeline as input_pipeline
from trainkit.data import sources
from trainkit.data.sources import table_files
from trainkit.data.sources import table_formats
from trainkit.data.sources import tables
from trainkit.serving import predict_rows as predictions
from trainkit.serving import restore as restore_lib
import train


def _arrays_config(dataset: str):
  return tiny_config(dataset=dataset, num_epochs=1, normalization='per_feature',
                     train_split='train[:48]', test_split='train[48:]')


def _arrays_run(tmp_path, features=2):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(64, features)).astype(np.float32)
  path = tmp_path / 'a.npz'
  np.savez(path, x=x, y=(x[:, 0] > 0).astype(np.int32))
  config = _arrays_config(str(path))
  train.train_and_evaluate(config, str(tmp_path / 'run'))
  return config, str(tmp_path / 'run')


def _predicted(out) -> list:
  with open(out) as f:
    return list(csv.DictReader(f))


def test_rows_of_another_width_are_refused_not_resplit(tmp_path):
  config, run = _arrays_run(tmp_path)
  wide = tmp_path / 'wide.csv'
  wide.write_text('1,2,3,4\n5,6,7,8\n')
  with pytest.raises(cli.INPUT_ERRORS, match='line 1 holds 4 values; the model takes rows of 2'):
    predictions.predict_rows(config, run, str(wide))
  np.save(tmp_path / 'wide.npy', np.ones((2, 4)))
  with pytest.raises(cli.INPUT_ERRORS, match=r'shape \(2, 4\); the model takes rows of shape'):
    predictions.predict_rows(config, run, str(tmp_path / 'wide.npy'))
  np.save(tmp_path / 'flat.npy', np.ones(4))  # 4 numbers are not 2 rows of 2.
  with pytest.raises(cli.INPUT_ERRORS, match=r'shape \(4,\)'):
    predictions.predict_rows(config, run, str(tmp_path / 'flat.npy'))
  ragged = tmp_path / 'ragged.csv'
  ragged.write_text('1,2\n3\n')
  with pytest.raises(cli.INPUT_ERRORS, match='line 2 holds 1 values'):
    predictions.predict_rows(config, run, str(ragged))
  np.save(tmp_path / 'ok.npy', np.ones((3, 2)))
  assert len(_predicted(predictions.predict_rows(config, run, str(tmp_path / 'ok.npy'))[0])) == 3


@pytest.mark.slow  # Over five seconds here: the full suite runs it.
def test_the_mixture_density_model_takes_rows_of_its_width_only(tmp_path):
  config = mdn_config(num_epochs=1)
  train.train_and_evaluate(config, str(tmp_path / 'run'))
  np.save(tmp_path / 'two.npy', np.ones((3, 2)))
  with pytest.raises(cli.INPUT_ERRORS, match=r'shape \(3, 2\); the model takes rows of shape'):
    predictions.predict_rows(config, str(tmp_path / 'run'), str(tmp_path / 'two.npy'))
  np.save(tmp_path / 'column.npy', np.linspace(0, 1, 5))  # A column of 5 inputs of 1 feature.
  out, _ = predictions.predict_rows(config, str(tmp_path / 'run'), str(tmp_path / 'column.npy'))
  assert [r['row'] for r in _predicted(out)] == ['0', '1', '2', '3', '4']


def test_rows_for_a_model_of_uint8_inputs_must_be_whole_numbers_it_holds(tmp_path):
  path = tmp_path / 'pixels.npz'
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, (64, 4), dtype=np.uint8)
  np.savez(path, x=x, y=(x[:, 0] > 127).astype(np.int32))
  config = tiny_config(dataset=str(path), num_epochs=1, train_split='train[:48]',
                       test_split='train[48:]')
  train.train_and_evaluate(config, str(tmp_path / 'run'))
  for bad in (np.full((2, 4), 0.5), np.full((2, 4), 300.0), np.full((2, 4), -1)):
    np.save(tmp_path / 'bad.npy', bad)
    with pytest.raises(cli.INPUT_ERRORS, match=r"^--input='[^']*bad\.npy': holds values that "
                       'are not whole numbers from 0 to 255; the model takes uint8 inputs'):
      predictions.predict_rows(config, str(tmp_path / 'run'), str(tmp_path / 'bad.npy'))
  np.save(tmp_path / 'ok.npy', np.full((2, 4), 255.0))
  assert len(_predicted(predictions.predict_rows(config, str(tmp_path / 'run'),
                                                 str(tmp_path / 'ok.npy'))[0])) == 2


def test_headers_are_decided_by_the_stated_rule_never_guessed(tmp_path):
  config, run = _arrays_run(tmp_path)
  numbered = tmp_path / 'numbered.csv'  # As pandas writes an unnamed frame.
  numbered.write_text('0,1\n0.5,1.5\n2.5,3.5\n')
  with pytest.raises(cli.INPUT_ERRORS, match='may be column numbers or a row; say which'):
    predictions.predict_rows(config, run, str(numbered))
  out, table = predictions.predict_rows(config, run, str(numbered), header='yes')
  assert len(_predicted(out)) == 2 and 'line 1 of numbered.csv is a header' in table
  out, _ = predictions.predict_rows(config, run, str(numbered), header='no')
  assert len(_predicted(out)) == 3
  bom = tmp_path / 'bom.csv'  # A UTF-8 byte-order mark and no header: every row kept.
  bom.write_bytes('\ufeff1,2\n3,4\n'.encode())
  out, table = predictions.predict_rows(config, run, str(bom))
  assert len(_predicted(out)) == 2 and 'header' not in table
  named = tmp_path / 'named.csv'
  named.write_text('a,b\n1,2\n')
  out, table = predictions.predict_rows(config, run, str(named))
  assert len(_predicted(out)) == 1 and 'line 1 of named.csv is a header' in table
  np.testing.assert_array_equal(
      [float(r['probs_1']) for r in _predicted(out)],
      [float(r['probs_1']) for r in _predicted(predictions.predict_rows(
          config, run, str(bom), output=str(tmp_path / 'b.csv'))[0])][:1])


def _table(tmp_path, name='t.csv', n=200, seed=0, **extra):
  rng = np.random.default_rng(seed)
  a = rng.normal(size=n)
  colour = rng.choice(['red', 'green', 'blue'], n)
  label = np.where(a + (colour == 'red') > 0.3, 'churn', 'no churn')
  path = tmp_path / name
  rows = {'id': [f'{i:05d}' for i in range(n)], 'a': a, 'colour': colour, 'label': label,
          **extra}
  with open(path, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(list(rows))
    writer.writerows(zip(*rows.values()))
  return path


_TABLE = {'task': 'binary', 'target_column': 'label', 'id_columns': ('id',),
          'feature_columns': ('a', 'colour'), 'train_split': 'train[:70%]',
          'validation_split': 'train[70%:85%]', 'test_split': 'train[85%:]', 'split_seed': 0,
          'best_metric': 'roc_auc', 'early_stopping_metric': 'log_loss', 'num_epochs': 2,
          'normalization': 'per_feature'}


@pytest.mark.slow  # Over five seconds here: the full suite runs it.
def test_a_changed_table_is_refused_for_training_and_eval_and_never_refitted(
    tmp_path, monkeypatch):
  path = _table(tmp_path)
  config = tiny_config(dataset=str(path), **_TABLE)
  run = str(tmp_path / 'run')
  _, summary = train.train_and_evaluate(config, run)
  spec = json.loads((tmp_path / 'run' / 'model.json').read_text())
  assert spec['data_fingerprint']
  # Eval of the same file uses model.json's encoding: nothing is fitted.
  with monkeypatch.context() as patch:
    patch.setattr(tables.TableSource, '_fit', lambda *a: pytest.fail('re-fitted'))
    result = restore_lib.evaluate_checkpoint(config, run)
  assert result['eval_roc_auc'] == pytest.approx(summary['test_roc_auc'], rel=1e-6)
  with open(path, 'a') as f:
    f.write('99999,0.5,violet,churn\n' * 30)
  before = digest(tmp_path / 'run')
  for attempt in (lambda: train.train_and_evaluate(config.copy_and_resolve_references(), run),
                  lambda: restore_lib.evaluate_checkpoint(config, run)):
    with pytest.raises(cli.INPUT_ERRORS, match=r"dataset='.*t.csv' is not the data "
                       r"--workdir='.*run' was trained on .* the file changed"):
      attempt()
  after = digest(tmp_path / 'run')
  assert {k: v for k, v in after.items() if k != 'eval.json'} == {
      k: v for k, v in before.items() if k != 'eval.json'}
  # A new workdir trains on the changed file.
  train.train_and_evaluate(config, str(tmp_path / 'again'))


def test_real_valued_targets_must_be_numbers_and_never_become_classes(tmp_path):
  rng = np.random.default_rng(1)
  price = np.round(rng.uniform(300, 2_343_320, 200)).astype(np.int64)
  text = [str(p) for p in price]
  text[37] = '1,234.50'
  fields = dict(task='regression', target_column='price', feature_columns=('a',),
                best_metric='loss', early_stopping_metric='loss', num_epochs=1,
                normalization='per_feature',
                train_split='train[:80%]', test_split='train[80%:]')
  path = _table(tmp_path, 'strings.csv', price=text)
  with pytest.raises(cli.INPUT_ERRORS, match=r"target_column='price' must hold numbers for "
                     r"task='regression'; it holds text: '1,234.50' \(row 37\)"):
    train.train_and_evaluate(tiny_config(dataset=str(path), **fields), str(tmp_path / 'r1'))
  assert not (tmp_path / 'r1').exists()
  path = _table(tmp_path, 'whole.csv', price=price)
  _, summary = train.train_and_evaluate(tiny_config(dataset=str(path), **fields),
                                        str(tmp_path / 'r2'))
  spec = json.loads((tmp_path / 'r2' / 'model.json').read_text())
  assert spec['class_names'] == [] and spec['num_classes'] == 0
  assert os.path.getsize(tmp_path / 'r2' / 'model.json') < 20_000
  assert np.isfinite(summary['test_rmse'])


def test_ids_are_carried_exactly_as_written(tmp_path):
  path = _table(tmp_path)
  config = tiny_config(dataset=str(path), **_TABLE)
  train.train_and_evaluate(config, str(tmp_path / 'run'))
  ids = ['00123', '12345678901', '9007199254740993', '1.50', '']
  new = tmp_path / 'new.csv'
  new.write_text('id,a,colour\n' + ''.join(f'{i},0.5,red\n' for i in ids))
  out, _ = predictions.predict_rows(config, str(tmp_path / 'run'), str(new))
  assert [r['id'] for r in _predicted(out)] == ids
  # Parquet ids: integers beyond 2**53 exactly, float ids without an exponent.
  pq.write_table(pa.table({'id': pa.array([9007199254740993, 7], pa.int64()),
                           'a': [0.1, 0.2], 'colour': ['red', 'blue']}), tmp_path / 'n.parquet')
  out, _ = predictions.predict_rows(config, str(tmp_path / 'run'), str(tmp_path / 'n.parquet'))
  assert [r['id'] for r in _predicted(out)] == ['9007199254740993', '7']
  # A training table whose id column holds integers beyond 2**53 trains.
  big = _table(tmp_path, 'big.csv')
  text = big.read_text().splitlines()
  big.write_text('\n'.join([text[0]] + [f'{9007199254740993 + i}' + line[5:]
                                       for i, line in enumerate(text[1:])]) + '\n')
  train.train_and_evaluate(tiny_config(dataset=str(big), **_TABLE), str(tmp_path / 'big'))


def test_the_binary_positive_class_is_configurable_and_named_in_the_output(tmp_path):
  path = _table(tmp_path)
  new = tmp_path / 'new.csv'
  new.write_text('id,a,colour\n1,2.0,red\n2,-2.0,blue\n')
  with open(path) as f:
    labels = np.array([r['label'] for r in csv.DictReader(f)])
  for positive in ('', 'churn'):
    # Rows as stored: the training split is the first 70 % of the file.
    config = tiny_config(dataset=str(path), positive_class=positive,
                         **{**_TABLE, 'split_seed': -1})
    data = input_pipeline.create_datasets(config)
    chosen = positive or 'no churn'  # By default the class whose name sorts last.
    np.testing.assert_array_equal(np.asarray(data.train['y']), labels[:140] == chosen)
    run = str(tmp_path / f'run{positive}')
    train.train_and_evaluate(config, run, data=data)
    names = json.loads((tmp_path / f'run{positive}' / 'model.json').read_text())['class_names']
    out, _ = predictions.predict_rows(config, run, str(new))
    rows = _predicted(out)
    assert names[1] == chosen and list(rows[0]) == ['row', 'id', 'class', f'prob_{chosen}']
    probs = [float(r[f'prob_{chosen}']) for r in rows]
    assert [r['class'] for r in rows] == [names[int(p >= 0.5)] for p in probs]
  with pytest.raises(cli.INPUT_ERRORS, match="positive_class='maybe' is not a class"):
    train.train_and_evaluate(tiny_config(dataset=str(path), positive_class='maybe', **_TABLE),
                             str(tmp_path / 'bad'))


def test_a_weight_column_with_a_loss_it_would_replace_is_refused(tmp_path):
  path = _table(tmp_path, w=np.ones(200))
  for loss in ('class_mean_cross_entropy', 'batch_normalized_cross_entropy'):
    config = tiny_config(dataset=str(path), **{**_TABLE, 'task': 'classification',
                                               'best_metric': 'loss',
                                               'early_stopping_metric': 'loss'},
                         weight_column='w', loss=loss)
    with pytest.raises(cli.INPUT_ERRORS, match=f"weight_column='w': .* loss='{loss}' has no "
                       'weighted form'):
      train.train_and_evaluate(config, str(tmp_path / 'run'))
    assert not (tmp_path / 'run').exists()


def _read(path, **fmt):
  meta, columns = table_files.load(str(path), '', table_formats.TextFormat(**fmt))
  return meta, {n: columns[i] for i, n in enumerate(meta['names'])}


def test_separators_encodings_and_compressed_text_are_read(tmp_path):
  (tmp_path / 'semi.csv').write_text('x1;x2;label\n1,5;2;a\n3;4;b\n')
  (tmp_path / 't.tsv').write_text('x1\tx2\tlabel\n1\t2\ta\n3\t4\tb\n')
  with gzip.open(tmp_path / 't.csv.gz', 'wt') as f:
    f.write('x1,x2,label\n1,2,a\n3,4,b\n')
  for name in ('semi.csv', 't.tsv', 't.csv.gz'):
    meta, got = _read(tmp_path / name)
    assert meta['names'] == ['x1', 'x2', 'label'], name
    assert got['x2'].tolist() == [2.0, 4.0], name
  (tmp_path / 'latin.csv').write_bytes('city,label\nMünchen,a\nKöln,b\n'.encode('latin-1'))
  config = tiny_config(dataset=str(tmp_path / 'latin.csv'), target_column='label')
  with pytest.raises(cli.INPUT_ERRORS, match="column 'city' holds text that is not UTF-8 "
                     r"\(set table_encoding"):
    input_pipeline.create_datasets(config)
  meta, got = _read(tmp_path / 'latin.csv', encoding='latin-1')
  assert meta['levels'][0] == ['München', 'Köln']


def test_kinds_come_from_the_whole_file_and_unused_columns_are_never_refused(
    tmp_path, monkeypatch):
  monkeypatch.setattr(table_formats, '_CSV_BLOCK', 64)  # Many blocks in a small file.
  lines = ['n,size,when,label'] + [f'{i},{"SML"[i % 3]},2024-01-0{1 + i % 9},{i % 2}'
                                   for i in range(60)]
  lines[55] = '1.5,10,not a date,1'
  (tmp_path / 'late.csv').write_text('\n'.join(lines) + '\n')
  meta, got = _read(tmp_path / 'late.csv')
  assert meta['kinds'] == ['float', 'string', 'string', 'integer']
  assert got['n'][54] == 1.5  # Row 55 of the file is row 54 of the table.
  # A date column (and a decimal) are numbers; a column of another type is
  # refused only where it is used.
  table = pa.table({'when': pa.array([datetime.date(2024, 1, 2), None] * 20, pa.date32()),
                    'at': pa.array([datetime.datetime(1970, 1, 2, 12)] * 40, pa.timestamp('s')),
                    'price': pa.array([1, 2] * 20, pa.decimal128(5, 2)),
                    'blob': pa.array([[1, 2]] * 40), 'label': [0, 1] * 20})
  pq.write_table(table, tmp_path / 'kinds.parquet')
  meta, got = _read(tmp_path / 'kinds.parquet')
  assert meta['kinds'][:3] == ['date', 'date', 'float'] and meta['kinds'][3] == 'unsupported'
  assert got['when'][0] == 19724.0 and np.isnan(got['when'][1]) and got['at'][0] == 1.5
  config = tiny_config(dataset=str(tmp_path / 'kinds.parquet'), target_column='label',
                       feature_columns=('when', 'at', 'price'), normalization='per_feature',
                       test_split='train')
  data = input_pipeline.create_datasets(config)
  assert [c[1] for c in data.columns] == ['date', 'date', 'float']
  with pytest.raises(sources.DataError, match=r"feature_columns: column 'blob' holds list"):
    input_pipeline.create_datasets(tiny_config(dataset=str(tmp_path / 'kinds.parquet'),
                                               target_column='label',
                                               feature_columns=('when', 'blob'),
                                               test_split='train'))


def test_predict_reads_each_column_as_the_kind_the_model_was_trained_on(tmp_path):
  rng = np.random.default_rng(2)
  size = rng.choice(['S', 'M', 'L', '10', '12'], 200)
  path = _table(tmp_path, size=size)
  config = tiny_config(dataset=str(path), **{**_TABLE, 'feature_columns': ('a', 'size')})
  train.train_and_evaluate(config, str(tmp_path / 'run'))
  new = tmp_path / 'new.csv'
  new.write_text('id,a,size\n1,0.5,10\n2,0.5,12\n')
  out, table = predictions.predict_rows(config, str(tmp_path / 'run'), str(new))
  assert len(_predicted(out)) == 2 and 'never saw' not in table
  bad = tmp_path / 'bad.csv'
  bad.write_text('id,a,size\n1,zero,10\n')
  with pytest.raises(cli.INPUT_ERRORS, match="column 'a' holds 'zero', not a number"):
    predictions.predict_rows(config, str(tmp_path / 'run'), str(bad))


def test_files_users_have_read_as_written(tmp_path, monkeypatch):
  # Free text with line breaks inside quotes, across blocks.
  monkeypatch.setattr(table_formats, '_CSV_BLOCK', 64)
  lines = ['note,x,label'] + [f'"line one\nline {i}, two",{i},{i % 2}' for i in range(30)]
  (tmp_path / 'notes.csv').write_text('\n'.join(lines) + '\n')
  meta, got = _read(tmp_path / 'notes.csv')
  assert meta['rows'] == 30 and got['x'].tolist() == list(range(30))
  # A timestamp column with a zone, then text: read as text, not refused.
  lines = ['t,label'] + ['2024-01-02T03:04:05Z,1'] * 20 + ['soon,0']
  (tmp_path / 'zoned.csv').write_text('\n'.join(lines) + '\n')
  assert _read(tmp_path / 'zoned.csv')[0]['kinds'] == ['string', 'integer']
  # A real-valued target stored as text in Parquet: its values, not its codes.
  pq.write_table(pa.table({'a': np.arange(40.0), 'y': [str(v * 10) for v in range(40)]}),
                 tmp_path / 'text_numbers.parquet')
  config = tiny_config(dataset=str(tmp_path / 'text_numbers.parquet'), target_column='y',
                       task='regression', best_metric='loss', early_stopping_metric='loss',
                       normalization='per_feature', test_split='train')
  data = input_pipeline.create_datasets(config)
  np.testing.assert_array_equal(np.asarray(data.train['y']), np.arange(40.0) * 10)


def test_predict_inputs_of_every_kind_users_hand_over(tmp_path):
  path = _table(tmp_path)
  config = tiny_config(dataset=str(path), **_TABLE)
  run = str(tmp_path / 'run')
  train.train_and_evaluate(config, run)
  # 'NA' is an id (Namibia), not a missing one; an empty id stays empty.
  (tmp_path / 'na.csv').write_text('id,a,colour\nNA,0.5,red\n,0.1,NA\n')
  out, _ = predictions.predict_rows(config, run, str(tmp_path / 'na.csv'))
  assert [r['id'] for r in _predicted(out)] == ['NA', '']
  # Parquet strings as pandas 3 and Polars write them (large_string).
  pq.write_table(pa.table({'id': pa.array(['1', '2'], pa.large_string()), 'a': [0.1, 0.2],
                           'colour': pa.array(['red', 'blue'], pa.large_string())}),
                 tmp_path / 'large.parquet')
  out, table = predictions.predict_rows(config, run, str(tmp_path / 'large.parquet'))
  assert [r['id'] for r in _predicted(out)] == ['1', '2'] and 'never saw' not in table
  # Arrays: several arrays and none named 'x', a line of empty fields.
  (tmp_path / 'arrays').mkdir()
  arrays_config, arrays_run = _arrays_run(tmp_path / 'arrays')
  np.savez(tmp_path / 'two.npz', a=np.ones((2, 2)), b=np.ones((2, 2)))
  with pytest.raises(cli.INPUT_ERRORS, match="has several arrays and none named 'x' .a, b."):
    predictions.predict_rows(arrays_config, arrays_run, str(tmp_path / 'two.npz'))
  (tmp_path / 'gap.csv').write_text('1,2\n,\n3,4\n')
  with pytest.raises(cli.INPUT_ERRORS, match="line 2, value 1 is '', not a number"):
    predictions.predict_rows(arrays_config, arrays_run, str(tmp_path / 'gap.csv'))
  # The .npz a workdir trained on, moved away: one line, not a traceback.
  os.rename(arrays_config.dataset, str(tmp_path / 'moved.npz'))
  with pytest.raises(cli.INPUT_ERRORS, match='no such file'):
    restore_lib.evaluate_checkpoint(arrays_config, arrays_run)


def test_an_npy_dataset_is_refused_naming_what_arrays_must_hold(tmp_path):
  np.save(tmp_path / 'x.npy', np.ones((10, 2)))
  with pytest.raises(cli.INPUT_ERRORS, match=r"dataset='.*x.npy': an .npy file holds one "
                     r"array.*an .npz file of 'x' \(features\) and 'y' \(targets\)"):
    train.train_and_evaluate(tiny_config(dataset=str(tmp_path / 'x.npy')), str(tmp_path / 'r'))
  assert not (tmp_path / 'r').exists()


def test_a_jax_export_killed_while_writing_leaves_the_previous_artifact(tmp_path, monkeypatch):
  from trainkit.serving import jax_export  # pylint: disable=g-import-not-at-top
  config, run = _arrays_run(tmp_path)
  config.num_epochs = 2
  # A second checkpoint: another model to export.
  train.train_and_evaluate(config, run, continue_with_changes=True)
  folder = jax_export.export(config, run)
  before = digest(folder)
  with monkeypatch.context() as patch:
    def killed(*args):
      raise KeyboardInterrupt  # As a kill once the bytes are written, before they are in place.
    patch.setattr(jax_export.workdir_lib.os, 'replace', killed)
    with pytest.raises(KeyboardInterrupt):
      jax_export.export(config, run, checkpoint=str(jax_export.workdir_lib.checkpoint_steps(
          run)[0]))
  assert digest(folder) == before  # Neither model.bin nor a temporary file changed.


def test_the_learning_curves_name_the_split_they_were_computed_on(tmp_path, monkeypatch):
  from matplotlib import figure  # pylint: disable=g-import-not-at-top
  from trainkit.tracking import plots  # pylint: disable=g-import-not-at-top
  path = _table(tmp_path)
  config = tiny_config(dataset=str(path), **_TABLE)
  train.train_and_evaluate(config, str(tmp_path / 'run'))
  legends = []
  monkeypatch.setattr(figure.Figure, 'savefig', lambda fig, *a, **k: legends.extend(
      t.get_text() for ax in fig.axes for t in ax.get_legend().get_texts()))
  plots.draw(str(tmp_path / 'run'))
  assert set(legends) == {'train', 'train[70%:85%]'}


@pytest.mark.slow
def test_the_commands_refuse_in_one_line_with_status_2_and_change_nothing(tmp_path):
  from tests.helpers import error_lines, run_main  # pylint: disable=g-import-not-at-top
  config, run = _arrays_run(tmp_path)
  table = _table(tmp_path)
  trained = tmp_path / 'table_run'
  train.train_and_evaluate(tiny_config(dataset=str(table), **_TABLE), str(trained))
  (tmp_path / 'wide.csv').write_text('1,2,3,4\n5,6,7,8\n')
  (tmp_path / 'numbered.csv').write_text('0,1\n0.5,1.5\n')
  pq.write_table(pa.table({'a': [1.0], 'b': ['x']}), tmp_path / 'mixed.parquet')
  # The configs the workdirs were trained with, as config files.
  (tmp_path / 'arrays_config.py').write_text(
      'from tests import test_contract\n'
      'def get_config():\n'
      f'  return test_contract._arrays_config({config.dataset!r})\n')
  (tmp_path / 'table_config.py').write_text(
      'from tests import test_contract\n'
      'from tests.helpers import tiny_config\n'
      'def get_config():\n'
      f'  return tiny_config(dataset={str(table)!r}, **test_contract._TABLE)\n')
  arrays = [f'--config={tmp_path / "arrays_config.py"}', f'--workdir={run}']
  tabled = [f'--config={tmp_path / "table_config.py"}', f'--workdir={trained}']
  with open(table, 'a') as f:
    f.write('99999,0.5,violet,churn\n')
  cases = [
      (arrays + ['--mode=predict', f'--input={tmp_path / "wide.csv"}'],
       'line 1 holds 4 values; the model takes rows of 2 features'),
      (arrays + ['--mode=predict', f'--input={tmp_path / "numbered.csv"}'],
       'say which with --header=yes or --header=no'),
      (arrays + ['--mode=predict', f'--input={tmp_path / "mixed.parquet"}'],
       "column 'b' mixes numbers and string values"),
      (tabled, 'is not the data'),
      (tabled + ['--mode=eval'], 'is not the data'),
      (arrays + ['--config.trackers=mlflow', '--config.mlflow_uri=127.0.0.1:5000'],
       "write 'http://127.0.0.1:5000'"),
  ]
  before = {str(w): digest(w) for w in (tmp_path / 'run', trained)}
  for args, message in cases:
    done = run_main(*args)
    lines = error_lines(done.stderr)
    assert done.returncode == 2 and len(lines) == 1 and message in lines[0], (
        args, done.stderr[-2000:])
    assert 'Traceback' not in done.stderr
  assert {str(w): digest(w) for w in (tmp_path / 'run', trained)} == before
  assert not list(tmp_path.glob('*_predictions.csv'))


def test_runs_of_other_losses_overlay_their_shared_curves(tmp_path):
  from trainkit.tracking import plots  # pylint: disable=g-import-not-at-top
  curve = lambda *keys: {'step': [1, 2], **{k: [1.0, 0.5] for k in keys}}
  runs = {'nll': {'train': curve('loss', 'nll', 'rmse'), 'eval': curve('loss', 'nll', 'rmse'),
                  'panels': ('nll', 'rmse'), 'eval_split': 'validation'},
          'mse': {'train': curve('loss', 'mse', 'rmse'), 'eval': curve('loss', 'mse', 'rmse'),
                  'panels': ('mse', 'rmse'), 'eval_split': 'validation'}}
  # The second run has no 'nll' curve: a KeyError ended report.py and a sweep's end.
  plots.learning_curves(runs, str(tmp_path / 'curves.png'))
  assert (tmp_path / 'curves.png').stat().st_size > 0


@pytest.mark.slow  # Process starts.
def test_the_workdirs_own_config_takes_overrides_on_the_command_line(tmp_path):
  from tests.helpers import error_lines, run_main  # pylint: disable=g-import-not-at-top
  _, run = _arrays_run(tmp_path)
  # Without --config, ml_collections defined no --config.FIELD flag: 'Unknown flag'.
  result = run_main(f'--workdir={run}', '--mode=eval', '--config.eval_batch_size=7',
                    '--config.test_split=train[:32]')
  assert result.returncode == 0, result.stderr[-2000:]
  assert 'on 32 examples of train[:32]' in result.stdout
  for flag, message in (
      ('--config.eval_batchsize=7', "unknown config field 'eval_batchsize'"),
      ('--config.plots=maybe', '--config.plots=maybe: give true or false')):
    result = run_main(f'--workdir={run}', '--mode=eval', flag)
    assert result.returncode == 2 and message in error_lines(result.stderr)[0], result.stderr
