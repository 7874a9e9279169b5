"""The package: a lean `import trainkit`, the Python API, the command from a workdir alone.

The built wheel in a fresh venv (its console scripts from another folder, the
extras' one-line refusals, the core's size) is tests/test_wheel.py.
"""

import csv
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import trainkit
from tests.helpers import ENV, ROOT, digest, error_lines, run_main, tiny_config
from trainkit import configs


def test_importing_trainkit_loads_nothing_heavy(tmp_path):
  code = ('import sys, trainkit\n'
          'from absl import flags\n'
          'heavy = ("jax", "flax", "tensorflow", "optuna", "mlflow", "matplotlib")\n'
          'print(sorted(m for m in heavy if m in sys.modules), flags.FLAGS.is_parsed())\n'
          'print(callable(trainkit.train), callable(trainkit.load))\n')
  result = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env={**ENV, 'PYTHONPATH': ROOT})
  assert result.returncode == 0, result.stderr[-2000:]
  # Nothing heavy, no flags parsed by the import; the API loads on first use.
  assert result.stdout.split('\n')[:2] == ['[] False', 'True True']


def test_the_api_is_listed_for_tab_completion():
  # dir() listed only 'importlib': the API is loaded on first use.
  assert set(trainkit.__all__) <= set(dir(trainkit))


def test_shipped_configs_are_found_by_name_from_any_folder(tmp_path, monkeypatch):
  assert {'default', 'table', 'mixture_density', 'sweeps/search'} <= set(configs.names())
  monkeypatch.chdir(tmp_path)  # Where no configs/ folder is.
  for name in ('default', 'configs/default.py', 'default.py'):
    assert configs.path(name) == os.path.join(os.path.dirname(configs.__file__), 'default.py')
  assert configs.load('table').target_column == 'target'
  assert configs.path('no_such_config') == 'no_such_config'  # Refused later, as given.


def _regression_data(seed=0, n=400):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, 3)).astype(np.float32)
  y = (x @ np.array([1.5, -2.0, 0.5], np.float32) + 0.1 * rng.normal(size=n)).astype(
      np.float32)
  return x, y


def _regression_config():
  return tiny_config(task='regression', normalization='per_feature', best_metric='loss',
                     early_stopping_metric='loss', batch_size=32, eval_batch_size=64,
                     **{'model.dropout_rates': ()})


def _predictions_file(path: str) -> dict:
  with open(path) as f:
    rows = list(csv.DictReader(f))
  return {name: [row[name] for row in rows] for name in rows[0]}


@pytest.fixture(scope='module')
def array_run(tmp_path_factory):
  """A regression trained by trainkit.train on in-memory arrays."""
  workdir = str(tmp_path_factory.mktemp('arrays') / 'run')
  x, y = _regression_data()
  data = {'train': (x[:300], y[:300]), 'validation': (x[300:350], y[300:350]),
          'test': (x[350:], y[350:])}
  result = trainkit.train(_regression_config(), workdir, data=data)
  return workdir, result, data


