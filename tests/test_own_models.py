"""Models of one's own: Flax linen and NNX backbones given by import path.

The user's modules are written by the test outside the project and imported
by path (`config.model.module='usermodels:Dense64'`), as a user's would be.
"""

import json
import logging
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import trainkit
from configs import default
from tests.helpers import (ENV, ROOT, error_lines, main_command, run_export, run_main,
                           session_cache_dir, sigkill_after_first_checkpoint, tiny_config)
from trainkit import api
from trainkit import cli
from trainkit import errors
from trainkit import models
from trainkit.search import sweeps
from trainkit.training import config_checks
from trainkit.training import state as state_lib
import train

USER_MODULES = '''
from flax import nnx
import flax.linen as nn
import jax
import jax.numpy as jnp


class Dense64(nn.Module):
  """Dense(64) and ReLU on flattened inputs."""
  width: int = 64

  @nn.compact
  def __call__(self, x, *, train):
    del train
    return nn.relu(nn.Dense(self.width)(x.reshape((x.shape[0], -1))))


class NoTrain(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.Dense(4)(x.reshape((x.shape[0], -1)))


class Unflattened(nn.Module):
  @nn.compact
  def __call__(self, x, *, train):
    return nn.Conv(4, (3, 3))(x)


class NanInit(nn.Module):
  @nn.compact
  def __call__(self, x, *, train):
    nan = lambda key, shape, dtype=jnp.float32: jnp.full(shape, jnp.nan, dtype)
    return nn.Dense(4, kernel_init=nan)(x.reshape((x.shape[0], -1)))


class Logits(nn.Module):
  """Computes the task's outputs itself: a classifier's logits."""
  HEAD = False

  @nn.compact
  def __call__(self, x, *, train):
    return nn.Dense(10)(x.reshape((x.shape[0], -1)))


class NnxDense64(nnx.Module):
  """The same in NNX, with BatchNorm and dropout that follow train() and eval()."""

  def __init__(self, din: int = 784, width: int = 64, *, rngs: nnx.Rngs):
    # No bias: BatchNorm cancels it, so its gradient is rounding noise that Adam
    # would turn into full steps, and a sweep member would differ from its run alone.
    self.dense = nnx.Linear(din, width, use_bias=False, rngs=rngs)
    self.norm = nnx.BatchNorm(width, rngs=rngs)
    self.drop = nnx.Dropout(0.1, rngs=rngs)

  def __call__(self, x):
    return self.drop(nnx.relu(self.norm(self.dense(x.reshape((x.shape[0], -1))))))


class OneLogitColumn(nn.Module):
  """HEAD = False with a binary logit of shape [batch, 1]: the task takes [batch]."""
  HEAD = False

  @nn.compact
  def __call__(self, x, *, train):
    return nn.Dense(1)(x.reshape((x.shape[0], -1)))


class BareAssert(nn.Module):
  @nn.compact
  def __call__(self, x, *, train):
    assert x.ndim == 2
    return x


class NnxAnyArgs(nnx.Module):
  """Takes its sizes as keyword arguments, and one it cannot do without."""

  def __init__(self, din: int, *, rngs: nnx.Rngs, **sizes):
    self.dense = nnx.Linear(din, sizes.get('width', 8), rngs=rngs)

  def __call__(self, x):
    return nnx.relu(self.dense(x.reshape((x.shape[0], -1))))


class Consts(nn.Module):
  """A variable of its own collection: neither trained nor checkpointed."""

  @nn.compact
  def __call__(self, x, *, train):
    scale = self.variable('consts', 'scale', lambda: 2.0)
    return nn.Dense(4)(x.reshape((x.shape[0], -1))) * scale.value


class NnxBuffer(nnx.Module):
  """An nnx.Variable buffer: built abstractly to restore, it was a ShapeDtypeStruct."""

  def __init__(self, *, rngs: nnx.Rngs):
    self.dense = nnx.Linear(784, 4, rngs=rngs)
    self.offset = nnx.Variable(jnp.ones((4,)))

  def __call__(self, x):
    return self.dense(x.reshape((x.shape[0], -1))) + self.offset.value


class DebugPrint(nn.Module):
  """Prints from inside the model: a host callback, which jax.export cannot serialize."""

  @nn.compact
  def __call__(self, x, *, train):
    x = x.reshape((x.shape[0], -1))
    jax.debug.print('mean input {}', x.mean())
    return nn.relu(nn.Dense(8)(x))


NOT_A_MODULE = 3
'''

