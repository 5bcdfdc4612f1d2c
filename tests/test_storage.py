"""sweeps.storage: SQLite (WAL, busy timeout, concurrent readers), PostgreSQL, heartbeats, errors."""

from __future__ import annotations

import datetime
import importlib.util
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
import traceback
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from sweeps.config import StudyConfig
from sweeps.storage import StorageError, create_or_load_study, open_storage, redact_url
from tests.heartbeats import heartbeat_of, stale_trials, wait_for
from tests.postgres import PG_URL, needs_postgres, skip_unless_required

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "s3cretpw"


def study_cfg(storage: str, **kw) -> StudyConfig:
    return StudyConfig(storage=storage, **kw)


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def run_python(code: str, *args: str) -> subprocess.Popen:
    """Starts `code` in a fresh interpreter (a separate process, as a second worker would be)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 120) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"worker failed ({proc.returncode}):\n{err}"
    return out


# ---------------------------------------------------------------------------------------- URLs, errors

def test_redact_url_hides_the_password():
    assert redact_url(f"postgresql://u:{PASSWORD}@db.example:5432/optuna") == "postgresql://u:***@db.example:5432/optuna"
    assert redact_url("postgresql://u@host/db") == "postgresql://u@host/db"
    assert redact_url("sqlite:///outputs/optuna.db") == "sqlite:///outputs/optuna.db"
    assert PASSWORD not in redact_url(f"postgresql//u:{PASSWORD}@host/db")  # malformed, still hidden
    assert "s3cr@pw" not in redact_url("postgresql://u:s3cr%40pw@host/db")


def _chain_text(exc: BaseException) -> str:
    """Everything a user could see of the exception: str, repr, chained exceptions, the traceback."""
    parts = ["".join(traceback.format_exception(exc))]
    seen = exc
    while seen is not None:
        parts += [str(seen), repr(seen), str(seen.args)]
        seen = seen.__cause__ or seen.__context__
    return "\n".join(parts)


@pytest.mark.parametrize("url,reason", [
    (f"postgresql://u:{PASSWORD}@127.0.0.1:1/db", "refused"),  # nothing listens on port 1
    (f"postgresql+nosuchdriver://u:{PASSWORD}@127.0.0.1/db", "nosuchdriver"),  # bad driver name
    (f"postgresql//u:{PASSWORD}@127.0.0.1/db", "not a valid SQLAlchemy URL"),  # malformed
    ("not a url at all", "not a valid SQLAlchemy URL"),
    (f"postgresql://u:{PASSWORD}@no-such-host.invalid:5432/db", "no-such-host.invalid"),
])
def test_unusable_url_raises_storage_error_without_the_password(url, reason):
    with pytest.raises(StorageError) as info:
        open_storage(url)
    message = str(info.value)
    assert redact_url(url) in message and reason in message, message
    assert PASSWORD not in _chain_text(info.value)


def test_a_network_database_gives_up_connecting_after_a_timeout_unless_the_url_sets_one():
    """An unreachable host fails in CONNECT_TIMEOUT_S, not the driver's default (minutes)."""
    from sqlalchemy.engine import make_url

    from sweeps.storage import CONNECT_TIMEOUT_S, _engine_kwargs

    for url in ("postgresql://u@host/db", "mysql+pymysql://u@host/db"):
        assert _engine_kwargs(make_url(url))["connect_args"] == {"connect_timeout": CONNECT_TIMEOUT_S}
    assert "connect_args" not in _engine_kwargs(make_url("postgresql://u@host/db?connect_timeout=30"))


def test_storage_error_on_create_or_load_study_too():
    with pytest.raises(StorageError) as info:
        create_or_load_study(study_cfg(f"postgresql://u:{PASSWORD}@127.0.0.1:1/db"), "s", None, None)
    assert "postgresql://u:***@127.0.0.1:1/db" in str(info.value)
    assert PASSWORD not in _chain_text(info.value)


@pytest.mark.skipif(importlib.util.find_spec("MySQLdb") is not None, reason="mysqlclient is installed here")
def test_a_missing_database_driver_says_what_to_install():
    with pytest.raises(StorageError) as info:
        open_storage(f"mysql://root:{PASSWORD}@127.0.0.1/test")
    assert "pip install mysqlclient" in str(info.value) and "mysql+pymysql://" in str(info.value)
    assert PASSWORD not in _chain_text(info.value)


