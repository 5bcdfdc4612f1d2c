"""Optuna storage and study creation: the one place a study is built.

* SQLite (the default, `sqlite:///outputs/optuna.db`, relative to the cwd): the parent directory is
  created; the database is switched to WAL journal mode (persistent in the file), so readers such
  as optuna-dashboard never block the writer, and every connection waits up to 60 s for a lock
  instead of failing at once with "database is locked".
* Any other SQLAlchemy URL (PostgreSQL, MySQL, ...): `pool_pre_ping`, and a 5 s connect timeout
  so an unreachable server fails fast.
* `journal:///path/study.log` (four slashes before an absolute path, as in SQLite URLs): Optuna's
  journal file storage, for a shared file system without a database server
  (`sweeps.journal_storage`, which adds the heartbeats Optuna's journal storage lacks).
* Heartbeats: a running trial records one every `heartbeat_interval` s (Optuna does it inside
  `study.optimize`); a RUNNING trial silent for `grace_period` s (its worker was killed) is marked
  FAIL by the next worker that opens the study, and queued to run again (`sweeps.retries`).
* Errors opening the storage raise StorageError naming the URL with its password hidden.

Several processes may share one study: Optuna's RDB storage arbitrates trial numbers and states
in the database, and nothing here caches around it.
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import sqlite3
import time
import warnings
from contextlib import contextmanager, nullcontext
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator, Optional

import optuna
import sqlalchemy
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url

from sweeps.journal_storage import JournalStorageWithHeartbeat
from sweeps.retries import requeue

SQLITE_TIMEOUT_S = 60  # how long a connection waits for a lock before "database is locked"
CONNECT_TIMEOUT_S = 5  # network databases: give up connecting after this long
HEARTBEAT_INTERVAL_S = 10  # a running trial's worker records a heartbeat this often ...
GRACE_PERIOD_S = 30  # ... and one silent this long is marked FAIL by the next worker to start
# Optuna's own directions: this module serves any study (a sweep's is checked by sweeps.config)
OPTUNA_DIRECTIONS = tuple(d.name.lower() for d in optuna.study.StudyDirection if d != optuna.study.StudyDirection.NOT_SET)
CREATE_ATTEMPTS = 5  # workers starting together on a new database race to create the tables


class StorageError(RuntimeError):
    """The storage cannot be opened or used; the message names the URL (password hidden) and why."""


class ClaimingRDBStorage(optuna.storages.RDBStorage):
    """Optuna's RDBStorage, with a queued (WAITING) trial claimed by one conditional UPDATE.

    A worker takes a queued trial (a retry, the baseline) by reading that it is WAITING and then
    setting it RUNNING; Optuna guards the pair with SELECT ... FOR UPDATE, which SQLite ignores, so
    two workers that read together both got the trial and trained it twice. `UPDATE ... WHERE
    state = 'WAITING'` changes the row for one worker only, in any database; the others see no row
    changed and move on, as Optuna's queue expects (False, or UpdateFinishedTrialError)."""

    def set_trial_state_values(self, trial_id: int, state: optuna.trial.TrialState,
                               values: Optional[Any] = None) -> bool:
        if state != optuna.trial.TrialState.RUNNING or values is not None:
            return super().set_trial_state_values(trial_id, state, values)
        with self.engine.begin() as conn:
            claimed = conn.execute(
                sqlalchemy.text("UPDATE trials SET state = 'RUNNING', datetime_start = :now "
                                "WHERE trial_id = :trial_id AND state = 'WAITING'"),
                {"now": datetime.now(), "trial_id": trial_id}).rowcount == 1
        # not claimed: Optuna's own answer for a trial another worker runs (False) or finished (raises)
        return claimed or super().set_trial_state_values(trial_id, state, values)


def _parse_url(url: str) -> Optional[URL]:
    try:
        return make_url(url)
    except Exception:  # malformed: handled by the caller
        return None


