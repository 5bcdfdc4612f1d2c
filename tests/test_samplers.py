"""sweeps.samplers: every sampler builds and samples the sweep's space; grid enumerates it once."""

from __future__ import annotations

import warnings
from pathlib import Path

import optuna
import pytest
from omegaconf import OmegaConf

from sweeps.config import RunnerConfig, SamplerConfig
from sweeps.samplers import SAMPLERS, build_sampler, grid_points, grid_search_space, grid_size
from sweeps.search_space import SearchSpaceError, parse_search_space
from sweeps.trial_seeded_sampler import TrialSeededSampler

CONF = Path(__file__).parents[1] / "conf"
optuna.logging.set_verbosity(optuna.logging.WARNING)


def space_of(params):
    return parse_search_space(params, OmegaConf.structured(RunnerConfig), CONF)


MIXED = {
    "schedule.lr": "tag(log, interval(1e-4, 3e-3))",
    "model.dropout": "interval(0.0, 0.3)",
    "schedule.warmup_iters": "range(0, 200, 20)",
    "model": "choice(nano, mini)",
    "optim.weight_decay": "0.1",  # fixed
}
DISCRETE = {
    "model": "choice(nano, mini, small)",
    "schedule.warmup_iters": "range(0, 100, 25)",  # 0, 25, 50, 75
    "optim.weight_decay": "range(0.0, 0.2, 0.1)",  # 0.0, 0.1
    "model.bias": "false",  # fixed: one grid value
}


def objective_for(space):
    def objective(trial):
        values = space.sample(trial)
        return sum(float(v) for v in values.values() if isinstance(v, (int, float)))
    return objective