def test_unusable_sqlite_path(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(StorageError) as info:
        open_storage(sqlite_url(blocker / "sub" / "optuna.db"))
    assert "a_file" in str(info.value)


@needs_postgres
def test_unknown_postgres_database():
    from sqlalchemy.engine import make_url

    url = make_url(PG_URL).set(database="no_such_db_" + uuid.uuid4().hex[:8], password=PASSWORD)
    text = url.render_as_string(hide_password=False)
    with pytest.raises(StorageError) as info:
        open_storage(text)
    assert "does not exist" in str(info.value) and url.database in str(info.value)
    assert PASSWORD not in _chain_text(info.value)


# ---------------------------------------------------------------------------------------------- SQLite

def test_sqlite_relative_url_creates_the_directory_and_uses_wal(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    storage = open_storage("sqlite:///outputs/deeper/optuna.db")
    path = tmp_path / "outputs" / "deeper" / "optuna.db"
    assert path.is_file()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # persistent in the file
    conn.close()
    with storage.engine.connect() as conn:  # every new connection waits for locks
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 60_000
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_study_is_created_then_loaded(tmp_path):
    cfg = study_cfg(sqlite_url(tmp_path / "optuna.db"))
    study = create_or_load_study(cfg, "s1", optuna.samplers.RandomSampler(seed=0), optuna.pruners.NopPruner())
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    again = create_or_load_study(cfg, "s1", optuna.samplers.RandomSampler(seed=1), optuna.pruners.NopPruner())
    assert len(again.trials) == 3 and again.study_name == "s1"
    assert isinstance(again.sampler, optuna.samplers.RandomSampler)  # this process's sampler
    assert optuna.get_all_study_names(open_storage(cfg.storage)) == ["s1"]


def test_direction(tmp_path):
    url = sqlite_url(tmp_path / "optuna.db")
    study = create_or_load_study(study_cfg(url, direction="maximize"), "up", None, None)
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    with pytest.raises(ValueError, match="maximize"):
        create_or_load_study(study_cfg(url, direction="minimize"), "up", None, None)
    with pytest.raises(ValueError, match="minimize, maximize"):
        create_or_load_study(study_cfg(url, direction="lower"), "x", None, None)


READER = """
import sqlite3, sys, time
from pathlib import Path
import optuna
optuna.logging.set_verbosity(optuna.logging.WARNING)
path, name, stop = sys.argv[1], sys.argv[2], Path(sys.argv[3])
raw = sqlite3.connect(path, timeout=5, isolation_level=None)
dashboard = optuna.storages.RDBStorage(f"sqlite:///{path}")  # as optuna-dashboard opens it
reads = 0
Path(sys.argv[3] + ".ready").write_text("")
while not stop.exists():
    raw.execute("BEGIN")  # a read transaction held across several statements
    raw.execute("SELECT COUNT(*) FROM trials").fetchone()
    raw.execute("SELECT * FROM trial_intermediate_values").fetchall()
    time.sleep(0.002)
    raw.execute("SELECT * FROM trial_params").fetchall()
    raw.execute("COMMIT")
    study = optuna.load_study(study_name=name, storage=dashboard)
    study.get_trials(deepcopy=False)
    reads += 1
print(reads)
"""


def test_readers_never_lock_out_the_writer(tmp_path):
    """A dashboard-like reader in another process, in a tight loop of read transactions, while
    this process writes many trials and reports: no "database is locked"."""
    db = tmp_path / "optuna.db"
    cfg = study_cfg(sqlite_url(db))
    study = create_or_load_study(cfg, "busy", optuna.samplers.RandomSampler(seed=0), optuna.pruners.NopPruner())
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)  # the tables the reader selects
    stop = tmp_path / "stop"
    reader = run_python(READER, str(db), "busy", str(stop))
    try:
        deadline = time.monotonic() + 60
        while not Path(str(stop) + ".ready").exists():
            assert reader.poll() is None, reader.communicate()[1]
            assert time.monotonic() < deadline
            time.sleep(0.05)

        def objective(trial):
            x = trial.suggest_float("x", 0, 1)
            trial.suggest_int("n", 1, 8)
            for step in range(10):
                trial.report(x + step, step)
                trial.set_user_attr(f"a{step % 3}", step)
            return x

        study.optimize(objective, n_trials=30)  # any OperationalError would propagate here
    finally:
        stop.write_text("")
    reads = int(finish(reader).strip())
    assert reads > 0
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 31 and all(t.state == TrialState.COMPLETE for t in trials)
    assert all(len(t.intermediate_values) == 10 for t in trials[1:])


# ---------------------------------------------------------------------------------- several processes

WORKER = """
import json, sys, time, types
from pathlib import Path
import optuna
optuna.logging.set_verbosity(optuna.logging.WARNING)
from sweeps.storage import create_or_load_study
url, name, seed, n, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), Path(sys.argv[5])
cfg = types.SimpleNamespace(storage=url, direction="minimize", heartbeat_interval=10, grace_period=30)
Path(f"{go}.ready{seed}").write_text("")
while not go.exists():
    time.sleep(0.005)
study = create_or_load_study(cfg, name, optuna.samplers.RandomSampler(seed=seed), optuna.pruners.NopPruner())
numbers = []
def objective(trial):
    numbers.append(trial.number)
    x = trial.suggest_float("x", 0, 1)
    trial.report(x, 0)
    trial.set_user_attr("worker", seed)
    return x
study.optimize(objective, n_trials=n)
print(json.dumps(numbers))
"""


def run_workers(url: str, name: str, tmp_path: Path, n_workers: int = 2, n_trials: int = 6) -> list[list[int]]:
    go = tmp_path / f"go-{name}"
    workers = [run_python(WORKER, url, name, str(seed), str(n_trials), str(go)) for seed in range(n_workers)]
    release_together(workers, [Path(f"{go}.ready{seed}") for seed in range(n_workers)], go)
    return [json.loads(finish(w)) for w in workers]


def release_together(procs: list[subprocess.Popen], ready: list[Path], go: Path) -> None:
    """Waits until every process has written its `ready` file, then writes `go`, which they all
    poll for, so that they start their work at the same moment."""
    deadline = time.monotonic() + 90
    while not all(r.exists() for r in ready):
        for p in procs:
            assert p.poll() is None, p.communicate()[1]
        assert time.monotonic() < deadline, "the processes did not start"
        time.sleep(0.05)
    go.write_text("")


def check_no_trial_lost_or_duplicated(url: str, name: str, asked: list[list[int]], n_trials: int) -> None:
    study = optuna.load_study(study_name=name, storage=open_storage(url))
    trials = study.get_trials(deepcopy=False)
    numbers = [t.number for t in trials]
    all_asked = [n for worker in asked for n in worker]
    assert len(all_asked) == len(trials) == n_trials
    assert sorted(all_asked) == sorted(numbers) == list(range(n_trials))
    assert all(t.state == TrialState.COMPLETE for t in trials)
    for worker, its_numbers in enumerate(asked):
        assert {t.number for t in trials if t.user_attrs["worker"] == worker} == set(its_numbers)


def test_two_processes_share_a_sqlite_study(tmp_path):
    """On a new database file: both create the tables and the study at once, then share it."""
    url = sqlite_url(tmp_path / "optuna.db")
    asked = run_workers(url, "shared", tmp_path)
    check_no_trial_lost_or_duplicated(url, "shared", asked, 12)


@needs_postgres
def test_two_processes_share_a_postgres_study(tmp_path):
    name = "test-storage-" + uuid.uuid4().hex
    try:
        asked = run_workers(PG_URL, name, tmp_path)
        check_no_trial_lost_or_duplicated(PG_URL, name, asked, 12)
    finally:
        try:
            optuna.delete_study(study_name=name, storage=open_storage(PG_URL))
        except KeyError:
            pass
    assert name not in optuna.get_all_study_names(open_storage(PG_URL))


CLAIMER = """
import json, sys, time
from pathlib import Path
import optuna
optuna.logging.set_verbosity(optuna.logging.WARNING)
from sweeps.storage import open_storage
url, name, n, go, ready = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]), Path(sys.argv[5])
study = optuna.load_study(study_name=name, storage=open_storage(url, heartbeat_interval=None, grace_period=None))
ready.write_text("")
while not go.exists():
    time.sleep(0.001)
print(json.dumps([study.ask().number for _ in range(n)]))
"""


def claim_queued_trials_together(url: str, name: str, tmp_path: Path, n_workers: int = 4, each: int = 6) -> list[int]:
    """`n_workers` processes ask for `each` trials at the same moment from a study holding
    n_workers x each queued (WAITING) trials, as workers resuming a study with retries queued do:
    every trial number they were handed."""
    study = optuna.create_study(study_name=name, storage=open_storage(url))
    for i in range(n_workers * each):
        study.enqueue_trial({"x": i / 100}, skip_if_exists=False)
    go = tmp_path / f"go-{name}"
    ready = [tmp_path / f"ready{k}" for k in range(n_workers)]
    claimers = [run_python(CLAIMER, url, name, str(each), str(go), str(r)) for r in ready]
    release_together(claimers, ready, go)
    handed = [n for c in claimers for n in json.loads(finish(c))]
    trials = optuna.load_study(study_name=name, storage=open_storage(url)).get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.RUNNING] * n_workers * each  # no new trial: the queue held enough
    return handed


