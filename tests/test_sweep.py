"""Config sweeps: members, validation up front, summaries, skip and resume."""

import csv
import glob
import json
import os
import re
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from tests.helpers import ROOT, checkpoint_steps, digest, tiny_config, write_mnist
from trainkit import errors
from trainkit.data import pipeline as input_pipeline
from trainkit.data import sources
from trainkit.search import groups as grouping
from trainkit.search import sweeps
from trainkit.serving import restore as restore_lib
from trainkit.training import carried_values
import train

pytestmark = pytest.mark.usefixtures('mock_mnist')


def test_product_and_zip_helpers():
  assert sweeps.product(learning_rate=[0.1, 0.2], seed=[0, 1]) == [
      {'learning_rate': 0.1, 'seed': 0}, {'learning_rate': 0.1, 'seed': 1},
      {'learning_rate': 0.2, 'seed': 0}, {'learning_rate': 0.2, 'seed': 1}]
  assert sweeps.zip_axes(model__dropout_rates=[(0.1,), (0.2,)], seed=[3, 4]) == [
      {'model.dropout_rates': (0.1,), 'seed': 3},
      {'model.dropout_rates': (0.2,), 'seed': 4}]
  with pytest.raises(ValueError, match='one length'):
    sweeps.zip_axes(a=[1, 2], b=[1])


def test_a_sweep_file_whose_get_sweep_raises_is_refused_in_one_line(tmp_path):
  path = tmp_path / 'sweep.py'
  path.write_text('from trainkit.search import sweeps\n'
                  'def get_sweep():\n'
                  '  return sweeps.zip_axes(learning_rate=[1e-3, 1e-2], seed=[0])\n')
  with pytest.raises(errors.ConfigError, match=r"^--config='.*sweep.py': get_sweep\(\) raised "
                                               r"ValueError: zip_axes needs lists of one length"):
    sweeps.load_sweep(str(path))
  path.write_text('def get_sweep():\n  return None\n')
  with pytest.raises(errors.ConfigError, match='must return a non-empty list of dicts'):
    sweeps.load_sweep(str(path))
  path.write_text('def get_sweep():\n  return ({"seed": s} for s in range(2))\n')
  assert sweeps.load_sweep(str(path)) == [{'seed': 0}, {'seed': 1}]  # Any iterable of dicts.


def test_every_invalid_member_is_reported_before_anything_trains(tmp_path):
  overrides = [{'learning_rate': 0.1}, {'learning_rate': -1.0},
               {'model.activaton': 'relu'}, {'optimizer': 'adamm'}]
  with pytest.raises(errors.ConfigError) as e:
    sweeps.run_sweep(tiny_config(), overrides, str(tmp_path / 'sweep'))
  message = str(e.value)
  assert 'member 01_learning_rate=-1.0: learning_rate=-1.0: must be > 0' in message
  assert "member 02_model.activaton=relu: unknown config field 'model.activaton'" in message
  assert "(did you mean 'activation'?)" in message
  assert "member 03_optimizer=adamm: optimizer='adamm'" in message
  assert '00_' not in message
  assert not (tmp_path / 'sweep').exists()


def test_sweep_writes_members_summaries_and_skips_finished_ones(tmp_path):
  overrides = sweeps.product(learning_rate=[1e-3, 1e-2], seed=[0, 1])
  workdir = tmp_path / 'sweep'
  ranked = sweeps.run_sweep(tiny_config(), overrides, str(workdir))
  assert len(ranked) == 4
  with open(workdir / 'sweep_summary.csv') as f:
    rows = list(csv.DictReader(f))
  assert [r['name'] for r in rows] == [sweeps.member_name(i, o)
                                       for i, o in enumerate(overrides)]
  assert set(rows[0]) >= {'name', 'overrides', 'best_metric', 'objective',
                          'best_eval_accuracy', 'eval_accuracy', 'eval_loss', 'train_wall_s'}
  # No validation split: ranked by the final figures, no member has a best.
  objectives = [r['objective'] for r in ranked]
  assert objectives == sorted(objectives, reverse=True)
  assert objectives == [r['eval_accuracy'] for r in ranked]
  assert all(r['best_eval_accuracy'] is None for r in ranked)
  table = (workdir / 'sweep_summary.md').read_text().splitlines()
  assert len(table) == 2 + 4 and table[2].startswith(f'| 1 | {ranked[0]["name"]} |')
  assert (workdir / 'sweep_eval_curves.png').stat().st_size > 10_000
  # Each member's workdir is a normal run's: --mode=eval works on it.
  member = workdir / rows[3]['name']
  config = sweeps.member_config(tiny_config(), overrides[3])
  result = restore_lib.evaluate_checkpoint(config, str(member))
  assert result['eval_accuracy'] == float(rows[3]['eval_accuracy'])

  # Run again: nothing trains, whichever path (a group or alone) would train it.
  members = {r['name']: digest(workdir / r['name']) for r in rows}
  sweeps.run_sweep(tiny_config(), overrides, str(workdir))
  assert {name: digest(workdir / name) for name in members} == members
  # A member stopped after its first epoch resumes alone; the others stay as they are.
  unfinished = workdir / rows[1]['name']
  os.remove(unfinished / 'summary.json')
  shutil.rmtree(unfinished / 'checkpoints' / '12')
  again = sweeps.run_sweep(tiny_config(), overrides, str(workdir))
  assert checkpoint_steps(unfinished) == [6, 12]
  for name, files in members.items():
    if name != rows[1]['name']:
      assert digest(workdir / name) == files
  assert {r['name']: r['eval_accuracy'] for r in again} == {
      r['name']: float(r['eval_accuracy']) for r in rows}
  assert {r['name']: r['eval_loss'] for r in again} == {
      r['name']: float(r['eval_loss']) for r in rows}


