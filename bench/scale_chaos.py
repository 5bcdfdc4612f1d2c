"""Chaos: workers on one study killed with SIGKILL at random and restarted; is anything lost?

    python bench/scale_chaos.py --trials 40 --kills 20 --json bench/results/scale_chaos.json
    python bench/scale_chaos.py --trials 8 --kills 3 --json /tmp/chaos_small.json   # a quick try

What a user on a cluster faces: `--workers` independent `python study_runner.py` processes on one
SQLite study (as a Kubernetes Indexed Job's pods or a SLURM array's tasks, `--storage` for
another URL), each restarted at once after it is killed, as such a scheduler restarts a failed
task. (`study.workers=N` is not used: its parent does not restart a dead worker, it reports it at
the end; a user then runs the command again, which the last step below also does.) Every few
seconds (uniform in --gap) a random worker among those training a trial at that moment (holding
its run dir's train.log open; a moment when none is, all starting up or between trials, kills
none) gets SIGKILL: no handler runs, its trial stays RUNNING until its heartbeat is
`--grace` s old; then the next worker to start a trial marks it FAIL and queues it again, and
the retry continues the attempt's last checkpoint (sweeps.trial_resume). Trials are
`bench.scale_study.SHORT_TRIAL` (40 iterations, a checkpoint every 10, every iteration logged)
with the heartbeat every --heartbeat s, so a short study sees many kills.

When the kills are done the workers run to the end. Workers that exit while a killed trial
still counts as RUNNING leave the study short, and say to run the command again once its
heartbeat is stale: the script does so (`reruns`), as a user would. The result is read from the
stored study (`bench.scale_study.check_study`: finished trials, duplicated and lost series,
every COMPLETE curve whole) and from each killed trial: it must be FAIL, its retry must record
`resumed_from` that trial (when it had a checkpoint when it was killed), and the tokens it trained
past that checkpoint, the ones the retry trains again, are counted from its metrics.jsonl (the
last iteration logged before the kill; the iteration cut short by the kill is not counted).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import signal
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.provenance import provenance  # noqa: E402
from bench.scale_study import (SHORT_TRIAL, SHORT_TRIAL_EVAL_ITERS, SHORT_TRIAL_TOKENS_PER_ITER, Worker,  # noqa: E402
                               check_study, machine_load, runner_args, trained_iters, wait_all, write_results)

def trial_number(run_dir: Path) -> int:
    return int(re.fullmatch(r"trial_(\d+)", run_dir.name).group(1))


def kill_one(workers: list[Worker], rng: random.Random, t0: float) -> dict | None:
    """SIGKILL a random worker among those training a trial now, and restart it; what was
    killed, or None when none is training at this moment (starting up, between trials)."""
    busy = [(w, d) for w in workers if (d := w.training()) is not None]
    if not busy:
        return None
    worker, run_dir = rng.choice(busy)
    had_checkpoint = (run_dir / "ckpt.pt").is_file()
    worker.proc.send_signal(signal.SIGKILL)
    worker.proc.wait()
    worker.start()
    return {"at_s": round(time.monotonic() - t0, 1), "worker": workers.index(worker),
            "trial": trial_number(run_dir), "run_dir": str(run_dir), "had_checkpoint": had_checkpoint}


def judge_kills(kills: list[dict], check: dict) -> list[dict]:
    """Each kill as the stored study and the killed run's metrics.jsonl tell it."""
    attempts = {k["number"]: k for k in check["killed_attempts"]}
    judged = []
    for kill in kills:
        attempt = attempts.get(kill["trial"])
        iters = trained_iters(Path(kill["run_dir"]))
        resumed = attempt["resumed_from"] if attempt else None
        resumed_ok = resumed is not None and resumed.get("trial") == kill["trial"]
        start_iter = resumed["step"] // SHORT_TRIAL_TOKENS_PER_ITER if resumed_ok else 0
        last_iter = max(iters) if iters else 0
        judged.append({**kill, "failed_and_retried": attempt is not None and attempt["retry"] is not None,
                       "retry": attempt["retry"] if attempt else None, "resumed_from": resumed,
                       "resumed_from_it": resumed_ok, "last_iter_trained": last_iter,
                       "tokens_recomputed": max(0, last_iter - start_iter) * SHORT_TRIAL_TOKENS_PER_ITER})
    return judged


