"""What may be resumed: a study only under the settings its trials were trained with, and a long
run's checkpoint only under the settings that wrote it. Each check fails before any training,
with one error listing what differs."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Optional, Sequence

import optuna

from sweeps.config import StudyError
from sweeps.search_space import SearchSpace
from sweeps.storage import redact_url
from trainer import CHECKPOINT_NAME, SHARES, checkpoint_config

# What a run trains: a checkpoint resumes only under the same values of these.
RUN_DEFINING = ("model", "data", "schedule", "optim", "batch_size", "gradient_accumulation_steps", "seed")
RUN_NEUTRAL = {"data.cache_dir"}  # where the tokens are cached, not which tokens
# What makes two trials' val losses comparable: a study resumes only under the same values of
# these (the seed only adds noise).
STUDY_DEFINING = tuple(key for key in RUN_DEFINING if key != "seed")
STUDY_SETTINGS_ATTR = "fixed_settings"  # study user attr: the settings its trials share
# A searched share replaces the absolute setting it stands for, so that setting is unused and
# may differ between runs.
OVERRIDDEN_BY = {f"schedule.{knob.share}": f"schedule.{knob.absolute}" for knob in SHARES}


def run_settings(train_cfg: dict, keys: Sequence[str] = RUN_DEFINING) -> dict:
    """The settings under `keys` of a train config (as a dict), flat: "model.n_layer" -> 4."""
    out = {}
    for key in keys:
        value = train_cfg.get(key)
        items = value.items() if isinstance(value, dict) else [(None, value)]
        out.update({f"{key}.{k}" if k else key: v for k, v in items})
    return {k: v for k, v in out.items() if k not in RUN_NEUTRAL}


def differences(was: dict, now: dict) -> str:
    """The settings of `now` that differ from `was`, as 'key=was, now value; ...' (empty: none)."""
    return "; ".join(f"{k}={was.get(k)!r}, now {v!r}" for k, v in now.items() if was.get(k) != v)


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


def fidelity_settings(study_cfg) -> dict:
    """How the study judges trials, as fixed settings: its fidelity and, with cooldown rungs, their
    layout (a trial's value is the decayed loss at its last rung: other rungs, other values)."""
    if study_cfg.fidelity != "cooldown":
        return {"study.fidelity": "full"}
    return {"study.fidelity": "cooldown", **{f"study.rungs.{k}": study_cfg.rungs[k]
                                             for k in ("count", "eta", "cooldown_fraction", "shape")}}


def check_settings_fit_study(study: optuna.Study, baseline, space: SearchSpace, storage_url: str,
                             fidelity: Optional[dict] = None) -> None:
    """StudyError when the study's trials were trained under other fixed settings (other data, model,
    schedule, optimizer or batch; the searched params aside; other fidelity settings): their val
    losses are not comparable with the new trials', so the sampler, the pruner and the best trial
    would mix them. A study made before the settings were recorded takes the current ones; one
    made before fidelity was recorded judged full-length trials."""
    searched_keys = [*space.distributions, *(OVERRIDDEN_BY[k] for k in space.distributions if k in OVERRIDDEN_BY)]

    def searched(key: str) -> bool:
        return any(key == p or key.startswith(p + ".") for p in searched_keys)

    now = json.loads(json.dumps({**{k: v for k, v in run_settings(asdict(baseline), STUDY_DEFINING).items()
                                    if not searched(k)}, **(fidelity or {})}))
    was = study.user_attrs.get(STUDY_SETTINGS_ATTR)
    if was is None:
        study.set_user_attr(STUDY_SETTINGS_ATTR, now)
        return
    was = {"study.fidelity": "full", **was}
    changed = differences({k: v for k, v in was.items() if not searched(k)}, now)
    if changed:
        raise StudyError(f"study {study.study_name!r} in {redact_url(storage_url)} trained its trials with other "
                         f"settings ({changed}): their val losses are not comparable with these. Start a new "
                         f"study (study.name=NEW) or resume with the study's settings")


def stored_fidelity(study: optuna.Study) -> dict:
    """The fidelity settings a study's trials were judged under (fidelity_settings' keys); a study
    made before fidelity was recorded judged full-length trials."""
    settings = study.user_attrs.get(STUDY_SETTINGS_ATTR) or {}
    return {k: v for k, v in settings.items() if k.startswith("study.fidelity") or k.startswith("study.rungs.")} \
        or {"study.fidelity": "full"}


def refuse_another_run_in(out_dir: Path, train_cfg) -> None:
    """StudyError when `out_dir` holds a checkpoint of a run with other training settings (a
    different command, or the study's best trial changed since it started): resuming it would
    mix that run's weights and optimizer state with these settings."""
    ckpt = out_dir / CHECKPOINT_NAME
    if not ckpt.is_file():
        return
    changed = differences(run_settings(checkpoint_config(ckpt)), run_settings(asdict(train_cfg)))
    if changed:
        raise StudyError(f"{out_dir} holds a long run started with other settings ({changed}). "
                         f"The command that started it resumes it; to start this one instead, move or "
                         f"delete {out_dir}")
