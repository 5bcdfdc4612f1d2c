"""Asynchronous successive halving (ASHA) on the decayed losses of cooldown rungs."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Iterable, Optional

import optuna
from optuna.trial import FrozenTrial, TrialState

from sweeps import trial_record
from sweeps.retries import first_of_series

JUDGED_STATES = (TrialState.RUNNING, TrialState.PRUNED, TrialState.COMPLETE)


@dataclass(frozen=True)
class RungDecision:
    rung: int  # 0 for the shortest
    value: float
    rank: int  # 1 for the best value at this rung
    reached: int  # trials with a value at this rung, this one included
    kept: int  # how many of them may go on: the top 1/eta (0: too few to judge)
    promotions: bool = False  # a trial outside the top pauses (also while too few to judge)

    @property
    def prunes(self) -> bool:
        """Whether the trial stops here: outside the top 1/eta; without promotions only once at
        least eta trials reached the rung."""
        return self.rank > self.kept and (self.kept > 0 or self.promotions)

    @property
    def reason(self) -> str:
        said = (f"rung {self.rung}: decayed val loss {self.value:.4f} ranks {self.rank} of the {self.reached} "
                f"trials that reached it; only the top {self.kept} (1/eta) go on")
        if self.promotions:
            said += " now: paused, its checkpoint kept, it goes on once it is in the top 1/eta of the trials there"
        return said


def rung_values(trial: FrozenTrial) -> Dict[int, float]:
    """{rung index: decayed value} of a trial: its reports placed by its recorded rung steps (a
    rung skipped inside its warmup has none); without them, its reports in step order."""
    steps = trial_record.rung_steps(trial)
    values = trial.intermediate_values
    if steps is None:
        return dict(enumerate(values[s] for s in sorted(values)))
    return {k: values[s] for k, s in enumerate(steps) if s in values}


def series_values(trials: Iterable[FrozenTrial], rung: int, skip_series: Optional[int] = None) -> Dict[int, float]:
    """{series: decayed value at `rung`} of the running, pruned and complete trials that reached
    it, one value per series (sweeps.retries.first_of_series: a continuation reports its paused
    trial's rung values again, and one config counts once), leaving out the series `skip_series`."""
    values: Dict[int, float] = {}
    for t in trials:
        series = first_of_series(t)
        if t.state in JUDGED_STATES and series != skip_series and series not in values:
            theirs = rung_values(t)
            if rung in theirs:
                values[series] = theirs[rung]
    return values


def top_count(n: int, eta: int) -> int:
    """How many of the n trials at a rung go on: the top floor(n / eta)."""
    return n // eta


class RungHalvingPruner(optuna.pruners.BasePruner):
    """Prune a trial at a rung unless its decayed loss is in the top 1/eta of the trials that
    reached that rung.

    The objective (sweeps.cooldown) reports one value per rung: the val loss after a cooldown
    branch from the trial's stable phase, so every value at a rung is the loss of a fully decayed
    run of that horizon. At its report at rung k a trial is compared with every other trial that
    reported at rung k (running, pruned or complete; trials are matched by rung through their
    recorded rung steps, so trials with other tokens per iteration still compare, and one whose
    warmup outlasted rung k has no value there; the trials of one config, a paused trial and its
    continuation, count once): of the n values, the floor(n / eta) lowest go on, ties kept.
    While fewer than eta trials have reached the rung the trial goes on: no worker waits for
    another (asynchronous successive halving, Li et al. 2020). The objective does not ask at the
    last rung: the trial has finished there.

    With `promotions`, a trial outside the top 1/eta (so also one of fewer than eta at its rung)
    pauses instead: it ends PRUNED with its checkpoint kept, and a worker continues it once enough
    trials behind it have reached the rung to put it in the top 1/eta (sweeps.promotions), as Li
    et al.'s ASHA promotes: early trials are not let through only because they came first.
    """

    def __init__(self, eta: int = 3, promotions: bool = False):
        if eta < 2:
            raise ValueError(f"eta={eta} is invalid: the top 1/eta of the trials go on, so eta must be >= 2")
        self.eta = eta
        self.promotions = promotions
        self._decisions: Dict[int, RungDecision] = {}

    def decide(self, study: optuna.Study, trial: FrozenTrial) -> Optional[RungDecision]:
        """The decision at the trial's latest rung; None before its first report."""
        mine = rung_values(trial)
        if not mine:
            return None
        rung = max(mine)
        value = mine[rung]
        others = series_values(study.get_trials(deepcopy=False, states=JUDGED_STATES), rung,
                               skip_series=first_of_series(trial))
        values = [v for v in others.values() if math.isfinite(v)] + [value]
        kept = top_count(len(values), self.eta)
        rank = 1 + sum(v < value for v in values) if math.isfinite(value) else len(values)
        return RungDecision(rung, value, rank, len(values), kept, self.promotions)

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        decision = self.decide(study, trial)
        if decision is None:
            return False
        self._decisions[trial.number] = decision
        return decision.prunes

    def last_decision(self, number: int) -> Optional[RungDecision]:
        """The decision of this pruner's latest prune() call for trial `number`."""
        return self._decisions.get(number)
