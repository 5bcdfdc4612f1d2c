"""How many trials a study still runs: `study.n_trials` counts the configs with a finished or
running trial (a retry or a continuation runs a config already counted), and a grid stops once
every point is tried."""

from __future__ import annotations

from typing import Optional, Set

import optuna
from optuna.trial import TrialState

from sweeps.objective import TrialFailed
from sweeps.promotions import continued, taken_configs
from sweeps.retries import first_of_series, frozen_trial, requeue
from sweeps.trial_record import NOT_RUN, continues, retry_of, set_fail_reason

def configs_taken(study: optuna.Study, before: Optional[int] = None) -> Set[int]:
    """The series (sweeps.retries.first_of_series) with a finished or running trial (numbered below
    `before`): the configs that count towards `study.n_trials`."""
    return taken_configs([t for t in study.get_trials(deepcopy=False) if before is None or t.number < before])


def trials_taken(study: optuna.Study, before: Optional[int] = None) -> int:
    """How many configs count towards `study.n_trials` (see configs_taken)."""
    return len(configs_taken(study, before))


def grid_done(study: optuna.Study, sampler: optuna.samplers.BaseSampler) -> bool:
    """A grid study has tried every point, and no interrupted point waits to run again (a waiting
    continuation of a config already tried draws no point)."""
    if not (isinstance(sampler, optuna.samplers.GridSampler) and sampler.is_exhausted(study)):
        return False
    trials = study.get_trials(deepcopy=False)
    taken = taken_configs(trials)
    return not any(t.state == TrialState.WAITING and first_of_series(t) not in taken for t in trials)


def _tried_point(trial: optuna.Trial) -> Optional[int]:
    """The earlier trial that holds the grid point a new trial drew, when the grid had none left
    (Optuna's GridSampler then draws a tried point again); None otherwise."""
    if retry_of(trial) is not None:
        return None  # a retry or continuation runs its own point
    point = frozen_trial(trial).system_attrs.get("grid_id")
    if point is None:
        return None
    return next((t.number for t in trial.study.get_trials(deepcopy=False)
                 if t.number < trial.number and t.system_attrs.get("grid_id") == point), None)


def within_budget(objective, n_trials: int):
    """`objective`, run only when its config counts already (a retry or a continuation) or fewer
    than `n_trials` configs have a trial numbered before this one finished or running, and never
    for a grid point drawn again. Workers
    that counted the study at the same moment and both asked for a trial get consecutive numbers
    from the storage, so the later one sees the earlier one RUNNING; it is recorded FAIL at once,
    with the reason, instead of training a trial too many (a grid point it drew is queued again,
    see `sweeps.retries`)."""
    def run_trial(trial: optuna.Trial) -> float:
        tried = _tried_point(trial)
        if tried is not None:  # another worker took the waiting trial this one's worker expected
            reason = f"{NOT_RUN}its grid point is trial {tried}'s, and every point of the grid has been drawn"
            set_fail_reason(trial, reason)
            raise TrialFailed(reason)
        taken = configs_taken(trial.study, before=trial.number)
        if first_of_series(trial) not in taken and len(taken) >= n_trials:
            reason = (f"{NOT_RUN}{len(taken)} configs before it were finished or running, and "
                      f"study.n_trials={n_trials} (another worker took the last one)")
            set_fail_reason(trial, reason)
            frozen = frozen_trial(trial)
            if "grid_id" in frozen.system_attrs:
                requeue(trial.study, frozen)
            raise TrialFailed(reason)
        return objective(trial)
    return run_trial


def continued_once(objective):
    """`objective`, not run for a continuation of a paused trial that an earlier-numbered trial
    already continues (two workers queued it at once, sweeps.promotions): recorded FAIL, saying
    which trial goes on with it."""
    def run_trial(trial: optuna.Trial) -> float:
        paused = continues(trial)
        first = continued(trial.study.get_trials(deepcopy=False)).get(paused) if paused is not None else None
        if first is not None and first != trial.number:
            reason = f"{NOT_RUN}trial {first} already continues trial {paused} (two workers queued it at once)"
            set_fail_reason(trial, reason)
            raise TrialFailed(reason)
        return objective(trial)
    return run_trial
