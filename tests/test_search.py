"""Searches: spaces, pruning, the study's storage, workers that share it, the launcher."""

import csv
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from wsgiref.util import setup_testing_defaults

import optuna
from optuna.trial import TrialState
import pytest

from tests import conftest
from tests.helpers import (ENV, ROOT, checkpoint_steps, error_lines, session_cache_dir,
                           tiny_config, write_mnist)
from trainkit import errors
from trainkit.runtime import preemption
from trainkit.search import launch
from trainkit.search import optuna_internals
from trainkit.search import optuna_search as search
from trainkit.search import results as search_results
from trainkit.search import samplers
from trainkit.search import space as ss
from trainkit.search import sweeps
from trainkit.serving import restore as restore_lib


def _config(**overrides):
  return tiny_config(**{'train_split': 'train[:40]', 'validation_split': 'train[40:]',
                        **overrides})


def _spec(**fields):
  return ss.Search(**{
      'space': {'learning_rate': ss.Float(1e-3, 1e-1, log=True),
                'model.dropout_rates': ss.Float(0.0, 0.5, step=0.1)},
      'num_trials': 6, 'sampler': 'random', 'pruner': 'successive_halving',
      'heartbeat_s': 1, 'grace_s': 3, **fields})


def _search(directory, spec, config, url=None):
  study, storage = search.prepare(spec, config, str(directory), url, None, 'sweep.py')
  return study, storage, search.run_worker(study, storage, spec, config, str(directory))


def test_space_values_grids_and_tuple_fields():
  assert ss.Float(1e-4, 1e-2, log=True).grid_values() == pytest.approx([1e-4, 1e-3, 1e-2])
  assert ss.Float(0.0, 0.5).grid_values() == [0.0, 0.25, 0.5]
  assert ss.Int(1, 9, grid=3).grid_values() == [1, 5, 9]
  # A grid's points are values a trial can draw: on the step (they were not).
  assert ss.Int(16, 64, step=16, grid=4).grid_values() == [16, 32, 48, 64]
  assert ss.Float(0.0, 0.5, step=0.05, grid=4).grid_values() == [0.0, 0.15, 0.35, 0.5]
  assert ss.Float(0.0, 0.5, step=0.05, grid=3).grid_values() == [0.0, 0.25, 0.5]
  spec = ss.Search(space={'learning_rate': ss.Float(1e-3, 1e-2, log=True, grid=2),
                          'optimizer': ss.Categorical(('adam', 'sgd'))}, sampler='grid')
  assert spec.queue() == [{'learning_rate': pytest.approx(1e-3), 'optimizer': 'adam'},
                          {'learning_rate': pytest.approx(1e-3), 'optimizer': 'sgd'},
                          {'learning_rate': pytest.approx(1e-2), 'optimizer': 'adam'},
                          {'learning_rate': pytest.approx(1e-2), 'optimizer': 'sgd'}]
  assert ss.Search(space=spec.space, num_trials=4).queue() == [{}] * 4
  # One rate drawn for every hidden layer of a tuple field.
  config = ss.trial_config(_config(**{'model.hidden_sizes': (8, 8),
                                      'model.dropout_rates': (0.1, 0.2)}),
                           {'model.dropout_rates': 0.3}, 'loss')
  assert config.model.dropout_rates == (0.3, 0.3) and config.best_metric == 'loss'