def _secrets(url: str) -> list[str]:
    """The password of `url` in every form it may appear in a message (raw, percent-encoded)."""
    found: list[str] = []
    parsed = _parse_url(url)
    if parsed is not None and parsed.password:
        found.append(str(parsed.password))
    # the raw text between "user:" and "@", also in URLs make_url cannot parse
    at = url.rfind("@")
    if at >= 0:
        userinfo = url[:at].rsplit("/", 1)[-1]
        if ":" in userinfo and userinfo.split(":", 1)[1]:
            found.append(userinfo.split(":", 1)[1])
    return sorted(set(found), key=len, reverse=True)


def _scrub(text: str, url: str) -> str:
    for secret in _secrets(url):
        text = text.replace(secret, "***")
    return text


MIN_BARE_SECRET = 4  # a shorter password is replaced only where the whole URL stands: "1" is in "12"


def scrub_password_from_files(paths, url: str) -> list[Path]:
    """Replace the password of `url` with *** in each existing file of `paths` (the configs Hydra
    saves under `.hydra/`), each rewritten atomically; returns the files that held it."""
    secrets = [s for s in _secrets(url) if len(s) >= MIN_BARE_SECRET]
    changed = []
    for path in map(Path, paths):
        if not _secrets(url) or not path.is_file():
            continue
        text = path.read_text()
        scrubbed = text.replace(url, redact_url(url))  # the URL as given: the password, and nothing else
        for secret in secrets:  # in any other form it was written in (quoted, escaped)
            scrubbed = scrubbed.replace(secret, "***")
        if scrubbed != text:
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(scrubbed)
            os.replace(tmp, path)
            changed.append(path)
    return changed


def redact_url(url: str) -> str:
    """`url` with its password replaced by ***."""
    parsed = _parse_url(url)
    if parsed is not None:
        return parsed.render_as_string(hide_password=True)
    return _scrub(url, url)


def dashboard_storage_arg(url: str) -> str:
    """What optuna-dashboard takes for the storage `url`: a journal's file path (it reads journal
    files given as paths), else the URL with its password hidden."""
    parsed = _parse_url(url)
    if parsed is not None and parsed.drivername == JOURNAL_SCHEME and parsed.database:
        return parsed.database
    return redact_url(url)


# the pip package of each driver module SQLAlchemy imports for a URL's dialect
DRIVER_PACKAGES = {"MySQLdb": "mysqlclient", "psycopg2": "psycopg2-binary", "psycopg": "'psycopg[binary]'",
                   "pymysql": "pymysql", "mysql": "mysql-connector-python", "asyncpg": "asyncpg"}


def _reason(exc: BaseException, url: str) -> str:
    """A one-paragraph reason from an exception (the DB driver's own message when there is one)."""
    if not isinstance(exc, sqlalchemy.exc.SQLAlchemyError) and isinstance(exc.__cause__, sqlalchemy.exc.SQLAlchemyError):
        exc = exc.__cause__  # Optuna's StorageInternalError around the database's own error
    orig = getattr(exc, "orig", None)
    if orig is None and isinstance(exc, ImportError) and exc.__cause__ is not None:
        orig = exc.__cause__  # Optuna's ImportError around the missing driver's
    text = str(orig if orig is not None else exc).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith("(Background on this error")]
    reason = " ".join(lines[:3]) or type(exc).__name__
    missing = orig if isinstance(orig, ModuleNotFoundError) else exc
    if isinstance(missing, ModuleNotFoundError) and missing.name:
        package = DRIVER_PACKAGES.get(missing.name, missing.name)
        reason += (f"; the URL's database driver is not installed: pip install {package}, or name an "
                   f"installed driver in the URL (e.g. mysql+pymysql://... after pip install pymysql)")
    return _scrub(f"{type(orig if orig is not None else exc).__name__}: {reason}", url)


def _sqlite_file(url: URL) -> Optional[Path]:
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


