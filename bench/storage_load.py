"""A study under load: `study.workers=4` on SQLite with a live optuna-dashboard polled, or on
PostgreSQL; counts "database is locked" errors, failed, lost and duplicated trials.

    python bench/storage_load.py sqlite --trials 100 --json bench/results/storage_load_sqlite.json
    python bench/storage_load.py postgresql --trials 100 --json bench/results/storage_load_postgresql.json
    python bench/storage_load.py sqlite --trials 8 --json /tmp/load_small.json   # a quick try

Runs `python study_runner.py +sweep=lr_warmup study.workers=4 ...` as a user does (the parent
reads the study every 2 s for its progress line; the four workers share it), with trials of a
few seconds (20 iterations, an evaluation every 5, the default plateau pruner, which reads the
study at every evaluation), so the storage sees many writes a second. With `sqlite`, a real
`optuna-dashboard` serves the same file, and a poller asks it every --poll s for the study list
and all trials (GET /api/studies, /api/studies/ID?after=0, what the dashboard's page polls;
`after=0` makes it read every trial each time). Counted afterwards: "database is locked" in the
workers' and the parent's console and every trial's train.log and in the dashboard's output,
the poller's failed requests, and from the stored study (`bench.scale_study.check_study`) the
failed trials, lost and duplicated series and unfinished trials. The runner's "not run: another
worker took the last one" refusals (a worker that asked for a trial as the last place was
taken) are FAIL by design and counted apart. The PostgreSQL study is deleted afterwards unless
--keep.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import optuna  # noqa: E402

from bench.provenance import provenance  # noqa: E402
from bench.scale_study import QUOTA_REFUSAL, check_study, machine_load, runner_args, runner_env, write_results  # noqa: E402

LOAD_TRIAL = ["model.n_layer=1", "model.n_head=2", "model.n_embd=32", "model.block_size=32", "batch_size=4",
              "eval_iters=2", "schedule.max_iters=20", "eval_interval=5", "log_interval=5"]
LOCKED = "database is locked"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DashboardPoller(threading.Thread):
    """Asks a dashboard at `base` for the study list and the study `name`'s trials every `poll` s."""

    def __init__(self, base: str, name: str, poll: float):
        super().__init__(daemon=True)
        self.base, self.name, self.poll = base, name, poll
        self.stop = threading.Event()
        self.requests, self.failures, self.seconds = 0, [], []

    def _get(self, path: str) -> object:
        t0 = time.perf_counter()
        self.requests += 1
        try:
            with urllib.request.urlopen(self.base + path, timeout=30) as r:
                body = json.loads(r.read())
        except Exception as e:  # noqa: BLE001 - every failed request is counted
            self.failures.append(f"{path}: {type(e).__name__}: {e}"[:300])
            return None
        self.seconds.append(time.perf_counter() - t0)
        return body

    def run(self) -> None:
        study_id = None
        while not self.stop.is_set():
            studies = self._get("/api/studies")
            if study_id is None and isinstance(studies, dict):
                study_id = next((s["study_id"] for s in studies.get("study_summaries", [])
                                 if s.get("study_name") == self.name), None)
            if study_id is not None:
                self._get(f"/api/studies/{study_id}?after=0")
            self.stop.wait(self.poll)


