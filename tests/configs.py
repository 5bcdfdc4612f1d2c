"""Helpers the test modules share."""

from __future__ import annotations

from typing import Any

# a 1-layer, 32-wide GPT on the sample's UTF-8 bytes (a 320-wide head, not GPT-2's 50k): a trial
# is process start-up and a fraction of a second of real training
TINY = ["model.n_layer=1", "model.n_head=2", "model.n_embd=32", "model.block_size=32", "data.tokenizer=bytes",
        "model.vocab_size=320", "batch_size=4", "eval_iters=2", "schedule.max_iters=20", "eval_interval=5",
        "log_interval=5"]
# TINY with GPT-2's tokens: ~30 ms an iteration and a 19 MB checkpoint, for tests that signal or kill
# a process mid-trial (a byte-level trial can end between two polls) or need a checkpoint that size
TINY_GPT2 = [o for o in TINY if not o.startswith(("data.tokenizer=", "model.vocab_size="))]


def with_overrides(cfg: Any, overrides: dict[str, Any]) -> Any:
    """Sets dotted keys (`"schedule.max_iters": 20`) on a nested config dataclass; returns it."""
    for key, value in overrides.items():
        target = cfg
        *path, last = key.split(".")
        for part in path:
            target = getattr(target, part)
        setattr(target, last, value)
    return cfg