def run(sampler_cfg, params, n_trials):
    space = space_of(params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # CMA-ES's categorical warning, QMC's independent sampling
        sampler = build_sampler(sampler_cfg, space)
        study = optuna.create_study(sampler=sampler)
        study.optimize(objective_for(space), n_trials=n_trials)
    return space, sampler, study


@pytest.mark.parametrize("name,cls", [
    ("tpe", optuna.samplers.TPESampler),
    ("random", optuna.samplers.RandomSampler),
    ("cmaes", optuna.samplers.CmaEsSampler),
    ("qmc", optuna.samplers.QMCSampler),
])
def test_each_sampler_samples_the_space(name, cls):
    space, sampler, study = run(SamplerConfig(name=name, seed=3, n_startup_trials=3), MIXED, 8)
    assert isinstance(sampler.inner if isinstance(sampler, TrialSeededSampler) else sampler, cls)
    assert len(study.trials) == 8
    for trial in study.trials:
        assert trial.state == optuna.trial.TrialState.COMPLETE
        assert set(trial.params) == set(space.distributions)
        for key, value in trial.params.items():
            d = space.distributions[key]
            assert d._contains(d.to_internal_repr(value)), (name, key, value)
        assert trial.params["optim.weight_decay"] == 0.1


def test_grid_sampler_builds():
    space, sampler, study = run(SamplerConfig(name="grid"), DISCRETE, 3)
    assert isinstance(sampler, optuna.samplers.GridSampler)
    assert len(study.trials) == 3


@pytest.mark.parametrize("name", ["tpe", "random", "cmaes", "qmc", "grid"])
def test_seeded_samplers_repeat(name):
    params = DISCRETE if name == "grid" else MIXED
    first = [t.params for t in run(SamplerConfig(name=name, seed=7, n_startup_trials=2), params, 6)[2].trials]
    again = [t.params for t in run(SamplerConfig(name=name, seed=7, n_startup_trials=2), params, 6)[2].trials]
    assert first == again


@pytest.mark.parametrize("name", ["tpe", "random", "cmaes"])
def test_parallel_workers_draw_different_points_and_trial_n_is_reproducible(name, tmp_path):
    """Two workers with the same seed on one SQLite study, started together, take turns: every
    trial gets its own draw, and trial n's draw is the one a single worker would make for it."""
    space = space_of(MIXED)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    cfg = SamplerConfig(name=name, seed=5, n_startup_trials=10)  # all draws are random start-up
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        workers = [optuna.create_study(study_name="s", storage=storage, load_if_exists=True,
                                       sampler=build_sampler(cfg, space)) for _ in range(2)]
        for _ in range(3):
            for study in workers:
                study.optimize(objective_for(space), n_trials=1)
        alone = run(cfg, MIXED, 6)[2]
    shared = [t.params for t in workers[0].trials]
    assert len(shared) == 6
    assert len({tuple(sorted(p.items())) for p in shared}) == 6
    assert shared == [t.params for t in alone.trials]


@pytest.mark.parametrize("name", ["tpe", "random", "cmaes", "qmc"])
def test_workers_starting_a_study_together_run_one_baseline(name, tmp_path):
    """Each worker's sampler pins trial 0 to the baseline; only one worker gets trial 0."""
    space = space_of(MIXED)
    baseline = {"schedule.lr": 6e-4, "model.dropout": 0.0, "schedule.warmup_iters": 100,
                "model": "nano", "optim.weight_decay": 0.1}
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        workers = [optuna.create_study(study_name="s", storage=storage, load_if_exists=True,
                                       sampler=build_sampler(SamplerConfig(name=name, seed=1), space,
                                                             first_trial=baseline)) for _ in range(3)]
        for study in workers:
            study.optimize(objective_for(space), n_trials=2)
    params = [t.params for t in workers[0].trials]
    assert len(params) == 6 and params[0] == baseline
    assert sum(p == baseline for p in params) == 1


def test_resumed_study_does_not_repeat_its_draws(tmp_path):
    space = space_of(MIXED)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    cfg = SamplerConfig(name="tpe", seed=0, n_startup_trials=10)
    params = []
    for _ in range(2):  # the same command twice: the second process resumes the study
        study = optuna.create_study(study_name="s", storage=storage, load_if_exists=True,
                                    sampler=build_sampler(cfg, space))
        study.optimize(objective_for(space), n_trials=3)
    params = [tuple(sorted(t.params.items())) for t in study.trials]
    assert len(params) == 6 and len(set(params)) == 6


def test_tpe_settings():
    sampler = build_sampler(SamplerConfig(name="tpe", seed=0, n_startup_trials=9), space_of(MIXED)).inner
    assert sampler._n_startup_trials == 9 and sampler._multivariate is True


def test_cmaes_warns_about_categorical_params():
    with pytest.warns(UserWarning, match=r"CMA-ES cannot search categorical params \(model\)"):
        build_sampler(SamplerConfig(name="cmaes", seed=0), space_of(MIXED))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numeric only (and fixed values): nothing to warn about
        build_sampler(SamplerConfig(name="cmaes", seed=0),
                      space_of({"schedule.lr": "interval(1e-4, 1e-3)", "model": "mini"}))


def test_grid_enumerates_every_point_exactly_once():
    space = space_of(DISCRETE)
    assert grid_search_space(space) == {
        "model": ["nano", "mini", "small"],
        "schedule.warmup_iters": [0, 25, 50, 75],
        "optim.weight_decay": [0.0, 0.1],
        "model.bias": [False],
    }
    assert grid_size(space) == 24
    expected = {tuple(sorted(p.items())) for p in grid_points(space)}
    assert len(expected) == 24
    # more trials asked than points: the grid sampler stops the study once every point ran
    _, _, study = run(SamplerConfig(name="grid", seed=0), DISCRETE, 40)
    seen = [tuple(sorted(t.params.items())) for t in study.trials]
    assert len(seen) == 24 and set(seen) == expected


def test_grid_of_float_range_points_are_exact():
    space = space_of({"optim.weight_decay": "range(0.0, 0.35, 0.05)"})
    assert grid_search_space(space) == {"optim.weight_decay": [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3]}


@pytest.mark.parametrize("params", [
    {"model": "choice(nano, mini)", "schedule.lr": "tag(log, interval(1e-4, 3e-3))"},
    {"schedule.warmup_iters": "interval(0, 100)"},  # int bounds: still an interval
])
def test_grid_rejects_intervals(params):
    key = [k for k in params if "interval" in params[k]][0]
    with pytest.raises(SearchSpaceError) as info:
        build_sampler(SamplerConfig(name="grid"), space_of(params))
    message = str(info.value)
    assert repr(key) in message and "grid" in message and "choice" in message and "range" in message


def test_unknown_sampler_lists_valid_names():
    with pytest.raises(ValueError) as info:
        build_sampler(SamplerConfig(name="bayes"), space_of(MIXED))
    assert "'bayes'" in str(info.value)
    for name in SAMPLERS:
        assert name in str(info.value)
    assert not isinstance(info.value, SearchSpaceError)
