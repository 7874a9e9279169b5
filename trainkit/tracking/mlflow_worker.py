"""The process that talks to MLflow for a run (trainkit/tracking/mlflow_run.py starts it).

  python trainkit/tracking/mlflow_worker.py URI  # JSON lines on stdin; no project import

MLflow's import and a new SQLite store's schema take seconds of CPU, and its
client holds Python's lock while it works: in a thread of the training process
they would slow every epoch they overlap. Here they run in a process of their
own, started while the trainer starts up. (At the lowest CPU priority its
start-up dragged on into the epochs, slowing them more, and a busy machine
could starve it: it runs at the trainer's.)

stdin, one JSON object per line:
  {"open": {uri, directory, kind, experiment, params, tags, run_id, history,
             discard_after}}
      first; `run_id` is the run to append to (or null for a new one),
      `history` the metrics the workdir logged before (sent for the steps
      the MLflow run lacks), and `discard_after` (a resume with config
      changes: its step) ends a run that holds later steps, whose values the
      resume replaces, for a new one;
  {"metrics": [[name, value, milliseconds, step], ...]}, {"tags": {...}},
  {"member_tags": {"run_id", "tags"}} (another run of the store: a member's),
  {"artifacts": [path, ...]}, {"end": "FINISHED" | "FAILED" | "KILLED"}.
stdout: one line once the run is open, {"run_id": ...} or {"failed": ...}.
Input that ends without "end" (the trainer killed) leaves the run RUNNING, for
its resume to append to. A failure is one warning line on stderr, then what
follows is read and dropped.
"""

import json
import os
import queue
import shutil
import signal
import sys
import tempfile
import threading
import time

RECORD = 'mlflow.json'  # Also trainkit/tracking/mlflow_run.py's.
ARTIFACTS = 'mlartifacts'  # A SQLite store's artifacts, beside it.
# A server that does not answer: each request gives up after this many
# seconds and one retry (MLflow's defaults wait minutes).
REQUEST_TIMEOUT_S, REQUEST_RETRIES = 3, 1
BATCH, SMALL_BATCH = 1000, 100  # MLflow's limits: metrics; params or tags per request.
SEND_EVERY_S = 5.0  # What the trainer logs is sent this often (and at the end).


def _client(uri: str):
  """MLflow's client for `uri`, quiet, with requests that give up within seconds."""
  return _client_class()(uri)


def _client_class():
  """MLflow's client class, imported with this process's settings."""
  os.environ.setdefault('MLFLOW_HTTP_REQUEST_TIMEOUT', str(REQUEST_TIMEOUT_S))
  os.environ.setdefault('MLFLOW_HTTP_REQUEST_MAX_RETRIES', str(REQUEST_RETRIES))
  os.environ.setdefault('MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR', '1')
  os.environ.setdefault('MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT', 'true')
  # No usage reports sent to MLflow's makers from a trainer's runs (a thread
  # of requests, which fail on a machine with no network).
  os.environ.setdefault('MLFLOW_DISABLE_TELEMETRY', 'true')
  import logging  # pylint: disable=g-import-not-at-top
  from mlflow.tracking import MlflowClient  # pylint: disable=g-import-not-at-top
  # A new SQLite store narrates its schema's creation at INFO (MLflow sets its
  # logger's level when imported), urllib3 each retry: a failure is one line.
  for name, level in (('mlflow', logging.WARNING), ('alembic', logging.WARNING),
                      ('urllib3.connectionpool', logging.ERROR)):
    logging.getLogger(name).setLevel(level)
  return MlflowClient


def _one_line(error: BaseException) -> str:
  text = str(error).strip().splitlines()
  return f'{type(error).__name__}: {text[0][:200]}' if text else type(error).__name__


def _write_json(path: str, obj) -> None:
  """Whole or not at all: a temporary file renamed into place."""
  with open(path + '.tmp', 'w') as f:
    json.dump(obj, f, indent=2)
    f.write('\n')
  os.replace(path + '.tmp', path)


