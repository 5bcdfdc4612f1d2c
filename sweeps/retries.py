"""Interrupted trials run again.

A trial that ends FAIL through no fault of its params (Ctrl-C or SIGTERM, a worker killed and
found by its stale heartbeat, or a grid point drawn after another worker took the study's last
place) says nothing about those params. Left alone, it would lose what a resumed study cannot
draw again: the baseline (only trial 0 is the baseline) and, in a grid study, the point (Optuna's
GridSampler counts a FAIL trial's point as tried). So it is queued again, WAITING, with the
same params, grid point and a `retry_of` user attr naming the first trial of the series; the next
`ask` of any worker runs it before drawing anything new. The system attrs are Optuna's own
(`failed_trial`, `retry_history`, as `RetryHeartbeatStaleTrialCallback` sets them). A trial
that keeps getting killed (say by the kernel's OOM killer) is retried `MAX_RETRIES` times, then
left FAIL.
"""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial, TrialState

from sweeps.trial_record import retry_attrs, retry_of

MAX_RETRIES = 2


def first_of_series(trial: optuna.Trial | FrozenTrial) -> int:
    """The number of the trial that `trial` runs again (its own number if it is no retry)."""
    first = retry_of(trial)
    return trial.number if first is None else first


def requeue(study: optuna.Study, trial: FrozenTrial) -> bool:
    """Queue `trial` (ended FAIL by an interruption) to run again; False when it has been retried
    `MAX_RETRIES` times already."""
    history = [*trial.system_attrs.get("retry_history", []), trial.number]
    if len(history) > MAX_RETRIES:
        return False
    first = first_of_series(trial)
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.WAITING,
        params=trial.params,
        distributions=trial.distributions,
        user_attrs=retry_attrs(first),
        system_attrs={**trial.system_attrs, "failed_trial": first, "retry_history": history},
    ))
    return True
