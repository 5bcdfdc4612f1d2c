"""Learning-rate schedules, in plain Python floats: the one place the LR at an iteration is computed.

Three knobs may be given as an absolute value or as a share of another (`SHARES`): sweeps search
the shares (a sampled min_lr then never exceeds lr, and a warmup keeps its meaning when a run gets
longer); `resolve` turns either form into the value the schedule uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from trainer.config import ScheduleConfig


@dataclass(frozen=True)
class Share:
    """A ScheduleConfig knob `absolute` that may instead be given as `share` x `of` (field names)."""

    share: str
    absolute: str
    of: str

    @property
    def counts_iterations(self) -> bool:
        """A share of max_iters: the value is an iteration count (rounded, scaled with run length)."""
        return self.of == "max_iters"


MIN_LR = Share("min_lr_ratio", "min_lr", "lr")
WARMUP = Share("warmup_fraction", "warmup_iters", "max_iters")
LR_DECAY = Share("lr_decay_fraction", "lr_decay_iters", "max_iters")
SHARES = (MIN_LR, WARMUP, LR_DECAY)


def absolute_value(cfg: ScheduleConfig, knob: Share):
    """The absolute setting as configured (lr_decay_iters: None follows max_iters)."""
    value = getattr(cfg, knob.absolute)
    return cfg.max_iters if knob is LR_DECAY and value is None else value


def resolve(cfg: ScheduleConfig, knob: Share):
    """The value the schedule uses: share x its base when the share is set, else the absolute one."""
    share = getattr(cfg, knob.share)
    if share is None:
        return absolute_value(cfg, knob)
    value = getattr(cfg, knob.of) * share
    return round(value) if knob.counts_iterations else value


def share_of(cfg: ScheduleConfig, knob: Share) -> float:
    """The knob as a share of its base: the set share, or the absolute value divided by the base."""
    share = getattr(cfg, knob.share)
    return share if share is not None else absolute_value(cfg, knob) / getattr(cfg, knob.of)


def min_lr_of(cfg: ScheduleConfig) -> float:
    return resolve(cfg, MIN_LR)


def warmup_iters_of(cfg: ScheduleConfig) -> int:
    return resolve(cfg, WARMUP)


def lr_decay_iters_of(cfg: ScheduleConfig) -> int:
    return resolve(cfg, LR_DECAY)


def _constant(it: int, cfg: ScheduleConfig) -> float:
    return cfg.lr


def wsd_decay_start(cfg: ScheduleConfig) -> int:
    """The iteration at which a wsd schedule starts its decay (max_iters when it has none)."""
    return cfg.max_iters - round(cfg.decay_fraction * cfg.max_iters)


def _warmup_or_peak(it: int, cfg: ScheduleConfig) -> float:
    warmup_iters = warmup_iters_of(cfg)
    return cfg.lr * (it + 1) / (warmup_iters + 1) if it < warmup_iters else cfg.lr


def _wsd_decay(it: int, cfg: ScheduleConfig) -> float:
    """The LR in a wsd decay: from the LR at its start (the peak, or where warmup got to when the
    decay starts inside it) down to min_lr at max_iters, linearly or as 1 - sqrt(progress)."""
    start = wsd_decay_start(cfg)
    progress = min(1.0, (it - start) / (cfg.max_iters - start))
    kept = 1.0 - math.sqrt(progress) if cfg.decay_shape == "1-sqrt" else 1.0 - progress
    min_lr = min_lr_of(cfg)
    return min_lr + kept * (_warmup_or_peak(start, cfg) - min_lr)


def _cosine(it: int, cfg: ScheduleConfig) -> float:
    lr, min_lr, warmup_iters, decay_iters = cfg.lr, min_lr_of(cfg), warmup_iters_of(cfg), lr_decay_iters_of(cfg)
    if it >= decay_iters:  # nanoGPT's value at and after the end (and no 0/0 when decay <= warmup)
        return min_lr
    decay_ratio = (it - warmup_iters) / (decay_iters - warmup_iters)
    coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))
    return min_lr + coeff * (lr - min_lr)


# The LR after warmup, per schedule name (trainer.config.ScheduleName lists the same names);
# wsd's hold (its decay is _wsd_decay).
AFTER_WARMUP = {"cosine": _cosine, "constant": _constant, "wsd": _constant}


def get_lr(it: int, cfg: ScheduleConfig) -> float:
    """LR for iteration `it` (0-based).

    Every schedule warms up linearly as nanoGPT does, lr * (it + 1) / (warmup_iters + 1) for
    it < warmup_iters (see warmup_iters_of). Then:
    - cosine: nanoGPT's get_lr, cosine from lr down to min_lr at lr_decay_iters, min_lr after;
    - constant: lr;
    - wsd: lr until the last decay_fraction of max_iters, then down to min_lr at max_iters, linearly
      or as 1 - sqrt of the decay's progress (decay_shape). A decay that starts inside warmup starts
      from the LR warmup got to (a cooldown branch of a short rung, sweeps.cooldown).
    """
    after_warmup = AFTER_WARMUP.get(cfg.name)
    if after_warmup is None:
        raise ValueError(f"unknown schedule.name={cfg.name!r}; valid: {', '.join(AFTER_WARMUP)}")
    decaying = cfg.name == "wsd" and wsd_decay_start(cfg) < cfg.max_iters and it >= wsd_decay_start(cfg)
    if decaying:
        return _wsd_decay(it, cfg)
    warmup_iters = warmup_iters_of(cfg)
    if it < warmup_iters:
        return cfg.lr * (it + 1) / (warmup_iters + 1)
    return after_warmup(it, cfg)


def lr_sum(cfg: ScheduleConfig, start: int, stop: int) -> float:
    """Sum of get_lr over iterations start .. stop - 1: how far the optimizer can still move the
    weights in that span (Adam's steps scale with the LR), used to compare learning left."""
    return math.fsum(get_lr(it, cfg) for it in range(start, stop))


def schedule_warnings(cfg: ScheduleConfig) -> list[str]:
    """Schedules that run but not as meant: a warmup longer than the run (the LR never reaches its
    peak), a cosine decay that ends before warmup does (the LR drops from its peak to min_lr at once)
    or after the run does (it stops short of min_lr: its loss predicts little about a decayed run)."""
    found = []
    warmup, decay = warmup_iters_of(cfg), lr_decay_iters_of(cfg)
    if warmup > cfg.max_iters:
        found.append(f"schedule: warmup is {warmup} iterations but the run has max_iters={cfg.max_iters}, "
                     f"so the LR never reaches its peak lr={cfg.lr:g} (it ends at "
                     f"{get_lr(cfg.max_iters - 1, cfg):.3g}); shorten warmup_iters or lengthen the run")
    elif cfg.name == "cosine" and decay < warmup:
        found.append(f"schedule: the cosine decay ends at lr_decay_iters={decay}, before warmup ends at "
                     f"iteration {warmup}, so the LR falls from its peak to min_lr at once; make "
                     f"lr_decay_iters >= warmup_iters")
    elif cfg.name == "cosine" and decay > cfg.max_iters:
        found.append(f"schedule: the cosine decay runs to lr_decay_iters={decay} but the run stops at "
                     f"max_iters={cfg.max_iters}, with the LR at {get_lr(cfg.max_iters - 1, cfg):.3g} "
                     f"(peak {cfg.lr:g}, min_lr {min_lr_of(cfg):g}); set lr_decay_iters to max_iters")
    return found
