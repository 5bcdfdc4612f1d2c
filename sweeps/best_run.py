"""`mode=best`: re-run a study's best complete trial as a long run in a fixed directory; the same
command again resumes it from its last checkpoint."""

from __future__ import annotations

import shlex
from pathlib import Path

import optuna
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from sweeps.compose import (Composer, load_stored_study, override_key, require_sweep, search_space_of, study_dir_of,
                            study_name_of)
from sweeps.config import StudyError
from sweeps.resume_checks import refuse_another_run_in
from sweeps.search_space import SearchSpace
from sweeps.trial_record import config_json
from trainer import CHECKPOINT_NAME, SHARES, TrainResult, as_train_config, check_config, is_main_process, train

# Absolute iteration counts a trial may have searched: scaled with the long run's length.
ITERATION_KEYS = tuple(f"schedule.{knob.absolute}" for knob in SHARES if knob.counts_iterations)


def best_trial_of(cfg: DictConfig) -> optuna.trial.FrozenTrial:
    study = load_stored_study(cfg)  # reading a study never creates a database
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    if not complete:
        raise StudyError(f"study {study.study_name!r} has no complete trial yet; run mode=sweep first")
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
        for key in ITERATION_KEYS:
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
        f"# Reproduce: python -m trainer --config-path={shlex.quote(str(path.parent.resolve()))} "
        f"--config-name={path.stem}\n"
        "defaults:\n  - train_schema\n  - _self_\n\n" + body +
        "\nhydra:\n  run:\n    dir: ${out_dir}\n  job:\n    chdir: false\n"
    )


def run_best(cfg: DictConfig, overrides: list[str]) -> TrainResult:
    """Re-run the best complete trial as a long run in a fixed directory; the same command again
    resumes it from its last checkpoint."""
    require_sweep(cfg)
    best = best_trial_of(cfg)
    space = search_space_of(cfg)
    out_dir = study_dir_of(cfg) / "best_run"
    run_cfg = Composer(overrides)(best_run_overrides(best, space, cfg, overrides, out_dir))
    train_cfg = as_train_config(run_cfg)
    check_config(train_cfg)
    refuse_another_run_in(out_dir, train_cfg)
    config_path = study_dir_of(cfg) / "best_config.yaml"
    main = is_main_process()  # under torchrun, rank 0 writes and speaks for all
    if main:
        write_best_config(train_cfg, config_path, best, study_name_of(cfg))
        print(f"best trial {best.number} (val loss {best.value:.4f}): {best.params}\n"
              f"long run in {out_dir} ({train_cfg.init_from}); its config: {config_path}")
    result = train(train_cfg)
    if main:
        print(f"{result.status}: best val loss {result.best_val_loss:.4f} at iteration {result.best_iter}"
              f" (trial {best.number}: {best.value:.4f})")
    return result
