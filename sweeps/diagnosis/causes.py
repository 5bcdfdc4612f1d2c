"""The causes of a plateau a diagnosis weighs, each a function of the run's `Signals`.

Each returns a `Cause` with its evidence (the numbers behind it) and a confidence in [0, 1], the
sum of the points its rule below gives; each setting it read that was not given (a nanoGPT
default stood in) multiplies it by ASSUMED_FACTOR (at most three times). The causes, by name:

- ``data_repetition``: epochs seen (up to 4 repeated data is worth nearly fresh, past 16 little:
  0.1 / 0.35 / 0.5 points past 1 / 4 / 16 epochs), val rising beyond noise from its best while the
  training loss keeps falling (+0.35), or val flat while train has fallen since val's best (+0.2),
  the train/val gap
  widening beyond noise since val's best (+0.15). Under one epoch it is at most 0.1.
- ``lr_too_high``: divergence (a non-finite loss, or the training loss ending far above its
  lowest point: 0.85); else loss spikes and rises of the evaluations' train loss past the warmup's
  aftermath (logged losses above the untrained model's there count as one more), 0.3 + 0.15 each
  (at most 0.75), +0.2 when an evaluation's train loss rose above the untrained model's
  (iteration 0), or a logged one did past the warmup's aftermath.
- ``warmup_too_short``: a rise of the loss (its trend, or at an evaluation), a loss above the
  untrained model's, or two spikes right after warmup (0.45; one spike 0.2), a warmup
  under 2% of the run (+0.2), the run recovering afterwards (+0.15); a run that diverged and
  never recovered, or is unstable past the warmup's aftermath too, belongs to the LR (-0.3 each).
- ``lr_still_high``: a plateau while a decaying LR is still far above its floor (0.8 x the share of
  the decay still ahead, when at least 0.3 of it is); a constant LR plateauing, 0.5.
- ``min_lr_too_high``: a plateau through at least 10% of the run spent at the LR's floor (0.3,
  +0.3 when min_lr is at least a tenth of the peak).
- ``capacity``: past 20 training tokens per parameter (0.35; 0.6 past 100), flat together, no
  instability, at most 4 epochs; else 0.

The last three need a plateau of both curves: not one where val rises from its best beyond noise
or the gap widens beyond noise (that plateau is val's alone: repetition).
- ``data_quality``: under one epoch, past 20 tokens per parameter, stable and flat, yet above what
  a model of this size reaches on clean web text by DATA_QUALITY_MARGIN nats (0.45).
- ``noise``: the val "plateau" lies within Z standard errors of the eval while the training loss
  trend (far less noisy) still falls by more than that over the same span, and the gap has not
  widened beyond noise (0.55).

A run without a plateau and without instability has no cause: it is still learning.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List

from sweeps.diagnosis.curves import Curves
from sweeps.diagnosis.signals import EVAL_RISE_MIN, Signals, Z

ASSUMED_FACTOR = 0.8
REPEAT_FRESH, REPEAT_WORTHLESS = 4.0, 16.0  # epochs: repeated data ~fresh up to 4, worth little past 16
CHINCHILLA_TOKENS_PER_PARAM = 20.0
CAPACITY_FAR = 100.0
DATA_QUALITY_MARGIN = 0.7  # nats above the clean-web-text reference
# Val loss of GPT-2's own checkpoints on OpenWebText (GPT-2 BPE; nanoGPT's README): 124M 3.12,
# 1558M 2.54, as a power law in the parameter count. Rough, and only for GPT-2's tokenizer.
CLEAN_TEXT_REF = ((124e6, 3.12), (1558e6, 2.54))


def clean_text_loss(num_params: int) -> float:
    """What a model of `num_params` reaches on clean web text, by the power law through CLEAN_TEXT_REF."""
    (n1, l1), (n2, l2) = CLEAN_TEXT_REF
    b = math.log(l1 / l2) / math.log(n2 / n1)
    return l1 * (n1 / num_params) ** b


@dataclass
class Cause:
    name: str
    title: str
    confidence: float
    sentence: str  # what to do, in a sentence (the diagnosis's first line when this cause leads)
    evidence: Dict[str, Any] = field(default_factory=dict)
    assumed: List[str] = field(default_factory=list)  # settings not given, that this cause read

    @property
    def level(self) -> str:
        return "high" if self.confidence >= 0.7 else "medium" if self.confidence >= 0.4 else "low"


def _r(x: float, digits: int = 4) -> float:
    return round(float(x), digits)


def _needs(c: Curves, *parts: str) -> List[str]:
    return sorted({k for p in parts for k in c.assumed.get(p, [])})


def data_repetition(s: Signals, c: Curves) -> Cause:
    se = s.val_se
    points, assumed = 0.0, _needs(c, "tokens")
    if s.epochs is not None:
        points += (0.5 if s.epochs > REPEAT_WORTHLESS else 0.35 if s.epochs > REPEAT_FRESH
                   else 0.1 if s.epochs > 1 else 0.0)
    else:
        assumed.append("unique training tokens (--train-tokens, --train-bin or --data)")
    train_fall = s.train_at_val_min - s.train_end
    rising = s.val_rise > Z * se and train_fall > Z * se
    if rising:
        points += 0.35
    elif s.plateau and train_fall > Z * math.sqrt(2) * se:
        points += 0.2
    widening = s.gap_widening > max(Z * se, 0.02)
    if widening:
        points += 0.15
    if s.epochs is not None and s.epochs <= 1:
        points = min(points, 0.1)
    epochs = "an unknown number of" if s.epochs is None else f"{s.epochs:.1f}"
    if rising:
        what = (f"val loss rose {s.val_rise:.3f} from its best {s.val_min:.3f} at iteration {s.val_min_iter} "
                f"while train loss fell {train_fall:.3f}")
    else:
        what = f"val loss is flat ({s.val_drop_tail:+.3f} over the last quarter)"
    gap = (f"the train/val gap is {s.gap_end:.3f}" + (f", widened {s.gap_widening:.3f} since val's best"
                                                     if widening else ", not widening beyond noise"))
    sentence = (f"Data repetition: the run saw its training data {epochs} times (past ~{REPEAT_FRESH:g} "
                f"repeated data is worth far less than fresh; past ~{REPEAT_WORTHLESS:g} little), {what}, and "
                f"{gap}; get more data or train for fewer epochs, tuning will not fix it.")
    return Cause("data_repetition", "data repetition", points, sentence, {
        "epochs": None if s.epochs is None else _r(s.epochs, 2), "val_rise": _r(s.val_rise),
        "train_fall_since_val_best": _r(train_fall), "gap_end": _r(s.gap_end), "gap_widening": _r(s.gap_widening),
        "val_se": _r(se, 5), "val_best": _r(s.val_min), "val_best_iter": s.val_min_iter, "val_end": _r(s.val_end),
        "unique_train_tokens": c.unique_train_tokens, "tokens_seen": s.tokens_seen,
    }, assumed)


def _spike_list(spikes, n: int = 5) -> str:
    return ", ".join(f"iter {p.iter} (+{p.loss - p.trend:.2f} at lr {p.lr:.3g})" for p in spikes[:n])


def _rise_list(rises, n: int = 3) -> str:
    return ", ".join(f"+{r.rise:.2f} from iteration {r.start} to {r.iter}" for r in rises[:n])


def lr_too_high(s: Signals, c: Curves) -> Cause:
    late, late_rises, late_above = s.late_spikes(), s.late_eval_rises(), s.late_above_start()
    events = len(late) + len(late_rises) + bool(late_above)  # worse than untrained past warmup: one more
    if s.diverged:
        points = 0.85
    else:
        points = min(0.75, 0.3 + 0.15 * events) if events else 0.0
        if s.above_start > EVAL_RISE_MIN or late_above:  # worse than the untrained model, late in the run
            points += 0.2
    if s.nonfinite_iter is not None:
        parts = [f"the loss became non-finite at iteration {s.nonfinite_iter}"]
    elif s.diverged:
        parts = [f"the training loss ended {max(s.train_rise, s.eval_train_rise_end):.2f} above its lowest point "
                 f"(diverged)"]
    else:
        parts = []
        if s.above_start > EVAL_RISE_MIN:
            parts.append(f"at iteration {s.above_start_iter} train loss was {s.above_start:.2f} above the "
                         f"untrained model's")
        if late_above:
            parts.append(f"{len(late_above)} logged losses after warmup were above the untrained model's "
                         f"(iterations {late_above[0]} to {late_above[-1]})")
        parts += [f"{len(late)} loss spikes after warmup: {_spike_list(late)}" if late else "",
                  f"train loss at evaluation rose {_rise_list(late_rises)}" if late_rises else ""]
    what = "; ".join(p for p in parts if p) or "no spikes after warmup"
    sentence = (f"LR too high: {what} at peak lr {s.peak_lr:.3g}; search a lower peak LR "
                f"(and a longer warmup).")
    return Cause("lr_too_high", "LR too high or unstable", points, sentence, {
        "peak_lr": s.peak_lr, "spikes_after_warmup": len(late), "eval_rises_after_warmup": len(late_rises),
        "spikes_total": len(s.spikes),
        "spikes": [{"iter": p.iter, "jump": _r(p.loss - p.trend, 3), "z": _r(p.z, 1), "lr": _r(p.lr, 8)}
                   for p in s.spikes[:10]],
        "above_untrained": _r(s.above_start), "iters_above_untrained_after_warmup": len(late_above), "diverged": s.diverged, "nonfinite_iter": s.nonfinite_iter,
        "train_rise_from_lowest": _r(max(s.train_rise, s.eval_train_rise_end)), "train_noise": _r(s.train_noise, 5),
    }, _needs(c, "schedule"))


def warmup_too_short(s: Signals, c: Curves) -> Cause:
    early, early_rises, early_above = s.early_spikes(), s.early_eval_rises(), s.early_above_start()
    rise = s.early_rise > max(EVAL_RISE_MIN, 5 * s.train_noise)
    recovered = s.recovered and all(r.recovered for r in early_rises)
    points = 0.0
    if rise or early_rises or early_above or len(early) >= 2:
        points = 0.45
    elif early:
        points = 0.2
    if points:
        if s.warmup_iters < 0.02 * max(s.last_iter, 1):
            points += 0.2
        if recovered:
            points += 0.15
        elif s.diverged:
            points -= 0.3
        if s.late_spikes() or s.late_eval_rises() or s.late_above_start():  # unstable later too: the LR itself
            points -= 0.3
    if early_rises:
        what = f"train loss at evaluation rose {_rise_list(early_rises)}"
    elif early_above:
        what = (f"the loss went above the untrained model's at iteration{'s' if len(early_above) > 1 else ''} "
                f"{', '.join(map(str, early_above[:5]))}")
    elif rise:
        what = f"the loss trend rose {s.early_rise:.2f} by iteration {s.early_rise_iter}"
    else:
        what = f"{len(early)} spikes" + (f": {_spike_list(early)}" if early else "")
    sentence = (f"Warmup too short: {what}, right after a warmup of {s.warmup_iters} iterations "
                f"(peak lr {s.peak_lr:.3g}); warm up longer (a few percent of the run) or lower the peak.")
    return Cause("warmup_too_short", "warmup too short", max(points, 0.0), sentence, {
        "warmup_iters": s.warmup_iters, "window_end_iter": s.early_end, "early_rise": _r(s.early_rise),
        "early_rise_iter": s.early_rise_iter, "early_eval_rise": _r(max([r.rise for r in early_rises], default=0.0)),
        "early_spikes": len(early), "early_above_untrained": len(early_above), "recovered": recovered, "peak_lr": s.peak_lr,
    }, _needs(c, "schedule"))


def _overfitting(s: Signals) -> bool:
    """Val rising beyond noise from its best, or the gap widening: the plateau is val's alone."""
    return s.val_rise > Z * s.val_se or s.gap_widening > max(Z * s.val_se, 0.02)


