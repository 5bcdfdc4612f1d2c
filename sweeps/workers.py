"""`study.workers=N` (or `auto`: one per visible GPU, else 1): N worker processes on this machine
on one study, each pinned to its own GPU.

The parent checks everything and creates the study and the data cache first (as a sweep does), so
no worker fails on a bad setting or tokenizes the data again. Each worker is `python -m
sweeps.workers` with the same command line and `study.workers=1`: an ordinary worker on the shared
study (trials asynchronous, numbers from the storage, `study.n_trials` shared), with
`CUDA_VISIBLE_DEVICES` set to its GPU, or on CPU an equal share of the cores as torch threads. Its
console goes to `outputs/studies/NAME/workers/worker_N.log`; the parent shows the study's progress
bar and each finished trial's line. Ctrl-C or SIGTERM reaches the parent only (each worker runs in
a session of its own), which passes one SIGINT to every worker: each records its running trial
interrupted and queued again, as a single worker does, and exits.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Optional

import optuna
import torch
from omegaconf import DictConfig

from sweeps.compose import compose_study_config, override_key, study_dir_of
from sweeps.config import StudyError
from sweeps.console import StudyProgress, say, trial_line
from sweeps.sweep import prepare_study

POLL_S = 2.0  # how often the parent reads the study for its progress line
STOP_WAIT_S = 120  # how long interrupted workers get to record their trials before they are killed


def worker_count(value: object, visible_gpus: Optional[int] = None) -> int:
    """`study.workers` as a number: `auto` is one per visible GPU (1 without one)."""
    gpus = torch.cuda.device_count() if visible_gpus is None else visible_gpus
    if str(value) == "auto":
        return max(gpus, 1)
    try:
        n = int(str(value))
    except ValueError:
        n = 0
    if n < 1:
        raise StudyError(f"study.workers={value!r} is invalid: a positive integer, or auto (one per visible GPU)")
    return n


def _worker_env(index: int, n: int, gpus: int) -> dict:
    env = dict(os.environ)
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = str(index % gpus)  # more workers than GPUs share them in turn
    else:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // n))  # the cores, shared out
    return env


def _interrupt(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    deadline = time.time() + STOP_WAIT_S
    for proc in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            proc.kill()


def run_workers(cfg: DictConfig, overrides: list[str]) -> optuna.Study:
    """Run the study with `study.workers` processes here; returns it when every worker has ended."""
    n = worker_count(cfg.study.workers)
    prepared = prepare_study(cfg, overrides)
    study = prepared.study
    folder = study_dir_of(cfg) / "workers"
    folder.mkdir(parents=True, exist_ok=True)
    gpus = torch.cuda.device_count()
    args = [o for o in overrides if override_key(o) != "study.workers"] + ["study.workers=1"]
    procs = []
    for i in range(n):
        with open(folder / f"worker_{i}.log", "w") as log:
            procs.append(subprocess.Popen([sys.executable, "-m", "sweeps.workers", *args], stdout=log,
                                          stderr=subprocess.STDOUT, env=_worker_env(i, n, gpus),
                                          start_new_session=True))
    pinned = f", one GPU each of {gpus}" if gpus else f", {max(1, (os.cpu_count() or 1) // n)} threads each"
    say(f"{n} workers on study {study.study_name!r}{pinned}; their logs: {folder}/")
    progress = StudyProgress(study, cfg.study.n_trials)
    seen = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
    try:
        while any(proc.poll() is None for proc in procs):
            time.sleep(POLL_S)
            for trial in study.get_trials(deepcopy=False):
                if trial.state.is_finished() and trial.number not in seen:
                    seen.add(trial.number)
                    say(trial_line(trial))
            progress.update(study)
    except KeyboardInterrupt:
        progress.close()
        say(f"\ninterrupted: each worker marks its running trial FAIL and queues it to run again; "
            f"run the same command to resume study {study.study_name!r}")
        _interrupt(procs)
        raise
    progress.close()
    failed = [(i, p.returncode) for i, p in enumerate(procs) if p.returncode != 0]
    if failed:
        raise StudyError(f"worker(s) {', '.join(f'{i} (exit {code})' for i, code in failed)} failed; "
                         f"see {folder}/worker_N.log")
    from sweeps.report import report_at_end_of_sweep, study_report  # matplotlib and scikit-learn: at the end only

    say(study_report(study))
    report_at_end_of_sweep(study, study_dir_of(cfg), long_run_iters=cfg.plan.long_run_iters)
    return study


def main(argv: list[str]) -> int:
    """One worker: `python -m sweeps.workers OVERRIDES...` (what run_workers starts)."""
    from sweeps.runner import run  # here: the runner imports this module
    from trainer import Interrupted

    try:
        run(compose_study_config(argv), argv)
    except Interrupted as e:
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