def test_workers_asking_together_each_get_their_own_queued_trial_on_sqlite(tmp_path):
    """SQLite ignores Optuna's SELECT ... FOR UPDATE: without the conditional UPDATE, 4 workers
    asking together were handed the same queued trial up to 4 times (and trained it as often)."""
    handed = claim_queued_trials_together(sqlite_url(tmp_path / "optuna.db"), "queue", tmp_path)
    assert sorted(handed) == list(range(24)), sorted(handed)


@needs_postgres
def test_workers_asking_together_each_get_their_own_queued_trial_on_postgres(tmp_path):
    name = "test-storage-queue-" + uuid.uuid4().hex
    try:
        handed = claim_queued_trials_together(PG_URL, name, tmp_path)
        assert sorted(handed) == list(range(24)), sorted(handed)
    finally:
        optuna.delete_study(study_name=name, storage=open_storage(PG_URL))


def _admin_connection():
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(PG_URL)
    conn = psycopg.connect(host=url.host, port=url.port or 5432, user=url.username, password=url.password,
                           dbname=url.database, connect_timeout=3, autocommit=True)
    return conn, url


@needs_postgres
def test_workers_starting_together_on_a_new_postgres_database(tmp_path):
    """Both workers find no tables and create them at once: neither fails."""
    conn, url = _admin_connection()
    database = "optuna_test_" + uuid.uuid4().hex[:12]
    try:
        conn.cursor().execute(f"CREATE DATABASE {database}")
    except Exception as e:  # noqa: BLE001
        conn.close()
        skip_unless_required(f"cannot create a scratch database: {e}")
    fresh = url.set(database=database).render_as_string(hide_password=False)
    try:
        asked = run_workers(fresh, "fresh", tmp_path, n_workers=3, n_trials=3)
        check_no_trial_lost_or_duplicated(fresh, "fresh", asked, 9)
    finally:
        conn.cursor().execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        conn.close()


