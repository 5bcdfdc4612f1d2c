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

from sweeps.journal_storage import HEARTBEAT_ATTR
from sweeps.trial_record import fail_reason, is_baseline, retry_attrs, retry_of, set_fail_reason

MAX_RETRIES = 2


# Not carried to a queued rerun: its last heartbeat would make the new trial look stale at once,
# and a rerun's retry count is its queuer's to set (a continuation of a paused trial starts none).
NOT_CARRIED = (HEARTBEAT_ATTR, "failed_trial", "retry_history")


def carried_system_attrs(trial: FrozenTrial, **replaced) -> dict:
    """The system attrs a queued rerun of `trial` keeps (its grid point among them), with `replaced`."""
    return {**{k: v for k, v in trial.system_attrs.items() if k not in NOT_CARRIED}, **replaced}


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
        system_attrs=carried_system_attrs(trial, failed_trial=first, retry_history=history),
    ))
    return True


def frozen_trial(trial: optuna.Trial) -> FrozenTrial:
    """The stored record of a running trial (its params and system attrs, for `requeue`)."""
    return next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)


def requeue_lost_baseline(study: optuna.Study) -> bool:
    """Queue the baseline (trial 0) again when every run of it failed through no fault of its
    values (a crash, an interruption, a killed worker) and none waits or runs: a resumed study then
    still compares with it, even after it was retried MAX_RETRIES times (the cause, say a full
    disk, has been fixed since). True when it queued one."""
    trials = study.get_trials(deepcopy=False)
    series = [t for t in trials if first_of_series(t) == 0]
    if not series or not is_baseline(series[0]) or any(t.state != TrialState.FAIL for t in series):
        return False
    last = series[-1]
    reason = fail_reason(last)
    if reason is not None and not reason.startswith(("crashed", "interrupted", "killed")):
        return False  # e.g. out of memory: running it again would fail the same way
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.WAITING, params=last.params, distributions=last.distributions,
        user_attrs=retry_attrs(0),
        system_attrs=carried_system_attrs(last, failed_trial=0, retry_history=[]),
    ))
    return True


def recorded_when_crashed(objective, failure: type[Exception]):
    """`objective`, whose unexpected exception (an error in the data or on the disk, a bug) is
    recorded instead of ending the study: the trial is FAIL with the reason, queued to run again as
    an interrupted one is (its params are not at fault), and `failure` is raised for the study's
    loop to count. Pruning, `failure` itself and interrupts pass through."""
    def run_trial(trial: optuna.Trial) -> float:
        try:
            return objective(trial)
        except (optuna.TrialPruned, failure):
            raise
        except Exception as e:  # noqa: BLE001 - any crash: recorded, and the study goes on
            first_line = (str(e).strip().splitlines() or [""])[0]
            queued = requeue(trial.study, frozen_trial(trial))
            reason = f"crashed: {type(e).__name__}: {first_line}"
            set_fail_reason(trial, reason + (
                "; queued to run again" if queued else f"; crashed {MAX_RETRIES + 1} times, not queued again"))
            raise failure(reason) from e
    return run_trial


def requeued_when_interrupted(objective):
    """`objective`, whose trial is queued to run again when Ctrl-C or SIGTERM interrupts it
    (Optuna then records it FAIL and the interrupt ends the process)."""
    def run_trial(trial: optuna.Trial) -> float:
        try:
            return objective(trial)
        except KeyboardInterrupt:
            queued = requeue(trial.study, frozen_trial(trial))
            set_fail_reason(trial, "interrupted (Ctrl-C or SIGTERM); " + (
                "queued to run again" if queued else f"interrupted {MAX_RETRIES + 1} times, not queued again"))
            raise
    return run_trial
