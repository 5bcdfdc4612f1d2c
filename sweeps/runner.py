"""Run a study (`mode=sweep`, sweeps.sweep) or re-run its best trial as a long, resumable run
(`mode=best`, sweeps.best_run); SIGTERM and SIGINT stop either as Ctrl-C does."""

from __future__ import annotations

from typing import Optional

from omegaconf import DictConfig

from sweeps.best_run import run_best
from sweeps.config import MODES, StudyError
from sweeps.sweep import run_sweep
from trainer import signals_interrupt

RUN_MODE = {"sweep": run_sweep, "best": run_best}


def run(cfg: DictConfig, overrides: list[str]) -> Optional[object]:
    if cfg.mode not in RUN_MODE:
        raise StudyError(f"mode={cfg.mode!r} is invalid: valid: {', '.join(MODES)}")
    with signals_interrupt():  # a scheduler's SIGTERM interrupts either mode as Ctrl-C does
        return RUN_MODE[cfg.mode](cfg, overrides)
