"""Config files, command-line overrides, the locked config and main.py's CLI."""

import os
import re
import subprocess
import sys

from absl import flags
import ml_collections
from ml_collections import config_flags
import pytest

from tests.helpers import ENV, ROOT, error_lines, run_main, set_field
from trainkit import configs
from trainkit import errors
from trainkit.training import config_checks
from configs import default, jax_docs, jax_in_action, mixture_density
from configs import mixture_density_tuned, mnist_cnn, table


def _parse(*args):
  argv = ['prog', f'--config={ROOT}/configs/default.py', *args]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, 'config', lock_config=True,
                                  flag_values=flag_values, sys_argv=argv)
  flag_values(argv)
  return flag_values.config


def test_overrides_reach_nested_fields_with_their_types():
  config = _parse('--config.batch_size=64', '--config.optimizer=adamw',
                  '--config.model.hidden_sizes=(256, 128)',
                  '--config.model.dropout_rates=(0.1, 0.2)',
                  '--config.manual_dir=/data/mnist')
  assert config.batch_size == 64 and config.optimizer == 'adamw'
  assert tuple(config.model.hidden_sizes) == (256, 128)
  assert tuple(config.model.dropout_rates) == (0.1, 0.2)
  assert config.manual_dir == '/data/mnist'
  assert config.learning_rate == default.get_config().learning_rate


@pytest.fixture
def main_flags():
  """main.py's own flags (defined on absl's global FLAGS when it is imported)."""
  import main  # pylint: disable=g-import-not-at-top
  yield main.FLAGS
  main.FLAGS.unparse_flags()


def test_main_locks_the_config_against_new_fields(main_flags):
  # (Override flags like --config.x are defined from sys.argv when main.py is
  # imported, so this parses the config file alone.)
  main_flags(['main.py', f'--config={ROOT}/configs/default.py', '--workdir=/tmp/unused'])
  config = main_flags.config
  assert config.batch_size == default.get_config().batch_size
  with pytest.raises(AttributeError):
    config.learnin_rate = 0.1  # A typo cannot silently add a field.


def test_optimizer_and_config_checks_do_not_import_tensorflow():
  code = ('import sys\n'
          'from trainkit.training import config_checks, optimizers\n'
          'print(sorted(m for m in sys.modules if m.split(".")[0] == "tensorflow"))')
  result = subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.strip() == '[]'


def test_wrong_override_type_is_refused():
  with pytest.raises(flags.IllegalFlagValueError):
    _parse('--config.batch_size=large')


_SHIPPED = (default, jax_docs, jax_in_action, mixture_density, mixture_density_tuned, table,
            mnist_cnn)


@pytest.mark.parametrize('get_config', [m.get_config for m in _SHIPPED])
def test_shipped_configs_are_valid(get_config):
  config_checks.validate(get_config())


def test_every_shipped_config_is_checked():
  # The package's configs, and the clone's configs/ beside them, one for one.
  shipped = {name for name in configs.names() if not name.startswith('sweeps/')}
  beside = {name[:-3] for name in os.listdir(os.path.join(ROOT, 'configs'))
            if name.endswith('.py') and name != '__init__.py'}
  checked = {m.__name__.split('.')[-1] for m in _SHIPPED}
  assert shipped == beside == checked


@pytest.mark.parametrize('field, value, message', [
    ('optimizer', 'adamm', "optimizer='adamm' is not one of"),
    ('schedule', 'cosin', "schedule='cosin' is not one of"),
    ('learning_rate', -1.0, 'learning_rate=-1.0: must be > 0'),
    ('batch_size', 0, 'batch_size=0: must be a positive integer'),
    ('model.dropout_rates', (0.5,), 'needs one rate per hidden layer'),
    ('model.dropout_rates', (1.0, 0.1), 'each rate must be in [0, 1)'),
    ('model.activation', 'relux', "model.activation='relux' is not one of"),
    ('checkpoint_min_interval_s', -1.0, 'checkpoint_min_interval_s=-1.0: is negative'),
    ('seed', -1, 'seed=-1: must be an integer >= 0'),
    ('data_seed', -3, 'data_seed=-3: must be an integer >= 0'),
])
def test_bad_values_name_field_and_value(field, value, message):
  config = default.get_config()
  set_field(config, field, value)
  with pytest.raises(errors.ConfigError) as e:
    config_checks.validate(config)
  assert message in str(e.value)


