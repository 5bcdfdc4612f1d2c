"""build_pruner: every configured name gives the right Optuna pruner, wired from PrunerConfig."""

from __future__ import annotations

import dataclasses
import warnings

import optuna
import pytest

from sweeps.config import PrunerConfig
from sweeps.plateau_pruner import PlateauPruner
from sweeps.pruners import PRUNER_NAMES, build_pruner, pruner_name_of
from sweeps.rung_pruner import RungHalvingPruner

EXPECTED = {
    "plateau": PlateauPruner,
    "median": optuna.pruners.MedianPruner,
    "percentile": optuna.pruners.PercentilePruner,
    "patient": optuna.pruners.PatientPruner,
    "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
    "hyperband": optuna.pruners.HyperbandPruner,
    "none": optuna.pruners.NopPruner,
    "asha": RungHalvingPruner,
}


def build(**fields):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return build_pruner(PrunerConfig(**fields))


def test_config_fields_are_the_ones_the_factory_reads():
    names = {f.name for f in dataclasses.fields(PrunerConfig)}
    assert names == {
        "name", "percentile", "patience", "min_evals", "z", "n_startup_trials",
        "n_warmup_steps", "min_resource", "reduction_factor",
    }


def test_names_cover_every_pruner():
    assert set(PRUNER_NAMES) == set(EXPECTED) | {"auto"}


def test_auto_is_plateau_on_full_runs_and_asha_on_cooldown_rungs():
    assert pruner_name_of("auto") == "plateau" and pruner_name_of("auto", "cooldown") == "asha"
    assert pruner_name_of("Median", "cooldown") == "median"  # an explicit name is kept (check_study refuses it)
    assert isinstance(build_pruner(PrunerConfig(), "cooldown", eta=4), RungHalvingPruner)
    assert build_pruner(PrunerConfig(name="asha"), "cooldown", eta=4).eta == 4


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_name_builds_its_class(name):
    pruner = build(name=name)
    assert type(pruner) is EXPECTED[name]


def test_default_config_is_plateau():
    assert isinstance(build(), PlateauPruner)


def test_name_is_case_insensitive():
    assert isinstance(build(name="Median"), optuna.pruners.MedianPruner)


def test_unknown_name_lists_the_valid_names():
    with pytest.raises(ValueError) as err:
        build(name="sha")
    message = str(err.value)
    assert "'sha'" in message
    for name in EXPECTED:
        assert name in message


def test_plateau_fields():
    p = build(name="plateau", percentile=25.0, patience=5, min_evals=6, z=1.5, n_startup_trials=4)
    assert (p.percentile, p.patience, p.min_evals, p.z, p.n_startup_trials) == (25.0, 5, 6, 1.5, 4)


def test_plateau_bad_field_is_a_value_error():
    with pytest.raises(ValueError, match="patience"):
        build(name="plateau", patience=0)


def test_median_and_percentile_fields():
    m = build(name="median", n_startup_trials=7, n_warmup_steps=1000)
    assert (m._n_startup_trials, m._n_warmup_steps, m._percentile) == (7, 1000, 50.0)
    p = build(name="percentile", percentile=25.0, n_startup_trials=2, n_warmup_steps=10)
    assert (p._percentile, p._n_startup_trials, p._n_warmup_steps) == (25.0, 2, 10)


def test_patient_wraps_a_median_pruner():
    p = build(name="patient", patience=4, n_warmup_steps=500, n_startup_trials=2)
    assert p._patience == 4
    inner = p._wrapped_pruner
    assert type(inner) is optuna.pruners.MedianPruner
    assert (inner._n_warmup_steps, inner._n_startup_trials) == (500, 2)


def test_successive_halving_min_resource():
    auto = build(name="successive_halving", reduction_factor=4)
    assert auto._min_resource is None and auto._reduction_factor == 4  # None is Optuna's "auto"
    fixed = build(name="successive_halving", min_resource=65536)
    assert fixed._min_resource == 65536


def test_hyperband_min_resource():
    default = build(name="hyperband", reduction_factor=2)
    assert default._min_resource == 1 and default._reduction_factor == 2
    assert default._max_resource == "auto"
    fixed = build(name="hyperband", min_resource=65536)
    assert fixed._min_resource == 65536


@pytest.mark.filterwarnings("ignore::sweeps.plateau_pruner.PlateauFallbackWarning")  # bare curves
def test_built_pruners_run_in_a_study():
    """Every built pruner answers should_prune on token-sized steps without error."""
    for name in EXPECTED:
        study = optuna.create_study(direction="minimize", pruner=build(name=name))
        if name == "asha":  # judged by tests/test_rung_pruner.py on rung values
            continue
        for _ in range(4):
            t = study.ask()
            for i, v in enumerate([10.8, 7.0, 6.0, 5.5, 5.2, 5.0]):
                t.report(v, i * 65536)
                assert t.should_prune() in (True, False)
            study.tell(t, 5.0)
        assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 4
        # the same curve as the finished ones is never pruned, by any of them (no trial is worse)
        t = study.ask()
        for i, v in enumerate([10.8, 7.0, 6.0, 5.5, 5.2, 5.0]):
            t.report(v, i * 65536)
        assert not (t.should_prune() and name in ("plateau", "median", "percentile", "none")), name
