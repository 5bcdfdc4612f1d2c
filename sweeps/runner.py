"""Run a study (`mode=sweep`, sweeps.sweep), re-run its best trial as a long, resumable run
(`mode=best`, sweeps.best_run), or print what a study will cost (`mode=plan`, sweeps.plan);
SIGTERM and SIGINT stop any of them as Ctrl-C does."""

from __future__ import annotations

from typing import Optional

from omegaconf import DictConfig

from sweeps.best_run import run_best
from sweeps.config import MODES, StudyError
from sweeps.plan import run_plan
from sweeps.sweep import run_sweep
from trainer import signals_interrupt

RUN_MODE = {"sweep": run_sweep, "best": run_best, "plan": run_plan}


def run(cfg: DictConfig, overrides: list[str]) -> Optional[object]:
    if cfg.mode not in RUN_MODE:
        raise StudyError(f"mode={cfg.mode!r} is invalid: valid: {', '.join(MODES)}")
    with signals_interrupt():  # a scheduler's SIGTERM interrupts either mode as Ctrl-C does
        return RUN_MODE[cfg.mode](cfg, overrides)