def lr_still_high(s: Signals, c: Curves) -> Cause:
    points = 0.0
    decays = s.decay_end is not None and s.peak_lr > s.floor_lr
    flat = s.plateau and not _overfitting(s)
    if flat and decays and s.lr_share_left >= 0.3:
        points = 0.8 * s.lr_share_left
    elif flat and not decays:
        points = 0.5
    if decays:
        ahead = max(0, s.decay_end - s.last_iter)
        sentence = (f"The plateau is the high-LR part of the schedule: at iteration {s.last_iter} the LR is "
                    f"{s.lr_end:.3g}, {s.lr_share_left:.0%} of the way from min_lr {s.floor_lr:.3g} to its peak "
                    f"{s.peak_lr:.3g}, with {ahead:,} iterations of decay ahead; the loss falls again as the LR "
                    f"decays, so the plateau predicts nothing about the end: keep training, or decay sooner.")
    else:
        sentence = (f"The LR is constant ({s.peak_lr:.3g}): a run at a constant LR levels off where its noise "
                    f"allows; decay it (cosine to min_lr) to go lower.")
    return Cause("lr_still_high", "plateau at high LR (schedule)", points, sentence, {
        "schedule": c.cfg.schedule.name, "lr_end": _r(s.lr_end, 8), "peak_lr": s.peak_lr, "min_lr": s.floor_lr,
        "decay_share_left": _r(s.lr_share_left, 3), "decay_end_iter": s.decay_end, "last_iter": s.last_iter,
        "val_drop_tail": _r(s.val_drop_tail), "val_se": _r(s.val_se, 5),
    }, _needs(c, "schedule"))


