"""Build the study's Optuna pruner from its :class:`~sweeps.config.PrunerConfig`.

Steps are what the objective reports to ``trial.report``: training tokens seen. So
``n_warmup_steps`` and ``min_resource`` are in tokens too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Dict, Union

import optuna

from sweeps.plateau_pruner import PlateauPruner
from sweeps.rung_pruner import RungHalvingPruner

if TYPE_CHECKING:  # pragma: no cover - only for the annotations; keeps hydra/trainer unloaded
    from sweeps.config import PrunerConfig

__all__ = ["PRUNER_NAMES", "build_pruner", "pruner_name_of"]


def _plateau(cfg: PrunerConfig) -> optuna.pruners.BasePruner:
    return PlateauPruner(
        percentile=cfg.percentile,
        patience=cfg.patience,
        min_evals=cfg.min_evals,
        z=cfg.z,
        n_startup_trials=cfg.n_startup_trials,
    )


def _median(cfg: PrunerConfig) -> optuna.pruners.BasePruner:
    return optuna.pruners.MedianPruner(
        n_startup_trials=cfg.n_startup_trials, n_warmup_steps=cfg.n_warmup_steps
    )


def _percentile(cfg: PrunerConfig) -> optuna.pruners.BasePruner:
    # PercentilePruner keeps the trials better than `percentile` percent of the others
    # (for minimize: prunes when the best value is above that percentile), as plateau does.
    return optuna.pruners.PercentilePruner(
        percentile=cfg.percentile,
        n_startup_trials=cfg.n_startup_trials,
        n_warmup_steps=cfg.n_warmup_steps,
    )


def _patient(cfg: PrunerConfig) -> optuna.pruners.BasePruner:
    wrapped = optuna.pruners.MedianPruner(
        n_startup_trials=cfg.n_startup_trials, n_warmup_steps=cfg.n_warmup_steps
    )
    return optuna.pruners.PatientPruner(wrapped, patience=cfg.patience)


def _min_resource(cfg: PrunerConfig) -> Union[int, str]:
    return "auto" if cfg.min_resource is None else int(cfg.min_resource)


def _successive_halving(cfg: PrunerConfig) -> optuna.pruners.BasePruner:
    return optuna.pruners.SuccessiveHalvingPruner(
        min_resource=_min_resource(cfg), reduction_factor=cfg.reduction_factor
    )


def _hyperband(cfg: PrunerConfig) -> optuna.pruners.BasePruner:
    # HyperbandPruner's min_resource must be an int (it sizes its brackets from it before any
    # trial finishes; only max_resource may be "auto"). With min_resource null the pruner is
    # built without it and so gets Optuna's own default.
    kwargs = {"reduction_factor": cfg.reduction_factor}
    if cfg.min_resource is not None:
        kwargs["min_resource"] = int(cfg.min_resource)
    return optuna.pruners.HyperbandPruner(max_resource="auto", **kwargs)


def _asha(cfg: PrunerConfig, eta: int, promotions: bool) -> optuna.pruners.BasePruner:
    return RungHalvingPruner(eta=eta, promotions=promotions)


def _none(cfg: PrunerConfig) -> optuna.pruners.BasePruner:
    return optuna.pruners.NopPruner()


_BUILDERS: Dict[str, Callable[["PrunerConfig"], optuna.pruners.BasePruner]] = {
    "plateau": _plateau,
    "median": _median,
    "percentile": _percentile,
    "patient": _patient,
    "successive_halving": _successive_halving,
    "hyperband": _hyperband,
    "none": _none,
}

PRUNER_NAMES = ("auto", *_BUILDERS, "asha")


def pruner_name_of(name: str, fidelity: str = "full") -> str:
    """The pruner a study uses: `auto` is plateau, or asha with study.fidelity=cooldown."""
    name = str(name).strip().lower()
    if name != "auto":
        return name
    return "asha" if fidelity == "cooldown" else "plateau"


def build_pruner(cfg: PrunerConfig, fidelity: str = "full", eta: int = 3,
                 promotions: bool = False) -> optuna.pruners.BasePruner:
    """The pruner named by ``cfg.name``, configured from the other fields of ``cfg`` (``asha``:
    from the cooldown rungs' ``eta``; ``auto``: see :func:`pruner_name_of`).

    =====================  ===================================================================
    name                   pruner (fields used)
    =====================  ===================================================================
    plateau                :class:`~sweeps.plateau_pruner.PlateauPruner` (percentile, patience,
                           min_evals, z, n_startup_trials)
    median                 MedianPruner (n_startup_trials, n_warmup_steps)
    percentile             PercentilePruner (percentile, n_startup_trials, n_warmup_steps)
    patient                PatientPruner(MedianPruner(n_startup_trials, n_warmup_steps),
                           patience)
    successive_halving     SuccessiveHalvingPruner (min_resource, null -> "auto";
                           reduction_factor)
    hyperband              HyperbandPruner (min_resource, null -> Optuna's default;
                           reduction_factor; max_resource "auto")
    asha                   :class:`~sweeps.rung_pruner.RungHalvingPruner` (study.rungs.eta
                           and .promotions; study.fidelity=cooldown only)
    none                   NopPruner
    =====================  ===================================================================

    Raises:
        ValueError: for an unknown name, listing the valid ones (or for a bad field value).
    """
    name = pruner_name_of(cfg.name, fidelity)
    if name == "asha":
        return _asha(cfg, eta, promotions)
    try:
        builder = _BUILDERS[name]
    except KeyError:
        raise ValueError(
            f"unknown pruner name {cfg.name!r}; valid names: {', '.join(PRUNER_NAMES)}"
        ) from None
    return builder(cfg)
