"""A pruner for LM val-loss curves that stall on a plateau and then drop.

Small GPT runs over an lr x warmup grid rarely give smooth curves: most of them sit on a
plateau for a while and then fall sharply, and the runs that end best sit on that plateau too
(high LR with a long warmup starts slow and ends best). A pruner that compares a trial with the
median of the other trials at the same step (Optuna's MedianPruner) kills those runs. The
:class:`PlateauPruner` below judges "stalled" against the other trials instead: a trial is only
pruned when it is behind the finished trials at the same step *and* neither its own recent rate
nor the path of any finished trial, compared at equal learning (the LR summed over the tokens
trained), would bring it to where they ended.

The pruner can also ask a plateaued leader to stop early (recorded COMPLETE): it is a
:class:`StopsLeaders`, whose verdict the objective reads after
:meth:`optuna.trial.Trial.should_prune` returns True::

    if trial.should_prune():
        verdict = pruner.last_decision(trial.number) if isinstance(pruner, StopsLeaders) else None
        if verdict is not None and verdict.stops:
            return best_val_loss          # COMPLETE with the best value so far
        raise optuna.TrialPruned(verdict.reason if verdict else None)
"""

from __future__ import annotations

import abc
import math
import numbers
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

import numpy as np
import optuna
from optuna.study import StudyDirection
from optuna.trial import TrialState

from sweeps import trial_record

if TYPE_CHECKING:  # pragma: no cover
    from optuna.study import Study
    from optuna.trial import FrozenTrial

__all__ = ["PlateauDecision", "PlateauPruner", "StopsLeaders"]

CONTINUE = "continue"
PRUNE = "prune"
STOP = "stop"


@dataclass(frozen=True)
class PlateauDecision:
    """The pruner's verdict on a trial at its latest step.

    ``action`` is ``"continue"``, ``"prune"`` (record the trial PRUNED) or ``"stop"`` (end the
    trial now and record it COMPLETE with its best value); ``reason`` says why, in words.
    """

    action: str
    reason: str

    def __post_init__(self) -> None:
        if self.action not in (CONTINUE, PRUNE, STOP):
            raise ValueError(
                f"action must be one of 'continue', 'prune', 'stop', got {self.action!r}"
            )

    @property
    def stops(self) -> bool:
        """End the trial now and record it COMPLETE with its best value (not PRUNED)."""
        return self.action == STOP


class StopsLeaders(abc.ABC):
    """A pruner whose ``prune() -> True`` can also mean "stop": end the trial now and record it
    COMPLETE with its best value so far, not PRUNED. After
    :meth:`~optuna.trial.Trial.should_prune` returns True, :meth:`last_decision` says which."""

    @abc.abstractmethod
    def last_decision(self, trial_number: int) -> Optional[PlateauDecision]:
        """The verdict of the latest :meth:`prune` call on this trial, or None if none."""


class _Curve:
    """A trial's reported curve, prepared for look-ups by step or by learning done: its best
    value so far at each evaluation and which evaluation that was, the LR summed up to each
    (NaN when not recorded), and each evaluation's per-batch val losses (None when not
    recorded) with the name of the batches they were measured on."""

    __slots__ = ("steps", "values", "learned", "best_so_far", "best_index", "best", "last_step",
                 "batch_losses", "batches")

    def __init__(self, trial: "FrozenTrial") -> None:
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


def _paired_se(a: _Curve, i: int, b: _Curve, j: int) -> float:
    """Standard error of the difference between evaluation ``i`` of ``a`` and ``j`` of ``b``,
    batch by batch, when both were measured on the same recorded batches; NaN otherwise."""
    if i < 0 or j < 0 or a.batches is None or a.batches != b.batches:
        return math.nan
    x, y = a.batch_losses[i], b.batch_losses[j]
    if x is None or y is None or len(x) != len(y):
        return math.nan
    return float(np.std(x - y, ddof=1) / math.sqrt(len(x)))


def _is_int(x: Any) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


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


def _gain_kept_up(gain: float, done_before: float, done: float, left: float) -> float:
    """``gain`` (made between ``done_before`` and ``done`` of training) kept up per factor of
    training over ``left`` more: ``gain * ln(1 + left / done) / ln(done / done_before)``; per
    unit of training (``gain * left / (done - done_before)``) when ``done_before`` is 0; 0 when
    no training was done in between."""
    if done <= done_before:
        return 0.0
    if done_before > 0:
        return gain * math.log1p(left / done) / math.log(done / done_before)
    return gain * left / (done - done_before)


