"""study.storage=journal:///...: Optuna's journal file storage, with heartbeats, shared by workers."""

from __future__ import annotations

import time

import optuna
import pytest
from optuna.trial import TrialState

from sweeps.compose import compose_study_config
from sweeps.config import StudyConfig
from sweeps.journal_storage import HEARTBEAT_ATTR, JournalStorageWithHeartbeat
from sweeps.runner import run
from sweeps.storage import StorageError, create_or_load_study, open_storage
from sweeps.trial_record import BASELINE_ATTR
from tests.test_storage import run_python
from tests.test_study_runner import TINY, runner, trials_of, wait_for


KILLED_WORKER = """
import os, sys, types
from sweeps.journal_storage import HEARTBEAT_ATTR
from sweeps.storage import create_or_load_study
from tests.heartbeats import wait_for
cfg = types.SimpleNamespace(storage=sys.argv[1], direction="minimize", heartbeat_interval=1, grace_period=1)
study = create_or_load_study(cfg, "hb", None, None)
def objective(trial):
    trial.suggest_float("x", 0, 1)
    wait_for(lambda: HEARTBEAT_ATTR in study._storage.get_trial(trial._trial_id).system_attrs,
             what="its first heartbeat")
    os._exit(9)  # the worker dies mid-trial: no FAIL, no tell
study.optimize(objective, n_trials=1)
"""


def journal_url(path) -> str:
    return f"journal:///{path}"  # an absolute path: four slashes


def test_a_journal_url_opens_optunas_journal_storage_on_that_file(tmp_path):
    storage = open_storage(journal_url(tmp_path / "study.log"), heartbeat_interval=7, grace_period=21)
    assert isinstance(storage, JournalStorageWithHeartbeat) and isinstance(storage, optuna.storages.JournalStorage)
    assert storage.get_heartbeat_interval() == 7 and storage.grace_period == 21
    study = optuna.create_study(storage=storage, study_name="j")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    again = optuna.load_study(study_name="j", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "study.log"))))  # plain Optuna reads it
    assert [t.value for t in again.trials] == [t.value for t in study.trials]


@pytest.mark.parametrize("url,message", [
    ("journal:////no/such/folder/study.log", "the folder /no/such/folder does not exist"),
    ("journal://host/study.log", "a journal URL is journal:///relative/path.log or journal:////absolute/path.log"),
])
def test_a_bad_journal_url_is_one_error(url, message):
    with pytest.raises(StorageError, match=message):
        open_storage(url)


def test_reading_never_creates_a_journal(tmp_path):
    with pytest.raises(StorageError, match="there is no database file .*study.log; run mode=sweep first"):
        open_storage(journal_url(tmp_path / "study.log"), create=False)
    assert not (tmp_path / "study.log").exists()


def test_the_trial_of_a_killed_worker_on_a_journal_is_failed_and_queued_again(tmp_path):
    url = journal_url(tmp_path / "study.log")
    worker = run_python(KILLED_WORKER, url)
    worker.communicate(timeout=120)
    assert worker.returncode == 9
    cfg = StudyConfig(storage=url, heartbeat_interval=1, grace_period=1)
    left = optuna.load_study(study_name="hb", storage=open_storage(url, create=False)).get_trials()
    assert [t.state for t in left] == [TrialState.RUNNING] and HEARTBEAT_ATTR in left[0].system_attrs

    def requeued():
        return len(create_or_load_study(cfg, "hb", None, None).get_trials()) == 2  # the next worker starts
    wait_for(requeued, timeout=30, what="the stale trial to be failed")
    killed, again = optuna.load_study(study_name="hb", storage=open_storage(url, create=False)).get_trials()
    assert (killed.state, again.state) == (TrialState.FAIL, TrialState.WAITING)
    assert again.user_attrs == {"retry_of": killed.number} and again.params == killed.params


def test_a_live_trial_on_a_journal_keeps_beating(tmp_path):
    cfg = StudyConfig(storage=journal_url(tmp_path / "study.log"), heartbeat_interval=1, grace_period=2)
    study = create_or_load_study(cfg, "live", None, None)
    seen = []

    def objective(trial):
        start = time.time()
        while time.time() - start < 4:  # twice the grace period
            time.sleep(0.5)
            other = create_or_load_study(cfg, "live", None, None)  # other workers start meanwhile
            seen.append(other.get_trials()[0].state)
        return 0.0

    study.optimize(objective, n_trials=1)
    assert set(seen) == {TrialState.RUNNING} and len(seen) >= 6
    assert study.trials[0].state == TrialState.COMPLETE


@pytest.mark.slow
def test_two_runners_share_a_study_on_a_relative_journal(workdir):
    cwd, common = workdir
    url = "journal:///outputs/study.log"  # relative to the working directory
    args = ["+sweep=lr_warmup", *TINY, f"study.storage={url}", "study.n_trials=4", *common]
    procs = [runner(args, cwd) for _ in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert (cwd / "outputs" / "study.log").is_file()
    trials = trials_of(open_storage(url, create=False), "lr_warmup")
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 4 and len({t.number for t in trials}) == len(trials)
    assert sum(bool(t.user_attrs.get(BASELINE_ATTR)) for t in trials) == 1  # one baseline across both workers


def test_a_sweep_runs_on_a_journal_in_process(workdir):
    cwd, common = workdir
    overrides = ["+sweep=lr_warmup", *TINY, f"study.storage={journal_url(cwd / 'j.log')}", "study.n_trials=2", *common]
    study = run(compose_study_config(overrides), overrides)
    assert isinstance(study._storage, JournalStorageWithHeartbeat)
    assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE] * 2


def test_the_dashboard_is_pointed_at_a_journals_file():
    from sweeps.storage import dashboard_storage_arg
    assert dashboard_storage_arg("journal:///outputs/study.log") == "outputs/study.log"
    assert dashboard_storage_arg("journal:////shared/a/study.log") == "/shared/a/study.log"
    assert dashboard_storage_arg("postgresql://u:secret@db/optuna") == "postgresql://u:***@db/optuna"
