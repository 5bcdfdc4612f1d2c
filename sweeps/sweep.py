"""`mode=sweep`: create or resume the study, then run trials until it holds `study.n_trials`."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import optuna
from omegaconf import DictConfig
from optuna.trial import TrialState

from sweeps.artifacts import ARTIFACT_DIR, open_artifact_store
from sweeps.promotions import continuation_waits, queue_promotion
from sweeps.trial_quota import continued_once, grid_done, trials_taken, within_budget
from sweeps.compose import (Composer, baseline_config, group_choices, require_sweep, search_space_of,
                            study_dir_of, study_name_of)
from sweeps.config import StudyError, check_study, promotions_on
from sweeps.console import StudyProgress, finished_configs
from sweeps.cooldown import check_cooldown_study
from sweeps.objective import METRIC_NAME, Objective, TrialFailed
from sweeps.plan import build_plan, short_plan
from sweeps.pruners import build_pruner
from sweeps.resume_checks import check_settings_fit_study, check_space_fits_study, fidelity_settings
from sweeps.retries import MAX_RETRIES, recorded_when_crashed, requeue_lost_baseline, requeued_when_interrupted
from sweeps.samplers import build_sampler
from sweeps.search_space import SearchSpace, SearchSpaceError, check_values_allowed
from sweeps.storage import create_or_load_study, dashboard_storage_arg, open_storage, redact_url
from sweeps.trial_record import BASELINE_AS_GIVEN, BASELINE_IN_SPACE, fail_reason, refused, retry_of
from trainer import (ConfigError, PreparedData, as_train_config, check_config, prepare_data, resolve_device, resolve_dtype,
                     schedule_warnings, warmup_iters_of)

MAX_CONSECUTIVE_FAILURES = 5


class OneLineTrialFailures(logging.Filter):
    """Optuna logs every failed trial at WARNING with its stack trace; the trial's user attr
    `fail_reason` already says why, so the console gets Optuna's one line and the trace goes only
    to the run's log files (Hydra's `<run dir>/study_runner.log`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and "failed with parameters" in record.getMessage():
            for handler in logging.getLogger().handlers:
                if isinstance(handler, logging.FileHandler) and self not in handler.filters:
                    handler.handle(record)
            record.exc_info, record.exc_text = None, None
        return True


@dataclass
class PreparedStudy:
    study: optuna.Study
    sampler: optuna.samplers.BaseSampler
    objective: Callable[[optuna.Trial], float]
    data: PreparedData  # the study's data, prepared (and its cache checked) once
    promotion_eta: Optional[int] = None  # study.rungs.promotions: paused trials are continued (sweeps.promotions)


def _baseline(cfg: DictConfig, overrides: list[str], space: SearchSpace) -> tuple[Optional[str], Optional[dict]]:
    """Trial 0 of a new study is the baseline (a grid's trials are its points: none there): how it
    is run, and its values when they are a point of the space."""
    if not cfg.study.baseline or str(cfg.study.sampler.name).lower() == "grid":
        return None, None
    values = space.baseline_values(baseline_config(cfg), group_choices(overrides))
    return (BASELINE_AS_GIVEN if values is None else BASELINE_IN_SPACE), values


def _sampler_and_pruner(cfg: DictConfig, space: SearchSpace, baseline_values: Optional[dict]):
    # an unknown name or a bad setting is a StudyError, which the entry point prints plainly
    try:
        sampler = build_sampler(cfg.study.sampler, space, first_trial=baseline_values)
    except SearchSpaceError:
        raise
    except ValueError as e:
        raise StudyError(str(e)) from None
    try:
        pruner = build_pruner(cfg.study.pruner, cfg.study.fidelity, cfg.study.rungs.eta, promotions_on(cfg.study))
    except ValueError as e:
        raise StudyError(f"study.pruner: {e}") from None
    return sampler, pruner


def _check_cooldown(cfg: DictConfig, baseline, space: SearchSpace) -> None:
    rungs = cfg.study.rungs
    try:
        warnings = check_cooldown_study(baseline.schedule.max_iters, rungs.count, rungs.eta, rungs.cooldown_fraction,
                                        list(space.distributions), warmup_iters_of(baseline.schedule))
    except ConfigError as e:
        raise StudyError(str(e)) from None
    for warning in warnings:
        print(f"WARNING: {warning}")


def prepare_study(cfg: DictConfig, overrides: list[str]) -> PreparedStudy:
    """Check everything that can be checked before training (the sweep, the study settings, the
    baseline run, the search space, sampler, pruner, storage and data), then open the study."""
    require_sweep(cfg)
    check_study(cfg.study)
    name = study_name_of(cfg)
    baseline = as_train_config(cfg)
    check_config(baseline)  # the baseline itself must be a valid run on this machine
    resolve_dtype(baseline.dtype, resolve_device(baseline.device))
    for warning in schedule_warnings(baseline.schedule):
        print(f"WARNING: the baseline's {warning}")
    space = search_space_of(cfg)
    check_values_allowed(space, cfg)
    if cfg.study.fidelity == "cooldown":
        _check_cooldown(cfg, baseline, space)
    baseline_kind, baseline_values = _baseline(cfg, overrides, space)
    sampler, pruner = _sampler_and_pruner(cfg, space, baseline_values)
    open_storage(cfg.study.storage)  # an unreachable database fails before the data is read
    data = prepare_data(cfg.data)  # data errors surface now, and trials reuse the cache
    data.check_fits(cfg.model.block_size)
    study = create_or_load_study(cfg.study, name, sampler, pruner, metric_name=METRIC_NAME)
    check_space_fits_study(study, space, cfg.study.storage)
    check_settings_fit_study(study, baseline, space, cfg.study.storage, fidelity_settings(cfg.study))
    if baseline_kind is not None and trials_taken(study) < cfg.study.n_trials and requeue_lost_baseline(study):
        print("the baseline (trial 0) failed every time it ran; it is queued to run again")
    objective = Objective(space, Composer(overrides), study_dir_of(cfg), baseline_kind, open_artifact_store(ARTIFACT_DIR),
                          verbose=cfg.verbose, rungs=cfg.study.rungs if cfg.study.fidelity == "cooldown" else None)
    objective = requeued_when_interrupted(within_budget(continued_once(recorded_when_crashed(objective, TrialFailed)),
                                                        cfg.study.n_trials))
    promotion_eta = cfg.study.rungs.eta if promotions_on(cfg.study) else None
    return PreparedStudy(study, sampler, objective, data, promotion_eta)


