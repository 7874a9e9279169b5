"""Experiment tracking beside TensorBoard: one MLflow run per workdir (trackers='mlflow').

A run's MLflow run holds the resolved config as params (nested fields dotted,
values as config.json writes them), every metric the workdir's logs get, with
its step, the summary's figures at the end with `stop_reason` as a tag, and
the plots, summary.json, config.json and the model table as artifacts; tags
name the task, dataset, host and workdir.

- **Where.** `mlflow_uri=''` is a SQLite store in the workdir (`mlflow.db`,
  artifacts beside it), or the sweep's or search's store for its members; a
  path is a SQLite file there, shared by every run that names it; any other
  URI is MLflow's (http(s)://, sqlite:///, postgresql://, ...).
- **Resume.** The run's id is kept in `WORKDIR/mlflow.json`: a resumed run
  appends to the same MLflow run, and steps it has already are not sent again
  (the resume recomputes them bit for bit).
- **Sweeps and searches** are a parent run in their folder's `mlflow.json`;
  each member or trial is nested under it (`mlflow.parentRunId`), a trial
  tagged with its Optuna state (COMPLETE, PRUNED, FAIL).
- **Never the training's cost.** Everything, the import of MLflow included,
  happens in a thread of the run's own, which sends what the loop logged in
  batches. A store that fails or does not answer costs one warning line and
  is not tried again for that run; the end of a run waits for the thread a
  bounded time.
"""

import json
import os
import queue
import socket
import threading
import time
import urllib.parse

from absl import logging

from trainkit import workdir as workdir_lib

TRACKERS = ('mlflow',)
RECORD = 'mlflow.json'  # In a workdir (its run) or a sweep's folder (the parent run).
STORE = 'mlflow.db'  # The default store, a SQLite file.
ARTIFACTS = 'mlartifacts'  # A SQLite store's artifacts, beside it.
SCHEMES = ('http', 'https', 'sqlite', 'postgresql', 'mysql', 'mssql', 'databricks')
# A server that does not answer: each request gives up after this many
# seconds and one retry (MLflow's defaults wait minutes).
REQUEST_TIMEOUT_S, REQUEST_RETRIES = 3, 1
END_WAIT_S = 30.0  # The most a run's end waits for its sends to finish.
MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param's value.
BATCH = 1000  # MLflow's limit on the entries of one log_batch.


def names(config) -> list:
  """The trackers `config` turns on ('mlflow', or none)."""
  return [name.strip() for name in str(config.trackers).split(',') if name.strip()]


def uri_problem(uri: str) -> str | None:
  """Why `uri` cannot be an MLflow tracking URI, or None."""
  if not isinstance(uri, str):
    return 'must be a string'
  scheme = urllib.parse.urlparse(uri).scheme
  if not uri or not scheme or (len(scheme) == 1 and os.name == 'nt'):
    return None  # '' (the workdir's store) or a path (a SQLite file there).
  base = scheme.split('+')[0]  # postgresql+psycopg2 and the like.
  if base == 'file':
    return ("is a file store, which MLflow 3 no longer opens; give a SQLite file's "
            "path (e.g. /runs/mlflow.db) or a server's http:// URI")
  if base not in SCHEMES:
    return (f"has the scheme {scheme!r}; give a path (a SQLite file), or a URI of "
            f"{', '.join(SCHEMES)}")
  return None


def _store_uri(config, directory: str, parent: dict | None) -> str:
  """The tracking URI of a run (or a sweep) in `directory`."""
  uri = config.mlflow_uri
  if not uri:
    return parent['uri'] if parent else 'sqlite:///' + os.path.join(
        os.path.abspath(directory), STORE)
  if not urllib.parse.urlparse(uri).scheme:
    return 'sqlite:///' + os.path.abspath(os.path.expanduser(uri))
  return uri


def _read(path: str) -> dict | None:
  try:
    with open(path) as f:
      record = json.load(f)
  except (OSError, ValueError):
    return None
  return record if isinstance(record, dict) else None


def _parent(workdir: str) -> dict | None:
  """The sweep's or search's run that `workdir` is a member of, or None."""
  record = _read(os.path.join(os.path.dirname(os.path.abspath(workdir)), RECORD))
  return record if record and record.get('kind') in ('sweep', 'search') else None


def params(config) -> dict:
  """The config as MLflow params: {'model.hidden_sizes': '[512, 512]', ...}.

  Values as config.json has them (strings bare, the rest JSON).
  """
  flat = {}

  def walk(prefix, tree):
    for key, value in tree.items():
      if isinstance(value, dict):
        walk(f'{prefix}{key}.', value)
      else:
        text = value if isinstance(value, str) else json.dumps(value)
        flat[prefix + key] = text[:MAX_PARAM_LENGTH]
  walk('', config.to_dict())
  return flat


def _one_line(error: BaseException) -> str:
  text = str(error).strip().splitlines()
  return f'{type(error).__name__}: {text[0][:200]}' if text else type(error).__name__