def test_train_on_arrays_keeps_them_in_the_workdir_and_resumes(array_run):
  workdir, result, data = array_run
  assert result.workdir == workdir and result.summary['step'] == 2 * (300 // 32)
  assert result.summary['eval_split'] == 'validation' and 'test_rmse' in result.summary
  (kept,) = os.listdir(os.path.join(workdir, 'data'))
  # The same arrays again: the same file, the run already finished.
  again = trainkit.train(_regression_config(), workdir, data=data)
  assert again.summary['test_rmse'] == result.summary['test_rmse']
  assert os.listdir(os.path.join(workdir, 'data')) == [kept]
  # Other arrays are other data: the workdir refuses them, as it refuses
  # another dataset, and keeps none of them.
  x, y = _regression_data(seed=1, n=300)
  before = digest(workdir)
  with pytest.raises(trainkit.Refused, match='dataset') as refused:
    trainkit.train(_regression_config(), workdir,
                   data={'train': (x, y), 'validation': data['validation'],
                         'test': data['test']})
  assert refused.value.exit_status == 2
  assert digest(workdir) == before


def test_a_bad_override_is_refused_with_the_commands_line_and_writes_nothing(tmp_path):
  with pytest.raises(trainkit.Refused, match=r'^batch_size=0: must be a positive integer$'):
    trainkit.train(_regression_config(), str(tmp_path / 'w'), overrides={'batch_size': 0},
                   data={'train': _regression_data(), 'test': _regression_data(1)})
  with pytest.raises(trainkit.Refused, match="unknown config field 'batch_sise'"):
    trainkit.train('default', str(tmp_path / 'w'), overrides={'batch_sise': 8})
  assert not os.path.exists(tmp_path / 'w')
  with pytest.raises(trainkit.Refused, match=r"^workdir='.*never_trained' holds no config.json: "
                                             'it was never trained; train it first$'):
    trainkit.load(str(tmp_path / 'never_trained'))
  # The file in-memory data became is the caller's 'data' (it is gone again).
  x, y = _regression_data()
  with pytest.raises(trainkit.Refused, match=r"^data: x of split 'train' holds \d+ NaN"):
    trainkit.train(_regression_config(), str(tmp_path / 'w'),
                   data={'train': (np.where(x > 2, np.nan, x), y), 'test': (x, y)})


@pytest.mark.slow  # A process start.
def test_load_predicts_what_the_command_writes_for_arrays(array_run, tmp_path):
  workdir, _, _ = array_run
  rows, _ = _regression_data(seed=2, n=37)
  model = trainkit.load(workdir)
  assert model.input_spec['input_shape'] == (3,) and model.results['step'] == model.step
  predicted = model.predict(rows)
  # Refused in one line naming x, as a table's refusals do (not --input=...).
  for bad, message in ((rows[:, :2], r'^x: holds an array of shape \(37, 2\)'),
                       (rows[:0], '^x: holds no rows$'),
                       (np.where(np.arange(3) == 1, np.nan, rows), '^x: holds NaN')):
    with pytest.raises(trainkit.Refused, match=message):
      model.predict(bad)
  np.save(tmp_path / 'rows.npy', rows)
  # The command from the workdir alone: its own config.
  result = run_main(f'--workdir={workdir}', '--mode=predict', f'--input={tmp_path}/rows.npy')
  assert result.returncode == 0, result.stderr[-2000:]
  written = _predictions_file(str(tmp_path / 'rows_predictions.csv'))
  assert set(written) == {'row', *predicted}
  for name, values in predicted.items():
    np.testing.assert_allclose(np.asarray(written[name], np.float64), values, rtol=0,
                               atol=1e-6)


@pytest.mark.slow  # Process starts.
def test_every_mode_but_train_runs_from_the_workdir_alone(array_run, tmp_path):
  workdir, _, _ = array_run
  for mode, expected in (('eval', 'checkpoint'), ('summary', 'Total'),
                         ('export', os.path.join(workdir, 'export', 'jax'))):
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, 'main.py'), f'--workdir={workdir}',
         f'--mode={mode}', *(['--format=jax'] if mode == 'export' else [])],
        cwd=tmp_path, capture_output=True, text=True, timeout=240, env=ENV)
    assert result.returncode == 0, (mode, result.stderr[-2000:])
    assert expected in result.stdout, (mode, result.stdout[-1000:])
  # Training needs a config; a workdir that was never trained has none to give.
  result = run_main(f'--workdir={tmp_path}/new')
  assert result.returncode == 2 and error_lines(result.stderr)[0].startswith(
      'error: --config is required to train')
  result = run_main(f'--workdir={tmp_path}/new', '--mode=eval')
  assert result.returncode == 2 and 'holds no config.json' in error_lines(result.stderr)[0]


def _table(seed: int, n: int):
  pd = pytest.importorskip('pandas')
  rng = np.random.default_rng(seed)
  size = rng.normal(size=n)
  colour = rng.choice(['red', 'green', 'blue'], size=n)
  label = np.where(size + (colour == 'red') > 0.3, 'big', 'small')
  return pd.DataFrame({'size': size, 'colour': colour, 'label': label})


