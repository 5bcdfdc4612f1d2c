"""Optuna's journal file storage with heartbeats, for clusters with a shared file system and no
database server: `study.storage=journal:///outputs/study.log` (four slashes before an absolute path).

Every worker appends its operations to one log file under Optuna's `JournalFileOpenLock` (an
exclusive create of `<file>.lock`, safe on NFSv3 and later, where SQLite's fcntl locks are not),
and replays the others'. Optuna's journal storage has no heartbeat of its own, so this one keeps
it in the log: a running trial's worker writes the time as a system attr every
`heartbeat_interval` seconds (Optuna's heartbeat thread calls `record_heartbeat`), and a RUNNING
trial whose last heartbeat (or start, before the first) is older than `grace_period` seconds is
stale: `optuna.storages.fail_stale_trials` marks it FAIL and hands it to the same callback as
the SQL storages' (`sweeps.retries.requeue`). Times are the workers' clocks, so the machines
sharing a study need synchronised clocks (NTP), as any cluster has.
"""

from __future__ import annotations

import time
from typing import Callable, Optional

import optuna
from optuna.storages import JournalStorage
from optuna.storages._heartbeat import BaseHeartbeat  # the interface RDBStorage implements
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
from optuna.trial import FrozenTrial, TrialState

HEARTBEAT_ATTR = "heartbeat_unix_time"  # system attr: the worker's last sign of life


class JournalStorageWithHeartbeat(JournalStorage, BaseHeartbeat):
    """A JournalStorage on the log file `path` whose running trials record heartbeats."""

    def __init__(self, path: str, heartbeat_interval: Optional[int], grace_period: Optional[int],
                 stale_trial_callback: Optional[Callable[[optuna.Study, FrozenTrial], None]] = None):
        super().__init__(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self.stale_trial_callback = stale_trial_callback

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # the trial finished between two heartbeats: nothing left to keep alive

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        if self.grace_period is None:
            return []
        now = time.time()
        return [t._trial_id for t in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
                if now - _last_sign_of_life(t) > self.grace_period]

    def get_heartbeat_interval(self) -> Optional[int]:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self) -> Optional[Callable[[optuna.Study, FrozenTrial], None]]:
        return self.stale_trial_callback


def _last_sign_of_life(trial: FrozenTrial) -> float:
    beat = trial.system_attrs.get(HEARTBEAT_ATTR)
    if beat is not None:
        return float(beat)
    return trial.datetime_start.timestamp() if trial.datetime_start is not None else time.time()
