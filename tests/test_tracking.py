"""MLflow tracking (trainkit/tracking/mlflow_run.py), read back through MLflow's own client.

Against MLflow's own tracking server on 127.0.0.1 and against the default
store (a SQLite file in the workdir, no server): a run SIGKILLed and resumed
is one MLflow run with one value per logged step, its params are config.json,
and a search's trials are nested under the search's run with their states.
"""

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from mlflow.tracking import MlflowClient
import pytest

from tests import test_search
from tests.helpers import ENV, ROOT, error_lines, main_command, mdn_config, run_main
from tests.helpers import sigkill_after_first_checkpoint
from trainkit import cli
from trainkit.search import optuna_search as search
from trainkit.tracking import mlflow_run as tracking
import train


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


@pytest.fixture(scope='module')
def mlflow_server(tmp_path_factory):
  """MLflow's tracking server (its own command) on 127.0.0.1; its URI."""
  directory = tmp_path_factory.mktemp('mlflow_server')
  port = _free_port()
  mlflow = os.path.join(os.path.dirname(sys.executable), 'mlflow')
  with open(directory / 'server.log', 'w') as log:
    server = subprocess.Popen(
        [mlflow, 'server', '--backend-store-uri', f'sqlite:///{directory}/server.db',
         '--artifacts-destination', str(directory / 'artifacts'), '--host', '127.0.0.1',
         '--port', str(port), '--workers', '1'],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**ENV, 'MLFLOW_DISABLE_TELEMETRY': 'true'})
  uri = f'http://127.0.0.1:{port}'
  try:
    deadline = time.time() + 90
    while True:
      try:
        with urllib.request.urlopen(f'{uri}/health', timeout=2):
          break
      except OSError:
        assert server.poll() is None and time.time() < deadline, (
            (directory / 'server.log').read_text()[-3000:])
        time.sleep(0.3)
    yield uri
  finally:  # The server and every process it started.
    os.killpg(server.pid, signal.SIGTERM)
    try:
      server.wait(timeout=20)
    except subprocess.TimeoutExpired:
      os.killpg(server.pid, signal.SIGKILL)
      server.wait(timeout=20)


def _flat(tree: dict, prefix: str = '') -> dict:
  """config.json's fields dotted, each value as text (strings bare, the rest JSON)."""
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(_flat(value, f'{prefix}{key}.'))
    else:
      flat[prefix + key] = value if isinstance(value, str) else json.dumps(value)
  return flat


def _jsonl_history(workdir) -> dict:
  """{metric: {step: value}} of the workdir's metrics.jsonl."""
  history = {}
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    for line in f:
      record = json.loads(line)
      for key, value in record['metrics'].items():
        steps = history.setdefault(f'{record["split"]}_{key}', {})
        assert record['step'] not in steps, (key, record['step'])
        steps[record['step']] = value
  return history


_FIELDS = {'synthetic_examples': (512, 256, 256), 'num_epochs': 40, 'log_every_steps': 2,
           'checkpoint_every_steps': 4, 'steps_per_call': 1, 'cache_dir': '',
           'progress': 'off', 'plots': False, 'trackers': 'mlflow'}


