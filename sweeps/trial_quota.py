"""How many trials a study still runs: `study.n_trials` counts finished and running trials, and
a grid stops once every point is tried."""

from __future__ import annotations

from typing import Optional

import optuna
from optuna.trial import TrialState

from sweeps.objective import TrialFailed
from sweeps.retries import frozen_trial, requeue
from sweeps.trial_record import set_fail_reason

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def trials_taken(study: optuna.Study, before: Optional[int] = None) -> int:
    """Trials that count towards `study.n_trials`: finished or running (numbered below `before`)."""
    trials = study.get_trials(deepcopy=False, states=FINISHED + (TrialState.RUNNING,))
    return sum(before is None or t.number < before for t in trials)


def grid_done(study: optuna.Study, sampler: optuna.samplers.BaseSampler) -> bool:
    """A grid study has tried every point, and no interrupted point waits to run again."""
    return (isinstance(sampler, optuna.samplers.GridSampler) and sampler.is_exhausted(study)
            and not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


def within_budget(objective, n_trials: int):
    """`objective`, run only when fewer than `n_trials` trials numbered before this one are
    finished or running. Workers that counted the study at the same moment and both asked for a
    trial get consecutive numbers from the storage, so the later one sees the earlier one
    RUNNING; it is recorded FAIL at once, with the reason, instead of training a trial too many
    (a grid point it drew is queued again, see `sweeps.retries`)."""
    def run_trial(trial: optuna.Trial) -> float:
        taken = trials_taken(trial.study, before=trial.number)
        if taken >= n_trials:
            reason = (f"not run: {taken} trials before it were finished or running, and "
                      f"study.n_trials={n_trials} (another worker took the last one)")
            set_fail_reason(trial, reason)
            frozen = frozen_trial(trial)
            if "grid_id" in frozen.system_attrs:
                requeue(trial.study, frozen)
            raise TrialFailed(reason)
        return objective(trial)
    return run_trial