def _client(uri: str):
  """MLflow's client for `uri`, with requests that give up within seconds."""
  os.environ.setdefault('MLFLOW_HTTP_REQUEST_TIMEOUT', str(REQUEST_TIMEOUT_S))
  os.environ.setdefault('MLFLOW_HTTP_REQUEST_MAX_RETRIES', str(REQUEST_RETRIES))
  os.environ.setdefault('MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR', '1')
  # Its "View run at" lines, printed from this thread, would cut into the
  # progress bar; the log names the run.
  os.environ.setdefault('MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT', 'true')
  import logging as std_logging  # pylint: disable=g-import-not-at-top
  from mlflow.tracking import MlflowClient  # pylint: disable=g-import-not-at-top
  # A new SQLite store narrates its schema's creation at INFO (MLflow sets
  # its logger's level when imported), and urllib3 each retry at WARNING:
  # a failure is the one warning line of _fail.
  for name, level in (('mlflow', std_logging.WARNING), ('alembic', std_logging.WARNING),
                      ('urllib3.connectionpool', std_logging.ERROR)):
    std_logging.getLogger(name).setLevel(level)
  return MlflowClient(uri)


class MlflowRun:
  """One workdir's (or sweep's) MLflow run, written from a thread of its own.

  The calls queue what to send and return at once; `end` sends what is
  queued, ends the run and waits for the thread (at most END_WAIT_S).
  """

  def __init__(self, config, directory: str, kind: str = 'run', tags: dict | None = None,
               wait: bool = False, resume_step: int = 0):
    """Opens (or reopens) the MLflow run of `directory`.

    `kind`: 'run' (a workdir), 'sweep' or 'search' (a parent of runs).
    `tags`: more tags for the run. `wait`: open it before returning (a
    parent, whose id its members need), else in the thread. `resume_step`:
    the workdir's metrics.jsonl up to this step (what the checkpoint
    covers) is sent first, for what the MLflow run lacks of it: a run killed
    before its tracking sent them, or tracked from a resume on.
    """
    self._resume_step = resume_step
    self._directory = os.path.abspath(directory)
    self._kind = kind
    self._parent = _parent(directory) if kind == 'run' else None
    self._uri = _store_uri(config, directory, self._parent)
    self._params = params(config)
    self._experiment = config.mlflow_experiment
    self._tags = {'task': config.task, 'dataset': config.dataset,
                  'host': socket.gethostname(), 'workdir': self._directory,
                  'kind': kind, **(tags or {})}
    self._queue = queue.Queue()
    self._failed = False
    self.run_id = None
    self._last_steps = {}  # Per metric: the last step the run has.
    self._opened = threading.Event()
    self._thread = threading.Thread(target=self._work, name=f'mlflow-{kind}', daemon=True)
    self._thread.start()
    if wait:
      self._opened.wait(END_WAIT_S)

  @property
  def uri(self) -> str:
    return self._uri

  def log_metrics(self, step: int, metrics: dict) -> None:
    """Queues {name: value} at `step`."""
    stamp = int(time.time() * 1000)
    self._queue.put(('metrics', [(k, float(v), stamp, int(step)) for k, v in metrics.items()]))

  def set_tags(self, tags: dict) -> None:
    self._queue.put(('tags', {k: str(v) for k, v in tags.items()}))

  def log_artifacts(self, paths: list) -> None:
    """Queues files (and folders, as folders) of the run's directory to upload."""
    self._queue.put(('artifacts', [p for p in paths if os.path.exists(p)]))

  def end(self, status: str = 'FINISHED') -> None:
    """Sends what is queued, ends the run with `status` and waits for the thread."""
    self._queue.put(('end', status))
    self._thread.join(END_WAIT_S)
    if self._thread.is_alive():
      logging.warning('MLflow at %s: sending took over %d s; what is left is not sent.',
                      self._uri, END_WAIT_S)

  # In the thread.

  def _work(self) -> None:
    try:
      client = _client(self._uri)
      self._open(client)
    except Exception as e:  # pylint: disable=broad-except
      self._fail(e)
    finally:
      self._opened.set()
    while True:
      items = [self._queue.get()]
      while not self._queue.empty():
        items.append(self._queue.get_nowait())
      if not self._failed:
        try:
          self._send(client, items)
        except Exception as e:  # pylint: disable=broad-except
          self._fail(e)
      if items[-1][0] == 'end':
        return

  def _fail(self, error: BaseException) -> None:
    self._failed = True
    logging.warning('MLflow tracking at %s failed (%s); the %s goes on without it.',
                    self._uri, _one_line(error), self._kind)

  def _experiment_id(self, client) -> str:
    found = client.get_experiment_by_name(self._experiment)
    if found:
      return found.experiment_id
    location = None
    if self._uri.startswith('sqlite:///'):  # Beside the store, not the current folder.
      location = os.path.join(os.path.dirname(self._uri[len('sqlite:///'):]), ARTIFACTS)
    try:
      return client.create_experiment(self._experiment, artifact_location=location)
    except Exception:  # pylint: disable=broad-except
      found = client.get_experiment_by_name(self._experiment)  # Another run made it.
      if not found:
        raise
      return found.experiment_id

  def _open(self, client) -> None:
    """Reopens the run `directory` records in this store, or creates it."""
    path = os.path.join(self._directory, RECORD)
    record = _read(path)
    if record and record.get('uri') == self._uri:
      from mlflow.exceptions import MlflowException  # pylint: disable=g-import-not-at-top
      try:
        run = client.get_run(record['run_id'])
      except MlflowException:
        run = None  # Deleted from the store: a new one.
      if run is not None:
        self.run_id = run.info.run_id
        for key in run.data.metrics:
          history = client.get_metric_history(self.run_id, key)
          self._last_steps[key] = max(m.step for m in history)
        client.update_run(self.run_id, status='RUNNING')
        logging.info('MLflow: appending to run %s at %s.', self.run_id, self._uri)
        self._send_history(client)
        return
    tags = dict(self._tags)
    if self._parent and self._parent.get('uri') == self._uri:
      tags['mlflow.parentRunId'] = self._parent['run_id']
    run = client.create_run(self._experiment_id(client), tags=tags,
                            run_name=os.path.basename(self._directory))
    self.run_id = run.info.run_id
    self._log_batch(client, params=list(self._params.items()))
    workdir_lib.write_json(path, {'uri': self._uri, 'run_id': self.run_id,
                                  'experiment_id': run.info.experiment_id,
                                  'kind': self._kind})
    logging.info('MLflow: run %s at %s.', self.run_id, self._uri)
    self._send_history(client)

  def _send_history(self, client) -> None:
    """What metrics.jsonl holds up to the resume step and the MLflow run lacks."""
    if self._kind != 'run' or not self._resume_step:
      return
    items = [('metrics', [(f'{r["split"]}_{k}', float(v), int(r.get('time', 0) * 1000),
                           r['step']) for k, v in r['metrics'].items()])
             for r in workdir_lib.read_records(os.path.join(self._directory,
                                                            workdir_lib.METRICS))
             if isinstance(r.get('step'), int) and r['step'] <= self._resume_step
             and isinstance(r.get('metrics'), dict)]
    self._send(client, items)

  def _log_batch(self, client, metrics=(), params=(), tags=()) -> None:
    from mlflow.entities import Metric, Param, RunTag  # pylint: disable=g-import-not-at-top
    metrics = [Metric(*m) for m in metrics]
    params = [Param(k, v) for k, v in params]
    tags = [RunTag(k, v) for k, v in tags]
    for start in range(0, len(metrics), BATCH):
      client.log_batch(self.run_id, metrics=metrics[start:start + BATCH])
    for start in range(0, len(params), 100):  # MLflow's limit for params and tags.
      client.log_batch(self.run_id, params=params[start:start + 100])
    for start in range(0, len(tags), 100):
      client.log_batch(self.run_id, tags=tags[start:start + 100])

  def _send(self, client, items: list) -> None:
    metrics, tags = [], {}
    for kind, payload in items:
      if kind == 'metrics':
        for key, value, stamp, step in payload:
          if step > self._last_steps.get(key, -1):  # Once per step, a resume's too.
            self._last_steps[key] = step
            metrics.append((key, value, stamp, step))
      elif kind == 'tags':
        tags.update(payload)
    if metrics or tags:
      self._log_batch(client, metrics=metrics, tags=list(tags.items()))
    for kind, payload in items:
      if kind == 'artifacts':
        for path in payload:
          if os.path.isdir(path):
            client.log_artifacts(self.run_id, path, os.path.basename(path))
          else:
            client.log_artifact(self.run_id, path)
      elif kind == 'end':
        client.set_terminated(self.run_id, payload)


