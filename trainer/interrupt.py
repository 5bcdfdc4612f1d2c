"""SIGINT and SIGTERM as an exception where the run is, so it stops cleanly (checkpoints are
written atomically, so the last one is intact) and the process exits as shells expect."""

from __future__ import annotations

import signal
from contextlib import contextmanager
from typing import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM; `exit_code` is 128 + the signal (130, 143), as shells and schedulers expect."""

    def __init__(self, signum: int):
        super().__init__(f"{signal.Signals(signum).name}")
        self.signum = signum
        self.exit_code = 128 + signum


def _raise(signum, frame):
    raise Interrupted(signum)


@contextmanager
def signals_interrupt() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise Interrupted, SIGINT even where it arrived
    ignored (a background job of a non-interactive shell, nohup); the old handlers come back after."""
    previous = {sig: signal.signal(sig, _raise) for sig in SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