@pytest.mark.slow
def test_members_that_differ_in_their_data_train_on_their_own(tmp_path):
  """Each member gets the splits it names (and its steps per epoch), not the first's."""
  overrides = [{'train_split': 'train[:40]'},
               {'train_split': 'train[:16]', 'validation_split': 'train[16:24]'}]
  sweeps.run_sweep(tiny_config(), overrides, str(tmp_path), 'sequential')
  steps = {}
  for i, member in enumerate(overrides):
    with open(tmp_path / sweeps.member_name(i, member) / 'summary.json') as f:
      summary = json.load(f)
    steps[i] = summary['step']
    assert summary['eval_split'] == member.get('validation_split', 'test')
  assert steps == {0: 10, 1: 4}  # 2 epochs of 5 and of 2 batches of 8.
  # Configs that differ in their data never share it; others do.
  key = lambda **fields: input_pipeline.data_config(tiny_config(**fields))
  for field in input_pipeline.DATA_FIELDS:
    assert field in tiny_config()
  assert key(learning_rate=0.5, seed=3) == key()
  assert key(input_workers=3) != key() and key(allow_split_overlap=True) != key()


def test_a_finished_member_is_not_trained_again_for_an_operational_change(tmp_path):
  overrides = [{'seed': 1}]
  sweeps.run_sweep(tiny_config(), overrides, str(tmp_path))
  member = tmp_path / sweeps.member_name(0, overrides[0])
  before = digest(member)
  sweeps.run_sweep(tiny_config(progress='off', log_every_steps=3), overrides, str(tmp_path))
  after = digest(member)
  assert after.pop('config.json', None) is not None  # Rewritten only if it ran.
  before.pop('config.json')
  assert after == before


def test_a_search_flag_given_to_a_sweep_is_refused_not_ignored(tmp_path):
  sweep_file = tmp_path / 'tiny_sweep.py'
  sweep_file.write_text('from configs import default\n'
                        'def get_config():\n  return default.get_config()\n'
                        'def get_sweep():\n  return [{}]\n')
  result = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'sweep.py'), f'--config={sweep_file}',
       f'--workdir={tmp_path / "sweep"}', '--launcher=local', '--workers=2'],
      cwd=ROOT, capture_output=True, text=True, timeout=240)
  assert result.returncode == 2, result.stderr[-2000:]
  assert result.stderr.strip().splitlines()[-1] == (
      f'error: --launcher is for a search (a sweep file with get_search()); {sweep_file} has '
      'get_sweep()')
  assert not (tmp_path / 'sweep').exists()


