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
- **Never the training's cost.** Everything MLflow does, its import
  included, happens in a process of the run's own (trainkit/tracking/mlflow_worker.py),
  started while the trainer starts up, which sends what the loop logged in
  batches.
  A store that fails or does not answer costs one warning line and is not
  tried again for that run; the end of a run waits for the process a
  bounded time.
"""

import json
import os
import queue
import re
import select
import socket
import subprocess
import sys
import threading
import time
import urllib.parse

from absl import logging

from trainkit import errors
from trainkit import extras
from trainkit.workdirs import layout as workdir_lib

TRACKERS = ('mlflow',)
RECORD = 'mlflow.json'  # In a workdir (its run) or a sweep's folder (the parent run).
STORE = 'mlflow.db'  # The default store, a SQLite file.
SCHEMES = ('http', 'https', 'sqlite', 'postgresql', 'mysql', 'mssql', 'databricks')
END_WAIT_S = 30.0  # The most a run's end waits for its sends to finish.
MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param's value.


def names(config) -> list:
  """The trackers `config` turns on ('mlflow', or none)."""
  return [name.strip() for name in str(config.trackers).split(',') if name.strip()]


def uri_problem(uri: str) -> str | None:
  """Why `uri` cannot be an MLflow tracking URI, or None."""
  if not isinstance(uri, str):
    return 'must be a string'
  if re.fullmatch(r'[A-Za-z0-9.-]+:\d+(/.*)?', uri):
    return f"looks like a server's address without its scheme; write 'http://{uri}'"
  scheme = urllib.parse.urlparse(uri).scheme
  if uri and not scheme and os.path.isdir(os.path.expanduser(uri)):
    return ('is a folder (an MLflow 2 file store?), which MLflow 3 no longer opens; give '
            f"a SQLite file's path (e.g. {os.path.join(uri, 'mlflow.db')!r}) or a server's "
            'http:// URI')
  if not uri or not scheme:
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


class MlflowRun:
  """One workdir's (or sweep's) MLflow run, sent by a process of its own.

  That process (trainkit/tracking/mlflow_worker.py) starts importing MLflow when this
  is made, opens the run on `open`, and sends what the calls here hand it;
  the calls queue and return at once (a thread of this process writes to its
  pipe). `end` waits for it at most END_WAIT_S.
  """

  def __init__(self, config, directory: str, kind: str = 'run', tags: dict | None = None):
    """Starts the process for `directory`'s run; nothing is written until `open`.

    `kind`: 'run' (a workdir), 'sweep' or 'search' (a parent of runs).
    `tags`: more tags for a new run.
    """
    self._config, self._kind = config, kind
    self._directory = os.path.abspath(directory)
    self._parent = _parent(self._directory) if kind == 'run' else None
    self.uri = _store_uri(config, self._directory, self._parent)
    self._tags = {'task': config.task, 'dataset': config.dataset,
                  'host': socket.gethostname(), 'workdir': self._directory, 'kind': kind,
                  **(tags or {})}
    if self._parent and self._parent.get('uri') == self.uri:
      self._tags['mlflow.parentRunId'] = self._parent['run_id']
    self._process = subprocess.Popen(
        [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                      'mlflow_worker.py'), self.uri],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    self._queue = queue.Queue()
    self._writer = threading.Thread(target=self._write, name='mlflow-pipe', daemon=True)
    self._writer.start()
    self._opened = self._ended = False
    self._said = None  # What the process said once the run opened (or failed to).

  def shown_uri(self) -> str | None:
    """The store to show in a run's closing lines: None once its process said it failed.

    Reads what the process has said so far, without waiting for more.
    """
    stdout = self._process.stdout
    while self._said is None and not stdout.closed and select.select([stdout], [], [], 0)[0]:
      line = stdout.readline()
      if not line:
        break
      try:
        self._said = json.loads(line)
      except ValueError:
        continue
    return None if self._said and 'failed' in self._said else self.uri

  def open(self, resume_step: int = 0, config_changes: dict | None = None,
           wait: bool = False) -> None:
    """Opens (or reopens) the run the directory records, or a new one.

    `resume_step`: the workdir's metrics.jsonl up to this step (what its
    checkpoint covers) is sent for what the MLflow run lacks: a run killed
    before its tracking sent them, or one tracked from a resume on.
    `config_changes`: a resume's (a tag: params cannot change). `wait`:
    return once the run is open (a parent, whose id its members need).
    """
    self._opened = True
    record = _read(os.path.join(self._directory, RECORD)) or {}
    self._queue.put({'open': {
        'uri': self.uri, 'directory': self._directory, 'kind': self._kind,
        'experiment': self._config.mlflow_experiment, 'params': params(self._config),
        'tags': self._tags,
        'run_id': record.get('run_id') if record.get('uri') == self.uri else None,
        'history': _history(self._directory, resume_step) if self._kind == 'run' else [],
        'discard_after': resume_step if config_changes else None}})
    if config_changes:
      self.set_tags({'config_changes': json.dumps(config_changes)})
    if wait:
      ready, _, _ = select.select([self._process.stdout], [], [], END_WAIT_S)
      if ready:
        try:
          self._said = json.loads(self._process.stdout.readline())
        except ValueError:
          pass

  def _write(self) -> None:
    """The queued messages into the worker's stdin, closed after the last."""
    while True:
      message = self._queue.get()
      if message is None:
        break
      try:
        self._process.stdin.write(json.dumps(message) + '\n')
        self._process.stdin.flush()
      except (BrokenPipeError, OSError, ValueError):
        break  # The worker is gone; it said why.
    try:
      self._process.stdin.close()
    except (BrokenPipeError, OSError):
      pass

  def log_metrics(self, step: int, metrics: dict) -> None:
    """Queues {name: value} at `step`."""
    stamp = int(time.time() * 1000)
    self._queue.put({'metrics': [(k, float(v), stamp, int(step)) for k, v in metrics.items()]})

  def set_tags(self, tags: dict) -> None:
    self._queue.put({'tags': {k: str(v) for k, v in tags.items()}})

  def tag_member(self, workdir: str, tags: dict) -> None:
    """Queues `tags` for the run of `workdir` (a member's, in this run's store), once it ended.

    Sent by this run's process: a member's tags after its end need no
    process (and no import of MLflow) of their own.
    """
    record = _read(os.path.join(workdir, RECORD))
    if record and record.get('uri') == self.uri:
      self._queue.put({'member_tags': {'run_id': record['run_id'],
                                       'tags': {k: str(v) for k, v in tags.items()}}})

  def log_artifacts(self, paths: list) -> None:
    """Queues files (and folders, as folders) to upload."""
    self._queue.put({'artifacts': [os.path.abspath(p) for p in paths]})

  def end(self, status: str | None = 'FINISHED') -> None:
    """Sends what is queued, ends the run with `status` (None: as it is), waits for it.

    Once; a run never opened ends with nothing written.
    """
    if self._ended:
      return
    self._ended = True
    if not self._opened:  # Refused before it opened: nothing to send.
      self._process.terminate()
    if status:
      self._queue.put({'end': status})
    self._queue.put(None)
    self._writer.join(END_WAIT_S)
    try:
      self._process.wait(END_WAIT_S)
    except subprocess.TimeoutExpired:
      self._process.kill()
      self._process.wait()
      logging.warning('MLflow at %s: sending took over %d s; what was left is not sent.',
                      self.uri, END_WAIT_S)
    self.shown_uri()  # What the process said, read before its pipe closes.
    self._process.stdout.close()


