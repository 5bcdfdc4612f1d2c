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
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np
import optuna
from optuna.study import StudyDirection
from optuna.trial import TrialState

from sweeps import trial_record
from sweeps.plateau_curves import Curve, Latest, Learning, Levels, Projection, gain_kept_up

if TYPE_CHECKING:  # pragma: no cover
    from optuna.study import Study
    from optuna.trial import FrozenTrial

__all__ = ["PlateauDecision", "PlateauFallbackWarning", "PlateauPruner", "StopsLeaders"]

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


class PlateauFallbackWarning(UserWarning):
    """A trial is judged with less than the rule uses: it recorded no batch losses (the noise
    comes from one evaluation's standard error) or no LR sums (learning is counted in steps)."""


_NO_BATCH_LOSSES, _NO_LR_SUMS = "batch losses", "LR sums"
_FALLBACK_MESSAGES = {
    _NO_BATCH_LOSSES: (
        "PlateauPruner: trial {trial} of study {study!r} recorded no val batch losses (user attrs "
        f"{trial_record.VAL_BATCH_LOSSES!r}, {trial_record.VAL_BATCHES!r}), so its comparisons "
        f"take their noise from one evaluation's standard error ({trial_record.VAL_LOSS_SE!r}), "
        "not from the batch-by-batch difference. Warned once per study."
    ),
    _NO_LR_SUMS: (
        "PlateauPruner: trial {trial} of study {study!r} recorded no LR sums (user attrs "
        f"{trial_record.LR_AREA!r}, {trial_record.LR_AREA_BUDGET!r}), so its learning is counted "
        "in steps, as if at a constant LR. Warned once per study."
    ),
}

def _is_int(x: Any) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