@contextmanager
def _one_opener_at_a_time(url: URL) -> Iterator[None]:
    """For a SQLite file: an exclusive lock on `<file>.lock` while this process creates or opens
    the database and the study. Workers on one machine that start together would otherwise
    race to create the tables, and SQLite in WAL mode answers such a race with "database is
    locked" at once, without waiting out the busy timeout. Other databases: no lock."""
    path = _sqlite_file(url) if url.get_backend_name() == "sqlite" else None
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield


JOURNAL_SCHEME = "journal"


def _check_file_path(path: Path, create: bool) -> Optional[str]:
    """Why the SQLite or journal file cannot be opened as asked, or None. A relative path's folders are made
    (outputs/ on a first run); an absolute one needs its folder to exist, so a typo does not
    create folders elsewhere. `create=False`: the file must exist (reading never creates one)."""
    if not create and not path.is_file():
        return f"there is no database file {path}; run mode=sweep first, or give its study.storage URL"
    if path.is_absolute() and not path.parent.is_dir():
        return f"the folder {path.parent} does not exist; create it first, or use another path"
    return None


def _prepare_sqlite(path: Path) -> None:
    """Creates the parent directory and puts the database into WAL mode (persistent)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=SQLITE_TIMEOUT_S)
    try:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    finally:
        conn.close()
    if str(mode).lower() != "wal":
        warnings.warn(f"SQLite database {path} stays in journal mode {mode!r} (not WAL): readers such as "
                      f"optuna-dashboard may briefly block trials", RuntimeWarning, stacklevel=3)


def _on_sqlite_connect(dbapi_connection: Any, connection_record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_TIMEOUT_S * 1000}")
    finally:
        cursor.close()


def _with_installed_driver(url: URL) -> URL:
    """`postgresql://` means psycopg (3) to SQLAlchemy 2.1 but psycopg2 to 2.0; use whichever is
    installed (the project depends on psycopg, but an environment may hold only psycopg2)."""
    if url.drivername == "postgresql" and importlib.util.find_spec("psycopg") is None \
            and importlib.util.find_spec("psycopg2") is not None:
        return url.set(drivername="postgresql+psycopg2")
    return url


def _engine_kwargs(url: URL) -> dict[str, Any]:
    backend = url.get_backend_name()
    if backend == "sqlite":
        return {"connect_args": {"timeout": SQLITE_TIMEOUT_S}}
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if backend in ("postgresql", "mysql", "mariadb") and "connect_timeout" not in url.query:
        kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
    return kwargs


def _lost_creation_race(exc: BaseException) -> bool:
    """Whether `exc` comes from two workers creating Optuna's tables in a new database at once."""
    if isinstance(exc, sqlalchemy.exc.IntegrityError):
        return True
    return isinstance(exc, sqlalchemy.exc.SQLAlchemyError) and "already exists" in str(exc).lower()


def open_storage(url: str, heartbeat_interval: Optional[int] = HEARTBEAT_INTERVAL_S,
                 grace_period: Optional[int] = GRACE_PERIOD_S, create: bool = True) -> optuna.storages.BaseStorage:
    """An Optuna RDBStorage for the SQLAlchemy `url` (a journal storage for `journal:///...`);
    StorageError when it cannot be opened.
    `create=False` for readers: a SQLite file that does not exist is an error, not a new database."""
    redacted = redact_url(url)
    parsed = _parse_url(url)
    if parsed is None:
        raise StorageError(f"cannot open Optuna storage {redacted!r}: not a valid SQLAlchemy URL; "
                           f"e.g. sqlite:///outputs/optuna.db or postgresql://user@host:5432/db")
    if parsed.drivername == JOURNAL_SCHEME:
        return _open_journal(parsed, redacted, heartbeat_interval, grace_period, create)
    sqlite_path = _sqlite_file(parsed) if parsed.get_backend_name() == "sqlite" else None
    problem = _check_file_path(sqlite_path, create) if sqlite_path is not None else None
    if problem is not None:
        raise StorageError(f"cannot open Optuna storage {redacted!r}: {problem}")
    parsed = _with_installed_driver(parsed)
    message = None
    for attempt in range(CREATE_ATTEMPTS):
        try:
            with _one_opener_at_a_time(parsed):
                if sqlite_path is not None:
                    _prepare_sqlite(sqlite_path)
                with warnings.catch_warnings():  # heartbeat_interval is "experimental" in Optuna
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    storage = ClaimingRDBStorage(
                        parsed.render_as_string(hide_password=False),
                        engine_kwargs=_engine_kwargs(parsed),
                        heartbeat_interval=heartbeat_interval,
                        grace_period=grace_period,
                        heartbeat_stale_trial_callback=requeue,
                        skip_table_creation=not create,
                    )
            break
        except Exception as e:  # noqa: BLE001 - every failure becomes one clear, password-free error
            if attempt + 1 < CREATE_ATTEMPTS and _lost_creation_race(e):
                time.sleep(0.1 * (attempt + 1))  # another worker is creating the tables: use them
                continue
            message = f"cannot open Optuna storage {redacted!r}: {_reason(e, url)}"
            break
    if message is not None:  # raised outside the except block: no chained exception shows the URL
        raise StorageError(message)
    if parsed.get_backend_name() == "sqlite":
        # connections opened from now on (Optuna's RDBStorage owns the engine)
        event.listen(storage.engine, "connect", _on_sqlite_connect)
    return storage


