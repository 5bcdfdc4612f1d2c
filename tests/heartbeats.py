"""Polling for a trial's heartbeat state instead of sleeping a fixed time against the grace
period: a loaded machine stretches any fixed sleep, and a fixed sleep proves nothing about the
state it waits for. Reads Optuna's own heartbeat table and staleness rule (RDBStorage keeps them
private; these tests pin the behaviour the runner relies on)."""

from __future__ import annotations

import datetime
import time
from typing import Callable, Optional

import optuna
from optuna.storages._rdb import models

from sweeps.storage import open_storage

TIMEOUT_S = 120.0  # generous: a state that takes this long on a loaded CPU is a bug


def wait_for(condition: Callable[[], bool], timeout: float = TIMEOUT_S, what: str = "condition") -> None:
    """Polls `condition` every 0.1 s; AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


def _storage(url: str, grace_period: int) -> optuna.storages.RDBStorage:
    return open_storage(url, heartbeat_interval=1, grace_period=grace_period)


def _trial_id(storage: optuna.storages.RDBStorage, study_name: str, number: int) -> int:
    study_id = storage.get_study_id_from_name(study_name)
    return storage.get_trial_id_from_study_id_trial_number(study_id, number)


def heartbeat_of(url: str, study_name: str, number: int) -> Optional[datetime.datetime]:
    """The time (the database's clock) of the trial's latest heartbeat, None before its first."""
    storage = _storage(url, grace_period=1)
    try:
        trial_id = _trial_id(storage, study_name, number)
    except KeyError:
        return None
    session = storage.scoped_session()
    try:
        row = session.query(models.TrialHeartbeatModel).filter_by(trial_id=trial_id).one_or_none()
        return row.heartbeat if row is not None else None
    finally:
        storage.scoped_session.remove()


def stale_trials(url: str, study_name: str, grace_period: int) -> list[int]:
    """Numbers of the RUNNING trials whose heartbeat is older than `grace_period` seconds by the
    database's clock: the trials the next worker fails and queues again (Optuna's rule)."""
    storage = _storage(url, grace_period)
    study_id = storage.get_study_id_from_name(study_name)
    return sorted(storage.get_trial(i).number for i in storage._get_stale_trial_ids(study_id))