def _history(directory: str, resume_step: int) -> list:
  """metrics.jsonl's metrics up to `resume_step`, as the worker sends them."""
  if not resume_step:
    return []
  return [(f'{r["split"]}_{k}', float(v), int(r.get('time', 0) * 1000), r['step'])
          for r in workdir_lib.read_records(os.path.join(directory, workdir_lib.METRICS))
          if isinstance(r.get('step'), int) and r['step'] <= resume_step
          and isinstance(r.get('metrics'), dict) for k, v in r['metrics'].items()]


def start(config, directory: str):
  """The MlflowRun of a workdir, its process started, if `config` tracks to MLflow; else None.

  Made as early as a run can be (MLflow's import runs beside the trainer's
  start-up); `open` when the workdir is locked and restored.
  """
  return MlflowRun(config, directory) if 'mlflow' in names(config) else None


def open_parent(config, directory: str, kind: str, tags: dict | None = None):
  """A sweep's or search's parent run (open when this returns), or None."""
  if 'mlflow' not in names(config):
    return None
  run = MlflowRun(config, directory, kind, tags)
  run.open(wait=True)
  return run


def check_config(config) -> None:
  """Refuses unknown trackers and an MLflow store or experiment that cannot be one."""
  for name in names(config):
    errors.require(name in TRACKERS, 'trackers', config.trackers,
                   f"{name!r} is not a tracker (there are: '', {', '.join(TRACKERS)})")
    extras.require(f'trackers={config.trackers!r}', name)
  problem = uri_problem(config.mlflow_uri)
  errors.require(problem is None, 'mlflow_uri', config.mlflow_uri, problem)
  errors.require(isinstance(config.mlflow_experiment, str) and config.mlflow_experiment.strip(),
                 'mlflow_experiment', config.mlflow_experiment, 'must name an experiment')