BACKBONES = ('usermodels:Dense64', 'usermodels:NnxDense64')


@pytest.fixture
def user_modules(tmp_path_factory, monkeypatch):
  """A folder outside the project holding usermodels.py, importable here and in children."""
  folder = tmp_path_factory.mktemp('user')
  (folder / 'usermodels.py').write_text(USER_MODULES)
  monkeypatch.syspath_prepend(str(folder))
  monkeypatch.setitem(ENV, 'PYTHONPATH', f'{folder}{os.pathsep}{ROOT}')
  return folder


def _own(module='usermodels:Dense64', **fields):
  return tiny_config(**{'model.module': module, **fields})


@pytest.mark.parametrize('module, args, message', [
    ('no_such_package.models:Net', {}, "model.module='no_such_package.models:Net' cannot be "
     'imported'),
    ('usermodels:NOT_A_MODULE', {}, 'is not a Flax linen or NNX Module class'),
    ('usermodels:NnxDense64', {'widht': 8}, "takes no argument 'widht'"),
    ('usermodels', {}, "give 'package.module:Name'"),
    ('usermodels:Dense64', {'widht': 8}, "takes no argument 'widht' .*did you mean 'width'"),
    # Found only once the data was read, as a call convention of linen's.
    ('usermodels:NnxAnyArgs', {'width': 8}, "model.args: usermodels:NnxAnyArgs cannot be built "
     r"with \{'width': 8\} \(missing a required argument: 'din'\)"),
])
def test_a_module_that_cannot_be_built_is_refused_in_one_line(user_modules, module, args,
                                                              message):
  config = _own(module)
  config.model.args = args
  with pytest.raises(errors.ConfigError, match=message):
    config_checks.validate(config)


def test_a_sweep_over_the_mlps_fields_of_a_backbone_is_refused(user_modules):
  # Read by nothing, it trained one model again and again.
  with pytest.raises(errors.ConfigError, match=r"model.dropout_rates=\(0.5,\): is the MLP's; "
                     "model.module='usermodels:Dense64' has layers of its own"):
    sweeps.member_config(_own(), {'model.dropout_rates': (0.5,)})
  # The MLP's checks do not run for a backbone (hidden_sizes alone failed on its dropout).
  config = _own()
  config.model.hidden_sizes = (128, 64, 32)
  config_checks.validate(config)


def test_a_compute_dtype_goes_to_the_backbones_layers(user_modules):
  from trainkit.models import backbone  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  # The built-in CNN computed in float32 under dtype='bfloat16': only the head did not.
  assert backbone.construct('cnn', {}, 'bfloat16').dtype == 'bfloat16'
  assert backbone.construct('cnn', {'dense': 8}).dtype == 'float32'
  with pytest.raises(errors.ConfigError, match="dtype='bfloat16': model.module='usermodels:"
                     "Dense64' takes no dtype argument, so only the head would compute in it"):
    config_checks.check_new_run(_own(dtype='bfloat16'), '/nonexistent/w')
  # Only a new run: a workdir trained before this check is served as it was.
  config_checks.validate(_own(dtype='bfloat16'))


def test_an_nnx_constructor_taking_any_keywords_takes_them(user_modules):
  # They were refused: 'takes no argument 'width' (it takes: din, sizes)'.
  config_checks.validate(_own('usermodels:NnxAnyArgs', **{'model.args': {'din': 784,
                                                                          'width': 16}}))