def _tiny_sweep(tmp_path, name: str, sweep: str, optimizer: str = 'adam'):
  """sweep.py on a sweep file of a small MLP over 64 mocked images: (its file, the result)."""
  write_mnist(tmp_path, n_train=64, n_test=20)
  sweep_file = tmp_path / f'{name}.py'
  sweep_file.write_text(
      'from configs import default\n'
      'from trainkit.search import sweeps\n'
      'def get_config():\n'
      '  config = default.get_config()\n'
      '  config.model.hidden_sizes, config.model.dropout_rates = (16,), (0.1,)\n'
      '  config.batch_size, config.num_epochs, config.plots = 16, 1, False\n'
      f'  config.optimizer = {optimizer!r}\n'
      '  return config\n'
      'def get_sweep():\n'
      f'  return sweeps.product({sweep})\n')
  result = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'sweep.py'), f'--config={sweep_file}',
       f'--workdir={tmp_path / "sweep"}', f'--config.manual_dir={tmp_path}',
       f'--config.data_dir={tmp_path / "tfds"}', '--config.train_split=train',
       '--config.validation_split=', '--parallel=sequential'],
      cwd=ROOT, capture_output=True, text=True, timeout=240,
      env={**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2'})
  return sweep_file, result


def test_sweep_cli_prints_the_ranking_and_the_best_command(tmp_path):
  sweep_file, result = _tiny_sweep(tmp_path, 'tiny_sweep', 'learning_rate=[1e-3, 1e-2]')
  assert result.returncode == 0, result.stderr[-2000:]
  assert 'Sweep of 2 members done' in result.stdout
  assert re.search(r'Best: \S+ \(test accuracy ', result.stdout)  # No validation split.
  best_command = result.stdout.strip().splitlines()[-1]
  assert best_command.startswith(f'python main.py --config={sweep_file} ')
  assert f'--config.manual_dir={tmp_path}' in best_command
  assert '--config.learning_rate=' in best_command
  with open(tmp_path / 'sweep' / 'sweep_summary.csv') as f:
    assert len(list(csv.DictReader(f))) == 2


@pytest.mark.slow  # A process start.
def test_a_sweep_whose_every_member_diverged_names_no_best(tmp_path):
  _, result = _tiny_sweep(tmp_path, 'nan_sweep', 'learning_rate=[1e30]', optimizer='sgd')
  # It named the diverged member 'Best' and gave its command, with status 0.
  assert result.returncode == 3, result.stderr[-2000:]
  assert 'Best:' not in result.stdout
  assert result.stderr.strip().splitlines()[-1] == (
      "error: every member diverged (nan_policy='stop'); none is best")


def test_structure_key_separates_structure_from_carried_values():
  key = carried_values.structure_key
  base = tiny_config(weight_decay=1e-4)
  same = tiny_config(learning_rate=0.3, seed=7, momentum=0.5, weight_decay=1e-3,
                     **{'model.dropout_rates': (0.4,)})
  assert key(base) == key(same)
  assert key(base) != key(tiny_config(weight_decay=0.0))  # One transform fewer.
  assert key(base) != key(tiny_config(**{'model.hidden_sizes': (8,)}))
  assert key(base) != key(tiny_config(**{'model.dropout_rates': (0.0,)}))  # No dropout layer.


def _group(tmp_path, overrides, **base):
  configs = [sweeps.member_config(tiny_config(input_mode='device', **base), o)
             for o in overrides]
  dirs = [str(tmp_path / f'm{i}') for i in range(len(overrides))]
  return configs, dirs


@pytest.mark.slow  # Over five seconds here: the full suite runs it.
def test_a_member_trained_in_a_group_matches_it_trained_alone(tmp_path):
  overrides = [{'learning_rate': 1e-3, 'seed': 0},
               {'learning_rate': 1e-2, 'seed': 1, 'model.dropout_rates': (0.6,)}]
  configs, dirs = _group(tmp_path, overrides)
  together = grouping.train_group(configs, dirs)
  for i, config in enumerate(configs):
    state, alone = train.train_and_evaluate(config, str(tmp_path / f'alone{i}'))
    assert together[i]['eval_loss'] == pytest.approx(alone['eval_loss'], rel=1e-4)
    assert together[i]['eval_accuracy'] == pytest.approx(alone['eval_accuracy'], abs=0.021)
    # The member's own checkpoint holds (nearly) the parameters of the lone run.
    grouped, _, _ = restore_lib.restore(config, dirs[i])
    for a, b in zip(jax.tree.leaves(grouped.params), jax.tree.leaves(state.params)):
      np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)
    with open(os.path.join(dirs[i], 'summary.json')) as f:
      assert json.load(f) == together[i]


def _layout(workdir) -> set:
  """A workdir's files, with the names that hold a time or host made generic."""
  names = set()
  for name in digest(workdir):
    name = re.sub(r'^events\.out\.tfevents\..*', 'events.out.tfevents', name)
    name = re.sub(r'/d/[0-9a-f]+$', '/d/<chunk>', name)  # Orbax names data chunks by hash.
    names.add(re.sub(r'^profile/.*/[^/.]*(\.[^/]*)$', r'profile/...\1', name))
  return names


def _metric_keys(workdir) -> dict:
  """{split: (steps, metric names)} of metrics.jsonl."""
  keys = {}
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    for record in map(json.loads, f):
      steps, names = keys.setdefault(record['split'], ([], set()))
      steps.append(record['step'])
      names.update(record['metrics'])
  return keys