@pytest.mark.parametrize('spec, message', [
    (_spec(space={'model.dropot_rates': ss.Float(0.0, 0.5)}),
     "unknown config field 'model.dropot_rates' (did you mean 'dropout_rates'?)"),
    (_spec(space={'learning_rate': ss.Float(0.1, 0.01)}),
     'search learning_rate: low=0.1 must be < high=0.01'),
    (_spec(space={'learning_rate': ss.Float(0.0, 0.1, log=True)}),
     'search learning_rate: log=True needs low > 0'),
    (_spec(space={'learning_rate': ss.Float(-1.0, 0.1)}), 'learning_rate=-1.0: must be > 0'),
    (_spec(sampler='tpee'), "search sampler='tpee' is not one of: tpe, random, qmc, grid "
                            "(did you mean 'tpe'?)"),
    (_spec(pruner='hyper'), "search pruner='hyper' is not one of"),
    (_spec(min_epochs=5), "search min_epochs: 5 exceeds the trials' num_epochs=2"),
    (_spec(grace_s=1), 'search grace_s: 1 must exceed heartbeat_s=1'),
    (_spec(space={'learning_rate': ss.Float(1e-4, 1e-2, log=True, step=1e-4)}),
     'search learning_rate: step=0.0001 cannot be used with log=True'),
    (_spec(space={'model.hidden_sizes': ss.Int(8, 64, step=0)}),
     'search model.hidden_sizes: step=0 must be > 0'),
    (_spec(space={'model.hidden_sizes': ss.Int(8, 64, grid=0)}),
     'search model.hidden_sizes: grid=0 must be >= 1'),
    # A drawn 100.3 was refused mid-search, not before it.
    (_spec(space={'batch_size': ss.Float(8, 16)}),
     'search batch_size: a Float for a field of whole numbers (8); search it with Int'),
    # A tuple of whole numbers too, by a value between the bounds (dropout
    # rates written (0, 0) take one).
    (_spec(space={'model.hidden_sizes': ss.Float(8, 16)}),
     'model.hidden_sizes=(12.120000000000001,): must be positive integers'),
])
def test_a_bad_search_is_refused_before_the_directory_is_touched(tmp_path, spec, message):
  with pytest.raises(errors.ConfigError) as e:
    search.prepare(spec, _config(), str(tmp_path / 'search'), None, None, 'sweep.py')
  assert message in str(e.value)
  assert not (tmp_path / 'search').exists()


def test_a_number_for_an_empty_tuple_field_is_refused(tmp_path):
  """Drawn for every layer of a field of none, the number would set nothing, silently."""
  for dim in (ss.Float(0.0, 0.5), ss.Categorical((0.1, 0.3))):
    with pytest.raises(errors.ConfigError, match="search model.dropout_rates: the base config's "
                                                 r'model.dropout_rates is \(\) \(no layer'):
      search.prepare(_spec(space={'model.dropout_rates': dim}),
                     _config(**{'model.dropout_rates': ()}), str(tmp_path / 's'), None, None,
                     'sweep.py')
  assert not (tmp_path / 's').exists()


def test_a_search_needs_a_validation_split(tmp_path):
  with pytest.raises(errors.ConfigError, match="validation_split='' but a search"):
    search.prepare(_spec(), tiny_config(), str(tmp_path / 's'), None, None, 'sweep.py')
  assert not (tmp_path / 's').exists()


@pytest.mark.slow  # A pruned search.
def test_trials_are_member_workdirs_and_pruned_ones_stop_early_and_keep_checkpoints(tmp_path):
  # 50 validation examples: accuracies that differ enough for the pruner to rank.
  config = _config(num_epochs=4, train_split='train[:150]', validation_split='train[150:]')
  spec, directory = _spec(), tmp_path / 'search'
  with conftest.mock_data(200):
    study, _, ran = _search(directory, spec, config)
  assert ran == 6
  trials = study.get_trials()
  assert [t.number for t in trials] == list(range(6))
  states = [t.state for t in trials]
  assert set(states) <= {TrialState.COMPLETE, TrialState.PRUNED}
  assert TrialState.PRUNED in states and TrialState.COMPLETE in states
  for trial in trials:
    workdir = directory / trial.user_attrs['workdir']
    summary = json.loads((workdir / 'summary.json').read_text())
    reported = sorted(trial.intermediate_values)
    assert reported == list(range(1, len(reported) + 1))  # One report per epoch.
    if trial.state == TrialState.PRUNED:
      # Stopped at once: no epoch after the one it was pruned on.
      assert summary['stop_reason'] == (
          f'pruned by the search after epoch {reported[-1]} (successive_halving)')
      assert summary['epoch'] == reported[-1] < config.num_epochs
    else:
      assert summary['epoch'] == config.num_epochs and summary['stop_reason'] == 'completed'
      assert trial.value == max(trial.intermediate_values.values())
    assert checkpoint_steps(workdir)  # Kept, pruned or not.
    trial_config = ss.trial_config(config, trial.params, spec.metric)
    with conftest.mock_data(200):
      result = restore_lib.evaluate_checkpoint(trial_config, str(workdir))
    assert result['eval_accuracy'] == summary['test_accuracy']  # Of the latest checkpoint.

  metrics = sweeps.summary_metrics(config)
  ranked = search_results.rows(study, str(directory), metrics)
  assert [r['state'] for r in ranked] == sorted(
      [r['state'] for r in ranked], key=lambda s: s != 'complete')
  complete = [r['value'] for r in ranked if r['state'] == 'complete']
  assert complete == sorted(complete, reverse=True)
  search_results.write(study, str(directory), ranked, metrics)
  with open(directory / 'sweep_summary.csv') as f:
    rows = list(csv.DictReader(f))
  assert {r['trial'] for r in rows} == {f'trial_{i:04d}' for i in range(6)}
  assert (directory / 'sweep_summary.md').read_text().count('| pruned |') == states.count(
      TrialState.PRUNED)
  assert set(search_results.plot(study, str(directory))) == set(search_results.PLOTS)
  command = search_results.best_command(study, config, 'sweep.py', str(directory), [])
  assert command.startswith(f'python main.py --config=sweep.py --workdir={directory}/best ')
  assert f'--config.learning_rate={study.best_params["learning_rate"]}' in command

  # Run again: every trial is done, nothing trains.
  again, storage = search.prepare(spec, config, str(directory), None, None, 'sweep.py')
  assert search.run_worker(again, storage, spec, config, str(directory)) == 0
  assert len(again.get_trials()) == 6

  # The storage opens in optuna-dashboard as it is.
  import optuna_dashboard  # pylint: disable=g-import-not-at-top
  app = optuna_dashboard.wsgi(str(directory / search.JOURNAL))
  environ = {'PATH_INFO': '/api/studies/0'}
  setup_testing_defaults(environ)
  body = json.loads(b''.join(app(environ, lambda *a: None)))
  assert sorted(t['state'] for t in body['trials']) == sorted(
      'Complete' if s == TrialState.COMPLETE else 'Pruned' for s in states)