class Worker:
  """One MLflow run: opens it, then sends what the trainer logs, in batches."""

  def __init__(self, request: dict):
    self.request = request
    self.client = None
    self.run_id = None
    self.failed = False
    self.last_steps = {}  # Per metric: the last step the run has.

  def fail(self, error: BaseException) -> None:
    self.failed = True
    print(f'warning: MLflow tracking at {self.request["uri"]} failed ({_one_line(error)}); '
          f'the {self.request["kind"]} goes on without it.', file=sys.stderr, flush=True)

  def _experiment_id(self) -> str:
    name, uri = self.request['experiment'], self.request['uri']
    found = self.client.get_experiment_by_name(name)
    if found:
      return found.experiment_id
    location = None
    if uri.startswith('sqlite:///'):  # Beside the store, not in the current folder.
      location = os.path.join(os.path.dirname(uri[len('sqlite:///'):]), ARTIFACTS)
    try:
      return self.client.create_experiment(name, artifact_location=location)
    except Exception:  # pylint: disable=broad-except
      found = self.client.get_experiment_by_name(name)  # Another run made it meanwhile.
      if not found:
        raise
      return found.experiment_id

  def open(self, fresh: str | None = None) -> None:
    """Reopens the run the directory records, or creates it; sends the history.

    `fresh`: a new SQLite store made at start-up, put in place if the run's
    store is still to be made.
    """
    from mlflow.exceptions import MlflowException  # pylint: disable=g-import-not-at-top
    request = self.request
    if fresh:
      _place(fresh, request['uri'])
    self.client = _client(request['uri'])
    run = None
    if request.get('run_id'):
      try:
        run = self.client.get_run(request['run_id'])
      except MlflowException:
        run = None  # Deleted from the store: a new one.
    if run is not None:
      self.run_id = run.info.run_id
      for key in run.data.metrics:
        history = self.client.get_metric_history(self.run_id, key)
        self.last_steps[key] = max(m.step for m in history)
      discarded = request.get('discard_after')
      if discarded is not None and max(self.last_steps.values(), default=-1) > discarded:
        self._supersede(discarded)
        run = None
      else:
        self.client.update_run(self.run_id, status='RUNNING')
        print(f'MLflow: appending to run {self.run_id} at {request["uri"]}.', file=sys.stderr,
              flush=True)
    if run is None:
      request = self.request
      run = self.client.create_run(self._experiment_id(), tags=request['tags'],
                                   run_name=os.path.basename(request['directory']))
      self.run_id = run.info.run_id
      self.log_batch(params=list(request['params'].items()))
      _write_json(os.path.join(request['directory'], RECORD), {
          'uri': request['uri'], 'run_id': self.run_id,
          'experiment_id': run.info.experiment_id, 'kind': request['kind']})
      print(f'MLflow: run {self.run_id} at {request["uri"]}.', file=sys.stderr, flush=True)
    self.send([{'metrics': request.get('history', [])}])

  def _supersede(self, step: int) -> None:
    """Ends the run, whose metrics past `step` are of training the resume discarded.

    MLflow keeps every value it was sent: a resume that trains steps past
    `step` again with another config would leave the discarded values
    beside the new ones. The workdir's run starts afresh instead (sent
    metrics.jsonl up to `step`), and the old one says which run took over.
    """
    old = self.run_id
    self.client.set_tag(old, 'trainkit.superseded_at_step', str(step))
    self.client.set_terminated(old, 'KILLED')
    self.request = {**self.request, 'tags': {**self.request['tags'], 'trainkit.supersedes': old}}
    self.run_id, self.last_steps = None, {}
    print(f'MLflow: run {old} holds steps past {step} that this resume trains again with '
          'another config; a new run takes over.', file=sys.stderr, flush=True)

  def log_batch(self, metrics=(), params=(), tags=()) -> None:
    from mlflow.entities import Metric, Param, RunTag  # pylint: disable=g-import-not-at-top
    metrics = [Metric(*m) for m in metrics]
    params = [Param(k, v) for k, v in params]
    tags = [RunTag(k, v) for k, v in tags]
    for start in range(0, len(metrics), BATCH):
      self.client.log_batch(self.run_id, metrics=metrics[start:start + BATCH])
    for start in range(0, len(params), SMALL_BATCH):
      self.client.log_batch(self.run_id, params=params[start:start + SMALL_BATCH])
    for start in range(0, len(tags), SMALL_BATCH):
      self.client.log_batch(self.run_id, tags=tags[start:start + SMALL_BATCH])

  def send(self, messages: list) -> None:
    """Sends `messages` (in order: metrics and tags in one batch, then files, then the end)."""
    metrics, tags = [], {}
    for message in messages:
      for key, value, stamp, step in message.get('metrics', ()):
        if step > self.last_steps.get(key, -1):  # Once per step, a resume's too.
          self.last_steps[key] = step
          metrics.append((key, value, stamp, step))
      tags.update(message.get('tags', {}))
    if metrics or tags:
      self.log_batch(metrics=metrics, tags=list(tags.items()))
    for message in messages:
      member = message.get('member_tags')
      if member:
        for key, value in member['tags'].items():
          self.client.set_tag(member['run_id'], key, value)
      for path in message.get('artifacts', ()):
        if os.path.isdir(path):
          self.client.log_artifacts(self.run_id, path, os.path.basename(path))
        elif os.path.exists(path):
          self.client.log_artifact(self.run_id, path)
      if 'end' in message:
        self.client.set_terminated(self.run_id, message['end'])