@pytest.mark.parametrize('value', [0, '15', None])
def test_a_bad_count_is_named_before_fields_compared_with_it(value):
  # warmup_epochs is compared with num_epochs: a bad num_epochs is the one
  # named, in one line, whatever its type (a config file can set any).
  fields = default.get_config().to_dict()
  fields['num_epochs'] = value
  with pytest.raises(errors.ConfigError, match=r'^num_epochs=.*: must be a positive integer'):
    config_checks.validate(ml_collections.ConfigDict(fields))


def _float_fields(config, prefix=''):
  for key, value in config.items():
    if hasattr(value, 'items'):
      yield from _float_fields(value, f'{prefix}{key}.')
    elif isinstance(value, float) or (isinstance(value, tuple) and value
                                      and isinstance(value[0], float)):
      yield f'{prefix}{key}'


@pytest.mark.parametrize('bad', [float('inf'), float('-inf'), float('nan')])
def test_every_non_finite_float_field_is_refused(bad):
  fields = list(_float_fields(default.get_config()))
  assert {'learning_rate', 'weight_decay', 'model.dropout_rates', 'ema_decay'} <= set(fields)
  for field in fields:
    config = default.get_config()
    original = config
    for part in field.split('.')[:-1]:
      original = original[part]
    value = original[field.split('.')[-1]]
    set_field(config, field, tuple(bad for _ in value) if isinstance(value, tuple) else bad)
    with pytest.raises(errors.ConfigError, match=f'^{re.escape(field)}=.*: must be'):
      config_checks.validate(config)


@pytest.mark.slow  # A process start each.
def test_cli_rejects_stray_positional_arguments(tmp_path):
  result = run_main('--config=configs/default.py', f'--workdir={tmp_path}', 'extra')
  assert result.returncode == 2
  assert error_lines(result.stderr) == [
      "error: unexpected arguments 'extra': only --mode=predict takes input files"]
  assert os.listdir(tmp_path) == []
  # sweep.py alike (it printed absl's usage text and exited 1).
  result = run_main('--config=configs/sweeps/lr_seed.py', f'--workdir={tmp_path}', 'extra',
                    script='sweep.py')
  assert result.returncode == 2
  assert error_lines(result.stderr) == [
      "error: unexpected arguments 'extra': give every setting as a flag (--config=SWEEP_FILE, "
      '--config.FIELD=VALUE, --workdir=DIR)']


@pytest.mark.slow  # A process start each.
def test_cli_requires_workdir():
  result = run_main('--config=configs/default.py')
  assert result.returncode != 0
  assert 'workdir' in result.stderr


@pytest.mark.slow  # A process start each.
def test_cli_bad_value_is_one_line_and_touches_nothing(tmp_path):
  workdir = tmp_path / 'run'
  result = run_main('--config=configs/default.py', f'--workdir={workdir}',
                 '--config.optimizer=adamm')
  assert result.returncode == 2
  errors = error_lines(result.stderr)
  assert errors == ["error: optimizer='adamm' is not one of: sgd, momentum, "
                    "nesterov, adam, adamw, rmsprop (did you mean 'adam'?)"]
  assert 'Traceback' not in result.stderr
  # The refusal is not buried under the config's hundred lines logged before it.
  assert 'Config:' not in result.stderr and len(result.stderr.splitlines()) <= 3
  assert not workdir.exists()


@pytest.mark.slow  # A process start each.
def test_incomplete_multi_process_flags_are_one_line_and_touch_nothing(tmp_path):
  workdir = tmp_path / 'run'
  result = run_main('--config=configs/default.py', f'--workdir={workdir}',
                 '--jax_num_processes=2', '--jax_process_id=1')
  assert result.returncode == 2
  errors = error_lines(result.stderr)
  assert errors == ['error: --jax_coordinator_address=None --jax_num_processes=2 '
                    '--jax_process_id=1: coordinator_address should be defined.']
  assert not workdir.exists()


@pytest.mark.slow  # A process start each.
def test_help_shows_the_commands_own_flags_and_exits_0():
  # absl's listed the main module's flags (none: they are the library's) and exited 1.
  for script, flag in (('main.py', '--mode:'), ('sweep.py', '--storage:')):
    result = run_main('--help', script=script)
    assert result.returncode == 0, result.stderr[-2000:]
    assert flag in result.stdout and '--workdir:' in result.stdout
