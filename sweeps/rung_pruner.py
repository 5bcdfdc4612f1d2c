"""Asynchronous successive halving (ASHA) on the decayed losses of cooldown rungs."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional

import optuna
from optuna.trial import FrozenTrial, TrialState

from sweeps import trial_record


@dataclass(frozen=True)
class RungDecision:
    rung: int  # 0 for the shortest
    value: float
    rank: int  # 1 for the best value at this rung
    reached: int  # trials with a value at this rung, this one included
    kept: int  # how many of them may go on: the top 1/eta (0: too few to judge)

    @property
    def prunes(self) -> bool:
        return self.kept > 0 and self.rank > self.kept

    @property
    def reason(self) -> str:
        return (f"rung {self.rung}: decayed val loss {self.value:.4f} ranks {self.rank} of the {self.reached} "
                f"trials that reached it; only the top {self.kept} (1/eta) go on")


def rung_values(trial: FrozenTrial) -> Dict[int, float]:
    """{rung index: decayed value} of a trial: its reports placed by its recorded rung steps (a
    rung skipped inside its warmup has none); without them, its reports in step order."""
    steps = trial_record.rung_steps(trial)
    values = trial.intermediate_values
    if steps is None:
        return dict(enumerate(values[s] for s in sorted(values)))
    return {k: values[s] for k, s in enumerate(steps) if s in values}


class RungHalvingPruner(optuna.pruners.BasePruner):
    """Prune a trial at a rung unless its decayed loss is in the top 1/eta of the trials that
    reached that rung.

    The objective (sweeps.cooldown) reports one value per rung: the val loss after a cooldown
    branch from the trial's stable phase, so every value at a rung is the loss of a fully decayed
    run of that horizon. At its report at rung k a trial is compared with every other trial that
    reported at rung k (running, pruned or complete; trials are matched by rung through their
    recorded rung steps, so trials with other tokens per iteration still compare, and one whose
    warmup outlasted rung k has no value there): of the n values, the
    floor(n / eta) lowest go on, ties kept. While fewer than eta trials have reached the rung
    the trial goes on: no worker waits for another (asynchronous successive halving, Li et al.
    2020). The objective does not ask at the last rung: the trial has finished there.
    """

    def __init__(self, eta: int = 3):
        if eta < 2:
            raise ValueError(f"eta={eta} is invalid: the top 1/eta of the trials go on, so eta must be >= 2")
        self.eta = eta
        self._decisions: Dict[int, RungDecision] = {}

    def decide(self, study: optuna.Study, trial: FrozenTrial) -> Optional[RungDecision]:
        """The decision at the trial's latest rung; None before its first report."""
        mine = rung_values(trial)
        if not mine:
            return None
        rung = max(mine)
        value = mine[rung]
        others = []
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.PRUNED, TrialState.COMPLETE)):
            theirs = rung_values(t) if t.number != trial.number else {}
            if rung in theirs:
                others.append(theirs[rung])
        values = [v for v in others if math.isfinite(v)] + [value]
        kept = len(values) // self.eta
        rank = 1 + sum(v < value for v in values) if math.isfinite(value) else len(values)
        return RungDecision(rung, value, rank, len(values), kept)

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        decision = self.decide(study, trial)
        if decision is None:
            return False
        self._decisions[trial.number] = decision
        return decision.prunes

    def last_decision(self, number: int) -> Optional[RungDecision]:
        """The decision of this pruner's latest prune() call for trial `number`."""
        return self._decisions.get(number)