@pytest.mark.slow  # A process start.
def test_a_table_from_dataframes_predicts_what_the_command_writes(tmp_path):
  workdir = str(tmp_path / 'run')
  frame = _table(0, 360)
  config = tiny_config(target_column='label', normalization='per_feature',
                       best_metric='loss', batch_size=32, eval_batch_size=64)
  result = trainkit.train(config, workdir, data={
      'train': frame[:240], 'validation': frame[240:300], 'test': frame[300:]})
  assert result.summary['eval_split'] == 'validation'
  rows = _table(1, 25).drop(columns=['label'])
  predicted = trainkit.load(workdir).predict(rows)
  assert set(predicted['class']) <= {'big', 'small'}
  rows.to_csv(tmp_path / 'rows.csv', index=False)
  result = run_main(f'--workdir={workdir}', '--mode=predict', f'--input={tmp_path}/rows.csv')
  assert result.returncode == 0, result.stderr[-2000:]
  written = _predictions_file(str(tmp_path / 'rows_predictions.csv'))
  assert written['class'] == list(predicted['class'])
  for name in (n for n in predicted if n.startswith('probs')):
    np.testing.assert_allclose(np.asarray(written[name], np.float64), predicted[name],
                               rtol=0, atol=1e-6)
  # Refused as Refused, in one line naming the frame, not a file it passed through.
  model = trainkit.load(workdir)
  mixed = rows.astype(object)
  mixed.iloc[1, 0] = 'text'
  for bad, message in ((rows.drop(columns=[rows.columns[0]]), "^x: has no column '"),
                       (mixed, f'^x: .*column {rows.columns[0]}'),
                       (pytest.importorskip('pandas').concat([rows, rows[['colour']]], axis=1),
                        "^x: has more than one column named 'colour'$"),
                       (rows.to_numpy(), '^x: a model trained on a table predicts a pandas')):
    with pytest.raises(trainkit.Refused, match=message) as refused:
      model.predict(bad)
    assert '\n' not in str(refused.value) and 'parquet' not in str(refused.value)


def test_an_older_workdir_is_used_without_its_training_machine(array_run, tmp_path):
  # A config.json from before fields were added, naming a manual_dir that is
  # not on this machine and a tracker: used with its own config, the new
  # fields take their defaults and the training machine's are dropped.
  import json  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  import shutil  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  workdir = str(tmp_path / 'old')
  shutil.copytree(array_run[0], workdir)
  path = os.path.join(workdir, 'config.json')
  with open(path) as f:
    stored = json.load(f)
  for field in ('positive_class', 'table_separator', 'table_encoding', 'mlflow_uri'):
    del stored[field]
  del stored['model']['module'], stored['model']['args']
  stored.update(manual_dir='/no/such/idx/folder', trackers='mlflow')
  with open(path, 'w') as f:
    json.dump(stored, f)
  model = trainkit.load(workdir)
  assert model.config.manual_dir is None and model.config.trackers == ''
  assert model.config.table_encoding == 'utf-8' and model.config.model.module == ''
  rows, _ = _regression_data(seed=3, n=4)
  assert set(model.predict(rows)) == {'mean', 'std'}


def test_the_api_refuses_in_its_own_type(tmp_path):
  for config, overrides, message in (
      ('no_such_config', None, "config='no_such_config': FileNotFoundError"),
      ('default', {'model.nope.width': 3}, "unknown config field 'model.nope.width'"),
      ('default', {'batch_size': 'large'}, 'batch_size='),
      ('default', {'model.module': 'json:dumps'}, 'is not a Flax linen or NNX Module class'),
  ):
    with pytest.raises(trainkit.Refused, match=message):
      trainkit.train(config, str(tmp_path / 'w'), overrides=overrides)
  with pytest.raises(trainkit.Refused, match='give a dict of train and test splits'):
    trainkit.train('default', str(tmp_path / 'w'), data={'train': [1, 2], 'test': [3]})
  assert not os.path.exists(tmp_path / 'w')


def test_a_backbones_arguments_are_json_and_part_of_the_contract(array_run, tmp_path):
  config = _regression_config()
  config.model.module = 'cnn'
  config.model.args = {'dense': object()}
  with pytest.raises(trainkit.Refused, match='must be a JSON value'):
    trainkit.train(config, str(tmp_path / 'w'), data={'train': _regression_data(),
                                                     'test': _regression_data(1)})
  # An argument added to a trained workdir's backbone is a change of model.
  from trainkit.workdirs import config_history  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  stored = {'model': {'module': 'cnn', 'args': {}}}
  changed = _regression_config()
  changed.model.module = 'cnn'
  changed.model.args = {'dense': 64}
  assert 'model.args' in config_history.differences(stored, changed)


@pytest.mark.slow  # Trains a model of its own (3-5 s).
def test_a_loaded_model_evaluates_its_own_step_after_the_workdir_trains_on(array_run,
                                                                         tmp_path):
  """evaluate() and predict() use one checkpoint: the one loaded, not the latest since."""
  workdir = str(tmp_path / 'run')
  trainkit.train(_regression_config(), workdir, data=array_run[2])
  model = trainkit.load(workdir)
  loaded = model.evaluate()
  more = _regression_config()
  more.num_epochs = 3
  trainkit.train(more, workdir, data=array_run[2], continue_with_changes=True)
  assert trainkit.load(workdir).step > model.step
  assert model.evaluate() == loaded
  assert trainkit.load(workdir).evaluate() != loaded


