"""`mode=best`: re-run a study's best complete trial as a long run in a fixed directory; the same
command again resumes it from its last checkpoint."""

from __future__ import annotations

import dataclasses
import json
import shlex
from dataclasses import asdict
from pathlib import Path
from typing import Optional

import optuna
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from sweeps.compose import (Composer, load_stored_study, override_key, require_sweep, search_space_of, study_dir_of,
                            study_name_of)
from sweeps import trial_record
from sweeps.config import StudyError
from sweeps.cooldown import copy_atomically, stable_phase_settings
from sweeps.long_run_prediction import LongRunPrediction, predict_long_run
from sweeps.resume_checks import differences, refuse_another_run_in, stored_fidelity
from sweeps.search_space import SearchSpace
from sweeps.trial_record import config_json
from trainer import (CHECKPOINT_NAME, METRICS_NAME, SHARES, ScheduleConfig, TrainResult, as_train_config, check_config,
                     checkpoint_config, checkpoint_iter, is_main_process, tokens_per_iter, train,
                     warmup_iters_of, wsd_decay_start)

# Absolute iteration counts a trial may have searched: scaled with the long run's length.
ITERATION_KEYS = tuple(f"schedule.{knob.absolute}" for knob in SHARES if knob.counts_iterations)


def best_trial_of(study: optuna.Study) -> optuna.trial.FrozenTrial:
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


def cooldown_overrides(best: optuna.trial.FrozenTrial, fidelity: dict, overrides: list[str]) -> list[str]:
    """A cooldown study's long run: warmup-stable-decay with the rungs' cooldown share and shape,
    warming up for as many iterations as the trial did (so its stable phase can be continued);
    the command line wins."""
    cli_keys = {override_key(o) for o in overrides}
    nulled = {override_key(o) for o in overrides if o.split("=", 1)[-1].strip().lower() in ("null", "none", "~")}
    schedule = json.loads(config_json(best))["schedule"] if config_json(best) else None
    decay = {"schedule.name": "wsd", "schedule.decay_fraction": fidelity["study.rungs.cooldown_fraction"],
             "schedule.decay_shape": fidelity["study.rungs.shape"]}
    extra = {k: v for k, v in decay.items() if k not in cli_keys}
    # a warmup the command line sets wins (a share it sets to null sets none), unless the trial's
    # own searched share overrode it there too
    cli_warmup = "schedule.warmup_fraction" in cli_keys - nulled or (
        "schedule.warmup_iters" in cli_keys and "schedule.warmup_fraction" not in best.params)
    if schedule is not None and not cli_warmup:
        extra.update({"schedule.warmup_iters": warmup_iters_of(ScheduleConfig(**schedule)),
                      "schedule.warmup_fraction": "null"})
    return [f"{k}={v}" for k, v in extra.items()]


def continue_stable_phase(best: optuna.trial.FrozenTrial, train_cfg, out_dir: Path, copy_curve: bool = True):
    """`train_cfg` resuming the best trial's stable phase (its checkpoint, copied into `out_dir`
    with its curve) when the long run trains the same stable phase and has not begun its decay by
    that iteration: nothing is trained twice. Else `train_cfg` as it is, and why not, in words."""
    source = Path(trial_record.run_dir(best) or "") / CHECKPOINT_NAME
    if (out_dir / CHECKPOINT_NAME).is_file():
        return train_cfg, None  # the long run itself resumes
    if not source.is_file():
        return train_cfg, f"trial {best.number} left no stable-phase checkpoint"
    changed = differences(stable_phase_settings(checkpoint_config(source)), stable_phase_settings(asdict(train_cfg)))
    if changed:
        return train_cfg, f"the long run's settings differ from the trial's ({changed})"
    at = checkpoint_iter(source)
    if at > wsd_decay_start(train_cfg.schedule):
        return train_cfg, f"the long run decays from iteration {wsd_decay_start(train_cfg.schedule)}, before " \
                          f"the trial's stable phase ended ({at})"
    out_dir.mkdir(parents=True, exist_ok=True)
    copy_atomically(source, out_dir / CHECKPOINT_NAME)
    if copy_curve and (source.parent / METRICS_NAME).is_file():
        copy_atomically(source.parent / METRICS_NAME, out_dir / METRICS_NAME)
    return dataclasses.replace(train_cfg, init_from="resume"), None


def predicted(best: optuna.trial.FrozenTrial, train_cfg) -> Optional[LongRunPrediction]:
    rungs = trial_record.rung_val_loss(best)
    steps = sorted(rungs)
    return predict_long_run(steps, [rungs[s] for s in steps], None,
                            train_cfg.schedule.max_iters * tokens_per_iter(train_cfg))


def run_best(cfg: DictConfig, overrides: list[str]) -> TrainResult:
    """Re-run the best complete trial as a long run in a fixed directory; the same command again
    resumes it from its last checkpoint. The best trial of a cooldown study continues its stable
    phase where it can (continue_stable_phase), and its rungs predict the long run's loss."""
    require_sweep(cfg)
    study = load_stored_study(cfg)  # reading a study never creates a database
    best = best_trial_of(study)
    fidelity = stored_fidelity(study)
    cooldown = fidelity["study.fidelity"] == "cooldown"
    space = search_space_of(cfg)
    out_dir = study_dir_of(cfg) / "best_run"
    extra = best_run_overrides(best, space, cfg, overrides, out_dir)
    if cooldown:
        decay = cooldown_overrides(best, fidelity, overrides)
        replaced = {override_key(o) for o in decay}
        extra = [o for o in extra if override_key(o) not in replaced] + decay
    train_cfg = as_train_config(Composer(overrides)(extra))
    check_config(train_cfg)
    main = is_main_process()  # under torchrun, rank 0 writes and speaks for all
    why_anew = None
    if cooldown:
        if (out_dir / CHECKPOINT_NAME).is_file() and stable_phase_settings(
                checkpoint_config(out_dir / CHECKPOINT_NAME)) == stable_phase_settings(asdict(train_cfg)):
            pass  # its own long run (or the stable phase it continued), with the same stable phase
        else:
            refuse_another_run_in(out_dir, train_cfg)
        # every rank decides alike and copies the same file (atomically): no rank waits for another
        train_cfg, why_anew = continue_stable_phase(best, train_cfg, out_dir, copy_curve=main)
    else:
        refuse_another_run_in(out_dir, train_cfg)
    config_path = study_dir_of(cfg) / "best_config.yaml"
    prediction = predicted(best, train_cfg) if cooldown else None
    if main:
        write_best_config(train_cfg, config_path, best, study_name_of(cfg))
        print(f"best trial {best.number} (val loss {best.value:.4f}): {best.params}\n"
              f"long run in {out_dir} ({train_cfg.init_from}); its config: {config_path}")
        if cooldown:
            print(f"continuing trial {best.number}'s stable phase: nothing it trained is trained again"
                  if why_anew is None and train_cfg.init_from == "resume" else
                  f"training anew with trial {best.number}'s values: {why_anew or 'resuming the long run'}")
        if prediction is not None:
            print(f"predicted from its {prediction.n_points} rungs: val loss {prediction.describe()}")
    result = train(train_cfg)
    if main:
        print(f"{result.status}: best val loss {result.best_val_loss:.4f} at iteration {result.best_iter}"
              f" (trial {best.number}: {best.value:.4f})")
        if prediction is not None and result.last_eval is not None:
            print(f"predicted {prediction.loss:.4f} [{prediction.low:.4f}, {prediction.high:.4f}], reached "
                  f"{result.last_eval.val_loss:.4f} at the end ({result.last_eval.val_loss - prediction.loss:+.4f})")
    return result
