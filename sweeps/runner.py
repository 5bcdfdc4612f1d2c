"""Run a study (`mode=sweep`) or re-run its best trial as a long, resumable run (`mode=best`)."""

from __future__ import annotations

import json
import signal
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Optional, Sequence

import optuna
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from sweeps.config import register_configs
from sweeps.objective import Objective, TrialFailed
from sweeps.pruners import build_pruner
from sweeps.report import study_report
from sweeps.retries import MAX_RETRIES, requeue
from sweeps.samplers import build_sampler
from sweeps.search_space import SearchSpace, SearchSpaceError, parse_search_space
from sweeps.storage import create_or_load_study, open_storage, redact_url
from sweeps.trial_record import BASELINE_AS_GIVEN, BASELINE_IN_SPACE, config_json, fail_reason, set_fail_reason
from trainer import TrainResult, train
from trainer.config import as_train_config, check_config
from trainer.data import prepare_data
from trainer.train import CHECKPOINT_NAME, resolve_device, resolve_dtype

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
CONFIG_NAME = "study_runner"
MAX_CONSECUTIVE_FAILURES = 5
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
SCHEDULE_ITER_KEYS = ("schedule.warmup_iters", "schedule.lr_decay_iters")


class StudyError(ValueError):
    """A study that cannot be run as asked; the message says what would work."""


def known_sweeps() -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / "sweep").glob("*.yaml"))


def override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def compose_study_config(overrides: list[str], return_hydra_config: bool = False) -> DictConfig:
    """`conf/study_runner.yaml` with `overrides`, inside @hydra.main or outside it (tests, notebooks)."""
    if GlobalHydra.instance().is_initialized():
        return compose(CONFIG_NAME, overrides=overrides, return_hydra_config=return_hydra_config)
    register_configs()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        return compose(CONFIG_NAME, overrides=overrides, return_hydra_config=return_hydra_config)


class Composer:
    """Composes a trial's config: the command line's overrides plus extra ones; an extra override
    of a key replaces the command line's."""

    def __init__(self, overrides: list[str]):
        self.overrides = list(overrides)

    def __call__(self, extra: list[str]) -> DictConfig:
        replaced = {override_key(o) for o in extra}
        return compose_study_config([o for o in self.overrides if override_key(o) not in replaced] + list(extra))


def study_name_of(cfg: DictConfig) -> str:
    return cfg.study.name or cfg.sweep.name


def study_dir_of(cfg: DictConfig) -> Path:
    return Path("outputs") / "studies" / study_name_of(cfg)


def _require_sweep(cfg: DictConfig) -> None:
    if cfg.sweep is None:
        raise StudyError(f"no sweep selected: add +sweep=NAME, one of {', '.join(known_sweeps())}")