@pytest.mark.usefixtures('mock_mnist')
def test_a_grid_search_runs_every_point_once(tmp_path):
  spec = _spec(space={'learning_rate': ss.Float(1e-3, 1e-2, log=True, grid=2),
                      'model.dropout_rates': ss.Categorical((0.0, 0.2))},
               sampler='grid', pruner='none')
  study, _, ran = _search(tmp_path / 'grid', spec, _config(num_epochs=1))
  assert ran == 4
  assert sorted((round(t.params['learning_rate'], 6), t.params['model.dropout_rates'])
                for t in study.get_trials()) == [(0.001, 0.0), (0.001, 0.2), (0.01, 0.0),
                                                 (0.01, 0.2)]
  assert all(t.state == TrialState.COMPLETE for t in study.get_trials())


@pytest.mark.usefixtures('mock_mnist')
def test_a_diverged_trial_is_failed_as_diverged_and_the_search_goes_on(tmp_path):
  spec = _spec(space={'learning_rate': ss.Categorical((1e-3, 1e30))}, sampler='grid',
               pruner='none')
  study, _, ran = _search(tmp_path / 's', spec, _config(num_epochs=1))
  assert ran == 2
  by_rate = {t.params['learning_rate']: t for t in study.get_trials()}
  assert by_rate[1e30].state == TrialState.FAIL
  assert by_rate[1e30].user_attrs['status'] == 'diverged'
  assert by_rate[1e-3].state == TrialState.COMPLETE
  ranked = search_results.rows(study, str(tmp_path / 's'), sweeps.summary_metrics(_config()))
  assert [r['state'] for r in ranked] == ['complete', 'diverged']


def test_joining_a_study_of_another_search_is_refused(tmp_path):
  directory = str(tmp_path / 's')
  search.prepare(_spec(), _config(), directory, None, None, 'sweep.py')
  with pytest.raises(errors.ConfigError) as e:
    search.prepare(_spec(num_trials=8), _config(), directory, None, None, 'sweep.py')
  assert "study 's' was created by another search: search.num_trials 6 -> 8" in str(e.value)
  with pytest.raises(errors.ConfigError, match='batch_size 8 -> 16'):
    search.prepare(_spec(), _config(batch_size=16), directory, None, None, 'sweep.py')
  # Configs compare as a resume compares them: where data and caches are, or
  # the progress display, may differ between workers.
  search.prepare(_spec(), _config(data_dir=str(tmp_path / 'elsewhere'), progress='off',
                                  cache_dir=str(tmp_path / 'c')),
                 directory, None, None, 'sweep.py')
  # Each worker's own settings are not another search.
  search.prepare(_spec(max_retry=9, heartbeat_s=2, grace_s=10), _config(), directory, None,
                 None, 'sweep.py')
  # Another study's trials would land in this one's trial folders.
  with pytest.raises(errors.ConfigError, match=r"^--workdir='.*/s' holds the trials of study "
                                               r"'s'; give --study=s to join it, or another "
                                               r"--workdir for study 'v2'$"):
    search.prepare(_spec(num_trials=8), _config(), directory, None, 'v2', 'sweep.py')
  # In a shared RDB (SQLite here), a new sweep directory refused is not left behind.
  url = f'sqlite:///{tmp_path / "studies.db"}'
  search.prepare(_spec(), _config(), str(tmp_path / 'a'), url, 'shared', 'sweep.py')
  with pytest.raises(errors.ConfigError, match="study 'shared' was created by another"):
    search.prepare(_spec(seed=1), _config(), str(tmp_path / 'b'), url, 'shared', 'sweep.py')
  assert not (tmp_path / 'b').exists()