@pytest.mark.parametrize('module, message', [
    ('usermodels:NoTrain', r"cannot be built and called as module\(x, train=...\)"),
    ('usermodels:Unflattened', r'returns features of shape \(2, 28, 28, 4\)'),
    ('usermodels:NanInit', 'initial parameters are not all finite'),
    # An error without a message is named by its kind.
    ('usermodels:BareAssert', r'fails on inputs of shape \(2, 28, 28, 1\) \(AssertionError\)'),
    ('usermodels:Consts', "keeps variables in collection 'consts', which a run neither"),
    ('usermodels:NnxBuffer', "keeps variables in collection 'Variable'"),
    ('usermodels:OneLogitColumn', r"sets HEAD = False, .* task='classification' takes "
     r'\(2, 10\) for a batch of 2, it returns \(2, 1\)'),
])
def test_a_module_that_cannot_train_is_refused_before_any_step(user_modules, mock_mnist,
                                                               tmp_path, module, message):
  with pytest.raises(errors.ConfigError, match=message):
    train.train_and_evaluate(_own(module), str(tmp_path))
  assert not os.path.exists(tmp_path / 'checkpoints')


@pytest.mark.slow  # An MNIST epoch per backbone.
def test_own_backbones_train_and_load(user_modules, mock_mnist, tmp_path, monkeypatch, caplog):
  _, summary = train.train_and_evaluate(_own(), str(tmp_path))
  assert summary['step'] > 0
  stored = json.loads((tmp_path / 'config.json').read_text())
  assert stored['model']['module'] == 'usermodels:Dense64'
  # Loading does not check the module again (an init op by op): it passed in training.
  with monkeypatch.context() as patch:
    patch.setattr(state_lib, '_STATIC_PARTS', {})
    patch.setattr(models, 'check_built', lambda *a: pytest.fail('checked again'))
    # Its parameters are the module's: Dense64's kernel, then the head's.
    model = trainkit.load(str(tmp_path))
  params = model._state.params  # pylint: disable=protected-access
  assert params['backbone']['Dense_0']['kernel'].shape == (784, 64)
  # An NNX module's parameters and BatchNorm statistics are collections as a
  # linen module's: checkpointed, restored and exported alike.
  train.train_and_evaluate(_own('usermodels:NnxDense64'), str(tmp_path / 'nnx'))
  state = trainkit.load(str(tmp_path / 'nnx'))._state  # pylint: disable=protected-access
  assert state.params['backbone']['nnx']['dense']['kernel'].shape == (784, 64)
  assert set(state.batch_stats['backbone']['nnx']['norm']) == {'mean', 'var'}
  # A module computing the task's outputs itself adds no head.
  _, logits = train.train_and_evaluate(_own('usermodels:Logits'), str(tmp_path / 'logits'))
  assert logits['step'] == summary['step']
  # Its class's source is part of what the workdir records: edited, a load says so.
  assert json.loads((tmp_path / 'model.json').read_text())['module_digest']
  trainkit.load(str(tmp_path))
  assert 'source has changed' not in caplog.text
  # The file the module was imported from (an earlier test's folder, under xdist).
  source = pathlib.Path(sys.modules['usermodels'].__file__)
  source.write_text(source.read_text().replace('Dense(64) and ReLU', 'Dense(64), then ReLU'))
  with caplog.at_level(logging.WARNING, logger='absl'):
    trainkit.load(str(tmp_path))
  assert ("model.module='usermodels:Dense64': its class's source has changed since the "
          'workdir was trained') in caplog.text


@pytest.mark.slow  # Trains twice.
def test_the_python_api_takes_a_module_itself(user_modules, mock_mnist, tmp_path):
  import usermodels  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  result = trainkit.train(tiny_config(), str(tmp_path), model=usermodels.Dense64(width=32))
  stored = json.loads((tmp_path / 'config.json').read_text())
  assert stored['model']['module'] == 'usermodels:Dense64'
  assert stored['model']['args'] == {'width': 32}
  params = result.load()._state.params  # pylint: disable=protected-access
  assert params['backbone']['Dense_0']['kernel'].shape == (784, 32)
  # An NNX module is given as its class; its arguments stay the config's.
  result = trainkit.train(tiny_config(), str(tmp_path / 'nnx'), model=usermodels.NnxDense64,
                          overrides={'model.args': {'width': 8}})
  params = result.load()._state.params  # pylint: disable=protected-access
  assert params['backbone']['nnx']['dense']['kernel'].shape == (784, 8)