@needs_postgres
def test_postgres_storage_options():
    storage = open_storage(PG_URL)
    assert storage.engine.pool._pre_ping
    assert storage.heartbeat_interval == 10 and storage.grace_period == 30


# ------------------------------------------------------------------------------------------ heartbeat

KILLED_WORKER = """
import os, sys, types
import optuna
from sweeps.storage import create_or_load_study
from tests.heartbeats import heartbeat_of, wait_for
url = sys.argv[1]
cfg = types.SimpleNamespace(storage=url, direction="minimize", heartbeat_interval=1, grace_period=1)
study = create_or_load_study(cfg, "hb", None, None)
def objective(trial):
    trial.suggest_float("x", 0, 1)
    wait_for(lambda: heartbeat_of(url, "hb", trial.number) is not None, what="its first heartbeat")
    os._exit(9)  # the worker dies mid-trial: no FAIL, no tell
study.optimize(objective, n_trials=1)
"""


def test_the_trial_of_a_killed_worker_is_failed_and_queued_again_by_the_next(tmp_path):
    url = sqlite_url(tmp_path / "optuna.db")
    worker = run_python(KILLED_WORKER, url)
    worker.communicate(timeout=120)
    assert worker.returncode == 9
    cfg = study_cfg(url, heartbeat_interval=1, grace_period=1)
    study = optuna.load_study(study_name="hb", storage=open_storage(url, heartbeat_interval=1, grace_period=1))
    assert [t.state for t in study.get_trials()] == [TrialState.RUNNING]  # left behind
    wait_for(lambda: stale_trials(url, "hb", grace_period=1) == [0], what="its heartbeat to go stale")
    study = create_or_load_study(cfg, "hb", None, None)  # the next worker to start
    killed, again = study.get_trials()
    assert (killed.state, again.state) == (TrialState.FAIL, TrialState.WAITING)
    assert again.user_attrs == {"retry_of": killed.number} and again.params == killed.params


def test_a_live_trial_is_not_failed(tmp_path):
    """A trial that has run longer than the grace period, its heartbeats still coming, stays
    RUNNING when another worker starts."""
    url = sqlite_url(tmp_path / "optuna.db")
    cfg = study_cfg(url, heartbeat_interval=1, grace_period=3)
    study = create_or_load_study(cfg, "live", None, None)
    states = []

    def objective(trial):
        wait_for(lambda: heartbeat_of(url, "live", trial.number) is not None, what="the first heartbeat")
        first = heartbeat_of(url, "live", trial.number)
        # the heartbeat renewed for longer than the grace period (SQLite's clock has 1 s resolution)
        wait_for(lambda: heartbeat_of(url, "live", trial.number) - first > datetime.timedelta(seconds=4),
                 what="heartbeats spanning more than the grace period")
        other = create_or_load_study(cfg, "live", None, None)  # another worker starts meanwhile
        states.append(other.get_trials()[0].state)
        return 0.0

    study.optimize(objective, n_trials=1)
    assert states == [TrialState.RUNNING]
    assert study.trials[0].state == TrialState.COMPLETE


def test_heartbeat_settings_reach_the_storage(tmp_path):
    storage = open_storage(sqlite_url(tmp_path / "optuna.db"), heartbeat_interval=7, grace_period=21)
    assert storage.get_heartbeat_interval() == 7 and storage.grace_period == 21
    plain = open_storage(sqlite_url(tmp_path / "optuna.db"), heartbeat_interval=None, grace_period=None)
    assert plain.get_heartbeat_interval() is None