@pytest.mark.parametrize('url, message', [
    ('postgresql+psycopg2://nobody@127.0.0.1:9/none', 'Connection refused'),
    # A bare scheme opens with the driver installed here (not psycopg 3).
    ('postgresql://nobody@127.0.0.1:9/none', 'psycopg2.OperationalError'),
    ('mysql://nobody@127.0.0.1:9/none', "no driver for 'mysql' is installed"),
    ('not a url', 'not a database URL'),
])
def test_a_storage_that_cannot_be_opened_is_refused_in_one_line(tmp_path, url, message):
  with pytest.raises(errors.ConfigError) as e:
    search.prepare(_spec(), _config(), str(tmp_path / 's'), url, None, 'sweep.py')
  assert str(e.value).startswith(f'--storage={url!r}: ') and message in str(e.value)
  assert '\n' not in str(e.value)
  assert not (tmp_path / 's').exists()


def test_a_storage_server_that_never_answers_is_refused_within_30_s(tmp_path, monkeypatch):
  monkeypatch.setattr(search, 'CONNECT_TIMEOUT_S', 2)  # 10 s by default; the same path.
  server = socket.socket()
  server.bind(('127.0.0.1', 0))
  server.listen(8)
  accepted = []  # Accepts every connection and says nothing.
  threading.Thread(target=lambda: accepted.extend(server.accept() for _ in range(8)),
                   daemon=True).start()
  url = f'postgresql://nobody@127.0.0.1:{server.getsockname()[1]}/none'
  start = time.time()
  try:
    with pytest.raises(errors.ConfigError, match='timeout expired') as e:
      search.prepare(_spec(), _config(), str(tmp_path / 's'), url, None, 'sweep.py')
  finally:
    server.close()
  assert time.time() - start < 30 and accepted
  assert '\n' not in str(e.value) and not (tmp_path / 's').exists()


def test_launcher_flags_are_stripped_and_slurm_options_parsed():
  argv = ['sweep.py', '--config=s.py', '--launcher=slurm', '--workers', '4',
          '--slurm=slurm_partition=gpu,timeout_min=90', '--workdir=/w']
  assert launch.worker_command(argv) == [sys.executable, os.path.abspath('sweep.py'),
                                         '--config=s.py', '--workdir=/w']
  # absl's one-dash spellings too: a worker keeping -launcher=local would launch more.
  assert launch.worker_command(['sweep.py', '-launcher=local', '-workers', '2', '-w']) == [
      sys.executable, os.path.abspath('sweep.py'), '-w']
  params = launch.parameters(['slurm_partition=gpu', 'timeout_min=90', 'mem_gb=7.5'])
  assert params['slurm_partition'] == 'gpu' and params['timeout_min'] == 90
  assert params['mem_gb'] == 7.5 and params['slurm_signal_delay_s'] == 120
  with pytest.raises(errors.ConfigError, match="--slurm='gpu': expected KEY=VALUE"):
    launch.parameters(['gpu'])


@pytest.mark.parametrize('launcher, workers, options, message', [
    ('local', 0, [], '^--workers=0: must be >= 1$'),
    ('local', 2, ['timeout_min=ninety'], '^--slurm: '),
    ('local', 2, ['no_such_option=1'], '^--slurm: '),
    ('slurm', 2, [], '^--launcher=slurm: '),  # No SLURM on this machine.
])
def test_bad_launcher_flags_are_refused_in_one_line(launcher, workers, options, message):
  if launcher == 'slurm' and shutil.which('srun'):
    pytest.skip('SLURM is here')
  with pytest.raises(errors.ConfigError, match=message) as e:
    launch.check(launcher, workers, options)
  assert '\n' not in str(e.value)


# Workers in processes of their own, on small IDX files.