@pytest.mark.slow
@pytest.mark.parametrize('store', ['server', 'local'])
def test_a_killed_run_and_a_search_read_back_through_mlflow(request, tmp_path, store):
  uri = request.getfixturevalue('mlflow_server') if store == 'server' else ''
  workdir = tmp_path / 'run'
  command = main_command('--config=configs/mixture_density.py', f'--workdir={workdir}',
                         *(f'--config.{k}={v}' for k, v in _FIELDS.items()),
                         f'--config.mlflow_uri={uri}')
  # Killed once its MLflow run exists (the resume appends to it) and a checkpoint is saved.
  saved = sigkill_after_first_checkpoint(command, workdir, tmp_path / 'kill.log',
                                         also=(workdir / 'mlflow.json').exists)
  assert saved and saved[-1] < 8 * _FIELDS['num_epochs'], (
      (tmp_path / 'kill.log').read_text()[-2000:])
  resumed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=ENV,
                           timeout=300)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert 'MLflow: appending to run' in resumed.stderr
  store = uri or f'sqlite:///{workdir}/mlflow.db'  # Where the closing lines point.
  assert (f'  MLflow         mlflow ui --backend-store-uri {store}' if not uri
          else f'  MLflow         {uri}') in resumed.stderr
  assert 'MLflow tracking at' not in resumed.stderr  # No failure warned of.
  record = json.loads((workdir / 'mlflow.json').read_text())
  assert record['uri'] == (uri or f'sqlite:///{workdir}/mlflow.db')
  client = MlflowClient(record['uri'])
  run = client.get_run(record['run_id'])
  # One MLflow run for the workdir, the resume's included, and it ended well.
  assert [r.info.run_id for r in client.search_runs(
      [run.info.experiment_id], f"tags.workdir = '{workdir}'")] == [record['run_id']]
  assert run.info.status == 'FINISHED'
  config = json.loads((workdir / 'config.json').read_text())
  assert run.data.params == _flat(config)
  assert run.data.tags['task'] == 'mixture_density'
  assert run.data.tags['dataset'] == 'synthetic:inverse_sine'
  assert run.data.tags['host'] == socket.gethostname()
  assert run.data.tags['stop_reason'] == 'completed'
  # Every metric the workdir logged: one value per step, the same values.
  logged = _jsonl_history(workdir)
  assert {'train_loss', 'eval_nll', 'epoch_wall_s'} <= set(logged)
  for key, steps in logged.items():
    history = client.get_metric_history(record['run_id'], key)
    got = [m.step for m in history]
    assert len(got) == len(set(got)), (key, sorted(got))
    assert sorted(got) == sorted(steps), key
    if not key.startswith(('epoch_', 'train_steps_per_s')):  # Timings differ in a resume.
      assert {m.step: m.value for m in history} == pytest.approx(steps, rel=1e-12), key
  summary = json.loads((workdir / 'summary.json').read_text())
  assert run.data.metrics['test_nll'] == pytest.approx(summary['test_nll'], rel=1e-12)
  assert run.data.metrics['best_eval_nll'] == pytest.approx(summary['best_eval_nll'])
  artifacts = {a.path for a in client.list_artifacts(record['run_id'])}
  assert {'summary.json', 'config.json', 'model_summary.txt'} <= artifacts
  # A 3-trial search: a run of its own, each trial's nested under it with its state.
  directory = tmp_path / 'search'
  base = mdn_config(**{**_FIELDS, 'checkpoint_every_steps': 0, 'steps_per_call': 50,
                       'mlflow_uri': uri, 'num_epochs': 3})
  # The learning rate alone: the mixture density network has no dropout to draw.
  rates = {'learning_rate': test_search._spec().space['learning_rate']}  # pylint: disable=protected-access
  spec = test_search._spec(metric='nll', num_trials=3, sampler='random', space=rates,  # pylint: disable=protected-access
                           pruner='successive_halving')
  study, storage = search.prepare(spec, base, str(directory), None, None, 'sweep.py')
  assert search.run_worker(study, storage, spec, base, str(directory)) == 3
  parent = json.loads((directory / 'mlflow.json').read_text())
  assert parent['kind'] == 'search'
  assert parent['uri'] == (uri or f'sqlite:///{directory}/mlflow.db')  # The trials' store too.
  client = MlflowClient(parent['uri'])
  assert client.get_run(parent['run_id']).info.status == 'FINISHED'
  nested = client.search_runs([parent['experiment_id']],
                              f"tags.mlflow.parentRunId = '{parent['run_id']}'")
  assert sorted(int(r.data.tags['trial_number']) for r in nested) == [0, 1, 2]
  for trial_run in nested:
    trial = study.trials[int(trial_run.data.tags['trial_number'])]
    assert trial_run.data.tags['trial_state'] == trial.state.name
    assert trial_run.info.status == 'FINISHED'
    assert float(trial_run.data.params['learning_rate']) == trial.params['learning_rate']