def wait_until_serving(base: str, timeout: float = 120.0) -> None:
    """Until the dashboard answers (its start-up is not what is measured)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(base + "/api/studies", timeout=10):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def count_locked(paths: list[Path]) -> dict:
    found = {}
    for path in paths:
        n = path.read_text(errors="replace").count(LOCKED) if path.is_file() else 0
        if n:
            found[str(path)] = n
    return found


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("storage", choices=["sqlite", "postgresql"])
    p.add_argument("--trials", type=int, default=100)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--poll", type=float, default=0.5, help="seconds between the dashboard poller's rounds")
    p.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/storage_load"))
    p.add_argument("--cache-dir", type=Path, default=Path("/tmp/scale_cache"))
    p.add_argument("--keep", action="store_true", help="keep the PostgreSQL study")
    p.add_argument("--json", type=Path, required=True)
    a = p.parse_args()

    record = {**provenance("bench/storage_load.py"), "uptime_at_start": machine_load()}
    shutil.rmtree(a.workdir, ignore_errors=True)
    a.workdir.mkdir(parents=True)
    name = f"load_{a.storage}_{int(time.time())}"
    url = f"sqlite:///{a.workdir / 'study.db'}" if a.storage == "sqlite" else a.postgres
    args = runner_args(url, name, a.trials, a.cache_dir, (*LOAD_TRIAL, f"study.workers={a.workers}"))
    dashboard = poller = None
    if a.storage == "sqlite":
        from sweeps.storage import open_storage
        open_storage(url)  # the file, in WAL mode, for the dashboard to open before the study exists
        port = free_port()
        with open(a.workdir / "dashboard.log", "w") as log:
            dashboard = subprocess.Popen(["optuna-dashboard", url, "--host", "127.0.0.1", "--port", str(port)],
                                         cwd=a.workdir, stdout=log, stderr=subprocess.STDOUT, env=runner_env(1))
        poller = DashboardPoller(f"http://127.0.0.1:{port}", name, a.poll)
        wait_until_serving(poller.base)
        poller.start()
    t0 = time.monotonic()
    with open(a.workdir / "runner.log", "w") as log:
        code = subprocess.run([sys.executable, str(Path(__file__).resolve().parents[1] / "study_runner.py"), *args],
                              cwd=a.workdir, stdout=log, stderr=subprocess.STDOUT, env=runner_env(2),
                              timeout=3600).returncode
    wall_s = time.monotonic() - t0
    if poller is not None:
        poller.stop.set()
        poller.join(timeout=60)
        dashboard.terminate()
        dashboard.wait(timeout=60)

    check = check_study(url, name, a.trials)
    study_dir = a.workdir / "outputs" / "studies" / name
    logs = [a.workdir / "runner.log", *sorted((study_dir / "workers").glob("worker_*.log")),
            *sorted(study_dir.glob("trial_*/train.log")), a.workdir / "dashboard.log"]
    locked = count_locked(logs)
    failed = {r: n for r, n in check["fail_reasons"].items() if not r.startswith(QUOTA_REFUSAL)}
    record.update({
        "uptime_at_end": machine_load(), "storage": a.storage, "study": name, "trial_overrides": LOAD_TRIAL,
        "workers": a.workers, "n_trials": a.trials, "runner_exit_code": code, "wall_s": round(wall_s, 1),
        "trials_per_hour": round(check["finished"] / wall_s * 3600, 1),
        "study_check": check,
        "dashboard": None if poller is None else {
            "poll_s": a.poll, "requests": poller.requests, "failed_requests": len(poller.failures),
            "failures": poller.failures[:20],
            "median_response_s": round(sorted(poller.seconds)[len(poller.seconds) // 2], 4) if poller.seconds else None,
            "max_response_s": round(max(poller.seconds), 4) if poller.seconds else None},
        "database_is_locked": locked,
        "summary": {"database_is_locked": sum(locked.values()), "failed_trials": sum(failed.values()),
                    "failed_reasons": failed, "quota_refusals": check["fail_reasons"].get(QUOTA_REFUSAL + " (quota)", 0),
                    "finished": check["finished"], "reached_n_trials": check["reached_n_trials"],
                    "duplicated": len(check["duplicated_series"]), "lost": len(check["lost_series"]),
                    "unfinished": len(check["unfinished"]), "overshoot": check["overshoot"],
                    "dashboard_failed_requests": None if poller is None else len(poller.failures)},
    })
    if a.storage == "postgresql" and not a.keep:
        optuna.delete_study(study_name=name, storage=url)
    write_results(a.json, record)
    print(record["summary"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