_SWEEP_FILE = '''
from configs import default
from trainkit.search import space as ss
def get_config():
  config = default.get_config()
  config.model.hidden_sizes = (32,)
  config.model.dropout_rates = (0.1,)
  config.batch_size = 16
  config.eval_batch_size = 80
  config.num_epochs = {epochs}
  config.plots = False
  config.progress = 'off'
  config.cache_dir = {cache_dir!r}
  config.input_workers = 0
  config.train_split = 'train[:320]'
  config.validation_split = 'train[320:]'
  return config
def get_search():
  return ss.Search(space={{'learning_rate': ss.Float(1e-3, 1e-1, log=True)}},
                   num_trials={trials}, sampler='random', pruner='none',
                   heartbeat_s=1, grace_s=4)
'''


def _sweep_command(tmp_path, epochs, trials, *args):
  sweep_file = tmp_path / 'search_file.py'
  sweep_file.write_text(_SWEEP_FILE.format(epochs=epochs, trials=trials,
                                            cache_dir=session_cache_dir()))
  if not (tmp_path / 'train-images-idx3-ubyte.gz').exists():
    write_mnist(tmp_path, n_train=400, n_test=40)
  return [sys.executable, os.path.join(ROOT, 'sweep.py'), f'--config={sweep_file}',
          f'--workdir={tmp_path / "search"}', f'--config.manual_dir={tmp_path}',
          f'--config.data_dir={tmp_path / "tfds"}', *args]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _postgres_bin() -> str | None:
  found = shutil.which('pg_ctl')
  if found:
    return os.path.dirname(os.path.realpath(found))
  candidates = sorted(glob.glob('/usr/lib/postgresql/*/bin/pg_ctl'))
  return os.path.dirname(candidates[-1]) if candidates else None


@pytest.fixture(scope='module')
def postgres_url():
  """A PostgreSQL server of this test module's own, on a free local port."""
  bindir = _postgres_bin()
  if not bindir:
    reason = 'no PostgreSQL server here (pg_ctl); the Debian package postgresql has one'
    if os.environ.get('CI') == 'true':
      pytest.fail(f'CI=true but {reason} (.ci/run installs it)')
    pytest.skip(reason)
  root = tempfile.mkdtemp(prefix='trainkit_pg_')
  os.chmod(root, 0o777)
  as_postgres = ['runuser', '-u', 'postgres', '--'] if os.geteuid() == 0 else []
  data, port = os.path.join(root, 'data'), _free_port()
  subprocess.run([*as_postgres, os.path.join(bindir, 'initdb'), '-D', data, '-U', 'postgres',
                  '--auth=trust'], check=True, capture_output=True)
  subprocess.run([*as_postgres, os.path.join(bindir, 'pg_ctl'), '-D', data, '-l',
                  os.path.join(root, 'log'), '-w', '-o',
                  f'-p {port} -k {root} -c listen_addresses=127.0.0.1', 'start'],
                 check=True, capture_output=True)
  try:
    yield f'postgresql://postgres@127.0.0.1:{port}/postgres'  # As users write it.
  finally:
    subprocess.run([*as_postgres, os.path.join(bindir, 'pg_ctl'), '-D', data, '-m',
                    'immediate', 'stop'], capture_output=True)
    shutil.rmtree(root, ignore_errors=True)


def _study(tmp_path, url):
  # The URL as the workers open it (a bare postgresql:// with psycopg2).
  storage = (search.storage_url(url).render_as_string(hide_password=False) if url else
             optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(
                 str(tmp_path / 'search' / search.JOURNAL))))
  return optuna.load_study(study_name='search', storage=storage)


def _kill_when_training(worker, tmp_path, url, timeout_s=180, signum=signal.SIGKILL):
  """Signals `worker` once a trial it runs has a checkpoint; that trial's name."""
  deadline = time.time() + timeout_s
  while time.time() < deadline:
    assert worker.poll() is None, 'the worker ended before it could be killed'
    try:
      trials = _study(tmp_path, url).get_trials(states=(TrialState.RUNNING,))
    except (KeyError, ValueError, OSError):  # Not created yet.
      trials = []
    for trial in trials:
      workdir = tmp_path / 'search' / str(trial.user_attrs.get('workdir'))
      # Early in the trial (two checkpoints at most): one near its end could be
      # told complete between this look and the signal (seen once, under load).
      if (trial.user_attrs.get('worker', '').endswith(f':{worker.pid}')
          and os.path.isdir(workdir / 'checkpoints')
          and 1 <= len(checkpoint_steps(workdir)) <= 2):
        worker.send_signal(signum)
        worker.wait(timeout=120)
        return workdir.name
    time.sleep(0.2)
  raise AssertionError('no trial of the worker reached a checkpoint in time')