def test_in_memory_data_of_another_kind_per_split_is_refused(tmp_path):
  """Splits of one dataset agree: another row shape, dtype or column set is refused, not fitted."""
  x, y = _regression_data()
  for i, (data, message) in enumerate((
      # Checked as the file's arrays are, once written (docs/api.md).
      ({'train': (x, y), 'test': (x[:, :2], y)}, "x of split 'test' has rows of shape \\(2,\\)"),
      ({'train': (x, y), 'test': (x.astype(np.int32), y)}, "x of split 'test' has rows .* int32"),
      # Not arrays of numbers: refused before anything is written.
      ({'train': (x, y.astype(object)), 'test': (x, y)},
       "^data\\['train'\\]'s y: holds object values, not numbers$"),
      ({'train': ([[1.0], [1.0, 2.0]], y[:2]), 'test': (x, y)},
       "^data\\['train'\\]'s x: cannot be an array"),
  )):
    with pytest.raises(trainkit.Refused, match=message) as refused:
      trainkit.train(_regression_config(), str(tmp_path / f'w{i}'), data=data)
    assert refused.value.exit_status == 2 and '\n' not in str(refused.value)
    # Written to be read as a file's arrays, then removed with the workdir it made.
    assert not os.path.exists(tmp_path / f'w{i}')
  frame = _table(0, 60)
  mixed = frame.astype({'size': object})
  mixed.loc[3, 'size'] = 'text'
  config = tiny_config(target_column='label', batch_size=16)
  for data, message in (
      ({'train': frame, 'test': frame.drop(columns=['size'])},
       "^data\\['test'\\]: has other columns than data\\['train'\\]: lacks 'size'$"),
      ({'train': frame, 'test': frame.assign(extra=1.0)},
       "^data\\['test'\\]: has other columns than data\\['train'\\]: adds 'extra'$"),
      ({'train': mixed, 'test': frame}, '^data: .*size'),
  ):
    with pytest.raises(trainkit.Refused, match=message) as refused:
      trainkit.train(config, str(tmp_path / 'w'), data=data)
    assert refused.value.exit_status == 2 and '\n' not in str(refused.value)
  assert not os.path.exists(tmp_path / 'w' / 'data')
  # Integer labels of other widths per split are labels all the same.
  from trainkit.data.sources import arrays  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  splits = {'train': {'x': x, 'y': np.zeros(len(x), np.uint8)},
            'test': {'x': x, 'y': np.zeros(len(x), np.int32)}}
  arrays._check_alike('d.npz', splits)  # pylint: disable=protected-access


def test_overrides_that_would_replace_a_section_or_are_not_fields_are_refused(tmp_path):
  for config, overrides, message in (
      ('default', {'model': {'hidden_sizes': (64,)}},
       "^overrides: 'model' is a section; set its fields one by one"),
      ('default', {3: 1}, '^overrides: the field 3 is not a dotted name'),
      ('default', [('num_epochs', 1)], '^overrides=list: give a dict'),
      ({'num_epochs': 1}, None, '^config=dict: give a ConfigDict'),
  ):
    with pytest.raises(trainkit.Refused, match=message) as refused:
      trainkit.train(config, str(tmp_path / 'w'), overrides=overrides)
    assert refused.value.exit_status == 2
  assert not os.path.exists(tmp_path / 'w')


@pytest.mark.slow  # Trains a model of its own (3-5 s).
def test_a_table_model_reads_only_its_columns_and_warns_of_unseen_levels(tmp_path):
  workdir = str(tmp_path / 'run')
  frame = _table(0, 120).assign(id=[f'r{i}' for i in range(120)])
  config = tiny_config(target_column='label', batch_size=16, id_columns=('id',),
                       normalization='per_feature')
  trainkit.train(config, workdir, data={'train': frame[:80], 'test': frame[80:]})
  model = trainkit.load(workdir)
  assert model.input_spec['id_columns'] == ['id']
  rows = frame.drop(columns=['label'])[:6]
  plain = model.predict(rows)
  # A column the model does not read is not converted, whatever it holds.
  noted = rows.assign(note=[1, 'a', 2.5, None, {}, 'b'])
  assert model.predict(noted)['class'].tolist() == plain['class'].tolist()
  with pytest.warns(trainkit.UnseenLevelsWarning, match='colour in 2 rows'):
    model.predict(rows.assign(colour=['red', 'purple', 'green', 'purple', 'blue', 'red']))