def min_lr_too_high(s: Signals, c: Curves) -> Cause:
    share = s.iters_at_floor / max(s.last_iter, 1)
    ratio = s.floor_lr / s.peak_lr if s.peak_lr else 1.0
    points = 0.0
    if s.decay_end is not None and share >= 0.1 and s.plateau and not _overfitting(s):
        points = 0.3 + (0.3 if ratio >= 0.1 else 0.0)
    sentence = (f"min_lr too high: the last {s.iters_at_floor:,} iterations ({share:.0%} of the run) sat at "
                f"min_lr {s.floor_lr:.3g} ({ratio:.2f} of the peak) with val flat; lower min_lr, or end the "
                f"run where the decay ends.")
    return Cause("min_lr_too_high", "min_lr too high", points, sentence, {
        "min_lr": s.floor_lr, "min_lr_over_peak": _r(ratio, 3), "iters_at_min_lr": s.iters_at_floor,
        "share_at_min_lr": _r(share, 3), "val_drop_tail": _r(s.val_drop_tail),
    }, _needs(c, "schedule"))


def capacity(s: Signals, c: Curves) -> Cause:
    tpp = s.tokens_per_param
    stable = not s.diverged and not s.late_spikes() and not s.late_eval_rises()
    flat_together = s.plateau and s.train_drop_tail < Z * math.sqrt(2) * max(s.val_se, s.train_noise / 4)
    points = 0.0
    if (tpp >= CHINCHILLA_TOKENS_PER_PARAM and flat_together and not _overfitting(s) and stable
            and (s.epochs is None or s.epochs <= REPEAT_FRESH)):
        points = 0.6 if tpp >= CAPACITY_FAR else 0.35
    assumed = _needs(c, "model", "tokens")
    if s.epochs is None:
        assumed.append("unique training tokens (--train-tokens, --train-bin or --data)")
    sentence = (f"Capacity: {tpp:,.0f} training tokens per parameter ({c.num_params / 1e6:.1f}M parameters; "
                f"~{CHINCHILLA_TOKENS_PER_PARAM:g} is compute-optimal), train and val flat together with no "
                f"widening gap: a bigger model, not more tuning, is the lever.")
    return Cause("capacity", "capacity", points, sentence, {
        "num_params": c.num_params, "tokens_seen": s.tokens_seen, "tokens_per_param": _r(tpp, 4),
        "train_drop_tail": _r(s.train_drop_tail), "val_drop_tail": _r(s.val_drop_tail),
        "gap_widening": _r(s.gap_widening),
    }, assumed)