@pytest.mark.slow  # Waits out MLflow retries.
def test_a_server_that_does_not_answer_costs_one_warning_and_not_the_run(tmp_path, capfd):
  """A server that takes connections and never answers: the run trains, one warning line."""
  with socket.socket() as silent:
    silent.bind(('127.0.0.1', 0))
    silent.listen(16)
    uri = f'http://127.0.0.1:{silent.getsockname()[1]}'
    config = mdn_config(num_epochs=1, plots=False, trackers='mlflow', mlflow_uri=uri)
    start = time.perf_counter()
    _, summary = train.train_and_evaluate(config, str(tmp_path / 'run'))
    took = time.perf_counter() - start
  # From the tracking process, on the stderr it shares with the trainer.
  warned = [line for line in capfd.readouterr().err.splitlines() if 'MLflow' in line]
  assert warned == [f'warning: MLflow tracking at {uri} failed ({warned[0].split(" (", 1)[1]}'
                    ] and 'the run goes on without it' in warned[0], warned
  assert summary['stop_reason'] == 'completed'
  assert not (tmp_path / 'run' / 'mlflow.json').exists()
  # The requests give up within seconds (timeout and one retry), in the
  # tracking thread: the run's end waited for that, not for END_WAIT_S.
  assert took < tracking.END_WAIT_S, took


@pytest.mark.parametrize('field, value, message', [
    ('trackers', 'wandb', "trackers='wandb': 'wandb' is not a tracker"),
    ('mlflow_uri', 'ftp://host/runs', "mlflow_uri='ftp://host/runs': has the scheme 'ftp'"),
    ('mlflow_uri', 'file:///tmp/mlruns', 'is a file store, which MLflow 3 no longer opens'),
    ('mlflow_uri', '127.0.0.1:5000', "without its scheme; write 'http://127.0.0.1:5000'"),
    ('mlflow_uri', 'localhost:5000/x', "without its scheme; write 'http://localhost:5000/x'"),
    ('mlflow_uri', '{tmp}', r"is a folder \(an MLflow 2 file store\?\).*'.*mlflow.db'"),
    ('mlflow_experiment', ' ', 'must name an experiment'),
])
def test_bad_tracking_fields_are_refused_before_any_work(tmp_path, field, value, message,
                                                        monkeypatch):
  monkeypatch.chdir(tmp_path)
  value = value.format(tmp=tmp_path) if isinstance(value, str) else value
  with pytest.raises(cli.INPUT_ERRORS, match=message):
    train.train_and_evaluate(mdn_config(**{field: value}), str(tmp_path / 'run'))
  assert sorted(os.listdir(tmp_path)) == []  # No run, and no store in the current folder.


def test_cli_refuses_a_bad_tracker_and_an_unknown_export_format_in_one_line(tmp_path):
  workdir = tmp_path / 'run'
  for flag, field in (('--config.trackers=mlflow,wandb', 'trackers'),
                      ('--format=tflite', 'format')):
    done = run_main('--config=configs/mixture_density.py', f'--workdir={workdir}', flag,
                    *(['--mode=export'] if field == 'format' else []))
    assert done.returncode == cli.EXIT_BAD_INPUT, done.stderr[-2000:]
    lines = error_lines(done.stderr)
    assert len(lines) == 1 and field in lines[0], done.stderr[-2000:]
    assert 'Traceback' not in done.stderr
    assert not workdir.exists()