@pytest.mark.slow
@pytest.mark.parametrize('storage', ['journal', 'postgresql'])
def test_two_workers_run_every_trial_once_and_a_killed_workers_trial_resumes(
    tmp_path, storage, request):
  url = request.getfixturevalue('postgres_url') if storage == 'postgresql' else None
  if url:  # A database of this test's own in the module's server.
    name = f'test_{os.getpid()}_{int(time.time() * 1000)}'
    subprocess.run(['psql', url.replace('+psycopg2', ''), '-c', f'CREATE DATABASE {name}'],
                   check=True, capture_output=True)
    url = url.rsplit('/', 1)[0] + f'/{name}'
  command = _sweep_command(tmp_path, 8, 6, *([f'--storage={url}'] if url else []))
  logs = [open(tmp_path / f'worker{i}.log', 'w') for i in range(2)]  # pylint: disable=consider-using-with
  workers = [subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=log,
                              stderr=subprocess.STDOUT) for log in logs]
  killed = _kill_when_training(workers[0], tmp_path, url)
  assert workers[1].wait(timeout=400) == 0, (tmp_path / 'worker1.log').read_text()[-3000:]
  for log in logs:
    log.close()

  trials = _study(tmp_path, url).get_trials()
  by_name = {}
  for trial in trials:
    by_name.setdefault(trial.user_attrs['workdir'], []).append(trial)
  assert sorted(by_name) == [f'trial_{i:04d}' for i in range(6)]
  for name, attempts in by_name.items():
    done = [t for t in attempts if t.state == TrialState.COMPLETE]
    assert len(done) == 1, (name, [t.state for t in attempts])  # Exactly once.
    assert json.loads((tmp_path / 'search' / name / 'summary.json').read_text())['epoch'] == 8
  # The killed worker's trial failed once (its heartbeat stopped), was queued
  # again with its values and reported epochs, and resumed from its checkpoint.
  first, retry = sorted(by_name[killed], key=lambda t: t.number)
  assert first.state == TrialState.FAIL and retry.params == first.params
  assert retry.user_attrs['worker'].endswith(f':{workers[1].pid}')
  assert set(first.intermediate_values.items()) <= set(retry.intermediate_values.items())
  log = (tmp_path / 'worker1.log').read_text()
  assert f'Restored checkpoint {tmp_path / "search" / killed / "checkpoints"}/' in log
  # Both workers took trials.
  assert {t.user_attrs['worker'].rsplit(':')[-1] for t in trials} == {
      str(w.pid) for w in workers}
  with open(tmp_path / 'search' / 'sweep_summary.csv') as f:
    rows = list(csv.DictReader(f))
  assert {r['state'] for r in rows} == {'complete'}
  assert [r['attempts'] for r in rows if r['trial'] == killed] == ['2']


@pytest.mark.slow
def test_a_sigterm_checkpoints_the_trial_and_the_same_command_resumes_it(tmp_path):
  command = _sweep_command(tmp_path, 8, 2)
  with open(tmp_path / 'first.log', 'w') as log:
    worker = subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=log, stderr=subprocess.STDOUT)
    stopped = _kill_when_training(worker, tmp_path, None, signum=signal.SIGTERM)
  assert worker.returncode == 143, (tmp_path / 'first.log').read_text()[-2000:]
  assert 'interrupted: stopped by SIGTERM' in (tmp_path / 'first.log').read_text()
  attempts = [t for t in _study(tmp_path, None).get_trials()
              if t.user_attrs.get('workdir') == stopped]
  # Queued again at once (no wait for a heartbeat to go stale).
  assert [(t.state, t.user_attrs.get('status')) for t in attempts] == [
      (TrialState.FAIL, 'interrupted'), (TrialState.WAITING, 'interrupted')]
  result = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert f'Restored checkpoint {tmp_path / "search" / stopped / "checkpoints"}/' in result.stderr
  trials = _study(tmp_path, None).get_trials()
  assert sorted(t.user_attrs['workdir'] for t in trials if t.state == TrialState.COMPLETE) == [
      'trial_0000', 'trial_0001']