def _open_journal(url: URL, redacted: str, heartbeat_interval: Optional[int], grace_period: Optional[int],
                  create: bool) -> JournalStorageWithHeartbeat:
    if not url.database or url.host or url.query:
        raise StorageError(f"cannot open Optuna storage {redacted!r}: a journal URL is journal:///relative/path.log "
                           f"or journal:////absolute/path.log, with no host or options")
    path = Path(url.database)
    problem = _check_file_path(path, create)
    if problem is not None:
        raise StorageError(f"cannot open Optuna storage {redacted!r}: {problem}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorageWithHeartbeat(str(path), heartbeat_interval, grace_period, requeue)
    except OSError as e:
        raise StorageError(f"cannot open Optuna storage {redacted!r}: {e.strerror or e}") from None


def create_or_load_study(study_cfg: Any, study_name: str, sampler: optuna.samplers.BaseSampler,
                         pruner: optuna.pruners.BasePruner, metric_name: Optional[str] = None) -> optuna.Study:
    """Creates the study `study_name` in `study_cfg.storage`, or loads it when it exists (several
    workers may call this at once); names its objective `metric_name` (what optuna-dashboard's
    charts call it) unless it already has a name; then fails the stale trials of killed workers."""
    direction = str(study_cfg.direction)
    if direction not in OPTUNA_DIRECTIONS:
        raise ValueError(f"study.direction={direction!r} is invalid; valid: {', '.join(OPTUNA_DIRECTIONS)}")
    storage = open_storage(
        study_cfg.storage,
        heartbeat_interval=study_cfg.heartbeat_interval,
        grace_period=study_cfg.grace_period,
    )
    message = None
    try:
        opening = (_one_opener_at_a_time(storage.engine.url) if isinstance(storage, optuna.storages.RDBStorage)
                   else nullcontext())  # the journal serialises its writers itself
        with opening:
            study = optuna.create_study(storage=storage, study_name=study_name, sampler=sampler, pruner=pruner,
                                        direction=direction, load_if_exists=True)
    except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as e:
        message = f"cannot create or load study {study_name!r} in {redact_url(study_cfg.storage)!r}: {_reason(e, study_cfg.storage)}"
    if message is not None:
        raise StorageError(message)
    existing = study.direction.name.lower()
    if existing != direction:
        raise ValueError(f"study {study_name!r} in {redact_url(study_cfg.storage)} was created to {existing}, "
                         f"not to {direction}: set study.direction={existing} or pick another study.name")
    with warnings.catch_warnings():  # set_metric_names is "experimental"; fail_stale_trials a no-op without heartbeats
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if metric_name is not None and study.metric_names is None:
            study.set_metric_names([metric_name])
        optuna.storages.fail_stale_trials(study)
    return study
