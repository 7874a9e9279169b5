"""Searches with Optuna: a study whose trials are member workdirs, shared by workers.

Every trial trains in `DIR/trial_NNNN/` exactly as `main.py` would there
(resumable, `--mode=eval` works on it, locked while it runs), and reports
its validation metric after every epoch to the study's pruner, which may stop
it there (`stop_reason` 'pruned ...' in its summary.json; its checkpoints
stay).

Any number of workers run the same command against one sweep directory and
storage. The study's trials are all queued when it is created (Optuna's
`enqueue_trial`; the values of a TPE, random or QMC trial are drawn when a
worker takes it), and a worker takes one by moving it from WAITING to RUNNING,
which the storage does for one worker only: no trial runs twice, and the
study has exactly its number of trials however many workers join. While a
trial runs, its worker records a heartbeat; a trial not heard of for
`grace_s` (its worker was killed) is failed by the next worker that looks and
queued again by Optuna's `RetryHeartbeatStaleTrialCallback`, with its values and
reported epochs, and the worker that takes it resumes its workdir's
checkpoint. A worker stays until no trial is waiting or running.
"""

import json
import os
import shutil
import socket
import time

from absl import logging
import optuna
from optuna.storages import journal
from optuna.trial import TrialState
import sqlalchemy

from trainkit import errors
from trainkit.checkpoints import warm_start
from trainkit.runtime import preemption
from trainkit.search import optuna_internals
from trainkit.search import samplers
from trainkit.search import space as search_space
from trainkit.search import sweeps
from trainkit.tasks import selection
from trainkit.tracking import mlflow_run as tracking
from trainkit.training import divergence
from trainkit.training import train
from trainkit.workdirs import config_history
from trainkit.workdirs import layout as workdir_lib

JOURNAL = 'optuna_journal.log'  # The default storage, in the sweep directory.
_BEAT = 'heartbeat'  # The system attribute of a journal trial's last heartbeat (epoch s).


class _HeartbeatJournal(journal.JournalStorage, optuna_internals.BaseHeartbeat):
  """Optuna's journal-file storage with the heartbeat its RDB storage has.

  The beat is a trial system attribute (a timestamp); Optuna's own
  `fail_stale_trials` and retry callback then work on it as on an RDB.
  """

  def __init__(self, path: str, interval: int, grace: int, callback):
    super().__init__(journal.JournalFileBackend(path))
    self._interval, self._grace, self._callback = interval, grace, callback

  def record_heartbeat(self, trial_id: int) -> None:
    self.set_trial_system_attr(trial_id, _BEAT, time.time())

  def _get_stale_trial_ids(self, study_id: int) -> list:
    now = time.time()
    return [optuna_internals.trial_id(t) for t in self.get_all_trials(study_id, deepcopy=False,
                                                      states=(TrialState.RUNNING,))
            if now - t.system_attrs.get(_BEAT, t.datetime_start.timestamp()) > self._grace]

  def get_heartbeat_interval(self) -> int:
    return self._interval

  def get_heartbeat_stale_trial_callback(self):
    return self._callback


# Seconds a storage server has to answer a connection: one that accepts it
# and stays silent is refused, not waited for.
CONNECT_TIMEOUT_S = 10
# The driver this install has for each database's bare URL scheme.
_DRIVERS = {'postgresql': 'postgresql+psycopg2', 'postgres': 'postgresql+psycopg2'}


def storage_url(url: str) -> sqlalchemy.engine.URL:
  """`url` as SQLAlchemy opens it: a bare postgresql:// URL uses psycopg2, installed here.

  (SQLAlchemy 2.1 takes psycopg 3 for a bare scheme.) A URL that does not
  parse is a ConfigError naming it.
  """
  try:
    parsed = sqlalchemy.engine.make_url(url)
  except sqlalchemy.exc.ArgumentError as e:
    raise errors.ConfigError(f'--storage={url!r}: not a database URL ({e})') from None
  return parsed.set(drivername=_DRIVERS.get(parsed.drivername, parsed.drivername))


def _engine_kwargs(url: sqlalchemy.engine.URL) -> dict:
  kwargs = {'pool_pre_ping': True}
  if url.get_backend_name() in ('postgresql', 'mysql'):
    kwargs['connect_args'] = {'connect_timeout': CONNECT_TIMEOUT_S}
  return kwargs


