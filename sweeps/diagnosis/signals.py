"""The measurements a diagnosis rests on, taken once from a run's curves.

The training losses are one micro-batch each, so they are noisy: a rolling median is their trend,
and the noise is the median absolute residual around it, scaled to a standard deviation (1.4826,
the Gaussian's MAD factor), per block of logged iterations so a loss that settles is judged
against its own later noise. A spike is a loss above its trend by more than SPIKE_Z times the
local noise (and SPIKE_MIN nats), or a burst of BURST_LEN losses in a row each BURST_Z times the
noise above it (a trend over TREND_WINDOW iterations smooths a short burst away); spikes closer
than SPIKE_MERGE logged iterations are one event.
The eval's standard error is the one measured (our runs), else the training loss noise divided
by sqrt(eval_iters) (an eval batch is a micro-batch of the same size). The evaluations' train
losses (averages of eval_iters batches) show instability too: one above the lowest before it by
more than EVAL_RISE_MIN and Z standard errors of a difference is a rise. Any loss above the
untrained model's (the evaluation at iteration 0, else the first logged loss) by EVAL_RISE_MIN
took a step far too large.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np

from sweeps.diagnosis.curves import Curves
from trainer import get_lr, warmup_iters_of

TREND_WINDOW = 21  # logged iterations in the rolling median
NOISE_BLOCK = 100  # logged iterations per noise estimate
MAD_TO_STD = 1.4826
SPIKE_Z = 6.0
SPIKE_MIN = 0.05  # nats: never a spike below this, however quiet the run
BURST_Z, BURST_LEN = 2.5, 3  # or this many losses in a row each this far above the trend
SPIKE_MERGE = 5
TAIL_SHARE = 0.25  # the plateau is judged over the last quarter of the run (at least TAIL_EVALS evals)
TAIL_EVALS = 3
# "Right after warmup": up to a warmup's length past its end, and at least EARLY_ADAM_SPANS of
# Adam's second-moment time constant, 1 / (1 - beta2) iterations (20 at nanoGPT's 0.95): the span
# its step sizes take to settle, which a warmup is there to cover.
EARLY_ADAM_SPANS = 2
EVAL_RISE_MIN = 0.1  # nats: an evaluation's train loss above the lowest before it by more is a rise
Z = 2.0  # differences within Z standard errors are noise


@dataclass
class Spike:
    iter: int
    loss: float
    trend: float
    z: float  # its height above the trend in units of the local noise
    lr: float


@dataclass
class EvalRise:
    start: int  # the evaluation it rose from (its lowest train loss so far)
    iter: int  # the evaluation it rose to
    rise: float
    recovered: bool  # a later evaluation's train loss fell below where it rose from


@dataclass
class Signals:
    last_iter: int
    tokens_seen: int
    epochs: Optional[float]
    tokens_per_param: float
    # the LR schedule
    peak_lr: float
    floor_lr: float  # the LR the schedule ends at (min_lr; the peak for a constant LR)
    lr_end: float  # the LR at the last iteration
    lr_share_left: float  # (lr_end - floor) / (peak - floor): how much of the decay is still ahead
    warmup_iters: int
    decay_end: Optional[int]  # the iteration the LR reaches its floor (None: it never decays)
    iters_at_floor: int
    # noise
    train_noise: float  # std of one logged training loss around its trend (late in the run)
    val_se: float  # standard error of one evaluation's val loss (late in the run)
    val_se_measured: bool
    # the curves
    val_first: float
    val_min: float
    val_min_iter: int
    val_end: float
    train_at_val_min: float
    train_end: float
    val_drop_tail: float  # val loss fallen over the tail (positive: still falling)
    train_drop_tail: float  # the same for the training loss trend
    total_drop: float  # val_first - val_min
    tail_start: int  # the iteration the tail starts at
    gap_end: float
    gap_at_val_min: float
    gap_min: float
    # instability
    spikes: List[Spike] = field(default_factory=list)
    early_end: int = 0  # the last iteration counted as "right after warmup"
    nonfinite_iter: Optional[int] = None
    train_rise: float = 0.0  # the trend's end above its lowest point (nats)
    early_rise: float = 0.0  # the trend's largest rise right after warmup
    early_rise_iter: Optional[int] = None
    recovered: bool = True  # the trend ends no higher than the lowest it reached right after warmup
    eval_rises: List[EvalRise] = field(default_factory=list)
    eval_train_rise_end: float = 0.0  # the last evaluation's train loss above the lowest one
    above_start: float = 0.0  # the highest evaluation's train loss above the one at iteration 0 (if any)
    above_start_iter: Optional[int] = None
    iters_above_start: List[int] = field(default_factory=list)  # logged losses above the untrained model's

    @property
    def val_rise(self) -> float:
        return self.val_end - self.val_min

    @property
    def plateau(self) -> bool:
        """Val loss has not fallen beyond noise over the tail, or by under 5% of its whole fall."""
        return (self.val_drop_tail < Z * math.sqrt(2) * self.val_se
                or self.val_drop_tail < 0.05 * max(self.total_drop, 0.0))

    @property
    def gap_widening(self) -> float:
        """How much the train/val gap grew since val's best evaluation."""
        return self.gap_end - self.gap_at_val_min

    @property
    def diverged(self) -> bool:
        """A non-finite loss, or the training loss ending far above its lowest point."""
        return (self.nonfinite_iter is not None or self.train_rise > max(0.3, 10 * self.train_noise)
                or self.eval_train_rise_end > max(0.3, 10 * self.val_se))

    def early_spikes(self) -> List[Spike]:
        return [s for s in self.spikes if s.iter <= self.early_end]

    def late_spikes(self) -> List[Spike]:
        return [s for s in self.spikes if s.iter > self.early_end]

    def early_above_start(self) -> List[int]:
        return [i for i in self.iters_above_start if i <= self.early_end]

    def late_above_start(self) -> List[int]:
        return [i for i in self.iters_above_start if i > self.early_end]

    def early_eval_rises(self) -> List[EvalRise]:
        return [r for r in self.eval_rises if r.start <= self.early_end]

    def late_eval_rises(self) -> List[EvalRise]:
        return [r for r in self.eval_rises if r.start > self.early_end]


