"""Run a study (`mode=sweep`, sweeps.sweep) or re-run its best trial as a long, resumable run
(`mode=best`, sweeps.best_run); SIGTERM and SIGINT stop either as Ctrl-C does."""

from __future__ import annotations

import signal
from typing import Optional

from omegaconf import DictConfig

from sweeps.best_run import run_best
from sweeps.config import MODES, StudyError
from sweeps.sweep import run_sweep

RUN_MODE = {"sweep": run_sweep, "best": run_best}


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def run(cfg: DictConfig, overrides: list[str]) -> Optional[object]:
    if cfg.mode not in RUN_MODE:
        raise StudyError(f"mode={cfg.mode!r} is invalid: valid: {', '.join(MODES)}")
    # SIGTERM (kill, a scheduler's stop) interrupts either mode as Ctrl-C does; SIGINT is handled
    # even where it arrives ignored (a background job of a non-interactive shell, nohup).
    previous_handlers = {sig: signal.signal(sig, _raise_keyboard_interrupt)
                         for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return RUN_MODE[cfg.mode](cfg, overrides)
    finally:
        for sig, handler in previous_handlers.items():
            signal.signal(sig, handler)