def _gpt2_tokens(c: Curves) -> bool:
    """Whether the losses are per GPT-2 BPE token, the unit of CLEAN_TEXT_REF (not bytes, not characters)."""
    return c.cfg.data.tokenizer in ("r50k_base", "gpt2") and c.cfg.model.vocab_size >= 50257


def data_quality(s: Signals, c: Curves) -> Cause:
    ref = clean_text_loss(c.num_params)
    points = 0.0
    if (_gpt2_tokens(c) and s.epochs is not None and s.epochs < 1 and s.tokens_per_param >= CHINCHILLA_TOKENS_PER_PARAM
            and s.plateau and not s.diverged and not s.spikes and not s.eval_rises and s.val_end > ref + DATA_QUALITY_MARGIN):
        points = 0.45
    sentence = (f"Data quality: under one epoch, stable, yet flat at val {s.val_end:.2f} where a "
                f"{c.num_params / 1e6:.0f}M model reaches about {ref:.2f} on clean web text (GPT-2 tokenizer); "
                f"look at the text itself: duplicates, boilerplate, another language, a wrong column.")
    assumed = _needs(c, "model", "tokens")
    if s.epochs is None:
        assumed.append("unique training tokens (--train-tokens, --train-bin or --data)")
    return Cause("data_quality", "data quality", points, sentence, {
        "val_end": _r(s.val_end), "clean_text_reference": _r(ref, 2), "epochs": None if s.epochs is None else _r(s.epochs, 2),
        "tokens_per_param": _r(s.tokens_per_param, 4),
    }, assumed)