def test_a_module_no_other_process_can_import_is_refused_or_warned_of(tmp_path):
  import flax.linen as nn  # pylint: disable=g-import-not-at-top,import-outside-toplevel

  class Local(nn.Module):  # config.json would record 'tests.test_own_models:...<locals>.Local'.
    @nn.compact
    def __call__(self, x, *, train):
      return nn.Dense(4)(x.reshape((x.shape[0], -1)))

  with pytest.raises(trainkit.Refused, match='a class made inside a function cannot be imported '
                     'again'):
    trainkit.train(tiny_config(), str(tmp_path / 'local'), model=Local)
  assert not (tmp_path / 'local').exists()
  # A notebook's class: a later process that defines it again can still read the workdir.
  main = type('Net', (Local,), {'__module__': '__main__', '__qualname__': 'Net'})
  with pytest.warns(UserWarning, match=r"defined in __main__ .* records '__main__:Net': only a "
                    'process that defines it again'), pytest.raises(trainkit.Refused):
    trainkit.train(tiny_config(), str(tmp_path / 'main'), model=main)


def test_module_instances_config_json_cannot_record_are_refused_in_one_line(user_modules,
                                                                            tmp_path):
  import usermodels  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  from flax import nnx  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  # The NNX instance's whole repr (its parameter arrays) was the message; an
  # array-valued linen field raised numpy's 'truth value ... is ambiguous'.
  for model, message in (
      (usermodels.NnxDense64(rngs=nnx.Rngs(0)),
       r"^model=NnxDense64\(\.\.\.\): give an NNX module as its class \(its arguments in "
       r"overrides=\{'model.args': \.\.\.\}\); an instance cannot be recorded$"),
      (usermodels.Dense64(width=np.arange(3)), r"^model=Dense64: its field 'width' holds an array; "
                                    r'config.json records plain values')):
    with pytest.raises(trainkit.Refused, match=message):
      trainkit.train(tiny_config(), str(tmp_path / 'w'), model=model)
  assert not (tmp_path / 'w').exists()
  # A NumPy scalar is a number, recorded as Python's (it was refused as an array).
  _, args = api._module_fields(usermodels.Dense64(width=np.int64(32)))  # pylint: disable=protected-access
  assert args == {'width': 32} and type(args['width']) is int


@pytest.mark.slow  # Over five seconds here: the full suite runs it.
def test_a_workdir_whose_module_is_gone_is_refused_naming_it(user_modules, mock_mnist,
                                                             tmp_path, monkeypatch):
  train.train_and_evaluate(_own(), str(tmp_path))
  monkeypatch.delitem(sys.modules, 'usermodels', raising=False)
  monkeypatch.setattr(sys, 'path', [p for p in sys.path if p != str(user_modules)])
  with pytest.raises(trainkit.Refused, match="model.module='usermodels:Dense64' cannot be "
                     'imported'):
    trainkit.load(str(tmp_path))


def _random_mnist_fields(random_mnist_4096):
  manual_dir, data_dir = random_mnist_4096
  return {'manual_dir': manual_dir, 'data_dir': data_dir, 'train_split': 'train[:3584]',
          'validation_split': 'train[3584:]', 'batch_size': 32, 'eval_batch_size': 256,
          'num_epochs': 3, 'cache_dir': session_cache_dir(), 'plots': False,
          'model.module': 'usermodels:Dense64', 'progress': 'off'}


def _config(fields):
  config = default.get_config()
  for key, value in fields.items():
    node, *rest = key.split('.')
    if rest:
      config[node][rest[0]] = value
    else:
      config[key] = value
  return config


@pytest.mark.slow  # Process starts, and a SIGKILL.
@pytest.mark.parametrize('module', BACKBONES)
def test_an_own_backbone_resumes_bit_identical_after_a_sigkill(user_modules, tmp_path,
                                                               random_mnist_4096, module):
  fields = {**_random_mnist_fields(random_mnist_4096), 'checkpoint_every_steps': 40,
            'steps_per_call': 1, 'model.module': module}
  _, expected = train.train_and_evaluate(_config(fields), str(tmp_path / 'straight'))
  killed = tmp_path / 'killed'
  command = main_command('--config=configs/default.py', f'--workdir={killed}',
                         *(f'--config.{k}={v}' for k, v in fields.items()))
  saved = sigkill_after_first_checkpoint(command, killed, tmp_path / 'kill.log')
  assert saved and saved[-1] < expected['step']  # Killed in training.
  resumed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=ENV,
                           timeout=300)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert 'Restored checkpoint' in resumed.stderr
  got = json.loads((killed / 'summary.json').read_text())
  for key in ('step', 'eval_loss', 'eval_accuracy', 'test_loss', 'best_step'):
    assert got[key] == expected[key], key