def run_trials(prepared: PreparedStudy, n_trials: int, callbacks: Sequence[Callable] = ()) -> None:
    """One trial at a time until the study holds `n_trials` configs (or a grid is done) and, with
    promotions, no paused trial is to be continued (sweeps.promotions); StudyError after
    MAX_CONSECUTIVE_FAILURES failed trials of this worker in a row (not counting those refused
    before training, through no fault of their params)."""
    study, failures = prepared.study, 0
    while True:
        taken = trials_taken(study)
        grid_over = taken < n_trials and grid_done(study, prepared.sampler)
        new_configs = taken < n_trials and not grid_over
        waits = queued = None
        if prepared.promotion_eta:
            trials = study.get_trials(deepcopy=False)
            waits = continuation_waits(trials)
            queued = None if waits else queue_promotion(study, prepared.promotion_eta, new_configs, trials)
            if queued:
                print(queued)
        if not (new_configs or waits or queued):
            if grid_over:
                print(f"every point of the grid has been tried; study.n_trials={n_trials} "
                      f"asks for more, but another trial would only repeat one")
            return
        ran: list[optuna.trial.FrozenTrial] = []  # this worker's trial (others may have finished since)
        study.optimize(prepared.objective, n_trials=1, catch=(TrialFailed,),
                       callbacks=[*callbacks, lambda _, t: ran.append(t)])
        last = ran[-1]
        if last.state != TrialState.FAIL:
            failures = 0
        elif not refused(last):
            failures += 1
        if failures >= MAX_CONSECUTIVE_FAILURES:
            raise StudyError(f"{failures} trials in a row failed (last: "
                             f"{fail_reason(last) or 'see the log'}); fix the sweep's params")


def say_what_still_runs(study: optuna.Study, n_trials: int, grace_period: int) -> None:
    """When the study is short of `n_trials` finished configs, or a config goes on (a continuation
    or retry), because trials are still RUNNING (other workers, or a killed one whose heartbeat
    has not gone stale yet), say so and when to rerun."""
    finished = len(finished_configs(study.get_trials(deepcopy=False)))
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if running and (finished < n_trials or any(retry_of(t) is not None for t in running)):
        numbers = ", ".join(str(t.number) for t in running)
        print(f"study {study.study_name!r} holds {finished} of study.n_trials={n_trials} finished configs; "
              f"trial(s) {numbers} still run elsewhere, or ran in a worker that was killed: such a trial "
              f"is failed and queued again once its heartbeat is {grace_period} s old "
              f"(study.grace_period); run the same command again then to finish the study")


def run_sweep(cfg: DictConfig, overrides: list[str], callbacks: Sequence[Callable] = ()) -> optuna.Study:
    """Create or resume the study and run trials until it holds `study.n_trials` finished ones;
    `callbacks(study, frozen_trial)` run after each of this worker's trials, as in `optimize`."""
    prepared = prepare_study(cfg, overrides)
    name, url = prepared.study.study_name, redact_url(cfg.study.storage)
    print(short_plan(build_plan(cfg, overrides, prepared.data)))
    print(f"study {name!r} in {url}; watch it live, with each trial's config, metrics and curve, with:\n"
          f"  optuna-dashboard {dashboard_storage_arg(cfg.study.storage)} --artifact-dir {ARTIFACT_DIR} --host 127.0.0.1")
    one_line = OneLineTrialFailures()
    console = list(logging.getLogger("optuna").handlers)  # Optuna's own (its records do not propagate)
    for handler in console:
        handler.addFilter(one_line)
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # each trial's line comes from StudyProgress
    sys.stdout.flush()
    progress = StudyProgress(prepared.study, cfg.study.n_trials)
    try:
        run_trials(prepared, cfg.study.n_trials, [*callbacks, progress])
    except KeyboardInterrupt:
        print(f"\ninterrupted: the running trial is marked FAIL and queued to run again (unless it was "
              f"interrupted {MAX_RETRIES + 1} times); run the same command to resume study {name!r}")
        raise
    finally:
        progress.close()
        optuna.logging.set_verbosity(verbosity)
        for handler in console:
            handler.removeFilter(one_line)
    say_what_still_runs(prepared.study, cfg.study.n_trials, cfg.study.grace_period)
    from sweeps.report import report_at_end_of_sweep, study_report  # matplotlib and scikit-learn: at the end only

    print(study_report(prepared.study))
    report_at_end_of_sweep(prepared.study, study_dir_of(cfg), long_run_iters=cfg.plan.long_run_iters)
    return prepared.study
