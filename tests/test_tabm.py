"""TabM (model.family='tabm'): bins from training rows, the members' mean, exports, resume."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pyarrow as pa
from pyarrow import csv as pa_csv
import pytest

from tests.helpers import main_command, run_export, sigkill_then_resume, tiny_config
from tests.helpers import without_timing
from configs import default
from trainkit import cli
from trainkit import errors
from trainkit.data import sources
from trainkit.data import statistics as training_statistics
from trainkit.models import tabular
from trainkit.search import groups as grouping
from trainkit.search import sweeps
from trainkit.serving import jax_export
from trainkit.serving import onnx_export
from trainkit.serving import predict_rows
from trainkit.serving import restore as restore_lib
from trainkit.serving import row_inputs
from trainkit.tasks import binary
from trainkit.tasks import classification
from trainkit.tasks import ensemble
from trainkit.tasks import regression
from trainkit.training import model_summary
from trainkit.training import optimizers
from trainkit.workdirs import config_history
from trainkit.workdirs import layout as workdir_lib
import train

# A small TabM on a table of numbers, a string and a flag; 70 / 15 / 15 by a seeded shuffle.
_FIELDS = {'task': 'binary', 'target_column': 'label', 'feature_columns': ('a', 'b', 'colour'),
           'train_split': 'train[:70%]', 'validation_split': 'train[70%:85%]',
           'test_split': 'train[85%:]', 'split_seed': 0, 'normalization': 'per_feature',
           'batch_size': 16, 'num_epochs': 2, 'learning_rate': 1e-2, 'schedule': 'constant',
           'model.family': 'tabm', 'model.members': 4, 'model.num_bins': 8,
           'model.embedding_size': 4, 'model.hidden_sizes': (16,),
           'model.dropout_rates': (0.1,), 'model.use_batchnorm': False}


def _table(path, n: int = 200, seed: int = 0, columns_too: bool = False):
  rng = np.random.default_rng(seed)
  a, b = rng.normal(size=n), rng.exponential(size=n)
  b[rng.random(n) < 0.1] = np.nan
  colour = rng.choice(['red', 'green', 'blue'], n).astype(object)
  logit = 2 * a - np.nan_to_num(b) + (colour == 'red')
  columns = {'a': a, 'b': b, 'colour': list(colour),
             'label': (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)}
  pa_csv.write_csv(pa.table(columns), str(path))
  return (str(path), columns) if columns_too else str(path)


def _config(path, **overrides):
  return tiny_config(dataset=str(path), **{**_FIELDS, **overrides})


@pytest.mark.slow  # Over five seconds here: the full suite runs it.
def test_bins_are_quantiles_of_the_training_rows_alone(tmp_path):
  path, columns = _table(tmp_path / 't.csv', columns_too=True)
  config = _config(path)
  train.train_and_evaluate(config, str(tmp_path / 'run'))
  spec = workdir_lib.ModelSpec.read(str(tmp_path / 'run'))
  order = sources.open_source(config).records('train').order
  training = order[:int(len(order) * 0.7)]
  a = np.float32(columns['a'])
  expected = np.unique(np.quantile(a[training].astype(np.float64),
                                   np.linspace(0, 1, 9)).astype(np.float32))
  # Features: a, b, b:missing, colour's three levels and other; a and b are binned.
  assert [len(edges) > 0 for edges in spec.bins] == [True, True] + [False] * 5
  assert np.array_equal(np.float32(spec.bins[0]), expected)
  everywhere = np.unique(np.quantile(a.astype(np.float64), np.linspace(0, 1, 9))
                         .astype(np.float32))
  assert not np.array_equal(np.float32(spec.bins[0]), everywhere)  # Else this would not tell.
  # A model of another family fits none (before it reads any data).
  assert training_statistics.quantile_bins(_config(path, **{'model.family': 'mlp'}), None) == ()


def test_a_summary_before_training_counts_the_parameters_training_builds(tmp_path):
  """--mode=summary of a new workdir sizes the embeddings by num_bins: no training values yet."""
  config = _config(_table(tmp_path / 't.csv'))
  workdir = str(tmp_path / 'run')
  before = model_summary.table(config, model_summary.spec_without_data(config, workdir),
                               flops=False)
  train.train_and_evaluate(config, workdir)
  with open(os.path.join(workdir, model_summary.SUMMARY_FILE)) as f:
    after = f.read()
  trainable = lambda text: next(line for line in text.splitlines()
                                if line.startswith('Trainable parameters'))
  assert 'float32[2,8,4]' in before  # a's and b's 8 bins, embedded in 4.
  assert trainable(before) == trainable(after)


def test_the_piecewise_linear_code_of_a_value():
  # A feature of three bins, and one of a single bin (padded to three).
  code = tabular.piecewise_linear_code(
      jnp.array([[-1.0, -1.0], [0.5, 0.5], [2.5, 2.5], [9.0, 9.0]]),
      ((0.0, 1.0, 2.0, 4.0), (0.0, 2.0)))
  np.testing.assert_allclose(code[:, 0], [[-1, 0, 0], [0.5, 0, 0], [1, 1, 0.25],
                                          [1, 1, 3.5]])
  np.testing.assert_allclose(code[:, 1], [[-0.5, 0, 0], [0.25, 0, 0], [1.25, 0, 0],
                                          [4.5, 0, 0]])


def test_the_ensemble_trains_on_the_mean_of_its_members_losses():
  logits = jnp.asarray([[4.0, -4.0], [-1.0, 3.0]], jnp.float32)  # [batch, members].
  labels = jnp.asarray([1, 0])
  task = binary.Binary()
  each = [task.objective(logits[:, i], labels) for i in range(2)]
  assert float(ensemble.Ensemble(task, 2).objective(logits, labels)) == pytest.approx(
      float(np.mean(each)), rel=1e-6)
  # Not the loss of their mean prediction, which is lower here.
  assert float(task.objective(task.mean_of_members(logits), labels)) < float(np.mean(each))


def test_weight_decay_leaves_the_members_biases_and_scales_alone(tmp_path):
  config = _config(_table(tmp_path / 't.csv'))
  spec = workdir_lib.ModelSpec(num_classes=2, input_shape=(7,), shift=0.0, scale=1.0,
                               steps_per_epoch=1, bins=((0.0, 1.0, 2.0),) + ((),) * 6)
  model = tabular.create_model(config.model, ensemble.Ensemble(binary.Binary(), 4),
                               spec.bins)
  params = model.init({'params': jax.random.key(0)}, jnp.zeros((2, 7)), train=False)['params']
  mask = optimizers._decay_mask(params)  # pylint: disable=protected-access
  decayed = {'/'.join(k.key for k in path) for path, m in
             jax.tree_util.tree_flatten_with_path(mask)[0] if m}
  assert decayed == {'NumericEmbeddings_0/weight', 'NumericEmbeddings_0/piecewise',
                     'EnsembleDense_0/kernel', 'MemberDense_0/kernel'}


@pytest.mark.parametrize('task', ['binary', 'classification', 'regression'])
def test_the_ensemble_predicts_the_mean_of_its_members(task):
  rng = np.random.default_rng(1)
  if task == 'binary':
    inner, outputs = binary.Binary(), jnp.asarray(rng.normal(size=(5, 3)) * 3, jnp.float32)
    mean = {'prob': jax.nn.sigmoid(outputs).mean(1)}
  elif task == 'classification':
    inner = classification.Classification(num_classes=4)
    outputs = jnp.asarray(rng.normal(size=(5, 3, 4)) * 3, jnp.float32)
    mean = {'probs': jax.nn.softmax(outputs, -1).mean(1)}
  else:
    targets = regression.Targets(shape=(), shift=(2.0,), scale=(3.0,))
    inner = regression.Regression(targets, 'mse')
    outputs = {'mean': jnp.asarray(rng.normal(size=(5, 3, 1)), jnp.float32)}
    mean = {'mean': (2.0 + 3.0 * outputs['mean']).mean(1)[:, 0]}
  got = ensemble.Ensemble(inner, 3).predict(outputs)
  for name, value in mean.items():
    np.testing.assert_allclose(got[name], value, rtol=1e-6, atol=1e-7)


@pytest.mark.slow  # Two exports, each run by its runtime in a process of its own.
def test_predict_and_exports_serve_the_members_mean_from_raw_columns(tmp_path):
  path = _table(tmp_path / 't.csv')
  config = _config(path)
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(config, workdir)
  state, _, spec = restore_lib.restore(config, workdir)
  rows = str(tmp_path / 'rows.csv')
  pa_csv.write_csv(pa.table({'a': [0.5, None, -9.0, 30.0], 'b': [None, 1.0, 0.0, 2.0],
                             'colour': ['red', 'purple', None, 'blue']}), rows)
  features, _, _ = row_inputs.read_table(config, spec, rows)
  batch = np.zeros((config.eval_batch_size, features.shape[1]), np.float32)
  batch[:len(features)] = features
  evaluated = optimizers.params_for_eval(state)
  members = state.apply_fn({'params': evaluated.params, 'batch_stats': evaluated.batch_stats},
                           jnp.asarray(batch), train=False)
  assert members.shape == (config.eval_batch_size, 4)  # A logit per member.
  expected = np.asarray(jax.nn.sigmoid(members).mean(1))[:len(features)]
  out = str(tmp_path / 'out.csv')
  predict_rows.predict_rows(config, workdir, rows, output=out)
  with open(out) as f:
    got = np.genfromtxt(f, delimiter=',', names=True)['prob_1']
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  for kind, export in (('jax', jax_export.export), ('onnx', onnx_export.export)):
    served = run_export(kind, export(config, workdir), rows, str(tmp_path))
    np.testing.assert_allclose(served['b37_prob'], expected[np.arange(37) % 4], rtol=1e-5,
                               err_msg=kind)


@pytest.mark.parametrize('overrides, message', [
    ({'task': 'mixture_density', 'target_column': 'a', 'feature_columns': ('b',)},
     "task='mixture_density': does not average ensemble members"),
    ({'model.use_batchnorm': True}, "model.use_batchnorm=True: model.family='tabm' has no"),
    ({'model.kernel_init': 'normal'}, "model.kernel_init='normal': is the MLP's; model.family="),
    ({'model.activation': 'gelu'}, "model.activation='gelu': is the MLP's; .* leave it 'relu'"),
    ({'model.num_bins': 1}, 'model.num_bins=1: must be 0 .* or 2 to 1024'),
    ({'model.members': 0}, 'model.members=0: must be a positive integer'),
    ({'model.family': 'trees'}, "model.family='trees' is not one of: mlp, tabm"),
    ({'max_steps': 1, 'grad_accumulation_steps': 2}, 'max_steps=1: is fewer than one update'),
    ({'max_steps': 8, 'schedule': 'warmup_cosine', 'warmup_epochs': 1.0},
     'max_steps=8: ends before the warmup of warmup_epochs=1.0 .8 steps.'),
])
def test_what_tabm_cannot_train_is_refused_before_any_work(tmp_path, overrides, message):
  path = _table(tmp_path / 't.csv')
  with pytest.raises(cli.INPUT_ERRORS, match=message):
    train.train_and_evaluate(_config(path, **overrides), str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run')


def test_a_sweep_member_tabm_would_not_read_is_refused_before_any_member_trains(tmp_path):
  path = _table(tmp_path / 't.csv')
  overrides = sweeps.product(**{'model.activation': ['relu', 'tanh']})
  with pytest.raises(cli.INPUT_ERRORS, match="model.activation='tanh': is the MLP's"):
    sweeps.run_sweep(_config(path), overrides, str(tmp_path / 'sweep'))
  assert not os.path.exists(tmp_path / 'sweep')


def test_a_search_or_a_run_without_a_checkpoint_refuses_what_tabm_would_not_read(tmp_path):
  from trainkit.search import space as search_space  # pylint: disable=g-import-not-at-top
  path = _table(tmp_path / 't.csv')
  search = search_space.Search(space={'model.activation': search_space.Categorical(
      ('relu', 'tanh'))}, metric='loss')
  with pytest.raises(errors.ConfigError, match="model.activation='tanh': is the MLP's"):
    search.check(_config(path))
  # A run killed before its first checkpoint left config.json: it starts anew, and is checked.
  workdir = tmp_path / 'run'
  train.train_and_evaluate(_config(path), str(workdir))
  for folder in ('checkpoints',):
    shutil.rmtree(workdir / folder)
  with pytest.raises(errors.ConfigError, match="model.kernel_init='normal': is the MLP's; .* "
                     "leave it 'lecun_normal'"):
    train.train_and_evaluate(_config(path, **{'model.kernel_init': 'normal'}), str(workdir))


def test_a_workdir_trained_before_the_mlps_fields_were_refused_is_served_as_trained(tmp_path):
  # Its config.json may name another activation or init: TabM never read them.
  path = _table(tmp_path / 't.csv')
  workdir = tmp_path / 'run'
  train.train_and_evaluate(_config(path), str(workdir))
  rows = tmp_path / 'rows.csv'
  pa_csv.write_csv(pa_csv.read_csv(path).drop(['label']), str(rows))
  before = predict_rows.predict_rows(_config(path), str(workdir), str(rows),
                                     output=str(tmp_path / 'before.csv'))
  stored = json.loads((workdir / 'config.json').read_text())
  stored['model'].update(activation='gelu', kernel_init='normal')
  (workdir / 'config.json').write_text(json.dumps(stored))
  config = config_history.workdir_config(str(workdir), default.get_config())
  after = predict_rows.predict_rows(config, str(workdir), str(rows),
                                    output=str(tmp_path / 'after.csv'))
  assert before[1] == after[1]
  assert (tmp_path / 'before.csv').read_text() == (tmp_path / 'after.csv').read_text()


@pytest.mark.slow
def test_a_tabm_run_sigkilled_in_training_resumes_to_the_uninterrupted_result(tmp_path):
  path = _table(tmp_path / 't.csv', n=1200)
  fields = {'num_epochs': 5, 'checkpoint_every_epochs': 2, 'checkpoint_every_steps': 20,
            'steps_per_call': 1, 'keep_checkpoints': 2}
  _, expected = train.train_and_evaluate(_config(path, **fields), str(tmp_path / 'straight'))
  killed = tmp_path / 'killed'
  # tiny_config's fields that differ from configs/default.py's, then the table's.
  given = {'dataset': path, 'eval_batch_size': 16, 'log_every_steps': 2, 'plots': False,
           'input_workers': 0, 'progress': 'off', 'cache_dir': '', **_FIELDS, **fields}
  command = main_command('--config=configs/default.py', f'--workdir={killed}',
                         *(f'--config.{k}={v}' for k, v in given.items()))
  got = sigkill_then_resume(command, killed, tmp_path / 'kill.log', expected['step'])
  assert without_timing(got) == without_timing(expected)


@pytest.mark.slow  # Two members trained in a group, then each alone.
def test_tabm_members_of_a_sweep_train_in_a_vmapped_group_as_alone(tmp_path):
  path = _table(tmp_path / 't.csv')
  configs = [sweeps.member_config(_config(path, input_mode='device'), o)
             for o in ({'learning_rate': 1e-3, 'seed': 0},
                       {'learning_rate': 1e-2, 'seed': 1, 'model.dropout_rates': (0.3,)})]
  dirs = [str(tmp_path / f'm{i}') for i in range(2)]
  together = grouping.train_group(configs, dirs)
  for i, config in enumerate(configs):
    _, alone = train.train_and_evaluate(config, str(tmp_path / f'alone{i}'))
    assert together[i]['eval_loss'] == pytest.approx(alone['eval_loss'], rel=1e-4)