@pytest.mark.slow  # Two members trained, and exports run by fresh processes.
@pytest.mark.parametrize('module', BACKBONES)
def test_an_own_backbone_is_swept_and_exported(user_modules, tmp_path, random_mnist_4096,
                                               module):
  fields = {**_random_mnist_fields(random_mnist_4096), 'num_epochs': 1,
            'model.module': module}
  base = _config(fields)
  ranked = sweeps.run_sweep(base, [{'learning_rate': 1e-3}, {'learning_rate': 3e-3}],
                            str(tmp_path / 'sweep'), 'sequential', False)
  assert len(ranked) == 2 and all(r['status'] == 'finished' for r in ranked)
  workdir = ranked[0]['workdir']
  rows = np.random.default_rng(0).integers(0, 256, (5, 28, 28, 1), dtype=np.uint8)
  np.save(tmp_path / 'rows.npy', rows)
  predicted = run_main(f'--workdir={workdir}', '--mode=predict',
                       f'--input={tmp_path}/rows.npy', f'--output={tmp_path}/p.csv')
  assert predicted.returncode == 0, predicted.stderr[-3000:]
  expected = np.loadtxt(tmp_path / 'p.csv', delimiter=',', skiprows=1)[:, 2:]  # probs_*
  for kind in ('jax', 'onnx'):
    exported = run_main(f'--workdir={workdir}', '--mode=export', f'--format={kind}')
    assert exported.returncode == 0, (kind, exported.stderr[-3000:])
    got = run_export(kind, exported.stdout.strip().splitlines()[-1], rows, tmp_path)
    np.testing.assert_allclose(got['b1_scores'][0], expected[0], atol=1e-5)


@pytest.mark.slow  # One epoch of real MNIST.
@pytest.mark.parametrize('module', BACKBONES)
def test_an_own_backbone_learns_real_mnist(user_modules, mnist_dir, mnist_data_dir,
                                           mnist_cache_dir, tmp_path, module):
  config = default.get_config()
  config.update({'manual_dir': mnist_dir, 'data_dir': mnist_data_dir,
                 'cache_dir': mnist_cache_dir, 'num_epochs': 1, 'plots': False,
                 'progress': 'off'})
  config.model.module = module
  _, summary = train.train_and_evaluate(config, str(tmp_path))
  assert summary['test_accuracy'] >= 0.90, summary['test_accuracy']


@pytest.mark.slow  # A process start.
@pytest.mark.parametrize('module, task, message', [
    # The loss would broadcast [batch, 1] logits against [batch] labels, and train.
    ('usermodels:OneLogitColumn', 'binary', r"task='binary' takes \(2,\) .* returns \(2, 1\)"),
    ('usermodels:Logits', 'regression',
     r"task='regression' takes \{'mean': \(2, 1\), 'std': \(2, 1\)\} .* "
     r'returns \(2, 10\)'),
])
def test_a_headless_module_must_return_the_tasks_outputs(user_modules, tmp_path, module, task,
                                                         message):
  x = np.random.default_rng(0).normal(size=(64, 6)).astype(np.float32)
  y = (x[:, 0] > 0).astype(np.int64) if task == 'binary' else x[:, :1]
  np.savez(tmp_path / 'data.npz', x=x, y=y)
  config = _own(module, task=task, dataset=str(tmp_path / 'data.npz'), test_split='train',
                normalization='per_feature',
                best_metric='accuracy' if task == 'binary' else 'rmse')
  with pytest.raises(errors.ConfigError, match=message):
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run')


@pytest.mark.slow  # Trains a model of its own.
def test_a_model_jax_export_cannot_convert_is_one_line_and_writes_nothing(user_modules,
                                                                           mock_mnist, tmp_path):
  train.train_and_evaluate(_own('usermodels:DebugPrint', num_epochs=1), str(tmp_path))
  config = trainkit.load(str(tmp_path)).config
  with pytest.raises(errors.ConfigError, match=r'--format=jax: jax.export cannot convert this '
                     r'model \(NotImplementedError: serialization of host_callbacks.*\); try '
                     '--format=onnx'):
    cli.export(config, str(tmp_path), 'latest', 'jax')
  assert not os.path.exists(tmp_path / 'export')


