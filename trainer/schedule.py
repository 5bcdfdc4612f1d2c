"""Learning-rate schedules, in plain Python floats: the one place the LR at an iteration is computed."""

from __future__ import annotations

import math

from trainer.config import SCHEDULE_NAMES, ScheduleConfig


def min_lr_of(cfg: ScheduleConfig) -> float:
    """min_lr as configured, or lr * min_lr_ratio when the ratio is set (how sweeps search it,
    so a sampled min_lr can never exceed lr)."""
    return cfg.lr * cfg.min_lr_ratio if cfg.min_lr_ratio is not None else cfg.min_lr


def warmup_iters_of(cfg: ScheduleConfig) -> int:
    """warmup_iters, or its share of max_iters when warmup_fraction is set (so a swept warmup
    keeps its meaning when the run gets longer)."""
    if cfg.warmup_fraction is not None:
        return round(cfg.max_iters * cfg.warmup_fraction)
    return cfg.warmup_iters


def lr_decay_iters_of(cfg: ScheduleConfig) -> int:
    if cfg.lr_decay_fraction is not None:
        return round(cfg.max_iters * cfg.lr_decay_fraction)
    return cfg.max_iters if cfg.lr_decay_iters is None else cfg.lr_decay_iters


def get_lr(it: int, cfg: ScheduleConfig) -> float:
    """LR for iteration `it` (0-based).

    Every schedule warms up linearly as nanoGPT does, lr * (it + 1) / (warmup_iters + 1) for
    it < warmup_iters (see warmup_iters_of). Then:
    - cosine: nanoGPT's get_lr, cosine from lr down to min_lr at lr_decay_iters, min_lr after;
    - constant: lr;
    - wsd: lr until the last decay_fraction of max_iters, then linear down to min_lr at max_iters.
    """
    if cfg.name not in SCHEDULE_NAMES:
        raise ValueError(f"unknown schedule.name={cfg.name!r}; valid: {', '.join(SCHEDULE_NAMES)}")
    lr, min_lr, warmup_iters = cfg.lr, min_lr_of(cfg), warmup_iters_of(cfg)
    if it < warmup_iters:
        return lr * (it + 1) / (warmup_iters + 1)
    if cfg.name == "constant":
        return lr
    if cfg.name == "wsd":
        decay_iters = round(cfg.decay_fraction * cfg.max_iters)
        decay_start = cfg.max_iters - decay_iters
        if it < decay_start or decay_iters == 0:
            return lr
        progress = min(1.0, (it - decay_start) / decay_iters)
        return lr + progress * (min_lr - lr)
    decay_iters = lr_decay_iters_of(cfg)  # cosine
    if it >= decay_iters:  # nanoGPT's value at and after the end (and no 0/0 when decay <= warmup)
        return min_lr
    decay_ratio = (it - warmup_iters) / (decay_iters - warmup_iters)
    coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))
    return min_lr + coeff * (lr - min_lr)


def lr_sum(cfg: ScheduleConfig, start: int, stop: int) -> float:
    """Sum of get_lr over iterations start .. stop - 1: how far the optimizer can still move the
    weights in that span (Adam's steps scale with the LR), used to compare learning left."""
    return math.fsum(get_lr(it, cfg) for it in range(start, stop))