def noise(s: Signals, c: Curves) -> Cause:
    band = Z * math.sqrt(2) * s.val_se
    within = abs(s.val_drop_tail) < band and abs(s.val_rise) < band
    points = 0.55 if within and s.train_drop_tail > band and not _overfitting(s) else 0.0
    eval_iters = c.cfg.eval_iters
    wanted = s.train_drop_tail / (2 * Z * math.sqrt(2)) if s.train_drop_tail > 0 else s.val_se / 2
    better = min(10 * eval_iters, max(eval_iters + 1, math.ceil(eval_iters * (s.val_se / max(wanted, 1e-9)) ** 2)))
    se_from = "measured" if s.val_se_measured else f"estimated from the training loss noise and eval_iters={eval_iters}"
    sentence = (f"Noise: the val plateau ({s.val_drop_tail:+.3f} over the last quarter) is within the eval's "
                f"standard error ({s.val_se:.3f}, {se_from}) while train loss still fell {s.train_drop_tail:.3f}; "
                f"evaluate on more batches (eval_iters={better}) before concluding anything.")
    assumed = _needs(c, "eval") if not s.val_se_measured else []
    return Cause("noise", "eval noise", points, sentence, {
        "val_se": _r(s.val_se, 5), "val_se_measured": s.val_se_measured, "eval_iters": eval_iters,
        "val_drop_tail": _r(s.val_drop_tail), "train_drop_tail": _r(s.train_drop_tail),
        "eval_iters_needed": better,
    }, assumed)


CAUSES: List[Callable[[Signals, Curves], Cause]] = [
    data_repetition, lr_too_high, warmup_too_short, lr_still_high, min_lr_too_high, capacity, data_quality, noise]


def weigh(s: Signals, c: Curves) -> List[Cause]:
    """Every cause, ranked by confidence (an assumed setting lowers it), the likeliest first."""
    out = []
    for judge in CAUSES:
        cause = judge(s, c)
        parts = len(cause.assumed)
        cause.confidence = round(min(1.0, cause.confidence) * ASSUMED_FACTOR ** min(parts, 3), 3)
        out.append(cause)
    return sorted(out, key=lambda x: -x.confidence)