def test_a_single_row_without_its_axis_is_refused_with_the_fix(array_run):
  rows, _ = _regression_data(seed=3, n=2)
  model = trainkit.load(array_run[0])
  with pytest.raises(trainkit.Refused,
                     match=r'a single row needs a leading axis of 1 \(x\[None\]\)$'):
    model.predict(rows[0])
  assert set(model.predict(rows[0][None])) == {'mean', 'std'}


@pytest.mark.slow  # Trains a model of its own (3-5 s).
def test_an_id_column_named_as_a_prediction_column_is_refused(tmp_path):
  workdir = str(tmp_path / 'run')
  frame = _table(0, 80).assign(row=[f'r{i}' for i in range(80)])
  config = tiny_config(target_column='label', batch_size=16, id_columns=('row',),
                       normalization='per_feature', num_epochs=1)
  trainkit.train(config, workdir, data={'train': frame[:60], 'test': frame[60:]})
  with pytest.raises(trainkit.Refused, match=r"^id_columns: 'row' is also a column the "
                                             r"predictions are written in \(row, class, "):
    trainkit.load(workdir).predict(frame.drop(columns=['label'])[:3])


def test_numpy_scalars_in_the_overrides_are_taken_as_pythons(tmp_path):
  # A notebook's loop over np.logspace gives numpy scalars; they were refused.
  result = trainkit.train(_regression_config(), str(tmp_path / 'w'),
                          overrides={'learning_rate': np.float32(0.01),
                                     'num_epochs': np.int64(1),
                                     'model.hidden_sizes': (np.int64(8),)},
                          data={'train': _regression_data(), 'test': _regression_data(1)})
  assert result.summary['epoch'] == 1
  config = trainkit.load(str(tmp_path / 'w')).config
  assert config.learning_rate == pytest.approx(0.01) and type(config.learning_rate) is float
  assert tuple(config.model.hidden_sizes) == (8,)


def test_what_the_api_would_drop_or_garble_is_refused_in_one_line(tmp_path):
  pandas = pytest.importorskip('pandas')
  x, y = _regression_data()
  frame = pandas.DataFrame(x, columns=['a', 'b', 'c'])
  workdir = str(tmp_path / 'w')
  cases = [
      # Its column names would be dropped: a reordered frame predicted silently.
      (dict(data={'train': (frame, y), 'test': (frame, y)}),
       r"^data: an \(x, y\) pair with x a DataFrame; give each split as one DataFrame"),
      # The data's keys name its splits: a split override was dropped unsaid.
      (dict(data={'train': (x, y), 'test': (x, y)},
            overrides={'validation_split': 'train[80%:]'}),
       r'^overrides: validation_split with data=: the data\'s keys are its splits'),
  ]
  for kwargs, message in cases:
    with pytest.raises(trainkit.Refused, match=message):
      trainkit.train(_regression_config(), workdir, **kwargs)
  with pytest.raises(trainkit.Refused, match=r"^workdir=None: give the run's folder as a path"):
    trainkit.train('default', None)
  assert not os.path.exists(workdir)


def test_a_tables_whole_number_classes_are_predicted_as_numbers(tmp_path):
  frame = _table(0, 200)
  frame['label'] = (frame['label'] == 'big').astype(np.int64) + 1  # Classes 1 and 2.
  config = tiny_config(target_column='label', normalization='per_feature',
                       best_metric='loss', batch_size=32, eval_batch_size=64, num_epochs=1)
  trainkit.train(config, str(tmp_path / 'run'), data={'train': frame[:150], 'test': frame[150:]})
  predicted = trainkit.load(str(tmp_path / 'run')).predict(frame[150:].drop(columns=['label']))
  # They came back as text ('1', '2'): compared with the labels, never equal.
  assert predicted['class'].dtype.kind == 'i' and set(predicted['class']) <= {0, 1, 2}
  probs = np.stack([predicted[f'probs_{c}'] for c in ('0', '1', '2')], -1)
  assert predicted['class'].tolist() == np.argmax(probs, -1).tolist()


def test_a_workdir_trained_on_arrays_works_copied_elsewhere(array_run, tmp_path):
  workdir, result, data = array_run
  copy = str(tmp_path / 'handed_on')
  shutil.copytree(workdir, copy)
  original = str(tmp_path / 'original')
  os.rename(workdir, original)  # The first workdir gone: config.json still names its file.
  try:
    evaluated = trainkit.load(copy).evaluate()
    again = trainkit.train(_regression_config(), copy, data=data)  # Finished: as it stands.
  finally:
    os.rename(original, workdir)
  assert evaluated['eval_rmse'] == pytest.approx(result.summary['test_rmse'], rel=1e-6)
  assert again.summary['test_rmse'] == result.summary['test_rmse']