@pytest.mark.slow
def test_the_command_refuses_a_bad_search_in_one_line_before_any_work(tmp_path):
  result = subprocess.run(
      _sweep_command(tmp_path, 2, 2, '--config.validation_split=',
                     '--storage=postgresql+psycopg2://nobody@127.0.0.1:9/none'),
      cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
  assert result.returncode == 2
  assert error_lines(result.stderr) == [
      "error: search: validation_split='' but a search ranks its trials on a validation "
      'split (ranked on the test split, its test figures would be overfitted); set one, '
      "e.g. --config.validation_split='train[55000:]'"]
  assert 'Traceback' not in result.stderr
  assert not (tmp_path / 'search').exists()


@pytest.mark.slow
def test_the_local_launcher_runs_workers_that_share_the_study(tmp_path):
  result = subprocess.run(
      _sweep_command(tmp_path, 6, 4, '--launcher=local', '--workers=2'),
      cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=400)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'Submitted 2 workers (local)' in result.stdout
  assert 'Search of 4 trials done in' in result.stdout and '(2 local workers)' in result.stdout
  trials = _study(tmp_path, None).get_trials()
  assert sorted(t.user_attrs['workdir'] for t in trials) == [f'trial_{i:04d}' for i in range(4)]
  assert all(t.state == TrialState.COMPLETE for t in trials)
  # Both workers took trials (a trial of 6 epochs outlasts a worker's start).
  assert len({t.user_attrs['worker'] for t in trials}) == 2
  # Each job's log is where submitit keeps it, and the command ran in each.
  outputs = glob.glob(str(tmp_path / 'search' / 'launch' / '*_log.out'))
  assert len(outputs) == 2
  assert 'Best: trial_' in result.stdout and 'python main.py --config=' in result.stdout


def test_the_optuna_internals_relied_on_are_there(tmp_path):
  """Fails when an Optuna upgrade changes the private names search/optuna_internals uses."""
  assert optuna_internals.BaseHeartbeat.__abstractmethods__ == (
      optuna_internals.HEARTBEAT_METHODS)
  storage = search.open_storage(None, str(tmp_path), _spec(heartbeat_s=1))
  assert isinstance(storage, optuna_internals.BaseHeartbeat)
  study = optuna.create_study(storage=storage)
  with pytest.warns(UserWarning, match='Heartbeat of storage is supposed to be used'):
    trial = study.ask()  # By hand here, as search._take does; Optuna warns of it.
  frozen = study.get_trials()[0]
  assert optuna_internals.trial_id(trial) == optuna_internals.trial_id(frozen)
  assert isinstance(optuna_internals.trial_id(frozen), int)
  # Optuna's own thread beats into the storage while the block runs.
  with optuna_internals.heartbeat_thread(optuna_internals.trial_id(trial), storage):
    time.sleep(0.2)
  beat = storage.get_trial(optuna_internals.trial_id(trial)).system_attrs['heartbeat']
  assert time.time() - 5 < beat <= time.time()


@pytest.mark.parametrize('sampler, pruner, metric', [
    ('tpe', 'hyperband', 'accuracy'), ('qmc', 'median', 'loss')])
def test_every_sampler_and_pruner_runs_and_a_search_on_loss_minimises(tmp_path, sampler,
                                                                      pruner, metric):
  config = _config(num_epochs=2, train_split='train[:150]', validation_split='train[150:]')
  spec = _spec(sampler=sampler, pruner=pruner, metric=metric, num_trials=3,
               startup_trials=2, min_epochs=1)
  with conftest.mock_data(200):
    study, _, ran = _search(tmp_path / 's', spec, config)
  assert ran == 3 and type(study.sampler).__name__ == {
      'tpe': 'TPESampler', 'qmc': 'QMCSampler'}[sampler]
  assert type(study.pruner).__name__ == {'hyperband': 'HyperbandPruner',
                                         'median': 'MedianPruner'}[pruner]
  assert study.direction.name == ('MAXIMIZE' if metric == 'accuracy' else 'MINIMIZE')
  learning_rates = [t.params['learning_rate'] for t in study.get_trials()]
  assert len(set(learning_rates)) == 3 and all(1e-3 <= r <= 1e-1 for r in learning_rates)
  best = min if metric == 'loss' else max
  for trial in study.get_trials(states=(TrialState.COMPLETE,)):
    # The objective: the trial's best epoch in the metric's direction, as its
    # workdir's own best checkpoint has it.
    workdir = tmp_path / 's' / trial.user_attrs['workdir']
    summary = json.loads((workdir / 'summary.json').read_text())
    assert trial.value == best(trial.intermediate_values.values())
    assert summary['best_metric'] == metric
    assert trial.value == pytest.approx(summary[f'best_eval_{metric}'])
  complete = study.get_trials(states=(TrialState.COMPLETE,))
  assert study.best_value == best(t.value for t in complete)


def test_a_trial_out_of_retries_is_failed_for_good(tmp_path):
  """max_retry=0: a trial whose worker died is not queued again; the others run."""
  config = _config(num_epochs=1)
  spec = _spec(num_trials=3, max_retry=0, heartbeat_s=1, grace_s=2)
  directory = str(tmp_path / 's')
  with conftest.mock_data():
    study, storage = search.prepare(spec, config, directory, None, None, 'sweep.py')
    dead = search._take(study, storage, spec)  # pylint: disable=protected-access
    storage.record_heartbeat(optuna_internals.trial_id(dead))  # Then its worker died.
    time.sleep(2.5)
    ran = search.run_worker(study, storage, spec, config, directory)
  assert ran == 2
  trials = study.get_trials()
  assert len(trials) == 3  # No retry was queued.
  assert trials[dead.number].state == TrialState.FAIL
  rows = {r['trial']: r for r in search_results.rows(study, directory,
                                                     sweeps.summary_metrics(_config()))}
  assert rows[search.trial_name(trials[dead.number])]['state'] == 'failed'
  assert sorted(r['state'] for r in rows.values()) == ['complete', 'complete', 'failed']


def test_the_median_pruner_stops_no_trial_before_min_epochs():
  """Epochs are reported from 1: with min_epochs=3, a trial far behind is stopped after epoch 3."""
  import optuna  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  pruner = samplers.pruner(_spec(pruner='median', min_epochs=3, startup_trials=1), 4)
  study = optuna.create_study(direction='maximize', pruner=pruner)
  good = study.ask()
  for epoch in (1, 2, 3, 4):
    good.report(0.9, epoch)
  study.tell(good, 0.9)
  bad = study.ask()
  pruned_at = None
  for epoch in (1, 2, 3, 4):
    bad.report(0.1, epoch)
    if bad.should_prune():
      pruned_at = epoch
      break
  assert pruned_at == 3


@pytest.mark.parametrize('sampler', ['tpe', 'random'])
def test_workers_starting_together_draw_other_values_and_a_lone_one_the_same(tmp_path, sampler):
  """Each trial draws with its own seed: two workers' first trials differ; a rerun repeats them."""
  spec = _spec(sampler=sampler, num_trials=4, startup_trials=4)
  def first_draws(directory):
    study, storage = search.prepare(spec, _config(), str(directory), None, None, 'sweep.py')
    # Two workers, each with the study as it opens it: their own sampler.
    workers = [search.open_study(storage, study.study_name, spec, _config()) for _ in range(2)]
    return [{k: dim.suggest(search._take(w, storage, spec), k)  # pylint: disable=protected-access
             for k, dim in spec.space.items()} for w in workers]
  draws = first_draws(tmp_path / 'a')
  assert draws[0] != draws[1]
  assert first_draws(tmp_path / 'b') == draws


def test_a_qmc_search_keeps_one_sampler_per_worker(tmp_path):
  """QMC's points follow the study's counter: reseeded per trial, failed trials would repeat."""
  spec = _spec(sampler='qmc', num_trials=2)
  study, storage = search.prepare(spec, _config(), str(tmp_path / 's'), None, None, 'sweep.py')
  sampler = study.sampler
  assert search._take(study, storage, spec) is not None  # pylint: disable=protected-access
  assert study.sampler is sampler


def test_an_interrupted_trial_is_queued_again_without_using_a_retry(tmp_path, monkeypatch):
  """max_retry=0: a trial stopped by a signal twice is queued again each time."""
  config = _config(num_epochs=1)
  spec = _spec(num_trials=1, max_retry=0)
  directory = str(tmp_path / 's')

  def stopped(*args, **kwargs):
    raise preemption.Interrupted(signal.SIGTERM, 0, directory)

  monkeypatch.setattr(search.train, 'train_and_evaluate', stopped)
  with conftest.mock_data():
    study, storage = search.prepare(spec, config, directory, None, None, 'sweep.py')
    for _ in range(2):
      with pytest.raises(preemption.Interrupted):
        search.run_worker(study, storage, spec, config, directory)
  trials = study.get_trials()
  assert [t.state for t in trials] == [TrialState.FAIL, TrialState.FAIL, TrialState.WAITING]
  assert {search.trial_name(t) for t in trials} == {'trial_0000'}
  assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == 1