def _group_choices(overrides: list[str]) -> dict[str, str]:
    """The option each config group resolves to (defaults of conf/ plus the overrides)."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        choices = HydraConfig.get().runtime.choices
    else:
        choices = compose_study_config(overrides, return_hydra_config=True).hydra.runtime.choices
    return {k: v for k, v in choices.items() if v is not None}


def baseline_config(cfg: DictConfig) -> DictConfig:
    """The config as given, expressed in the terms sweeps search: min_lr as a ratio of lr, warmup
    and decay length as shares of max_iters."""
    base = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    s = base.schedule
    if s.min_lr_ratio is None:
        s.min_lr_ratio = s.min_lr / s.lr
    if s.warmup_fraction is None:
        s.warmup_fraction = s.warmup_iters / s.max_iters
    if s.lr_decay_fraction is None:
        s.lr_decay_fraction = (s.lr_decay_iters or s.max_iters) / s.max_iters
    return base


def trials_taken(study: optuna.Study, before: Optional[int] = None) -> int:
    """Trials that count towards `study.n_trials`: finished or running (numbered below `before`)."""
    trials = study.get_trials(deepcopy=False, states=FINISHED + (TrialState.RUNNING,))
    return sum(before is None or t.number < before for t in trials)


def _frozen(trial: optuna.Trial) -> optuna.trial.FrozenTrial:
    return next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)


def check_space_fits_study(study: optuna.Study, space: SearchSpace, storage_url: str) -> None:
    """StudyError when the sweep searches a param the study's trials searched under another kind of
    distribution (log or linear, int or float, other choices): Optuna refuses to mix them in one
    study, and would fail every trial."""
    checked = set()
    for trial in study.get_trials(deepcopy=False):
        for name, before in trial.distributions.items():
            now = space.distributions.get(name)
            if now is None or name in checked:
                continue
            checked.add(name)
            try:
                optuna.distributions.check_distribution_compatibility(before, now)
            except ValueError as e:
                raise StudyError(
                    f"sweep param {name!r} is now {now}, but study {study.study_name!r} in "
                    f"{redact_url(storage_url)} searched it as {before} ({e}). Start a new study "
                    f"(study.name=NEW) or search it as before") from None


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
            frozen = _frozen(trial)
            if "grid_id" in frozen.system_attrs:
                requeue(trial.study, frozen)
            raise TrialFailed(reason)
        return objective(trial)
    return run_trial


def requeued_when_interrupted(objective):
    """`objective`, whose trial is queued to run again when Ctrl-C or SIGTERM interrupts it
    (Optuna then records it FAIL and the interrupt ends the process)."""
    def run_trial(trial: optuna.Trial) -> float:
        try:
            return objective(trial)
        except KeyboardInterrupt:
            queued = requeue(trial.study, _frozen(trial))
            set_fail_reason(trial, "interrupted (Ctrl-C or SIGTERM); " + (
                "queued to run again" if queued else f"interrupted {MAX_RETRIES + 1} times, not queued again"))
            raise
    return run_trial


def run_sweep(cfg: DictConfig, overrides: list[str], callbacks: Sequence[Callable] = ()) -> optuna.Study:
    """Create or resume the study and run trials until it holds `study.n_trials` finished ones;
    `callbacks(study, frozen_trial)` run after each of this worker's trials, as in `optimize`."""
    _require_sweep(cfg)
    if cfg.study.n_trials <= 0:
        raise StudyError(f"study.n_trials={cfg.study.n_trials} is invalid: must be a positive integer")
    if cfg.study.direction != "minimize":
        raise StudyError(f"study.direction={cfg.study.direction!r} is invalid: a trial's value is its best "
                         f"val loss, which the study minimizes; valid: minimize")
    baseline = as_train_config(cfg)
    check_config(baseline)  # the baseline itself must be a valid run on this machine
    resolve_dtype(baseline.dtype, resolve_device(baseline.device))
    space = parse_search_space(cfg.sweep.params, cfg, CONF_DIR)
    # Trial 0 of a new study is the baseline (a grid's trials are its points: none there).
    baseline_kind, baseline_values = None, None
    if cfg.study.baseline and str(cfg.study.sampler.name).lower() != "grid":
        baseline_values = space.baseline_values(baseline_config(cfg), _group_choices(overrides))
        baseline_kind = BASELINE_AS_GIVEN if baseline_values is None else BASELINE_IN_SPACE
    # an unknown name or a bad setting is a StudyError, which the entry point prints plainly
    try:
        sampler = build_sampler(cfg.study.sampler, space, first_trial=baseline_values)
    except SearchSpaceError:
        raise
    except ValueError as e:
        raise StudyError(str(e)) from None
    try:
        pruner = build_pruner(cfg.study.pruner)
    except ValueError as e:
        raise StudyError(f"study.pruner: {e}") from None
    open_storage(cfg.study.storage)  # an unreachable database fails before the data is read
    data = prepare_data(cfg.data)  # data errors surface now, and trials reuse the cache
    data.check_fits(cfg.model.block_size)
    name = study_name_of(cfg)
    study = create_or_load_study(cfg.study, name, sampler, pruner)
    check_space_fits_study(study, space, cfg.study.storage)
    check_settings_fit_study(study, baseline, space, cfg.study.storage)
    print(f"study {name!r} in {redact_url(cfg.study.storage)}; watch it live with:\n"
          f"  optuna-dashboard {redact_url(cfg.study.storage)}")

    objective = requeued_when_interrupted(within_budget(
        Objective(space, Composer(overrides), study_dir_of(cfg), baseline_kind), cfg.study.n_trials))
    failures = 0
    try:
        while True:
            if trials_taken(study) >= cfg.study.n_trials:
                break
            if grid_done(study, sampler):
                print(f"every point of the grid has been tried; study.n_trials={cfg.study.n_trials} "
                      f"asks for more, but another trial would only repeat one")
                break
            ran: list[optuna.trial.FrozenTrial] = []  # this worker's trial (others may have finished since)
            study.optimize(objective, n_trials=1, catch=(TrialFailed,),
                           callbacks=[*callbacks, lambda _, t: ran.append(t)])
            last = ran[-1]
            failures = failures + 1 if last.state == TrialState.FAIL else 0
            if failures >= MAX_CONSECUTIVE_FAILURES:
                raise StudyError(f"{failures} trials in a row failed (last: "
                                 f"{fail_reason(last) or 'see the log'}); fix the sweep's params")
    except KeyboardInterrupt:
        print(f"\ninterrupted: the running trial is marked FAIL and queued to run again (unless it was "
              f"interrupted {MAX_RETRIES + 1} times); run the same command to resume study {name!r}")
        raise
    print(study_report(study))
    return study


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def best_trial_of(cfg: DictConfig) -> optuna.trial.FrozenTrial:
    storage = open_storage(cfg.study.storage)
    name = study_name_of(cfg)
    names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    if name not in names:
        raise StudyError(f"no study {name!r} in {redact_url(cfg.study.storage)}; "
                         f"studies there: {', '.join(names) or 'none'}. Run mode=sweep first")
    study = optuna.load_study(study_name=name, storage=storage)
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    if not complete:
        raise StudyError(f"study {name!r} has no complete trial yet; run mode=sweep first")
    return min(complete, key=lambda t: t.value)