@pytest.mark.slow  # A group and a lone run.
def test_a_group_members_workdir_holds_what_a_lone_run_writes(tmp_path):
  overrides = [{'learning_rate': 1e-3, 'seed': 0}, {'learning_rate': 1e-2, 'seed': 1}]
  configs, dirs = _group(tmp_path, overrides, plots=True, profile_steps=(2, 3))
  grouping.train_group(configs, dirs)
  alone = tmp_path / 'alone'
  train.train_and_evaluate(configs[1], str(alone))
  expected = _layout(alone)
  assert any(n.startswith('profile/...') and n.endswith('.xplane.pb') for n in expected)
  assert {'plots/learning_curves.png', 'checkpoints/12/meta/metadata', 'model.json',
          'config.json', 'summary.json', 'metrics.jsonl'} <= expected
  for member in dirs:
    assert _layout(member) == expected
    assert _metric_keys(member) == _metric_keys(alone)
  assert set(_metric_keys(alone)) == {'train', 'eval', 'epoch'}
  for name in ('config.json', 'model.json'):
    with open(os.path.join(dirs[1], name)) as a, open(alone / name) as b:
      assert json.load(a) == json.load(b)


@pytest.mark.slow  # A sweep of runs.
def test_a_diverging_member_is_stopped_alone(tmp_path):
  overrides = [{'learning_rate': 0.05}, {'learning_rate': 1e30}]
  configs, dirs = _group(tmp_path, overrides, optimizer='sgd')
  together = grouping.train_group(configs, dirs)
  assert together[1] is None and not os.path.exists(os.path.join(dirs[1], 'summary.json'))
  alone = train.train_and_evaluate(configs[0], str(tmp_path / 'alone'))[1]
  assert together[0]['eval_loss'] == pytest.approx(alone['eval_loss'], rel=1e-4)
  rows = sweeps.run_sweep(tiny_config(input_mode='device', optimizer='sgd'),
                             overrides, str(tmp_path / 'sweep'), 'vmap')
  assert [r['status'] for r in rows] == ['finished', 'diverged']
  table = (tmp_path / 'sweep' / sweeps.SUMMARY_MD).read_text().splitlines()
  assert table[-1].startswith('| 2 | 01_learning_rate=1e+30 | learning_rate=1e+30 | diverged |')


@pytest.mark.slow  # Ten seconds here: a group trained, interrupted and resumed.
def test_an_interrupted_group_resumes_to_the_same_result(tmp_path, restored_steps):
  overrides = [{'learning_rate': 1e-3, 'seed': 0}, {'learning_rate': 1e-2, 'seed': 1}]
  base = tiny_config(input_mode='device')
  first = sweeps.run_sweep(base, overrides, str(tmp_path), 'vmap')
  # As if killed after epoch 1: the epoch-2 checkpoints and summaries are gone.
  for row in first:
    os.remove(os.path.join(row['workdir'], 'summary.json'))
    shutil.rmtree(os.path.join(row['workdir'], 'checkpoints', '12'))
  restored_steps.clear()
  again = sweeps.run_sweep(base, overrides, str(tmp_path), 'vmap')
  assert restored_steps == [6, 6]  # Both members resumed after epoch 1.
  assert {r['name']: r['eval_loss'] for r in again} == pytest.approx(
      {r['name']: r['eval_loss'] for r in first}, rel=1e-6)


def test_auto_parallel_trains_one_by_one_on_cpu_and_in_groups_on_accelerators(tmp_path,
                                                                             monkeypatch):
  calls = []
  group, alone = grouping.train_group, sweeps._train_alone  # pylint: disable=protected-access
  monkeypatch.setattr(grouping, 'train_group',
                      lambda *a, **k: calls.append('group') or group(*a, **k))
  monkeypatch.setattr(sweeps, '_train_alone',
                      lambda *a, **k: calls.append('alone') or alone(*a, **k))
  overrides = [{'learning_rate': 1e-3}, {'learning_rate': 1e-2}]
  sweeps.run_sweep(tiny_config(input_mode='device'), overrides, str(tmp_path))
  assert calls == (['alone', 'alone'] if jax.default_backend() == 'cpu' else ['group'])


@pytest.mark.parametrize('path', sorted(glob.glob(os.path.join(ROOT, 'configs', 'sweeps',
                                                               '[!_]*.py'))))
