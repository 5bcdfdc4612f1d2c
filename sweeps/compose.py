"""Composing configs: a study's from `conf/study_runner.yaml` plus overrides, and each trial's
from the same command line plus its sampled values; the baseline in the terms sweeps search."""

from __future__ import annotations

from pathlib import Path

import optuna
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from sweeps.config import StudyError, check_study_name, register_configs
from sweeps.search_space import SearchSpace, parse_search_space
from sweeps.storage import open_storage, redact_url
from trainer import SHARES, share_of

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
CONFIG_NAME = "study_runner"


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
    """The study's name (study.name, else the sweep's), checked: it names the study's folder."""
    return check_study_name(cfg.study.name or cfg.sweep.name)


def load_stored_study(cfg: DictConfig) -> optuna.Study:
    """The study `cfg` names, from its storage, opened without creating anything (no database,
    no tables); StudyError when it is not there."""
    name = study_name_of(cfg)
    storage = open_storage(cfg.study.storage, create=False)
    names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    if name not in names:
        raise StudyError(f"no study {name!r} in {redact_url(cfg.study.storage)}; "
                         f"studies there: {', '.join(names) or 'none'}. Run mode=sweep first")
    return optuna.load_study(study_name=name, storage=storage)


def study_dir_of(cfg: DictConfig) -> Path:
    return Path("outputs") / "studies" / study_name_of(cfg)


def require_sweep(cfg: DictConfig) -> None:
    if cfg.sweep is None:
        raise StudyError(f"no sweep selected: add +sweep=NAME, one of {', '.join(known_sweeps())}")


def group_choices(overrides: list[str]) -> dict[str, str]:
    """The option each config group resolves to (defaults of conf/ plus the overrides)."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        choices = HydraConfig.get().runtime.choices
    else:
        choices = compose_study_config(overrides, return_hydra_config=True).hydra.runtime.choices
    return {k: v for k, v in choices.items() if v is not None}


def baseline_config(cfg: DictConfig) -> DictConfig:
    """The config as given, expressed in the terms sweeps search: every knob of `trainer.SHARES`
    (min_lr, warmup and decay length) as its share."""
    base = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    for knob in SHARES:
        base.schedule[knob.share] = share_of(base.schedule, knob)
    return base


def search_space_of(cfg: DictConfig) -> SearchSpace:
    """The study's search space: its sweep's `params:` and `when:`, checked against `cfg`."""
    return parse_search_space(cfg.sweep.params, cfg, CONF_DIR, cfg.sweep.when)