class PlateauPruner(optuna.pruners.BasePruner, StopsLeaders):
    """Prune stalled losers and stop plateaued leaders, judged against the finished trials.

    For ``direction="minimize"`` studies (a val loss; any other raises ``ValueError`` on first
    use). Steps are training tokens (any monotone unit works), reported after every evaluation.
    A trial's records are read through :mod:`sweeps.trial_record`: ``warmup_step`` (default 0),
    ``budget_step`` (default the largest step of the COMPLETE trials, or its current step),
    ``val_loss_se`` (default 0), ``val_batch_losses`` on ``val_batches``, ``lr_area`` and
    ``lr_area_budget``. The LR sums measure *learning*: Adam moves the weights in proportion to
    the LR, so a trial late in its decay, or at a low LR, has less learning left than its steps
    suggest. A trial without batch losses or LR sums is judged with less (below), with one
    :class:`PlateauFallbackWarning` per study.

    The rule, for trial ``t`` with values ``v_1 .. v_k`` at steps ``s_1 < ... < s_k = s``, best
    ``b = min(v)`` (finite values) and standard error ``se`` at ``s``. ``noise(x, y)`` between
    two evaluations (of ``t`` or of a peer) is ``z`` times the standard error of their
    difference batch by batch (``std(x_i - y_i) / sqrt(n)`` over the ``n`` batch losses) when
    both recorded batch losses on the same ``val_batches``, else ``z * se``: a batch that is hard
    for one model is hard for the others, so the paired error is several times smaller.
    ``done`` and ``left`` are the learning ``t`` has done by ``s`` and has left after it (LR sums
    when recorded, else ``s`` and ``budget_step - s``). Each stage decides or passes on:

    1. **Divergence** -> prune: ``v_k`` is not finite, or ``v_k > v_1 + noise(v_k, v_1)`` (early
       in a long warmup an evaluation can land just above the start by chance). Checked even in
       warmup.
    2. **Protection** -> continue: ``s <= warmup_step``, or ``k < min_evals``, or
       ``k <= patience``.
    3. **Peers**: the COMPLETE trials but ``t`` with a finite value at a step ``<= s``; ``L_j``
       is peer ``j``'s best at steps ``<= s`` (its overall best if it ended before ``s``),
       ``E_j`` its overall best. Fewer than ``n_startup_trials`` -> continue. ``ref_now =
       percentile(L, percentile)``, ``ref_end = percentile(E, percentile)`` (numpy, linear),
       ``noise_now`` = the median over the peers of ``noise(b, L_j)``.
    4. **Projections**. Recent gain ``g = min(v_1 .. v_w) - b`` with ``w = k - patience``, or
       the first evaluation at or after ``warmup_step`` if that is later (gains while the LR
       ramps up say little about the rate after), and ``w <= k - 1``; ``g = 0`` when it is less
       than the noise between those two evaluations. *Own*: ``b - g * ln(1 + left / done) /
       ln(done / done_w)`` (``done_w``: the learning done by ``v_w``), the recent gain kept up
       for every further factor of learning (still optimistic for a loss falling as a power
       law towards a floor); per unit of learning, ``b - g * left / (done - done_w)``, when
       ``done_w`` is 0. A fall that is speeding up (leaving a plateau) is projected at its
       latest rate where that reaches further: the same with the gain made by ``v_k`` (counted
       when at least the noise between the two) and the learning done by ``v_{k-1}``. *Peers*:
       the lowest over the peers of ``Y_j + max(0, b - X_j)``, ``X_j`` and ``Y_j`` the peer's
       best by the evaluation at which it had done ``done`` and ``done + left`` (its overall
       best past its end): where it got with as much more learning, plus how far ``t`` lags it
       at equal learning (LR sums when both recorded them, else steps). ``projected`` is the
       lower of the two.
    5. **Stalled loser** -> prune: ``b > ref_now + noise_now`` (behind the peers at the same
       step, beyond noise) and ``projected > ref_end`` (neither its own rate nor any peer's path
       brings it to where the peers ended); only behind -> continue.
    6. **Plateaued leader** -> stop (COMPLETE with ``b``): ``g == 0``, ``b <= ref_now``, every
       peer's ``L_j - E_j <= noise(L_j, E_j)`` (no peer improved beyond noise after ``s``), and
       the lowest ``v`` of its last ``patience`` values is above ``b + noise(v, b)`` (its val
       loss turned up and stayed up, as when it overfits). A merely flat leader goes on: the LR
       decay still to come often brings a late drop.
    7. Otherwise continue.

    Comparing with the peers at equal learning, not at equal steps, keeps a slow starter and
    prunes a slow learner: a high-LR trial with a long warmup is compared with the peers when
    they, too, sat on the plateau, and a low-LR trial on that plateau has little learning left.

    :meth:`prune` returns True for "prune" and for "stop"; :meth:`last_decision` tells them
    apart (:class:`StopsLeaders`). :meth:`decide` returns the verdict without recording it.
    How the defaults were chosen: ``bench/README.md``.

    Args:
        percentile: Level of the peers to compare with, in [0, 100] (50 = median).
        patience: Number of most recent evaluations over which the recent gain is measured;
            an integer >= 1.
        min_evals: Never prune (except divergence) or stop a trial with fewer evaluations than
            this; an integer >= 1.
        z: Differences smaller than ``z`` standard errors (paired over the val batches where
            recorded, else of the latest evaluation) count as none; a finite number >= 0.
        n_startup_trials: Number of usable COMPLETE peers needed before a stall is judged; an
            integer >= 1.
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
        self._peer_cache: Dict[Tuple[str, int], Tuple[int, Curve]] = {}
        self._checked_studies: set = set()
        self._warned: Set[Tuple[str, str]] = set()  # (study name, fallback) warned about

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
        if not trial.intermediate_values:
            return PlateauDecision(CONTINUE, "no values reported yet")
        me = Latest(trial, self._z)
        self._warn_once(study, _NO_BATCH_LOSSES, [me.curve], lambda c: not c.pairs)
        self._warn_once(study, _NO_LR_SUMS, [me.curve],
                        lambda c: math.isnan(me.learning_budget) or not c.counts_learning)
        # Each stage returns a verdict or None (pass on to the next).
        early = self._diverged(trial, me) or self._protected(me)
        if early is not None:
            return early
        peers = self._peers(study, trial)
        usable = self._usable_peers(peers, me.step)
        if len(usable) < self._n_startup_trials:
            return PlateauDecision(
                CONTINUE,
                f"{len(usable)} finished peers at step {me.step} < n_startup_trials "
                f"{self._n_startup_trials}",
            )
        peer_curves = [peer for peer, _ in usable]
        self._warn_once(study, _NO_BATCH_LOSSES, peer_curves, lambda c: not c.pairs)
        self._warn_once(study, _NO_LR_SUMS, peer_curves, lambda c: not c.counts_learning)
        levels = self._reference_levels(me, usable)
        projection = self._projections(me, levels, self._budget_step(trial, peers, me.step))
        return (
            self._stalled_loser(me, levels, projection)
            or self._plateaued_leader(me, levels, projection)
            or PlateauDecision(
                CONTINUE,
                f"at step {me.step}: best {me.best:.4f}, peers' p{self._percentile:g} "
                f"{levels.now:.4f}, recent gain {projection.recent_gain:.4f}, largest peer gain "
                f"after this step {levels.largest_gain_after:.4f}",
            )
        )

    # -- the stages -------------------------------------------------------------------------

    def _diverged(self, trial: "FrozenTrial", me: Latest) -> Optional[PlateauDecision]:
        """1. Its latest value is not finite, or above its first beyond noise."""
        curve, step = me.curve, me.step
        latest, first = float(curve.values[-1]), float(curve.values[0])
        if math.isnan(latest):
            return PlateauDecision(
                PRUNE,
                f"diverged: val loss {trial.intermediate_values[step]} at step {step} is not finite",
            )
        noise = me.noise(curve, me.n_evals - 1, curve, 0)
        if not math.isnan(first) and latest > first + noise:
            return PlateauDecision(
                PRUNE,
                f"diverged: val loss {latest:.4f} at step {step} is above its starting level "
                f"{first:.4f} + noise {noise:.4f}",
            )
        return None

    def _protected(self, me: Latest) -> Optional[PlateauDecision]:
        """2. In warmup, or too few evaluations to judge."""
        if me.step <= me.warmup_step:
            return PlateauDecision(
                CONTINUE, f"in warmup (step {me.step} <= warmup_step {me.warmup_step})")
        if me.n_evals < self._min_evals:
            return PlateauDecision(CONTINUE, f"{me.n_evals} evaluations < min_evals {self._min_evals}")
        if me.n_evals <= self._patience:
            return PlateauDecision(CONTINUE, f"{me.n_evals} evaluations <= patience {self._patience}")
        return None

    @staticmethod
    def _usable_peers(peers: Sequence[Curve], step: int) -> List[Tuple[Curve, int]]:
        """3. The peers with a finite value at a step <= ``step``, each with the index of its
        best evaluation there (its ``L_j``)."""
        usable = []
        for peer in peers:
            i = peer.index_by(step, by_learning=False)
            if i >= 0 and peer.best_index[i] >= 0:
                usable.append((peer, int(peer.best_index[i])))
        return usable

    def _reference_levels(self, me: Latest, usable: List[Tuple[Curve, int]]) -> Levels:
        """3. Where the peers stood at the trial's latest step and where they ended."""
        now_values = np.array([peer.values[i] for peer, i in usable])
        end_values = np.array([peer.best for peer, _ in usable])
        best_index = me.best_index
        return Levels(
            peers=usable,
            now=float(np.percentile(now_values, self._percentile)),
            end=float(np.percentile(end_values, self._percentile)),
            noise=float(np.median([me.noise(me.curve, best_index, peer, i) for peer, i in usable])),
            noise_of=me.noise,
        )

    @staticmethod
    def _budget_step(trial: "FrozenTrial", peers: Sequence[Curve], step: int) -> int:
        """Its planned final step; else the largest step of the peers, else ``step``."""
        budget = trial_record.budget_step(trial)
        if budget is None:
            budget = max((p.last_step for p in peers if p.last_step is not None), default=step)
        return budget

    def _projections(self, me: Latest, levels: Levels, budget_step: int) -> Projection:
        """4. Its recent gain, where that gain kept up takes it, and where the peers' paths
        at equal learning take it."""
        window_start = min(max(me.n_evals - self._patience - 1,
                               int(np.searchsorted(me.curve.steps, me.warmup_step))),
                           me.n_evals - 2)
        recent_gain = self._recent_gain(me, window_start)
        learning = self._learning(me, window_start, budget_step)
        return Projection(
            recent_gain=recent_gain,
            by_learning=learning.by_learning,
            own=self._own_gain_kept_up(me, window_start, recent_gain, learning),
            from_peers=self._peers_paths(me, levels, learning),
        )

    @staticmethod
    def _recent_gain(me: Latest, window_start: int) -> float:
        """4. ``g``: its best before the window minus its best now; 0 within noise."""
        curve, best_index = me.curve, me.best_index
        i_before = int(curve.best_index[window_start])
        gain = float(curve.values[i_before]) - me.best if i_before >= 0 else 0.0
        if gain < me.noise(curve, i_before, curve, best_index):
            gain = 0.0
        return gain

    @staticmethod
    def _learning(me: Latest, window_start: int, budget_step: int) -> Learning:
        """4. Its training done and left, in LR sums where recorded (and grown over the
        window), else in steps."""
        curve = me.curve
        left_steps = float(max(budget_step - me.step, 0))
        by_learning = (not math.isnan(me.learning_budget)
                       and curve.learned[-1] > curve.learned[window_start])
        done_by = curve.learned if by_learning else curve.steps.astype(float)
        done = float(done_by[-1])
        left = max(me.learning_budget - done, 0.0) if by_learning else left_steps
        return Learning(by_learning, done_by, done, left, left_steps)

    @staticmethod
    def _own_gain_kept_up(me: Latest, window_start: int, recent_gain: float,
                          learning: Learning) -> float:
        """4. *Own*: where its recent gain, kept up per factor of learning, takes it; a fall
        that is speeding up is projected at its latest rate where that reaches further."""
        curve, best, best_index = me.curve, me.best, me.best_index
        done_by, done, left = learning.done_by, learning.done, learning.left
        kept_up = gain_kept_up(recent_gain, float(done_by[window_start]), done, left)
        i_prev = int(curve.best_index[me.n_evals - 2])
        latest_gain = float(curve.values[i_prev]) - best if i_prev >= 0 else 0.0
        if latest_gain > 0 and latest_gain >= me.noise(curve, i_prev, curve, best_index):
            kept_up = max(kept_up, gain_kept_up(latest_gain, float(done_by[-2]), done, left))
        return best - kept_up

    @staticmethod
    def _peers_paths(me: Latest, levels: Levels, learning: Learning) -> float:
        """4. *Peers*: the lowest of where a peer got with as much more learning, plus how far
        the trial lags it at equal learning; inf if no peer can tell."""
        best, lowest = me.best, math.inf
        for peer, _ in levels.peers:
            # Learning when both recorded it (a mixed study, e.g. resumed across versions: steps).
            use_learning = learning.by_learning and not math.isnan(peer.learned[-1])
            at, ahead = ((learning.done, learning.left) if use_learning
                         else (float(me.step), learning.left_steps))
            then, later = peer.best_by(at, use_learning), peer.best_by(at + ahead, use_learning)
            if not (math.isnan(then) or math.isnan(later)):
                lowest = min(lowest, later + max(0.0, best - then))
        return lowest

    def _stalled_loser(self, me: Latest, levels: Levels,
                       projection: Projection) -> Optional[PlateauDecision]:
        """5. Behind the peers beyond noise, and no projection reaches where they ended."""
        best, step = me.best, me.step
        if not best > levels.now + levels.noise:
            return None
        projected = min(projection.own, projection.from_peers)
        if projected > levels.end:
            unit = "learning" if projection.by_learning else "training"
            return PlateauDecision(
                PRUNE,
                f"stalled loser at step {step}: best {best:.4f} > peers' p{self._percentile:g} "
                f"{levels.now:.4f} + noise {levels.noise:.4f}, and projected {projected:.4f} "
                f"(own recent gain kept up: {projection.own:.4f}; from the peers at equal "
                f"{unit}: {projection.from_peers:.4f}) > peers' final p{self._percentile:g} "
                f"{levels.end:.4f}",
            )
        return PlateauDecision(
            CONTINUE,
            f"behind at step {step} (best {best:.4f} > {levels.now:.4f}) but projected "
            f"{projected:.4f} <= peers' final {levels.end:.4f}",
        )

    def _plateaued_leader(self, me: Latest, levels: Levels,
                          projection: Projection) -> Optional[PlateauDecision]:
        """6. A leader past its minimum, with no gain left in it or in any peer."""
        curve, best, first_recent = me.curve, me.best, me.n_evals - self._patience
        recent = curve.values[first_recent:]
        i_low = first_recent + int(np.nanargmin(recent)) if not np.all(np.isnan(recent)) else -1
        past_minimum = (i_low >= 0 and float(curve.values[i_low])
                        > best + me.noise(curve, i_low, curve, me.best_index))
        if projection.recent_gain == 0.0 and best <= levels.now and levels.flat_after and past_minimum:
            return PlateauDecision(
                STOP,
                f"plateaued leader at step {me.step}: best {best:.4f} <= peers' "
                f"p{self._percentile:g} {levels.now:.4f}, its last {self._patience} val losses "
                f"all above it beyond noise, no gain beyond noise over the last "
                f"{self._patience} evaluations, and no peer gained beyond noise after this step "
                f"(largest gain {levels.largest_gain_after:.4f})",
            )
        return None

    # -- internals --------------------------------------------------------------------------

    def _warn_once(self, study: "Study", fallback: str, curves: Sequence[Curve],
                   lacks: Callable[[Curve], bool]) -> None:
        """A :class:`PlateauFallbackWarning`, the first time in ``study`` that one of
        ``curves`` lacks what ``fallback`` names."""
        key = (study.study_name, fallback)
        if key in self._warned:
            return
        lacking = next((c for c in curves if lacks(c)), None)
        if lacking is not None:
            self._warned.add(key)
            warnings.warn(
                _FALLBACK_MESSAGES[fallback].format(trial=lacking.number, study=study.study_name),
                PlateauFallbackWarning,
            )

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

    def _peers(self, study: "Study", trial: "FrozenTrial") -> List[Curve]:
        completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        peers: List[Curve] = []
        name = study.study_name
        for other in completed:
            if other.number == trial.number or not other.intermediate_values:
                continue
            key = (name, other.number)
            n = len(other.intermediate_values)
            cached = self._peer_cache.get(key)
            if cached is None or cached[0] != n:
                cached = (n, Curve(other))
                self._peer_cache[key] = cached
            peers.append(cached[1])
        return peers