@pytest.mark.slow  # MLflow, a sweep of runs.
def test_a_sweeps_members_are_nested_under_its_run(tmp_path):
  """Two members trained as one vmapped group: two runs of their own, under the sweep's."""
  from trainkit.search import sweeps  # pylint: disable=g-import-not-at-top
  base = mdn_config(num_epochs=1, plots=False, trackers='mlflow')
  members = [{'learning_rate': 0.01}, {'learning_rate': 0.02}]
  ranked = sweeps.run_sweep(base, members, str(tmp_path / 'sweep'), parallel='vmap')
  parent = json.loads((tmp_path / 'sweep' / 'mlflow.json').read_text())
  assert parent['kind'] == 'sweep'
  client = MlflowClient(parent['uri'])
  assert parent['uri'] == f'sqlite:///{tmp_path}/sweep/mlflow.db'
  run = client.get_run(parent['run_id'])
  assert run.info.status == 'FINISHED' and run.data.tags['best_member'] == ranked[0]['name']
  assert 'sweep_summary.md' in {a.path for a in client.list_artifacts(parent['run_id'])}
  nested = client.search_runs([parent['experiment_id']],
                              f"tags.mlflow.parentRunId = '{parent['run_id']}'")
  by_name = {r.info.run_name: r for r in nested}
  assert sorted(by_name) == sorted(row['name'] for row in ranked)
  for row in ranked:
    member = by_name[row['name']]
    assert member.info.status == 'FINISHED'
    assert float(member.data.params['learning_rate']) == row['overrides']['learning_rate']
    summary = json.loads((tmp_path / 'sweep' / row['name'] / 'summary.json').read_text())
    assert member.data.metrics['test_nll'] == pytest.approx(summary['test_nll'], rel=1e-12)


@pytest.mark.slow  # MLflow, two runs.
def test_a_resume_with_changes_leaves_no_discarded_metrics_in_mlflow(tmp_path):
  """Killed past its last checkpoint, resumed with another learning rate: MLflow = metrics.jsonl."""
  import shutil  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / 'run'
  config = mdn_config(num_epochs=2, plots=False, trackers='mlflow', checkpoint_every_steps=4,
                      keep_checkpoints=10)
  train.train_and_evaluate(config, str(workdir))
  first = json.loads((workdir / 'mlflow.json').read_text())['run_id']
  # As a kill after step 16's metrics were sent, before its checkpoint.
  steps = sorted(int(s) for s in os.listdir(workdir / 'checkpoints') if s.isdigit())
  for step in steps[2:]:
    shutil.rmtree(workdir / 'checkpoints' / str(step))
  config.learning_rate = config.learning_rate * 3
  train.train_and_evaluate(config, str(workdir), continue_with_changes=True)
  record = json.loads((workdir / 'mlflow.json').read_text())
  client = MlflowClient(record['uri'])
  expected = _jsonl_history(workdir)
  got = {key: {m.step: m.value for m in client.get_metric_history(record['run_id'], key)}
         for key in expected}
  counts = {key: len(client.get_metric_history(record['run_id'], key)) for key in expected}
  assert got == expected and counts == {k: len(v) for k, v in expected.items()}
  assert record['run_id'] != first
  old = client.get_run(first)
  assert old.info.status == 'KILLED'
  assert old.data.tags['trainkit.superseded_at_step'] == str(steps[1]), steps


def test_a_store_that_fails_costs_one_line_and_is_not_shown_as_the_runs(tmp_path, capfd,
                                                                         caplog):
  (tmp_path / 'store.db').write_text('not a database')
  config = mdn_config(num_epochs=1, plots=False, trackers='mlflow',
                      mlflow_uri=str(tmp_path / 'store.db'), progress='log')
  start = time.perf_counter()
  with caplog.at_level(logging.INFO, logger='absl'):
    _, summary = train.train_and_evaluate(config, str(tmp_path / 'run'))
  took = time.perf_counter() - start
  err = capfd.readouterr()
  said = err.out + err.err + caplog.text
  assert 'TensorBoard    tensorboard --logdir' in said  # The closing lines.
  lines = [line for line in said.splitlines() if 'MLflow' in line]
  assert len(lines) == 1 and lines[0].startswith('warning: MLflow tracking at ') and (
      'file is not a database' in lines[0]), lines
  assert summary['stop_reason'] == 'completed' and took < 30
  assert not (tmp_path / 'run' / 'mlflow.json').exists()