def _trend(losses: np.ndarray) -> np.ndarray:
    """The rolling median over TREND_WINDOW logged losses, centred; at the ends over what there is
    (padding would copy an end loss into its own trend)."""
    half, n = TREND_WINDOW // 2, len(losses)
    out = np.empty(n)
    if n > 2 * half:
        out[half:n - half] = np.median(np.lib.stride_tricks.sliding_window_view(losses, TREND_WINDOW), axis=1)
    for i in [*range(min(half, n)), *range(max(n - half, min(half, n)), n)]:
        out[i] = np.median(losses[max(0, i - half):i + half + 1])
    return out


def _local_noise(residuals: np.ndarray) -> np.ndarray:
    """Per logged iteration, the noise of its block (blocks of NOISE_BLOCK; a short last block
    joins the one before)."""
    n = len(residuals)
    out = np.empty(n)
    starts = list(range(0, n, NOISE_BLOCK))
    if len(starts) > 1 and n - starts[-1] < NOISE_BLOCK // 2:
        starts.pop()
    for k, start in enumerate(starts):
        stop = starts[k + 1] if k + 1 < len(starts) else n
        out[start:stop] = MAD_TO_STD * np.median(np.abs(residuals[start:stop]))
    return out


def _spikes(iters: np.ndarray, losses: np.ndarray, trend: np.ndarray, noise: np.ndarray, lr) -> List[Spike]:
    floor = max(float(np.median(noise)) * 0.25, 1e-6)  # a block of identical losses has no noise
    z = (losses - trend) / np.maximum(noise, floor)
    high = (z > BURST_Z) & (losses - trend > SPIKE_MIN)
    runs = np.convolve(high.astype(int), np.ones(BURST_LEN, dtype=int), mode="full")[:len(z)]  # highs ending here
    in_burst = np.zeros(len(z), dtype=bool)
    for end in np.flatnonzero(runs >= BURST_LEN):
        in_burst[end - BURST_LEN + 1:end + 1] = True
    hits = np.flatnonzero(((z > SPIKE_Z) & (losses - trend > SPIKE_MIN)) | in_burst)
    events: List[Spike] = []
    last = -SPIKE_MERGE - 1
    for i in hits:
        if i - last > SPIKE_MERGE:
            events.append(Spike(int(iters[i]), float(losses[i]), float(trend[i]), float(z[i]), lr(int(iters[i]))))
        elif z[i] > events[-1].z:
            events[-1] = Spike(int(iters[i]), float(losses[i]), float(trend[i]), float(z[i]), lr(int(iters[i])))
        last = i
    return events


