"""Trials per hour with `study.workers` = 1, 2 and 4 on this machine's CPU, the same study each.

    python bench/workers_throughput.py --json bench/results/workers_throughput.json

For each worker count, `python study_runner.py +sweep=lr_warmup OVERRIDES study.workers=W` in a
fresh folder (its own SQLite study; the data cache shared: give a warm --cache-dir, else the
first run also tokenizes the sample), timed from start to exit, after which the study must hold --trials COMPLETE trials.
OVERRIDES are those of results/workers_throughput.txt (a 2-layer, 64-wide GPT, 150 iterations,
no pruning), so the numbers extend that file's 1 against 2. With one worker torch uses every
core in the one process; with W workers each gets OMP_NUM_THREADS = cores // W (at least 1).
`--rounds` repeats the whole sequence, so a change of the machine's load shows.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.provenance import provenance  # noqa: E402
from bench.scale_study import RUNNER, check_study, machine_load, runner_args, runner_env, write_results  # noqa: E402

THROUGHPUT_TRIAL = ["model.n_layer=2", "model.n_head=2", "model.n_embd=64", "model.block_size=64", "batch_size=8",
                    "eval_iters=4", "schedule.max_iters=150", "eval_interval=25", "study.pruner.name=none"]


def timed_study(workdir: Path, workers: int, trials: int, cache_dir: Path, threads: int, extra: list[str]) -> dict:
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    url, name = f"sqlite:///{workdir / 'study.db'}", "throughput"
    args = runner_args(url, name, trials, cache_dir, (*THROUGHPUT_TRIAL, *extra, f"study.workers={workers}"))
    load = machine_load()
    t0 = time.monotonic()
    with open(workdir / "runner.log", "w") as log:
        code = subprocess.run([sys.executable, str(RUNNER), *args], cwd=workdir, stdout=log,
                              stderr=subprocess.STDOUT, env=runner_env(threads), timeout=3600).returncode
    wall = time.monotonic() - t0
    check = check_study(url, name, trials)
    return {"workers": workers, "uptime_before": load, "exit_code": code, "wall_s": round(wall, 1),
            "complete": check["states"].get("COMPLETE", 0), "states": check["states"],
            "trials_per_hour": round(check["states"].get("COMPLETE", 0) / wall * 3600, 1)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--trials", type=int, default=6)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of the one-worker run (the cores)")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/workers_throughput"))
    p.add_argument("--cache-dir", type=Path, default=Path("/tmp/scale_cache"))
    p.add_argument("--extra", nargs="*", default=[], help="overrides after the trial's (e.g. a shorter schedule.max_iters)")
    p.add_argument("--json", type=Path, required=True)
    a = p.parse_args()
    record = {**provenance("bench/workers_throughput.py"), "uptime_at_start": machine_load(),
              "trial_overrides": [*THROUGHPUT_TRIAL, *a.extra], "n_trials": a.trials, "runs": []}
    for r in range(a.rounds):
        for w in a.workers:
            run = {"round": r, **timed_study(a.workdir / f"w{w}", w, a.trials, a.cache_dir, a.threads, a.extra)}
            print(run, flush=True)
            record["runs"].append(run)
    one = [x["wall_s"] for x in record["runs"] if x["workers"] == 1]
    record["speedup_over_1_worker"] = {
        str(w): round(sum(one) / sum(x["wall_s"] for x in record["runs"] if x["workers"] == w), 3)
        for w in a.workers} if one else None
    record["uptime_at_end"] = machine_load()
    write_results(a.json, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
