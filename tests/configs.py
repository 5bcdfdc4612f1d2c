"""Helpers the test modules share."""

from __future__ import annotations

from typing import Any


def with_overrides(cfg: Any, overrides: dict[str, Any]) -> Any:
    """Sets dotted keys (`"schedule.max_iters": 20`) on a nested config dataclass; returns it."""
    for key, value in overrides.items():
        target = cfg
        *path, last = key.split(".")
        for part in path:
            target = getattr(target, part)
        setattr(target, last, value)
    return cfg