def repair_journal(path: str) -> None:
  """Drops a last record cut short (a killed worker, a full disk) from a journal file.

  Optuna skips such a record when it reads, but the next record appended
  would run on from it and make the journal unreadable for good. Under
  Optuna's own lock, no worker is mid-write: a partial line is a dead one's.
  """
  if not os.path.isfile(path) or not os.path.getsize(path) or workdir_lib.ends_a_line(path):
    return
  lock = journal.JournalFileSymlinkLock(path)
  lock.acquire()
  try:
    with open(path, 'rb+') as f:
      data = f.read()
      if not data.endswith(b'\n'):
        f.truncate(data.rfind(b'\n') + 1)
        logging.warning('%s: dropped a last record cut short (%d bytes).', path,
                        len(data) - data.rfind(b'\n') - 1)
  finally:
    lock.release()


def open_storage(url: str | None, directory: str, search: search_space.Search):
  """The study's storage: the journal file in `directory`, or the RDB at `url`.

  A database that cannot be reached, or that does not answer within
  CONNECT_TIMEOUT_S, or whose driver is not installed, is a ConfigError.
  """
  with samplers.experimental():
    retry = optuna.storages.RetryHeartbeatStaleTrialCallback(
        max_retry=search.max_retry, inherit_intermediate_values=True)
  if not url:
    path = os.path.join(directory, JOURNAL)
    try:
      # Optuna replays the whole journal here (skipping a last record cut short).
      storage = _HeartbeatJournal(path, search.heartbeat_s, search.grace_s, retry)
      repair_journal(path)
      return storage
    except (OSError, ValueError) as e:
      raise errors.ConfigError(
          f'{path} cannot be read as a study journal ({type(e).__name__}: '
          f'{str(e).splitlines()[0] if str(e) else ""}); move it away to start the '
          'search anew (its trials\' workdirs are kept)') from None
  parsed = storage_url(url)
  try:
    with samplers.experimental():  # The heartbeat arguments are marked experimental.
      return optuna.storages.RDBStorage(
          parsed.render_as_string(hide_password=False), heartbeat_interval=search.heartbeat_s,
          grace_period=search.grace_s, heartbeat_stale_trial_callback=retry,
          engine_kwargs=_engine_kwargs(parsed))
  except Exception as e:  # SQLAlchemy's many errors: a bad URL, no server, no driver.
    message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if isinstance(e, (ImportError, sqlalchemy.exc.NoSuchModuleError)) or (
        'Failed to import DB access module' in message):
      message = (f'no driver for {parsed.drivername!r} is installed; this install opens '
                 'postgresql://USER@HOST/DB (psycopg2) and sqlite:///PATH')
    raise errors.ConfigError(f'--storage={url!r}: cannot open it: {message}') from e


def open_study(storage, name: str, search: search_space.Search, base) -> optuna.Study:
  """Creates the study with its queue of trials, or joins it if it exists.

  A study made by another search (other space, budget or base config) is
  refused with the differences. Creating is atomic in the storage: of
  workers starting together one creates and queues, the others wait for it.
  """
  # As the storage gives it back (JSON), to compare with what it holds.
  record = json.loads(json.dumps({'search': search.describe(),
                                  'base_config': base.to_dict()}))
  kwargs = dict(study_name=name, storage=storage, sampler=samplers.sampler(search),
                pruner=samplers.pruner(search, base.num_epochs))
  if name in optuna.study.get_all_study_names(storage):
    study = optuna.load_study(**kwargs)
  else:
    try:
      study = optuna.create_study(
          direction=selection.direction(search.metric), **kwargs)
    except optuna.exceptions.DuplicatedStudyError:
      study = optuna.load_study(**kwargs)
    else:
      for key, value in record.items():
        study.set_user_attr(key, value)
      queue = search.queue()
      for params in queue:
        study.enqueue_trial(params)
      study.set_user_attr('queued', len(queue))
      return study
  for _ in range(600):  # The creator may still be queueing.
    attrs = study.user_attrs
    if 'queued' in attrs:
      break
    time.sleep(0.5)
  else:
    raise errors.ConfigError(
        f'study {name!r} exists but its trials were never queued (its creator died); '
        'give another --workdir')
  # The search exactly; the base config as a resume compares it.
  theirs, ours = attrs.get('search') or {}, record['search']
  changed = [f'search.{k} {theirs.get(k)!r} -> {ours.get(k)!r}'
             for k in sorted(theirs.keys() | ours.keys())
             if theirs.get(k) != ours.get(k) and k not in search_space.PER_WORKER]
  # Every trial sets the searched fields: their base values are no part of the search.
  searched = lambda k: any(k == f or k.startswith(f + '.') for f in search.space)
  changed += [f'{k} {json.dumps(old)} -> {json.dumps(new)}' for k, (old, new) in
              config_history.training_differences(attrs.get('base_config') or {}, base).items()
              if not searched(k)]
  if changed:
    raise errors.ConfigError(
        f'study {name!r} was created by another search: {"; ".join(changed[:5])}; '
        'give the same sweep file and overrides, or another --workdir')
  return study