def measure(c: Curves) -> Signals:
    sched = c.cfg.schedule
    lr = lambda it: get_lr(it, sched)  # noqa: E731
    last = c.last_iter
    warmup = warmup_iters_of(sched)
    peak, floor = sched.lr, get_lr(10 ** 12, sched)
    if sched.name == "cosine":
        decay_end = sched.lr_decay_iters if sched.lr_decay_iters is not None else sched.max_iters
        decay_end = round(sched.lr_decay_fraction * sched.max_iters) if sched.lr_decay_fraction is not None else decay_end
    elif sched.name == "wsd":
        decay_end = sched.max_iters
    else:
        decay_end = None
    lr_end = lr(max(last - 1, 0))
    share_left = (lr_end - floor) / (peak - floor) if peak > floor else 0.0

    # training losses: trend, noise, spikes, divergence
    pts = [(i, x) for i, x in c.train if i > 0]  # iteration 0's loss is nanoGPT's pre-training batch
    finite_pts = [(i, x) for i, x in pts if math.isfinite(x)]
    nonfinite = next((i for i, x in pts if not math.isfinite(x)), None)
    nonfinite = min([nonfinite] + [e.iter for e in c.evals if not (math.isfinite(e.val_loss) and
                                                                     math.isfinite(e.train_loss))],
                    key=lambda v: math.inf if v is None else v)
    early_end = warmup + max(warmup, math.ceil(EARLY_ADAM_SPANS / (1 - c.cfg.optim.beta2)))
    spikes: List[Spike] = []
    train_noise, train_rise, early_rise, early_rise_iter, recovered = 0.0, 0.0, 0.0, None, True
    trend = None
    if len(finite_pts) >= TREND_WINDOW:
        iters = np.array([i for i, _ in finite_pts])
        losses = np.array([x for _, x in finite_pts], dtype=float)
        trend = _trend(losses)
        noise = _local_noise(losses - trend)
        train_noise = float(np.median(noise[len(noise) // 2:]))
        spikes = _spikes(iters, losses, trend, noise, lr)
        low = np.minimum.accumulate(trend)
        train_rise = float(trend[-1] - low[-1])
        early = iters <= early_end
        if early.any():
            rises = np.where(early, trend - low, 0.0)
            k = int(np.argmax(rises))
            early_rise, early_rise_iter = float(rises[k]), int(iters[k])
            # recovered: the trend ends no higher (beyond one logged loss's noise) than the lowest it
            # reached before the window closed
            recovered = bool(trend[-1] <= trend[early].min() + train_noise) and not early.all()

    # evaluations
    evals = [e for e in c.evals if math.isfinite(e.val_loss) and math.isfinite(e.train_loss)]
    if not evals:
        evals = c.evals[:1]
    measured = [e.val_loss_se for e in evals if e.val_loss_se is not None]
    if measured:
        val_se, se_measured = float(np.median(measured[len(measured) // 2:])), True
    else:
        val_se, se_measured = train_noise / math.sqrt(max(c.cfg.eval_iters, 1)), False
    tail_from = last - TAIL_SHARE * last
    tail = [e for e in evals if e.iter >= tail_from]
    if len(tail) < TAIL_EVALS:
        tail = evals[-TAIL_EVALS:]
    best = min(evals, key=lambda e: e.val_loss)
    worst = max(evals[1:] or evals, key=lambda e: e.train_loss)
    rises: List[EvalRise] = []
    low = 0
    for k in range(1, len(evals)):
        rise = evals[k].train_loss - evals[low].train_loss
        if rise > max(EVAL_RISE_MIN, Z * math.sqrt(2) * val_se):
            back = any(e.train_loss < evals[low].train_loss for e in evals[k + 1:])
            if rises and rises[-1].start == evals[low].iter:  # the same rise, higher
                if rise > rises[-1].rise:
                    rises[-1] = EvalRise(evals[low].iter, evals[k].iter, rise, back)
            else:
                rises.append(EvalRise(evals[low].iter, evals[k].iter, rise, back))
        if evals[k].train_loss < evals[low].train_loss:
            low = k
    gaps = [e.val_loss - e.train_loss for e in evals]

    def train_trend_at(it: int) -> float:
        if trend is None:
            return min(evals, key=lambda e: abs(e.iter - it)).train_loss
        k = int(np.argmin(np.abs(iters - it)))
        return float(trend[k])

    start = evals[0].train_loss if evals[0].iter == 0 else (finite_pts[0][1] if finite_pts else math.inf)
    above = [i for i, x in finite_pts if i > 1 and x > start + EVAL_RISE_MIN]
    return Signals(
        last_iter=last, tokens_seen=c.tokens_seen, epochs=c.epochs,
        tokens_per_param=c.tokens_seen / max(c.num_params, 1),
        peak_lr=peak, floor_lr=floor, lr_end=lr_end, lr_share_left=share_left, warmup_iters=warmup,
        decay_end=decay_end, iters_at_floor=max(0, last - decay_end) if decay_end is not None else 0,
        train_noise=train_noise, val_se=val_se, val_se_measured=se_measured,
        val_first=evals[0].val_loss, val_min=best.val_loss, val_min_iter=best.iter, val_end=evals[-1].val_loss,
        train_at_val_min=best.train_loss, train_end=evals[-1].train_loss,
        val_drop_tail=tail[0].val_loss - tail[-1].val_loss,
        train_drop_tail=train_trend_at(tail[0].iter) - train_trend_at(tail[-1].iter),
        total_drop=evals[0].val_loss - best.val_loss, tail_start=tail[0].iter,
        gap_end=gaps[-1], gap_at_val_min=best.val_loss - best.train_loss, gap_min=min(gaps),
        spikes=spikes, early_end=early_end, nonfinite_iter=nonfinite, train_rise=train_rise,
        early_rise=early_rise, early_rise_iter=early_rise_iter, recovered=recovered, eval_rises=rises,
        eval_train_rise_end=evals[-1].train_loss - min(e.train_loss for e in evals),
        above_start=max(0.0, worst.train_loss - evals[0].train_loss) if evals[0].iter == 0 else 0.0,
        above_start_iter=worst.iter if evals[0].iter == 0 and worst.train_loss > evals[0].train_loss else None,
        iters_above_start=above)
