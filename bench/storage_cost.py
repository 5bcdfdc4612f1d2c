"""Storage cost: seconds of storage time per trial with many workers, SQLite against PostgreSQL
against the journal file, so a user can pick one.

    python bench/storage_cost.py --json bench/results/storage_cost.json
    python bench/storage_cost.py --workers 4 --trials 3 --json /tmp/storage_cost_small.json

`--workers` processes (16 by default; processes, as real workers are, so the GIL of one does not
serialise them) each run `--trials` trials on one shared study that do nothing but the storage
calls, started together. Each storage is opened by `sweeps.storage.open_storage` as the runner
opens it (SQLite in WAL mode with its busy timeout, PostgreSQL with pre-ping, the journal file
with its lock; heartbeats every 10 s), and each trial runs inside `study.optimize`, so Optuna's
heartbeat thread and stale-trial check run as in a real worker. Two sets of calls per trial:

* `minimal`: ask (two suggest_float), 20 reports, 5 set_user_attr, tell;
* `runner`: what one of this project's trials writes (through `sweeps.trial_record`): its plan
  and run (the config as JSON), then 20 evaluations, each `EvalRecorder.record` (val SE, LR area,
  16 batch losses, each a user attr rewritten whole) and a report, then its outcome (11 attrs),
  tell.

It reports, per storage and set, the seconds per trial in a worker (the mean, median and 95th
percentile of each trial's wall time, all of it storage time) and the trials per second of all
workers together. The PostgreSQL study is deleted afterwards; SQLite and journal files are made in
--workdir.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import optuna  # noqa: E402

from bench.provenance import provenance  # noqa: E402
from bench.scale_study import machine_load, write_results  # noqa: E402
from sweeps import trial_record  # noqa: E402
from sweeps.storage import open_storage  # noqa: E402

EVALS = 20
BATCH_LOSSES = 16
CONFIG_JSON = json.dumps({f"key_{i}": f"value_{i}" for i in range(60)})  # about a TrainConfig's size


def minimal_trial(trial: optuna.Trial) -> float:
    lr = trial.suggest_float("lr", 1e-4, 1e-2, log=True)
    trial.suggest_float("warmup", 0.0, 0.3)
    for i in range(EVALS):
        trial.report(1.0 / (i + 1), i)
    for i in range(5):
        trial.set_user_attr(f"attr_{i}", i)
    return lr


def runner_trial(trial: optuna.Trial) -> float:
    lr = trial.suggest_float("lr", 1e-4, 1e-2, log=True)
    trial.suggest_float("warmup", 0.0, 0.3)
    trial_record.set_plan(trial, warmup_step=100, budget_step=EVALS * 1000, lr_area_budget=1.0)
    trial_record.set_run(trial, run_dir=f"outputs/trial_{trial.number:04d}", config=CONFIG_JSON)
    evals = trial_record.EvalRecorder(trial)
    for i in range(EVALS):
        evals.record(i * 1000, val_loss_se=0.01, lr_area=lr * i,
                     batch_losses=[round(6.0 + j / 100, 5) for j in range(BATCH_LOSSES)], val_batches="val:seed")
        trial.report(1.0 / (i + 1), i * 1000)
    trial_record.record_outcome(trial, status="completed", stop_reason="completed its budget", num_params=1,
                                num_params_non_embedding=1, tokens_seen=EVALS * 1000, epochs=0.1, ms_per_iter=1.0,
                                train_val_gap=0.1, best_iter=EVALS, wall_time_s=1.0, checkpoint=None)
    return lr


OBJECTIVES = {"minimal": minimal_trial, "runner": runner_trial}


def worker(url: str, name: str, calls: str, trials: int, ready, start, out) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=name, storage=open_storage(url), sampler=optuna.samplers.RandomSampler(),
                              pruner=optuna.pruners.NopPruner())
    times, errors = [], []
    ready.put(True)
    start.wait()
    for _ in range(trials):
        t0 = time.perf_counter()
        try:
            study.optimize(OBJECTIVES[calls], n_trials=1)
        except Exception as e:  # noqa: BLE001 - counted, the others go on
            errors.append(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:200])
        times.append(time.perf_counter() - t0)
    out.put({"times": times, "errors": errors})


def measure(url: str, name: str, calls: str, workers: int, trials: int) -> dict:
    optuna.create_study(study_name=name, storage=open_storage(url))
    ctx = mp.get_context("spawn")
    ready, start, out = ctx.Queue(), ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=worker, args=(url, name, calls, trials, ready, start, out)) for _ in range(workers)]
    for p in procs:
        p.start()
    for _ in procs:  # every worker has opened the study
        ready.get(timeout=600)
    t0 = time.perf_counter()
    start.set()
    results = [out.get(timeout=1800) for _ in procs]
    wall = time.perf_counter() - t0
    for p in procs:
        p.join()
    times = sorted(t for r in results for t in r["times"])
    stored = optuna.load_study(study_name=name, storage=open_storage(url)).get_trials(deepcopy=False)
    return {"workers": workers, "trials_per_worker": trials, "wall_s": round(wall, 2),
            "s_per_trial_mean": round(statistics.mean(times), 4), "s_per_trial_median": round(statistics.median(times), 4),
            "s_per_trial_p95": round(times[int(0.95 * (len(times) - 1))], 4),
            "trials_per_s_all_workers": round(len(times) / wall, 2),
            "errors": [e for r in results for e in r["errors"]],
            "stored_complete": sum(t.state == optuna.trial.TrialState.COMPLETE for t in stored)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=16)
    p.add_argument("--trials", type=int, default=10, help="trials per worker")
    p.add_argument("--storages", nargs="+", default=["sqlite", "postgresql", "journal"])
    p.add_argument("--calls", nargs="+", default=["minimal", "runner"], choices=sorted(OBJECTIVES))
    p.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/storage_cost"))
    p.add_argument("--json", type=Path, required=True)
    a = p.parse_args()
    record = {**provenance("bench/storage_cost.py"), "uptime_at_start": machine_load(), "results": []}
    shutil.rmtree(a.workdir, ignore_errors=True)
    a.workdir.mkdir(parents=True)
    stamp = int(time.time())
    for calls in a.calls:
        for kind in a.storages:
            url = {"sqlite": f"sqlite:///{a.workdir / f'{calls}.db'}", "postgresql": a.postgres,
                   "journal": f"journal:///{a.workdir / f'{calls}.log'}"}[kind]
            name = f"storage_cost_{calls}_{stamp}"
            row = {"storage": kind, "calls": calls, "uptime": machine_load(),
                   **measure(url, name, calls, a.workers, a.trials)}
            if kind == "postgresql":
                optuna.delete_study(study_name=name, storage=open_storage(url))
            print(json.dumps(row), flush=True)
            record["results"].append(row)
    record["uptime_at_end"] = machine_load()
    write_results(a.json, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