def _take(study: optuna.Study, storage, search: search_space.Search) -> optuna.Trial | None:
  """Moves a queued trial to RUNNING for this worker alone, or None if none waits.

  Not `Study.ask`, which creates a trial when none waits: the queue is the
  study's budget. The trial draws its values with a sampler of its own seed.
  """
  for frozen in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
    try:
      if storage.set_trial_state_values(optuna_internals.trial_id(frozen),
                                        state=TrialState.RUNNING):
        if search.sampler in samplers.PER_TRIAL_SEEDS:  # Before the trial draws.
          study.sampler = samplers.sampler(search, frozen.number)
        return optuna.Trial(study, optuna_internals.trial_id(frozen))
    except optuna.exceptions.UpdateFinishedTrialError:
      continue
  return None


def trial_name(frozen) -> str:
  """A trial's workdir name, shared by its retries: trial_<first attempt's number>."""
  with samplers.experimental():
    number = optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(frozen)
  return f'trial_{frozen.number if number is None else number:04d}'


def _run_trial(study, storage, trial, search, base, directory, datasets, parent=None):
  """Trains one trial in its workdir and tells the study how it ended."""
  frozen = storage.get_trial(optuna_internals.trial_id(trial))
  name = trial_name(frozen)
  params = {key: dim.suggest(trial, key) for key, dim in search.space.items()}
  config = search_space.trial_config(base, params, search.metric)
  workdir = os.path.join(directory, name)
  trial.set_user_attr('workdir', name)
  trial.set_user_attr('worker', f'{socket.gethostname()}:{os.getpid()}')
  logging.info('Trial %d (%s): %s', trial.number, name, params)

  # A retry inherits the epochs its first attempt reported; its resume may
  # evaluate some of them again, already reported and judged.
  reported = dict(frozen.intermediate_values)

  def report(epoch: int, metrics: dict) -> str | None:
    if epoch in reported:
      return None
    reported[epoch] = float(metrics[search.metric])
    trial.report(reported[epoch], epoch)
    # A trial that trained its whole budget is complete, whatever its rank.
    if epoch < config.num_epochs and trial.should_prune():
      return f'pruned by the search after epoch {epoch} ({search.pruner})'
    return None

  try:
    with optuna_internals.heartbeat_thread(optuna_internals.trial_id(trial), storage):
      _, summary = train.train_and_evaluate(
          config, workdir, sweeps.shared_data(config, datasets), epoch_hook=report)
  except divergence.Diverged as e:
    logging.warning('Trial %d diverged: %s', trial.number, e)
    trial.set_user_attr('status', 'diverged')
    study.tell(trial, state=TrialState.FAIL)
    _tag_trial(parent, workdir, storage, trial)
    return
  except preemption.Interrupted:
    # Checkpointed; queued again at once for the next worker to resume.
    trial.set_user_attr('status', 'interrupted')
    study.tell(trial, state=TrialState.FAIL)
    _queue_again(study, storage.get_trial(optuna_internals.trial_id(trial)))
    raise
  except BaseException:  # An error of its own: recorded, then raised.
    trial.set_user_attr('status', 'failed')
    study.tell(trial, state=TrialState.FAIL)
    raise
  if summary['stop_reason'].startswith('pruned'):
    study.tell(trial, state=TrialState.PRUNED)
  else:  # Its objective: its best checkpoint's (the best epoch of those saved).
    study.tell(trial, sweeps.objective(summary, search.metric))
  _tag_trial(parent, workdir, storage, trial)