def test_a_module_file_that_fails_to_import_is_refused_in_one_line(user_modules):
  (user_modules / 'brokenmodels.py').write_text('import flax.linen as nn\nclass Net(nn.Module)\n')
  with pytest.raises(errors.ConfigError, match=r"model.module='brokenmodels:Net' cannot be "
                     r'imported \(SyntaxError: .*line 2'):
    config_checks.validate(_own('brokenmodels:Net'))


def test_an_unknown_module_is_one_line_on_the_command_line(user_modules, tmp_path):
  result = run_main('--config=configs/default.py', f'--workdir={tmp_path}/w',
                    '--config.model.module=usermodels:Nope')
  assert result.returncode == 2
  assert error_lines(result.stderr) == [
      "error: model.module='usermodels:Nope' cannot be imported (AttributeError: module "
      "'usermodels' has no attribute 'Nope')"]
  assert not os.path.exists(tmp_path / 'w')


@pytest.mark.slow  # A CNN trains.
def test_the_built_in_cnn_trains_and_is_summarised(mock_mnist, tmp_path):
  config = tiny_config(**{'model.module': 'cnn', 'steps_per_call': 1})  # As mnist_cnn's.
  config.model.args = {'channels': (4, 8), 'dense': 16}
  _, summary = train.train_and_evaluate(config, str(tmp_path))
  assert summary['step'] > 0
  model = trainkit.load(str(tmp_path))
  params = model._state.params['backbone']  # pylint: disable=protected-access
  assert params['Conv_0']['kernel'].shape == (3, 3, 1, 4)
  assert params['Conv_1']['kernel'].shape == (3, 3, 4, 8)
  assert 'Conv_0' in model.summary and 'Total' in model.summary


@pytest.mark.slow  # A group and each member alone.
@pytest.mark.parametrize('module', BACKBONES)
def test_an_own_backbone_trains_in_a_vmapped_group_as_alone(user_modules, mock_mnist,
                                                            tmp_path, module):
  """A sweep's members of a linen or an NNX backbone share one vmapped program."""
  from trainkit.search import groups  # pylint: disable=g-import-not-at-top
  configs = [sweeps.member_config(_own(module, input_mode='device'), o) for o in
             ({'learning_rate': 1e-3, 'seed': 0}, {'learning_rate': 1e-2, 'seed': 1})]
  dirs = [str(tmp_path / f'm{i}') for i in range(2)]
  together = groups.train_group(configs, dirs)  # NotGroupable would fail the test.
  for i, config in enumerate(configs):
    alone = train.train_and_evaluate(config, str(tmp_path / f'alone{i}'))[1]
    assert together[i]['eval_loss'] == pytest.approx(alone['eval_loss'], rel=1e-4), i
  assert together[0]['eval_loss'] != together[1]['eval_loss']


@pytest.mark.slow  # TensorFlow's import and conversion (jax2tf).
@pytest.mark.parametrize('module', BACKBONES)
def test_an_own_backbones_saved_model_serves_what_predict_writes(user_modules, mock_mnist,
                                                                 tmp_path, module):
  from trainkit.data.sources import host_tensorflow  # pylint: disable=g-import-not-at-top
  from trainkit.serving import saved_model  # pylint: disable=g-import-not-at-top
  config = _own(module)
  train.train_and_evaluate(config, str(tmp_path))
  images = np.random.default_rng(0).integers(0, 256, (5, 28, 28, 1), dtype=np.uint8)
  predicted = trainkit.load(str(tmp_path)).predict(images)
  expected = np.stack([predicted[f'probs_{i}'] for i in range(10)], axis=1)
  tf = host_tensorflow.tensorflow()
  serve = tf.saved_model.load(saved_model.export_saved_model(config, str(tmp_path)))
  served = serve.signatures['serving_default'](images=tf.constant(images))['scores'].numpy()
  np.testing.assert_allclose(served, expected, rtol=1e-4, atol=1e-6)
