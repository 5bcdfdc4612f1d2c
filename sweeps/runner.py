"""Run a study (`mode=sweep`, sweeps.sweep), re-run its best trial as a long, resumable run
(`mode=best`, sweeps.best_run), write a stored study's report (`mode=report`, sweeps.report), or
print what a study will cost (`mode=plan`, sweeps.plan); SIGTERM and SIGINT stop any of them as
Ctrl-C does. With `launcher=slurm|local` the sweep's workers run as a job array instead
(sweeps.launch), with `study.workers=N` as N processes here (sweeps.workers)."""

from __future__ import annotations

from typing import Optional

from omegaconf import DictConfig

from sweeps.best_run import run_best
from sweeps.config import MODES, StudyError, check_launcher
from sweeps.launch import launch_workers
from sweeps.plan import run_plan
from sweeps.sweep import run_sweep
from sweeps.workers import run_workers, worker_count
from trainer import signals_interrupt

def run_report(cfg: DictConfig, overrides: list[str]):
    from sweeps.report import run_report as write  # matplotlib and scikit-learn: loaded for reports only

    return write(cfg, overrides)


RUN_MODE = {"sweep": run_sweep, "best": run_best, "report": run_report, "plan": run_plan}


def run(cfg: DictConfig, overrides: list[str]) -> Optional[object]:
    if cfg.mode not in RUN_MODE:
        raise StudyError(f"mode={cfg.mode!r} is invalid: valid: {', '.join(MODES)}")
    check_launcher(cfg.launcher, cfg.mode)
    with signals_interrupt():  # a scheduler's SIGTERM interrupts any mode as Ctrl-C does
        if cfg.launcher.name != "none":
            return launch_workers(cfg, overrides)
        if cfg.mode == "sweep" and worker_count(cfg.study.workers) > 1:
            return run_workers(cfg, overrides)
        return RUN_MODE[cfg.mode](cfg, overrides)
