"""The private parts of Optuna a search relies on, all in this one module.

Optuna (pinned in requirements.txt) offers no public way to do three things
the search needs: give the journal-file storage the heartbeat its RDB storage
has (the `BaseHeartbeat` mixin and the thread that beats), and name a trial
to its storage (`_trial_id`, which `Study.tell` and the storage methods take).
`tests/test_search.py::test_the_optuna_internals_relied_on_are_there` fails
when an upgrade changes any of them.
"""

from optuna.storages import _heartbeat

# A storage that also subclasses this has heartbeats, as RDBStorage does:
# fail_stale_trials and RetryHeartbeatStaleTrialCallback then work on it.
BaseHeartbeat = _heartbeat.BaseHeartbeat
# The methods such a storage implements.
HEARTBEAT_METHODS = frozenset({'record_heartbeat', '_get_stale_trial_ids',
                               'get_heartbeat_interval',
                               'get_heartbeat_stale_trial_callback'})


def heartbeat_thread(trial_id: int, storage):
  """Optuna's own heartbeat of `trial_id` while a `with` block runs (none if not enabled)."""
  return _heartbeat.get_heartbeat_thread(trial_id, storage)


def trial_id(trial) -> int:
  """The storage's id of a Trial or FrozenTrial (not its number in the study)."""
  return trial._trial_id  # pylint: disable=protected-access