def best_run_overrides(best: optuna.trial.FrozenTrial, space: SearchSpace, cfg: DictConfig,
                       overrides: list[str], out_dir: Path) -> list[str]:
    """The best trial's values as overrides; the command line wins. Absolute iteration counts
    from the trial are scaled to the new run length; shares of max_iters follow it by themselves."""
    trial_cfg = OmegaConf.create(config_json(best)) if config_json(best) is not None else None
    cli_keys = {override_key(o) for o in overrides}
    values = {k: v for k, v in best.params.items() if k not in cli_keys}
    if trial_cfg is not None:
        ratio = cfg.schedule.max_iters / trial_cfg.schedule.max_iters
        for key in SCHEDULE_ITER_KEYS:
            if key in values and values[key] is not None:
                values[key] = max(0, round(values[key] * ratio))
        if "eval_interval" not in cli_keys:  # as many evaluations as the trial had
            n_evals = max(1, trial_cfg.schedule.max_iters // trial_cfg.eval_interval)
            values_eval = max(trial_cfg.eval_interval, cfg.schedule.max_iters // n_evals)
        else:
            values_eval = cfg.eval_interval
    else:
        values_eval = cfg.eval_interval
    resume = (out_dir / CHECKPOINT_NAME).is_file()
    return space.to_overrides(values) + [
        f"eval_interval={values_eval}", f"out_dir={out_dir}", "checkpoint=last",
        f"init_from={'resume' if resume else 'scratch'}",
    ]


# What a run trains: a checkpoint resumes only under the same values of these.
RUN_DEFINING = ("model", "data", "schedule", "optim", "batch_size", "gradient_accumulation_steps", "seed")
RUN_NEUTRAL = {"data.cache_dir"}  # where the tokens are cached, not which tokens
# What makes two trials' val losses comparable: a study resumes only under the same values of
# these (the seed only adds noise).
STUDY_DEFINING = tuple(key for key in RUN_DEFINING if key != "seed")
STUDY_SETTINGS_ATTR = "fixed_settings"  # study user attr: the settings its trials share
# A searched share replaces the absolute setting it stands for (trainer.schedule's min_lr_of,
# warmup_iters_of, lr_decay_iters_of), so that setting is unused and may differ between runs.
OVERRIDDEN_BY = {"schedule.min_lr_ratio": "schedule.min_lr", "schedule.warmup_fraction": "schedule.warmup_iters",
                 "schedule.lr_decay_fraction": "schedule.lr_decay_iters"}


def run_settings(train_cfg: dict, keys: Sequence[str] = RUN_DEFINING) -> dict:
    """The settings under `keys` of a train config (as a dict), flat: "model.n_layer" -> 4."""
    out = {}
    for key in keys:
        value = train_cfg.get(key)
        items = value.items() if isinstance(value, dict) else [(None, value)]
        out.update({f"{key}.{k}" if k else key: v for k, v in items})
    return {k: v for k, v in out.items() if k not in RUN_NEUTRAL}


def _differences(was: dict, now: dict) -> str:
    return "; ".join(f"{k}={was.get(k)!r}, now {v!r}" for k, v in now.items() if was.get(k) != v)


def check_settings_fit_study(study: optuna.Study, baseline, space: SearchSpace, storage_url: str) -> None:
    """StudyError when the study's trials were trained under other fixed settings (other data, model,
    schedule, optimizer or batch; the searched params aside): their val losses are not comparable
    with the new trials', so the sampler, the pruner and the best trial would mix them. A study
    made before the settings were recorded takes the current ones."""
    searched_keys = [*space.distributions, *(OVERRIDDEN_BY[k] for k in space.distributions if k in OVERRIDDEN_BY)]

    def searched(key: str) -> bool:
        return any(key == p or key.startswith(p + ".") for p in searched_keys)

    now = json.loads(json.dumps({k: v for k, v in run_settings(asdict(baseline), STUDY_DEFINING).items()
                                 if not searched(k)}))
    was = study.user_attrs.get(STUDY_SETTINGS_ATTR)
    if was is None:
        study.set_user_attr(STUDY_SETTINGS_ATTR, now)
        return
    changed = _differences({k: v for k, v in was.items() if not searched(k)}, now)
    if changed:
        raise StudyError(f"study {study.study_name!r} in {redact_url(storage_url)} trained its trials with other "
                         f"settings ({changed}): their val losses are not comparable with these. Start a new "
                         f"study (study.name=NEW) or resume with the study's settings")


def refuse_another_run_in(out_dir: Path, train_cfg) -> None:
    """StudyError when `out_dir` holds a checkpoint of a run with other training settings (a
    different command, or the study's best trial changed since it started): resuming it would
    mix that run's weights and optimizer state with these settings."""
    ckpt = out_dir / CHECKPOINT_NAME
    if not ckpt.is_file():
        return
    saved = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True).get("config", {})
    changed = _differences(run_settings(saved), run_settings(asdict(train_cfg)))
    if changed:
        raise StudyError(f"{out_dir} holds a long run started with other settings ({changed}). "
                         f"The command that started it resumes it; to start this one instead, move or "
                         f"delete {out_dir}")


def write_best_config(train_cfg, path: Path, best: optuna.trial.FrozenTrial, study_name: str) -> None:
    """A standalone primary config for `python -m trainer` (all values, no groups needed) that
    trains the long run afresh in its own run dir."""
    export = OmegaConf.structured(train_cfg)
    export.init_from = "scratch"
    export.out_dir = f"outputs/runs/{study_name}_best_${{now:%Y-%m-%d_%H-%M-%S}}"
    body = OmegaConf.to_yaml(export)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"# Best trial {best.number} of study {study_name!r} (val loss {best.value:.4f}), as a long run.\n"
        f"# Reproduce: python -m trainer --config-path={path.parent.resolve()} --config-name={path.stem}\n"
        "defaults:\n  - train_schema\n  - _self_\n\n" + body +
        "\nhydra:\n  run:\n    dir: ${out_dir}\n  job:\n    chdir: false\n"
    )