def _sqlite_path(uri: str) -> str | None:
  return uri[len('sqlite:///'):] if uri.startswith('sqlite:///') else None


def _fresh_store(uri: str) -> str | None:
  """A new, empty store made in a temporary folder, if `uri` is a SQLite file still to be made.

  MLflow's making of a store's schema (its migrations, two seconds of CPU
  here) happens while the trainer starts up rather than in its first epochs.
  """
  path = _sqlite_path(uri)
  if not path or os.path.exists(path):
    return None
  _TEMPORARY.append(tempfile.mkdtemp(prefix='trainkit_mlflow_'))
  made = os.path.join(_TEMPORARY[-1], 'mlflow.db')
  _client('sqlite:///' + made)  # Makes the schema.
  return made


_TEMPORARY = []  # Folders to remove if the trainer ends this process (SIGTERM).


def _terminated(*_) -> None:
  for folder in _TEMPORARY:
    shutil.rmtree(folder, ignore_errors=True)
  os._exit(0)  # pylint: disable=protected-access


def _place(fresh: str, uri: str) -> None:
  """Puts the store `fresh` at `uri`'s path, unless a store is there by now (left as is)."""
  path = _sqlite_path(uri)
  try:
    if path and not os.path.exists(path):
      os.makedirs(os.path.dirname(path), exist_ok=True)
      staged = f'{path}.{os.getpid()}.tmp'
      shutil.copyfile(fresh, staged)
      try:
        os.link(staged, path)  # Fails if another run made the store meanwhile.
      except FileExistsError:
        pass
      finally:
        os.remove(staged)
  finally:
    shutil.rmtree(os.path.dirname(fresh), ignore_errors=True)


def _read(lines: queue.Queue) -> None:
  """The messages on stdin into `lines`; None at its end."""
  for line in sys.stdin:
    try:
      lines.put(json.loads(line))
    except ValueError:
      continue  # A line cut short by a killed trainer.
  lines.put(None)


def main() -> None:
  """Opens the run, then sends each batch of what arrives until the end."""
  signal.signal(signal.SIGTERM, _terminated)
  messages = queue.Queue()
  threading.Thread(target=_read, args=(messages,), daemon=True).start()
  # Started before the run opens (while the trainer starts up): MLflow's
  # import, and the store if it is to be made.
  fresh = None
  try:
    _client_class()
    fresh = _fresh_store(sys.argv[1]) if len(sys.argv) > 1 else None
  except Exception:  # pylint: disable=broad-except
    pass  # Made again, or said, when the run opens.
  first = messages.get()
  if not first or 'open' not in first:
    if fresh:
      shutil.rmtree(os.path.dirname(fresh), ignore_errors=True)
    return
  worker = Worker(first['open'])
  try:
    worker.open(fresh)
    print(json.dumps({'run_id': worker.run_id}), flush=True)
  except Exception as e:  # pylint: disable=broad-except
    worker.fail(e)
    print(json.dumps({'failed': _one_line(e)}), flush=True)
  while True:
    # One request per SEND_EVERY_S at most, with all that came meanwhile.
    batch = [messages.get()]
    due = time.monotonic() + SEND_EVERY_S
    while batch[-1] is not None and 'end' not in batch[-1]:
      try:
        batch.append(messages.get(timeout=max(due - time.monotonic(), 0)))
      except queue.Empty:
        break
    done = batch[-1] is None or 'end' in batch[-1]
    if not worker.failed:
      try:
        worker.send([m for m in batch if m is not None])
      except Exception as e:  # pylint: disable=broad-except
        worker.fail(e)
    if done:
      return


if __name__ == '__main__':
  main()