def test_every_example_sweep_file_loads_and_validates(path):
  """Each shipped sweep file builds valid members (or a valid search) on its base."""
  module = sweeps.load_sweep_file(path)
  base = module.get_config()
  if hasattr(module, 'get_search'):
    spec = module.get_search()
    spec.check(base)  # Every bound and choice builds a valid config.
    assert spec.queue()
  else:
    members = sweeps.build_members(base, sweeps.load_sweep(path, module))
    assert len(members) >= 2
    assert len({name for name, _, _ in members}) == len(members)


def test_a_member_whose_changed_run_was_killed_is_not_taken_as_finished(tmp_path):
  """A summary older than the config.json a later run wrote is that earlier run's: trained on.

  (An early-stopped member continued with more patience writes its new
  config.json as it starts; killed then, its old summary must not count.)
  """
  from trainkit.workdirs import config_history  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  config = tiny_config(num_epochs=1)
  workdir = str(tmp_path / 'member')
  train.train_and_evaluate(config, workdir)
  assert config_history.finished_summary(workdir, config) is not None
  summary = os.path.join(workdir, 'summary.json')
  later = os.stat(summary).st_mtime_ns + 10**9
  os.utime(os.path.join(workdir, 'config.json'), ns=(later, later))
  assert config_history.finished_summary(workdir, config) is None


def test_a_member_whose_data_does_not_suit_it_is_refused_before_any_trains(tmp_path):
  overrides = [{'batch_size': 8}, {'batch_size': 100000}]
  with pytest.raises(errors.ConfigError, match=r"^member 01_batch_size=100000: batch_size=100000: "
                                               r"is larger than the training split"):
    sweeps.run_sweep(tiny_config(), overrides, str(tmp_path / 'sweep'))
  assert not glob.glob(str(tmp_path / 'sweep' / '00_*' / 'checkpoints'))


def test_the_best_members_command_keeps_every_spelling_of_the_overrides():
  from trainkit import cli  # pylint: disable=g-import-not-at-top
  # --noconfig.X was dropped (another model trained) and '--config.num_epochs 3' lost its 3.
  assert cli.config_overrides([
      'sweep.py', '--config=s.py', '--noconfig.model.use_batchnorm', '--config.num_epochs', '3',
      '--workdir=w', '--config.seed=2']) == (
          ['--config.model.use_batchnorm=False', '--config.num_epochs=3', '--config.seed=2'],
          ['sweep.py', '--config=s.py', '--workdir=w'])


def test_a_finished_member_trained_on_other_data_is_refused_before_any_trains(tmp_path):
  table = tmp_path / 't.csv'
  rows = np.random.default_rng(0).normal(size=(60, 2))
  write = lambda values: table.write_text('a,y\n' + ''.join(
      f'{a:.6f},{int(b > 0)}\n' for a, b in values))
  write(rows)
  base = tiny_config(dataset=str(table), target_column='y', task='binary',
                     normalization='per_feature', test_split='train', num_epochs=1)
  sweeps.run_sweep(base, [{'seed': 0}], str(tmp_path / 'sweep'))
  before = digest(tmp_path / 'sweep')
  write(rows[::-1])  # The same rows in another order: another file.
  # Its finished results would be ranked beside members trained on the new file.
  with pytest.raises(sources.DataError, match=r"is not the data --workdir='.*00_seed=0' was "
                                             'trained on'):
    sweeps.run_sweep(base, [{'seed': 0}, {'seed': 1}], str(tmp_path / 'sweep'))
  assert digest(tmp_path / 'sweep') == before


@pytest.mark.slow  # Process starts.
@pytest.mark.parametrize('declared, why', [
    ('def get_sweep():\n  return sweeps.product(learning_rate=[1e-3, 1e-2])\n',
     'the sweep sets it'),
    ("def get_search():\n  return space.Search(space={'learning_rate': space.Float(1e-4, 1e-2)})\n",
     'the search draws it')])
def test_a_command_line_override_of_a_swept_field_is_refused(tmp_path, declared, why):
  sweep_file = tmp_path / 'lr_sweep.py'
  sweep_file.write_text('from trainkit.search import space, sweeps\n'
                        'from trainkit.configs.default import get_config\n' + declared)
  result = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'sweep.py'), f'--config={sweep_file}',
       f'--workdir={tmp_path / "sweep"}', '--config.learning_rate=0.5'],
      cwd=ROOT, capture_output=True, text=True, timeout=120)
  # Every member set its own rate over it: the flag was ignored, unsaid.
  assert result.returncode == 2, result.stderr[-2000:]
  assert result.stderr.strip().splitlines()[-1] == (
      'error: --config.learning_rate=0.5: learning_rate is what the members differ in '
      f'({why} for each); change it in the sweep file')
  assert not (tmp_path / 'sweep').exists()