def run_best(cfg: DictConfig, overrides: list[str]) -> TrainResult:
    """Re-run the best complete trial as a long run in a fixed directory; the same command again
    resumes it from its last checkpoint."""
    _require_sweep(cfg)
    best = best_trial_of(cfg)
    space = parse_search_space(cfg.sweep.params, cfg, CONF_DIR)
    out_dir = study_dir_of(cfg) / "best_run"
    run_cfg = Composer(overrides)(best_run_overrides(best, space, cfg, overrides, out_dir))
    train_cfg = as_train_config(run_cfg)
    check_config(train_cfg)
    refuse_another_run_in(out_dir, train_cfg)
    config_path = study_dir_of(cfg) / "best_config.yaml"
    write_best_config(train_cfg, config_path, best, study_name_of(cfg))
    print(f"best trial {best.number} (val loss {best.value:.4f}): {best.params}\n"
          f"long run in {out_dir} ({train_cfg.init_from}); its config: {config_path}")
    result = train(train_cfg)
    print(f"{result.status}: best val loss {result.best_val_loss:.4f} at iteration {result.best_iter}"
          f" (trial {best.number}: {best.value:.4f})")
    return result


def run(cfg: DictConfig, overrides: list[str]) -> Optional[object]:
    modes = {"sweep": run_sweep, "best": run_best}
    if cfg.mode not in modes:
        raise StudyError(f"mode={cfg.mode!r} is invalid: valid: sweep, best")
    # SIGTERM (kill, a scheduler's stop) interrupts either mode as Ctrl-C does; SIGINT is handled
    # even where it arrives ignored (a background job of a non-interactive shell, nohup).
    previous_handlers = {sig: signal.signal(sig, _raise_keyboard_interrupt)
                         for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return modes[cfg.mode](cfg, overrides)
    finally:
        for sig, handler in previous_handlers.items():
            signal.signal(sig, handler)