def _as_se(se: Optional[float]) -> float:
    """A standard error as the rule uses it: 0 when not recorded or not a positive number."""
    if se is None:
        return 0.0
    return se if math.isfinite(se) and se > 0.0 else 0.0


class PlateauPruner(optuna.pruners.BasePruner, StopsLeaders):
    """Prune stalled losers and stop plateaued leaders, judged against the finished trials.

    Works for ``direction="minimize"`` studies only (a val loss); a ``ValueError`` is raised on
    first use in any other study. Steps are training tokens (any monotone unit works), and the
    objective reports after every evaluation.

    The trial's user attributes are read (through :mod:`sweeps.trial_record`) when present:
    ``warmup_step`` (int, the step at which its LR warmup ends; default 0), ``budget_step``
    (int, its planned final step; default the largest step among the COMPLETE trials, or its
    current step if there are none),
    ``val_loss_se`` (dict ``str(step) -> standard error`` of that evaluation's val loss;
    default 0), ``val_batch_losses`` (dict ``str(step) -> [val loss of each eval batch, or of
    each run of batches]``) with ``val_batches`` (str, names those batches), and ``lr_area``
    (dict ``str(step) -> the LR summed over the training tokens before that step``) with
    ``lr_area_budget`` (that sum over the whole budget). The LR sums measure *learning*: Adam
    moves the weights in proportion to the LR, so a trial late in a cosine decay, or with a low
    LR, has less learning left than its steps suggest. Without them, learning is counted in
    steps (a constant LR).

    The rule, for trial ``t`` whose reported values are ``v_1 .. v_k`` at steps
    ``s_1 < ... < s_k = s`` (``s`` is the latest step), ``b = min(v)`` (over finite values)
    and ``se`` the standard error at ``s``. ``noise(x, y)``, the noise in a comparison of two
    evaluations ``x`` and ``y`` (of ``t`` or of a peer), is ``z`` times the standard error of
    their difference batch by batch (``std(x_i - y_i) / sqrt(n)`` over the ``n`` recorded
    batch losses) when both recorded batch losses on the same ``val_batches``, else ``z * se``.
    Every evaluation of a sweep's trials uses the same val batches, and a batch that is hard for
    one model is hard for the others, so the paired error is several times smaller than ``se``.
    ``done`` is the learning ``t`` has done by ``s`` and ``left`` the learning it has left after
    ``s`` (LR sums when recorded, else ``s`` and ``budget_step - s``):

    1. **Diverged** -> prune: ``v_k`` is NaN or infinite, or ``v_k > v_1 + noise(v_k, v_1)``
       (above its starting level beyond noise; early in a long warmup the loss has barely moved
       and an evaluation can land just above the start by chance). Checked always, even in
       warmup.
    2. **Protected** -> continue: ``s <= warmup_step``, or ``k < min_evals``, or
       ``k <= patience``.
    3. **Peers**: the COMPLETE trials other than ``t`` that have intermediate values. For each
       peer ``j``, ``L_j`` is its best value at steps ``<= s`` (a peer whose curve ended before
       ``s`` gives its overall best; a peer with no finite value at a step ``<= s`` is skipped)
       and ``E_j`` its overall best. Fewer than ``n_startup_trials`` such peers -> continue.
       Otherwise ``ref_now = percentile(L, percentile)`` and ``ref_end = percentile(E,
       percentile)`` (numpy, linear interpolation), and ``noise_now`` is the median over the
       peers of ``noise(b, L_j)``.
    4. **Projections**. Recent gain ``g = min(v_1 .. v_w) - b`` with ``w = k - patience``, the
       improvement over the last ``patience`` evaluations, or since its warmup ended if that is
       later (``v_w`` the first evaluation at or after ``warmup_step``, and ``w <= k - 1``): the
       gains made while the LR still ramps up say little about the rate after. ``g = 0`` if it
       is less than the noise between those two evaluations (a change within noise counts as
       none). *Own*: ``b - g * ln(1 + left / done) / ln(done / done_w)``, where ``done_w``
       is the learning done by the start of those evaluations: its recent gain kept up for
       every further factor of learning. A loss that falls as a power law of the learning
       towards a floor, as LM losses do, gains less with each factor, so this is still
       optimistic; a straight line would keep a low-LR trial that is still falling steadily for
       half its budget. When
       ``done_w`` is 0 (the window starts at the untrained model), the gain is kept up per unit
       of learning instead: ``b - g * left / (done - done_w)``. A fall that is speeding up (a
       trial leaving a plateau) is projected at its latest rate where that reaches further:
       the same formula with the gain made by the latest evaluation (counted when it is at
       least the noise between the two) and the learning done by the one before it. *Peers*:
       for each peer ``j``, with ``X_j`` its best value by the evaluation at which it had done
       ``done`` and ``Y_j`` by the one at which it had done ``done + left`` (its overall best
       past its end), both compared at equal learning: ``Y_j + max(0, b - X_j)``, where that
       peer got to with as much more learning, plus how far ``t`` lags it at equal learning.
       (Learning in LR sums when both trials recorded them, else in steps.) ``projected`` is
       the smallest of these.
    5. **Stalled loser** -> prune: ``b > ref_now + noise_now`` (worse than the peers at the same
       step, beyond noise) and ``projected > ref_end`` (neither its own recent rate nor the
       path of any peer brings it to where the peers ended).
    6. **Plateaued leader** -> stop: ``g == 0`` and ``b <= ref_now`` and every peer's
       ``L_j - E_j <= noise(L_j, E_j)`` (no peer improved beyond noise after this step, e.g.
       they all flattened or overfit) and the lowest of its last ``patience`` values ``v``
       is above ``b + noise(v, b)``
       (the trial is past its minimum: its val loss has turned up and stayed up, as when it
       overfits). The trial should end now and be recorded COMPLETE with its best value ``b``.
       A leader that is merely flat, or up by one noisy evaluation, goes on: on cosine or WSD
       schedules the LR decay still to come often brings a late drop, and peers with other
       warmups anneal at other steps, so such stops cost the eventual winner in replays.
    7. Otherwise continue.

    Comparing with the peers at equal learning, not at equal steps, is what keeps a slow
    starter and prunes a slow learner. A high-LR trial with a long warmup reaches a given step
    with little learning done, so it is compared with the peers when they, too, still sat on
    the plateau, and their drop after it says where it can get. A low-LR trial sitting on that
    plateau has little learning left, so the peers' paths over that much learning end high.

    :meth:`prune` returns True for "prune" and for "stop"; the objective tells them apart with
    :meth:`last_decision` (:class:`StopsLeaders`). :meth:`decide` returns the verdict without recording it.

    Args:
        percentile: Level of the peers to compare with, in [0, 100] (50 = median).
        patience: Number of most recent evaluations over which the recent gain is measured;
            an integer >= 1.
        min_evals: Never prune (except divergence) or stop a trial with fewer evaluations than
            this; an integer >= 1.
        z: Differences smaller than ``z`` standard errors (paired over the val batches where
            recorded, else of the latest evaluation) count as none; a finite number >= 0.
        n_startup_trials: Number of usable COMPLETE peers needed before a stall is judged; an
            integer >= 1. With three, the peers' median and paths were too coarse to judge a
            winner just leaving a long warmup: replays of recorded studies lost it in up to 1%
            of trial orders; with four, in none (README, "Why four finished trials").
    """

    def __init__(
        self,
        percentile: float = 50.0,
        patience: int = 3,
        min_evals: int = 4,
        z: float = 1.0,
        n_startup_trials: int = 4,
    ) -> None:
        if isinstance(percentile, bool) or not isinstance(percentile, numbers.Real):
            raise ValueError(f"percentile must be a number in [0, 100], got {percentile!r}")
        if not (0.0 <= float(percentile) <= 100.0):
            raise ValueError(f"percentile must be in [0, 100], got {percentile!r}")
        if not _is_int(patience) or patience < 1:
            raise ValueError(f"patience must be an integer >= 1, got {patience!r}")
        if not _is_int(min_evals) or min_evals < 1:
            raise ValueError(f"min_evals must be an integer >= 1, got {min_evals!r}")
        if (
            isinstance(z, bool)
            or not isinstance(z, numbers.Real)
            or not math.isfinite(float(z))
            or z < 0
        ):
            raise ValueError(f"z must be a finite number >= 0, got {z!r}")
        if not _is_int(n_startup_trials) or n_startup_trials < 1:
            raise ValueError(
                f"n_startup_trials must be an integer >= 1, got {n_startup_trials!r}"
            )
        self._percentile = float(percentile)
        self._patience = int(patience)
        self._min_evals = int(min_evals)
        self._z = float(z)
        self._n_startup_trials = int(n_startup_trials)
        self._decisions: Dict[int, PlateauDecision] = {}
        # COMPLETE trials never change, so their prepared curves are kept, keyed by
        # (study name, trial number) and checked against the number of values.
        self._peer_cache: Dict[Tuple[str, int], Tuple[int, _Curve]] = {}
        self._checked_studies: set = set()

    # -- public API -------------------------------------------------------------------------

    @property
    def percentile(self) -> float:
        return self._percentile

    @property
    def patience(self) -> int:
        return self._patience

    @property
    def min_evals(self) -> int:
        return self._min_evals

    @property
    def z(self) -> float:
        return self._z

    @property
    def n_startup_trials(self) -> int:
        return self._n_startup_trials

    def prune(self, study: "Study", trial: "FrozenTrial") -> bool:
        decision = self.decide(study, trial)
        self._decisions[trial.number] = decision
        return decision.action != CONTINUE

    def last_decision(self, trial_number: int) -> Optional[PlateauDecision]:
        """The verdict of the latest :meth:`prune` call on this trial, or None if none."""
        return self._decisions.get(trial_number)

    def decide(self, study: "Study", trial: "FrozenTrial") -> PlateauDecision:
        """Apply the rule in the class docstring to ``trial`` at its latest step."""
        self._check_direction(study)

        k = len(trial.intermediate_values)
        if k == 0:
            return PlateauDecision(CONTINUE, "no values reported yet")
        me = _Curve(trial)
        steps, values = me.steps, me.values
        s, v_k, v_1 = int(steps[-1]), float(values[-1]), float(values[0])
        se = _as_se(trial_record.val_loss_se(trial).get(s))

        def noise(a: _Curve, i: int, c: _Curve, j: int) -> float:
            paired = _paired_se(a, i, c, j)
            return self._z * (se if math.isnan(paired) else paired)

        # 1. Diverged.
        if math.isnan(v_k):
            return PlateauDecision(
                PRUNE, f"diverged: val loss {trial.intermediate_values[s]} at step {s} is not finite")
        noise_start = noise(me, k - 1, me, 0)
        if not math.isnan(v_1) and v_k > v_1 + noise_start:
            return PlateauDecision(
                PRUNE,
                f"diverged: val loss {v_k:.4f} at step {s} is above its starting level "
                f"{v_1:.4f} + noise {noise_start:.4f}",
            )

        # 2. Protected.
        warmup_step = trial_record.warmup_step(trial)
        if s <= warmup_step:
            return PlateauDecision(CONTINUE, f"in warmup (step {s} <= warmup_step {warmup_step})")
        if k < self._min_evals:
            return PlateauDecision(CONTINUE, f"{k} evaluations < min_evals {self._min_evals}")
        if k <= self._patience:
            return PlateauDecision(CONTINUE, f"{k} evaluations <= patience {self._patience}")

        # 3. Peers.
        peers = self._peers(study, trial)
        budget_step = trial_record.budget_step(trial)
        if budget_step is None:
            budget_step = max((p.last_step for p in peers if p.last_step is not None), default=s)
        left_steps = float(max(budget_step - s, 0))
        usable, now_index = [], []
        for peer in peers:
            i = peer.index_by(s, by_learning=False)
            if i >= 0 and peer.best_index[i] >= 0:
                usable.append(peer)
                now_index.append(int(peer.best_index[i]))
        if len(usable) < self._n_startup_trials:
            return PlateauDecision(
                CONTINUE,
                f"{len(usable)} finished peers at step {s} < n_startup_trials "
                f"{self._n_startup_trials}",
            )
        now_a = np.array([p.values[i] for p, i in zip(usable, now_index)])
        end_a = np.array([p.best for p in usable])
        ref_now = float(np.percentile(now_a, self._percentile))
        ref_end = float(np.percentile(end_a, self._percentile))
        i_b = int(me.best_index[-1])
        b = float(values[i_b])
        noise_now = float(np.median([noise(me, i_b, p, i) for p, i in zip(usable, now_index)]))

        # 4. Recent gain, projected over what the trial has left; the peers' record.
        w = min(max(k - self._patience - 1, int(np.searchsorted(steps, warmup_step))), k - 2)
        i_before = int(me.best_index[w])
        g = float(values[i_before]) - b if i_before >= 0 else 0.0
        if g < noise(me, i_before, me, i_b):
            g = 0.0
        learned_budget = _as_float(trial_record.lr_area_budget(trial))
        by_learning = not math.isnan(learned_budget) and me.learned[-1] > me.learned[w]
        done_by = me.learned if by_learning else steps.astype(float)  # at each evaluation
        done = float(done_by[-1])
        left = max(learned_budget - done, 0.0) if by_learning else left_steps
        own_gain = _gain_kept_up(g, float(done_by[w]), done, left)
        # A fall that is speeding up (leaving a plateau) is projected at its latest rate.
        i_prev = int(me.best_index[k - 2])
        g_last = float(values[i_prev]) - b if i_prev >= 0 else 0.0
        if g_last > 0 and g_last >= noise(me, i_prev, me, i_b):
            own_gain = max(own_gain, _gain_kept_up(g_last, float(done_by[-2]), done, left))
        peer_end = math.inf
        for peer in usable:
            # Learning when both recorded it (a mixed study, e.g. resumed across versions: steps).
            use_learning = by_learning and not math.isnan(peer.learned[-1])
            at, ahead = (done, left) if use_learning else (float(s), left_steps)
            then, later = peer.best_by(at, use_learning), peer.best_by(at + ahead, use_learning)
            if not (math.isnan(then) or math.isnan(later)):
                peer_end = min(peer_end, later + max(0.0, b - then))

        # 5. Stalled loser.
        if b > ref_now + noise_now:
            projected = min(b - own_gain, peer_end)
            if projected > ref_end:
                unit = "learning" if by_learning else "training"
                return PlateauDecision(
                    PRUNE,
                    f"stalled loser at step {s}: best {b:.4f} > peers' p{self._percentile:g} "
                    f"{ref_now:.4f} + noise {noise_now:.4f}, and projected {projected:.4f} "
                    f"(own recent gain kept up: {b - own_gain:.4f}; from the peers at equal "
                    f"{unit}: {peer_end:.4f}) > peers' final p{self._percentile:g} {ref_end:.4f}",
                )
            return PlateauDecision(
                CONTINUE,
                f"behind at step {s} (best {b:.4f} > {ref_now:.4f}) but projected "
                f"{projected:.4f} <= peers' final {ref_end:.4f}",
            )

        # 6. Plateaued leader.
        recent = values[k - self._patience:]
        i_low = k - self._patience + int(np.nanargmin(recent)) if not np.all(np.isnan(recent)) else -1
        past_minimum = i_low >= 0 and float(values[i_low]) > b + noise(me, i_low, me, i_b)
        peer_gains = [(float(p.values[i]) - p.best, noise(p, i, p, int(p.best_index[-1])))
                      for p, i in zip(usable, now_index)]
        any_peer_gain = max(gain for gain, _ in peer_gains)
        peers_flat = all(gain <= peer_noise for gain, peer_noise in peer_gains)
        if g == 0.0 and b <= ref_now and peers_flat and past_minimum:
            return PlateauDecision(
                STOP,
                f"plateaued leader at step {s}: best {b:.4f} <= peers' p{self._percentile:g} "
                f"{ref_now:.4f}, its last {self._patience} val losses all above it beyond noise, "
                f"no gain beyond noise over the last {self._patience} evaluations, and no peer "
                f"gained beyond noise after this step (largest gain {any_peer_gain:.4f})",
            )

        # 7.
        return PlateauDecision(
            CONTINUE,
            f"at step {s}: best {b:.4f}, peers' p{self._percentile:g} {ref_now:.4f}, recent "
            f"gain {g:.4f}, largest peer gain after this step {any_peer_gain:.4f}",
        )

    # -- internals --------------------------------------------------------------------------

    def _check_direction(self, study: "Study") -> None:
        key = study.study_name
        if key in self._checked_studies:
            return
        directions = study.directions
        if len(directions) != 1 or directions[0] != StudyDirection.MINIMIZE:
            names = ", ".join(d.name.lower() for d in directions)
            raise ValueError(
                "PlateauPruner works only for single-objective studies with "
                f"direction='minimize' (a val loss); study {study.study_name!r} has "
                f"direction(s) [{names}]. Use another pruner, or minimize the loss."
            )
        self._checked_studies.add(key)

    def _peers(self, study: "Study", trial: "FrozenTrial") -> List[_Curve]:
        completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        peers: List[_Curve] = []
        name = study.study_name
        for other in completed:
            if other.number == trial.number or not other.intermediate_values:
                continue
            key = (name, other.number)
            n = len(other.intermediate_values)
            cached = self._peer_cache.get(key)
            if cached is None or cached[0] != n:
                cached = (n, _Curve(other))
                self._peer_cache[key] = cached
            peers.append(cached[1])
        return peers
