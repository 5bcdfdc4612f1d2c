"""What the scale-out benchmarks share: worker processes started as a user starts them, and the
check of a finished study read from its storage.

A worker is `python study_runner.py +sweep=lr_warmup OVERRIDES` in a work folder (its outputs/
and the study's run dirs there), with its console in a log file and `OMP_NUM_THREADS=1`, the
share of this 2-core machine `study.workers=4` gives each of its workers (one thread at least).
The trial a worker is training is the run dir whose `train.log` it holds open (read from
/proc/PID/fd; Linux only): the stored study does not say which process runs which trial.

`check_study` judges a study only by what its storage holds. A series is a trial and its
retries (`retry_of`). Finished means COMPLETE or PRUNED. It counts:

* duplicated: series with more than one finished trial (one run trained and counted twice);
* lost: series with no finished trial whose trials trained (a FAIL trial other than the
  runner's "not run: ..." quota refusals), and trials still RUNNING or WAITING (with the
  attempts of each: a series killed MAX_RETRIES + 1 times is given up by design);
* short curves: COMPLETE trials whose evaluation steps are not exactly `expected_steps`;
* the killed attempts: FAIL trials without a fail reason (a stale heartbeat fails a killed
  worker's trial without one) and the retry that followed each, with its `resumed_from`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import optuna
from optuna.trial import FrozenTrial, TrialState

from sweeps import trial_record
from sweeps.retries import first_of_series

REPO = Path(__file__).resolve().parents[1]
RUNNER = REPO / "study_runner.py"

# A trial of a few seconds on this CPU: 40 iterations, evaluated (and checkpointed) every 10, each
# iteration logged so a killed attempt's metrics.jsonl says how far it trained.
SHORT_TRIAL = ["model.n_layer=1", "model.n_head=2", "model.n_embd=32", "model.block_size=32", "batch_size=4",
               "eval_iters=2", "schedule.max_iters=40", "eval_interval=10", "log_interval=1",
               "study.pruner.name=none"]
SHORT_TRIAL_TOKENS_PER_ITER = 4 * 32
SHORT_TRIAL_EVAL_ITERS = (0, 10, 20, 30, 40)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
QUOTA_REFUSAL = "not run:"  # sweeps.trial_quota's fail reason: a trial too many, never trained


def machine_load() -> str:
    """`uptime`'s line: the load other jobs put on the shared cores."""
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def runner_env(threads: int = 1) -> dict:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("TIKTOKEN_CACHE_DIR", str(REPO.parent / "shared" / "tiktoken_cache"))
    return env


def runner_args(storage: str, name: str, n_trials: int, cache_dir: Path, extra: tuple = ()) -> list[str]:
    return ["+sweep=lr_warmup", *extra, f"study.storage={storage}", f"study.name={name}",
            f"study.n_trials={n_trials}", f"data.cache_dir={cache_dir}"]


class Worker:
    """One `python study_runner.py ARGS` process in `workdir`, its console appended to `log`."""

    def __init__(self, args: list[str], workdir: Path, log: Path, threads: int = 1):
        self.args, self.workdir, self.log, self.threads = args, workdir, log, threads
        self.proc: Optional[subprocess.Popen] = None
        self.starts = 0

    def start(self) -> None:
        with open(self.log, "a") as out:
            self.proc = subprocess.Popen([sys.executable, str(RUNNER), *self.args], cwd=self.workdir,
                                         stdout=out, stderr=subprocess.STDOUT, env=runner_env(self.threads))
        self.starts += 1

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def training(self) -> Optional[Path]:
        """The run dir of the trial this worker trains now (the one whose train.log it holds open)."""
        if not self.alive():
            return None
        fd_dir = Path(f"/proc/{self.proc.pid}/fd")
        try:
            targets = [os.readlink(fd_dir / fd) for fd in os.listdir(fd_dir)]
        except OSError:  # it just ended
            return None
        logs = [Path(t) for t in targets if t.endswith("/train.log") and "/trial_" in t]
        return logs[0].parent if logs else None


def wait_all(workers: list[Worker], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for w in workers:
        if w.proc is not None:
            w.proc.wait(timeout=max(1.0, deadline - time.monotonic()))


def trained_iters(run_dir: Path) -> list[int]:
    """The iterations a run logged as trained (metrics.jsonl's train rows, log_interval=1)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by the kill
            continue
    return [int(r["iter"]) for r in rows if r.get("type") == "train"]


@dataclass(frozen=True)
class KilledAttempt:
    number: int
    reported_steps: int  # evaluations it reported before it was killed
    retry: Optional[int]  # the trial that ran it again
    resumed_from: Optional[dict]  # the retry's resumed_from user attr: {"trial": ..., "step": ...}


def _quota_refusal(trial: FrozenTrial) -> bool:
    return (trial_record.fail_reason(trial) or "").startswith(QUOTA_REFUSAL)


def check_study(storage: str, name: str, n_trials: int, expected_steps: Optional[list[int]] = None) -> dict:
    """What the stored study `name` says about lost and duplicated trials (see the module doc)."""
    trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    numbers = sorted(t.number for t in trials)
    by_series: dict[int, list[FrozenTrial]] = {}
    for t in sorted(trials, key=lambda t: t.number):
        by_series.setdefault(first_of_series(t), []).append(t)
    finished = [t for t in trials if t.state in FINISHED]
    duplicated = sorted(s for s, ts in by_series.items() if sum(t.state in FINISHED for t in ts) > 1)
    trained = {s: [t for t in ts if not (t.state == TrialState.FAIL and _quota_refusal(t))]
               for s, ts in by_series.items()}
    lost = sorted(s for s, ts in trained.items() if ts and not any(t.state in FINISHED for t in ts))
    killed = []
    for ts in by_series.values():
        for i, t in enumerate(ts):
            if t.state == TrialState.FAIL and trial_record.fail_reason(t) is None:
                retry = ts[i + 1] if i + 1 < len(ts) else None
                killed.append(KilledAttempt(t.number, len(t.intermediate_values),
                                            None if retry is None else retry.number,
                                            None if retry is None else trial_record.resumed_from(retry)))
    short_curves = sorted(t.number for t in trials if t.state == TrialState.COMPLETE and expected_steps is not None
                          and sorted(t.intermediate_values) != sorted(expected_steps))
    fail_reasons: dict[str, int] = {}
    for t in trials:
        if t.state == TrialState.FAIL:
            reason = trial_record.fail_reason(t) or "killed (stale heartbeat)"
            key = QUOTA_REFUSAL + " (quota)" if _quota_refusal(t) else reason.split(";")[0][:80]
            fail_reasons[key] = fail_reasons.get(key, 0) + 1
    return {
        "trials": len(trials),
        "states": {s.name: sum(t.state == s for t in trials) for s in TrialState if any(t.state == s for t in trials)},
        "finished": len(finished),
        "reached_n_trials": len(finished) == n_trials,
        "overshoot": max(0, len(finished) - n_trials),
        "numbers_contiguous": numbers == list(range(len(trials))),
        "duplicated_series": duplicated,
        "lost_series": lost,
        "lost_series_attempts": {s: len(trained[s]) for s in lost},
        "unfinished": sorted(t.number for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)),
        "short_curves": short_curves,
        "fail_reasons": fail_reasons,
        "killed_attempts": [k.__dict__ for k in killed],
    }


def write_results(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {path}")