def _queue_again(study, frozen) -> None:
  """Queues an interrupted trial to resume its checkpoint, as its own next attempt.

  As Optuna's retry of a dead worker's trial, but not counted against
  `max_retry`: a preemptible machine may stop a long trial any number of times.
  """
  study.add_trial(optuna.create_trial(
      state=TrialState.WAITING, params=frozen.params, distributions=frozen.distributions,
      user_attrs=frozen.user_attrs,
      system_attrs={'failed_trial': frozen.number, **frozen.system_attrs},
      intermediate_values=frozen.intermediate_values))


def _tag_trial(parent, workdir: str, storage, trial) -> None:
  """The trial's number and Optuna state on its MLflow run, by the search's (if tracked)."""
  if parent:
    frozen = storage.get_trial(optuna_internals.trial_id(trial))
    parent.tag_member(workdir, {'trial_number': trial.number,
                                'trial_state': frozen.state.name})


def run_worker(study: optuna.Study, storage, search, base, directory: str,
               poll_s: float = 2.0) -> int:
  """Runs queued trials until none waits or runs; returns how many this worker ran.

  With MLflow tracking, the search is a run (every worker's the same, kept in
  the folder) and each trial's run is nested under it (trainkit/tracking/mlflow_run.py).
  """
  parent = tracking.open_parent(base, directory, 'search', {
      'study': study.study_name, 'metric': search.metric,
      'direction': study.direction.name.lower()})
  try:
    ran = _work_on_trials(study, storage, search, base, directory, poll_s, parent)
  except BaseException as e:
    if parent:
      parent.end('KILLED' if isinstance(e, preemption.Interrupted) else 'FAILED')
    raise
  if parent:
    parent.end()
  return ran


def _work_on_trials(study, storage, search, base, directory: str, poll_s: float,
                    parent) -> int:
  """run_worker's loop."""
  datasets, ran = {}, 0
  while True:
    with samplers.experimental():
      optuna.storages.fail_stale_trials(study)
    trial = _take(study, storage, search)
    if trial is not None:
      _run_trial(study, storage, trial, search, base, directory, datasets, parent)
      ran += 1
      continue
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if not running:
      return ran
    # Another worker's trial: it ends, or its worker died and it is queued again.
    time.sleep(min(poll_s, search.heartbeat_s))


RECORD = 'search.json'  # What the sweep directory's search is, and where its trials are.


def _check_one_study(directory: str, name: str) -> None:
  """A folder holds one study's trials: trial_NNNN of another study would land in them."""
  try:
    with open(os.path.join(directory, RECORD)) as f:
      record = json.load(f)
  except (OSError, ValueError):  # None yet, or cut short: the study's storage decides.
    record = {}
  if isinstance(record, dict) and record.get('study', name) != name:
    raise errors.ConfigError(
        f'--workdir={directory!r} holds the trials of study {record["study"]!r}; give '
        f'--study={record["study"]} to join it, or another --workdir for study {name!r}')


def prepare(spec: search_space.Search, base, directory: str, url: str | None,
            study_name: str | None, sweep_path: str):
  """Checks everything, then opens the storage and the study; (study, storage).

  A bad search, config or storage is refused before the directory is touched.
  """
  spec.check(base)
  workdir_lib.check_workdir(directory)
  if os.path.isdir(directory):
    workdir_lib.check_kinds(directory, folders=(), files=(
        JOURNAL, RECORD, sweeps.SUMMARY_CSV, sweeps.SUMMARY_MD))
  # The warm start's source, unless the search's first trial has started from it.
  warm_start.check(base, os.path.join(directory, 'trial_0000'))
  name = study_name or os.path.basename(os.path.abspath(directory))
  _check_one_study(directory, name)
  # An RDB is opened (or refused) before the directory is made; the journal
  # file lives in it.
  storage = open_storage(url, directory, spec) if url else None
  created = not os.path.isdir(directory)
  os.makedirs(directory, exist_ok=True)
  try:
    storage = storage or open_storage(None, directory, spec)
    study = open_study(storage, name, spec, base)
  except errors.ConfigError:
    if created:  # Refused: as if never run (an RDB's study is not ours to touch).
      shutil.rmtree(directory)
    raise
  shown = url and storage_url(url).render_as_string(hide_password=True)
  workdir_lib.write_json(os.path.join(directory, RECORD), {
      'study': name, 'storage': shown or os.path.join(directory, JOURNAL),
      'sweep_file': sweep_path, **study.user_attrs})
  return study, storage