def open_run(config, workdir: str, resume_step: int = 0, config_changes: dict | None = None):
  """The workdir's MlflowRun if `config` tracks to MLflow, else None.

  `resume_step`: the step its checkpoint restored (0: a fresh run).
  """
  if 'mlflow' not in names(config):
    return None
  run = MlflowRun(config, workdir, resume_step=resume_step)
  if config_changes:  # Params cannot change; the resume's changes are a tag.
    run.set_tags({'config_changes': json.dumps(config_changes)})
  return run


def open_parent(config, directory: str, kind: str, tags: dict | None = None):
  """A sweep's or search's parent run (opened before returning), or None."""
  if 'mlflow' not in names(config):
    return None
  return MlflowRun(config, directory, kind, tags, wait=True)


def tag_run(config, workdir: str, tags: dict) -> None:
  """Sets `tags` on the MLflow run `workdir` records, once it ended; no-op without one."""
  record = _read(os.path.join(workdir, RECORD))
  if 'mlflow' not in names(config) or not record:
    return
  try:
    client = _client(record['uri'])
    for key, value in tags.items():
      client.set_tag(record['run_id'], key, str(value))
  except Exception as e:  # pylint: disable=broad-except
    logging.warning('MLflow tracking at %s failed (%s); tags %s not set.', record['uri'],
                    _one_line(e), sorted(tags))
