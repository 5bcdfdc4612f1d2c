"""What the plateau pruner reads from trials: each curve prepared for look-ups by step or by
learning, the noise of a comparison between two evaluations, and the levels and projections its
rule compares (`sweeps.plateau_pruner` states the rule)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, List, Optional, Tuple

import numpy as np

from sweeps import trial_record

if TYPE_CHECKING:  # pragma: no cover
    from optuna.trial import FrozenTrial


class Curve:
    """A trial's reported curve, prepared for look-ups by step or by learning done: its best
    value so far at each evaluation and which evaluation that was, the LR summed up to each
    (NaN when not recorded), and each evaluation's per-batch val losses (None when not
    recorded) with the name of the batches they were measured on; whether it recorded batch
    losses to pair (``pairs``) and LR sums (``counts_learning``)."""

    __slots__ = ("number", "steps", "values", "learned", "best_so_far", "best_index", "best",
                 "last_step", "batch_losses", "batches", "pairs", "counts_learning")

    def __init__(self, trial: "FrozenTrial") -> None:
        self.number = trial.number
        items = sorted(trial.intermediate_values.items())
        self.steps = np.fromiter((st for st, _ in items), dtype=np.int64, count=len(items))
        values = np.fromiter((v for _, v in items), dtype=float, count=len(items))
        values[~np.isfinite(values)] = np.nan
        self.values = values
        # fmin ignores NaN, so a NaN evaluation never becomes the best so far.
        self.best_so_far = np.fmin.accumulate(values) if len(values) else values
        best_index, best_i = np.empty(len(values), dtype=np.int64), -1
        for i, v in enumerate(values):
            if not math.isnan(v) and (best_i < 0 or v < values[best_i]):
                best_i = i
            best_index[i] = best_i
        self.best_index = best_index
        self.best = float(self.best_so_far[-1]) if len(values) else math.nan
        self.last_step = int(self.steps[-1]) if len(items) else None
        learned = trial_record.lr_area(trial)
        self.learned = np.array([_learned(learned.get(int(st))) for st in self.steps], dtype=float)
        per_step = trial_record.val_batch_losses(trial)
        self.batch_losses = [_as_losses(per_step.get(int(st))) for st in self.steps]
        self.batches = trial_record.val_batches(trial)
        # what it recorded of what the rule uses (without it: PlateauFallbackWarning)
        self.pairs = self.batches is not None and any(x is not None for x in self.batch_losses)
        self.counts_learning = not bool(np.all(np.isnan(self.learned)))

    def index_by(self, amount: float, by_learning: bool) -> int:
        """Its last evaluation at or before ``amount`` of training (learning, or steps); -1 if none."""
        return int(np.searchsorted(self.learned if by_learning else self.steps, amount, side="right")) - 1

    def best_by(self, amount: float, by_learning: bool) -> float:
        """Best value once it had trained ``amount`` (learning, or steps); NaN if none."""
        i = self.index_by(amount, by_learning)
        return float(self.best_so_far[i]) if i >= 0 else math.nan


def _as_losses(raw: Any) -> Optional[np.ndarray]:
    try:
        losses = np.asarray(raw, dtype=float)
    except (TypeError, ValueError):
        return None
    return losses if losses.ndim == 1 and len(losses) >= 2 and np.all(np.isfinite(losses)) else None


def paired_se(a: Curve, i: int, b: Curve, j: int) -> float:
    """Standard error of the difference between evaluation ``i`` of ``a`` and ``j`` of ``b``,
    batch by batch, when both were measured on the same recorded batches; NaN otherwise."""
    if i < 0 or j < 0 or a.batches is None or a.batches != b.batches:
        return math.nan
    x, y = a.batch_losses[i], b.batch_losses[j]
    if x is None or y is None or len(x) != len(y):
        return math.nan
    return float(np.std(x - y, ddof=1) / math.sqrt(len(x)))


def _as_float(value: Any) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return math.nan
    return x if math.isfinite(x) and x > 0 else math.nan


def _learned(learned: Optional[float]) -> float:
    """An LR sum as the rule uses it: NaN when not recorded or negative."""
    if learned is None:
        return math.nan
    return learned if math.isfinite(learned) and learned >= 0 else math.nan


def _as_se(se: Optional[float]) -> float:
    """A standard error as the rule uses it: 0 when not recorded or not a positive number."""
    if se is None:
        return 0.0
    return se if math.isfinite(se) and se > 0.0 else 0.0


def gain_kept_up(gain: float, done_before: float, done: float, left: float) -> float:
    """``gain`` (made between ``done_before`` and ``done`` of training) kept up per factor of
    training over ``left`` more: ``gain * ln(1 + left / done) / ln(done / done_before)``; per
    unit of training (``gain * left / (done - done_before)``) when ``done_before`` is 0; 0 when
    no training was done in between."""
    if done <= done_before:
        return 0.0
    if done_before > 0:
        return gain * math.log1p(left / done) / math.log(done / done_before)
    return gain * left / (done - done_before)


class Noise:
    """``noise(x, y)`` of the rule: ``z`` times the standard error of the difference between
    evaluation ``i`` of curve ``a`` and ``j`` of curve ``b``, paired over their batches where
    both recorded them, else ``z`` times ``se`` (the judged trial's, at its latest step)."""

    __slots__ = ("z", "se")

    def __init__(self, z: float, se: float) -> None:
        self.z, self.se = z, se

    def __call__(self, a: Curve, i: int, b: Curve, j: int) -> float:
        paired = paired_se(a, i, b, j)
        return self.z * (self.se if math.isnan(paired) else paired)


class Latest:
    """The judged trial at its latest evaluation: its curve, latest step ``s``, ``k``
    evaluations, best value ``b`` (and its index), warmup end, LR sum over its budget (NaN when
    not recorded) and the noise of its comparisons."""

    __slots__ = ("curve", "step", "n_evals", "warmup_step", "learning_budget", "noise")

    def __init__(self, trial: "FrozenTrial", z: float) -> None:
        self.curve = Curve(trial)
        self.step = int(self.curve.steps[-1])
        self.n_evals = len(self.curve.steps)
        self.warmup_step = trial_record.warmup_step(trial)
        self.learning_budget = _as_float(trial_record.lr_area_budget(trial))
        self.noise = Noise(z, _as_se(trial_record.val_loss_se(trial).get(self.step)))

    @property
    def best_index(self) -> int:
        return int(self.curve.best_index[-1])

    @property
    def best(self) -> float:
        return float(self.curve.values[self.best_index])


@dataclass(frozen=True)
class Levels:
    """The finished peers at the judged trial's latest step ``s``: each with the index of its
    best evaluation at steps <= ``s`` (its ``L_j``), the levels ``ref_now`` and ``ref_end``,
    ``noise_now``, and (when asked) each peer's gain after ``s`` (``L_j - E_j``) with its noise."""

    peers: List[Tuple[Curve, int]]
    now: float
    end: float
    noise: float
    noise_of: Noise

    @cached_property
    def gains_after(self) -> List[Tuple[float, float]]:
        return [(float(peer.values[i]) - peer.best,
                 self.noise_of(peer, i, peer, int(peer.best_index[-1])))
                for peer, i in self.peers]

    @property
    def largest_gain_after(self) -> float:
        return max(gain for gain, _ in self.gains_after)

    @property
    def flat_after(self) -> bool:
        """No peer improved beyond noise after ``s``."""
        return all(gain <= noise for gain, noise in self.gains_after)


@dataclass(frozen=True)
class Learning:
    """How the judged trial's training is counted: in LR sums (``by_learning``) or in steps;
    ``done_by`` at each evaluation, ``done`` by its latest, ``left`` after it, and the steps
    left (``left_steps``, for the peers that recorded no LR sums)."""

    by_learning: bool
    done_by: np.ndarray
    done: float
    left: float
    left_steps: float


@dataclass(frozen=True)
class Projection:
    """Where the judged trial can still get: its recent gain ``g``, where that gain kept up
    takes it (``own``), and where the peers' paths at equal learning take it (``from_peers``)."""

    recent_gain: float
    by_learning: bool
    own: float
    from_peers: float
