"""ASHA's promotions in a live study (`study.rungs.promotions=true`): paused trials continued.

With promotions, RungHalvingPruner pauses a trial that is not in the top 1/eta at its rung (also
one of fewer than eta trials there): it ends PRUNED with `paused_at_rung`, its stable phase's
checkpoint kept in its run dir. Before each worker asks for a trial, it looks for a paused trial
now in the top floor(n / eta) of the n configs that reached its rung (the highest rung first, then
the lowest value) and queues its continuation: a WAITING trial with the same params and grid
point, of the same series (`retry_of`), whose `continues` names the paused trial. The worker's
ask takes it before drawing a new config; the objective copies the paused trial's checkpoint,
reports its rung values again and trains on from the next rung (sweeps.trial_resume), so a
config's trials are one run split at its pauses, and the study counts configs, not trials
(sweeps.trial_quota). This is Li et al.'s (2020) ASHA: a trial goes on only once it beats the
trials behind it, never only because it came early.

When no new config may be drawn (study.n_trials configs taken, or the grid done), none is
promotable and none runs, but no trial has reached the last rung, the best paused trial at the
highest rung reached is continued whatever the count: a study ends with a full-length trial (the
replay's rule, bench/cooldown_replay.py asha_promotion_order).

A worker with no config left to draw and nothing to continue stops; those still running go on
continuing what their own trials make promotable. Two workers that look at once may queue one
continuation twice; the later one is not run (sweeps.trial_quota.continued_once), nor is a new
trial whose grid point is taken because another worker took the continuation its own worker
expected (sweeps.trial_quota.within_budget).
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Set

import optuna
from optuna.trial import FrozenTrial, TrialState

from sweeps import trial_record
from sweeps.retries import carried_system_attrs, first_of_series
from sweeps.rung_pruner import rung_values, series_values, top_count

TAKEN_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)


def taken_configs(trials: Sequence[FrozenTrial]) -> Set[int]:
    """The configs (series, sweeps.retries.first_of_series) with a finished or running trial."""
    return {first_of_series(t) for t in trials if t.state in TAKEN_STATES}


def continued(trials: Sequence[FrozenTrial]) -> Dict[int, int]:
    """{paused trial: the first trial queued to continue it}."""
    first: Dict[int, int] = {}
    for t in sorted(trials, key=lambda t: t.number):
        paused = trial_record.continues(t)
        if paused is not None:
            first.setdefault(paused, t.number)
    return first


def paused_trials(trials: Sequence[FrozenTrial]) -> List[FrozenTrial]:
    """The trials paused at a rung that nothing continues yet."""
    taken = continued(trials)
    return [t for t in trials if t.state == TrialState.PRUNED and trial_record.paused_at_rung(t) is not None
            and t.number not in taken]


def promotable(trials: Sequence[FrozenTrial], eta: int) -> Optional[FrozenTrial]:
    """The paused trial to continue now: one in the top floor(n / eta) of the n configs with a
    value at its rung, from the highest such rung, the lowest value first; None if there is none."""
    paused = paused_trials(trials)
    for rung in sorted({trial_record.paused_at_rung(t) for t in paused}, reverse=True):
        values = sorted(v for v in series_values(trials, rung).values() if math.isfinite(v))
        kept = top_count(len(values), eta)
        if kept == 0:
            continue
        bar = values[kept - 1]
        inside = [t for t in paused if trial_record.paused_at_rung(t) == rung and rung_values(t)[rung] <= bar]
        if inside:
            return min(inside, key=lambda t: (rung_values(t)[rung], t.number))
    return None


def best_at_highest_rung(trials: Sequence[FrozenTrial]) -> Optional[FrozenTrial]:
    """The paused trial with the lowest value at the highest rung any paused trial reached."""
    paused = paused_trials(trials)
    if not paused:
        return None
    rung = max(trial_record.paused_at_rung(t) for t in paused)
    at = [t for t in paused if trial_record.paused_at_rung(t) == rung]
    return min(at, key=lambda t: (rung_values(t)[rung], t.number))


def continuation_waits(trials: Sequence[FrozenTrial]) -> bool:
    """Whether a WAITING trial goes on with a config the study has taken (a continuation, or the
    retry of an interrupted one): the study's count of configs does not hold it back."""
    taken = taken_configs(trials)
    return any(t.state == TrialState.WAITING and first_of_series(t) in taken for t in trials)


def queue_continuation(study: optuna.Study, paused: FrozenTrial) -> None:
    """Queue the continuation of `paused`: its params, grid point and series; WAITING."""
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.WAITING, params=paused.params, distributions=paused.distributions,
        user_attrs=trial_record.continuation_attrs(first_of_series(paused), paused.number),
        system_attrs=carried_system_attrs(paused)))


def queue_promotion(study: optuna.Study, eta: int, new_configs_left: bool,
                    trials: Optional[Sequence[FrozenTrial]] = None) -> Optional[str]:
    """Before a worker asks for a trial: queue the continuation it should run, unless one waits
    already. Returns what it queued, or None (the ask then takes the waiting one, or draws a new
    config; with `new_configs_left` False and nothing waiting, the study has no more for this
    worker). `trials`: the study's, when the caller has just read them."""
    trials = study.get_trials(deepcopy=False) if trials is None else trials
    if continuation_waits(trials):
        return None
    paused, why = promotable(trials, eta), "it is in the top 1/eta of the trials at its rung"
    if paused is None and not new_configs_left and not any(t.state in (TrialState.RUNNING, TrialState.COMPLETE)
                                                           for t in trials):
        paused, why = best_at_highest_rung(trials), "no trial has reached the last rung, and it is the best at the highest"
    if paused is None:
        return None
    queue_continuation(study, paused)
    return f"trial {paused.number} (paused at rung {trial_record.paused_at_rung(paused)}) goes on: {why}"
