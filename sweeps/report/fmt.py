"""How the report writes numbers: token counts, params, shares."""

from __future__ import annotations

from typing import Any, Mapping


def tokens(n: float) -> str:
    """A token count in short form: 950, 12.3K, 4.56M, 1.2B."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:.0f}"


def value(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def params(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={value(v)}" for k, v in values.items())


def share(x: float) -> str:
    return f"{x:.0%}" if x >= 0.1 else f"{x:.1%}"