def judged_record(storage: str, name: str, n_trials: int, kills: list[dict]) -> dict:
    """The stored study's check, each kill judged, and the summary of both."""
    expected_steps = [i * SHORT_TRIAL_TOKENS_PER_ITER for i in SHORT_TRIAL_EVAL_ITERS]
    check = check_study(storage, name, n_trials, expected_steps)
    judged = judge_kills(kills, check)
    retried = [k for k in judged if k["retry"] is not None]
    resumable = [k for k in retried if k["had_checkpoint"]]
    resumed = [k["tokens_recomputed"] for k in resumable if k["resumed_from_it"]]
    from_scratch = [k["tokens_recomputed"] for k in retried if not k["had_checkpoint"]]
    return {"study_check": check, "summary": {
        "finished": check["finished"], "reached_n_trials": check["reached_n_trials"],
        "overshoot": check["overshoot"], "duplicated": len(check["duplicated_series"]),
        "given_up": len(check["lost_series"]), "unfinished": len(check["unfinished"]),
        "short_curves": len(check["short_curves"]),
        "kills": len(judged), "killed_trials_failed": sum(k["trial"] in {a["number"] for a in check["killed_attempts"]}
                                                          for k in judged),
        "kills_retried": len(retried), "kills_not_retried": len(judged) - len(retried),
        "kills_with_checkpoint_retried": len(resumable), "of_those_resumed_from_it": len(resumed),
        "kills_before_first_checkpoint_retried": len(from_scratch),
        "tokens_recomputed_per_resumed_kill": resumed,
        "tokens_recomputed_per_resumed_kill_mean": round(statistics.mean(resumed), 1) if resumed else None,
        "tokens_recomputed_per_resumed_kill_max": max(resumed) if resumed else None,
        "tokens_per_checkpoint_interval": 10 * SHORT_TRIAL_TOKENS_PER_ITER,
        "tokens_retrained_per_kill_before_first_checkpoint_mean":
            round(statistics.mean(from_scratch), 1) if from_scratch else None,
    }, "kill_log": judged}


def rejudge(path: Path) -> int:
    """Judge a finished run's study (still in its --workdir) again, into its JSON."""
    record = json.loads(path.read_text())
    kills = [{k: kill[k] for k in ("at_s", "worker", "trial", "run_dir", "had_checkpoint")} for kill in record["kill_log"]]
    record.update(judged_record(record["storage_url"], record["study"], record["n_trials"], kills))
    record["rejudged"] = {**provenance("bench/scale_chaos.py"), "note": "summary recomputed from the stored study"}
    write_results(path, record)
    print(record["summary"])
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=40)
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--gap", type=float, nargs=2, default=(6.0, 18.0), metavar=("MIN", "MAX"),
                   help="seconds between kills, uniform")
    p.add_argument("--heartbeat", type=int, default=2, help="study.heartbeat_interval")
    p.add_argument("--grace", type=int, default=10, help="study.grace_period")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/scale_chaos"))
    p.add_argument("--cache-dir", type=Path, default=Path("/tmp/scale_cache"))
    p.add_argument("--storage", default=None, help="default: a SQLite file in --workdir")
    p.add_argument("--json", type=Path, required=True)
    p.add_argument("--rejudge", action="store_true", help="only judge the run that wrote --json again")
    a = p.parse_args()
    if a.rejudge:
        return rejudge(a.json)

    record = {**provenance("bench/scale_chaos.py"), "uptime_at_start": machine_load()}
    shutil.rmtree(a.workdir, ignore_errors=True)
    a.workdir.mkdir(parents=True)
    storage = a.storage or f"sqlite:///{a.workdir / 'study.db'}"
    name = f"chaos_{int(time.time())}"
    args = runner_args(storage, name, a.trials, a.cache_dir,
                       (*SHORT_TRIAL, f"study.heartbeat_interval={a.heartbeat}", f"study.grace_period={a.grace}"))
    workers = [Worker(args, a.workdir, a.workdir / f"worker_{i}.log") for i in range(a.workers)]
    rng = random.Random(a.seed)
    t0 = time.monotonic()
    for w in workers:
        w.start()
    kills, idle_moments = [], 0
    while len(kills) < a.kills and any(w.alive() for w in workers):
        time.sleep(rng.uniform(*a.gap))
        kill = kill_one(workers, rng, t0)
        if kill is None:
            idle_moments += 1
            continue
        kills.append(kill)
        print(f"{kill['at_s']:7.1f} s  kill {len(kills)}: worker {kill['worker']}, trial {kill['trial']}"
              f"{'' if kill['had_checkpoint'] else ' (before its first checkpoint)'}", flush=True)
    kills_done_s = time.monotonic() - t0
    wait_all(workers, timeout=1800)
    reruns = 0
    while check_study(storage, name, a.trials)["finished"] < a.trials and reruns < 3:
        time.sleep(a.grace + 2 * a.heartbeat)  # the killed trials' heartbeats go stale
        reruns += 1
        again = Worker(args, a.workdir, a.workdir / f"rerun_{reruns}.log")
        again.start()
        again.proc.wait(timeout=1800)
    wall_s = time.monotonic() - t0

    exits = [w.proc.returncode for w in workers]
    record.update({
        "uptime_at_end": machine_load(), "storage_url": storage, "study": name,
        "trial_overrides": list(SHORT_TRIAL), "tokens_per_iter": SHORT_TRIAL_TOKENS_PER_ITER,
        "workers": a.workers, "n_trials": a.trials, "heartbeat_interval_s": a.heartbeat, "grace_period_s": a.grace,
        "kill_gap_s": list(a.gap), "wall_s": round(wall_s, 1), "kills_done_s": round(kills_done_s, 1),
        "kills_asked": a.kills, "kills": len(kills), "moments_no_worker_was_training": idle_moments,
        "worker_starts": sum(w.starts for w in workers), "worker_exit_codes": exits, "reruns": reruns,
    })
    record.update(judged_record(storage, name, a.trials, kills))
    write_results(a.json, record)
    print(record["summary"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
