"""sweep.when: params searched only where a choice takes one value (each optimizer its own LR)."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution

from sweeps.config import RunnerConfig, SamplerConfig
from sweeps.samplers import build_sampler
from sweeps.search_space import SearchSpaceError, parse_search_space

CONF = Path(__file__).parents[1] / "conf"
PARAMS = {"optim": "choice(adamw, muon)", "schedule.lr": "tag(log, interval(1e-4, 1e-2))"}
WHEN = {"optim=muon": {"optim.muon_lr": "tag(log, interval(3e-3, 1e-1))"}}


@pytest.fixture()
def cfg():
    return OmegaConf.structured(RunnerConfig)


def error(cfg, params=PARAMS, when=WHEN) -> str:
    with pytest.raises(SearchSpaceError) as info:
        parse_search_space(params, cfg, CONF, when)
    return str(info.value)


def test_a_conditional_param_is_parsed_with_its_condition(cfg):
    space = parse_search_space(PARAMS, cfg, CONF, WHEN)
    assert space.distributions["optim"] == CategoricalDistribution(["adamw", "muon"])
    assert space.distributions["optim.muon_lr"] == FloatDistribution(3e-3, 1e-1, log=True)
    assert space.conditions == {"optim.muon_lr": ("optim", "muon")}
    assert space.applies("optim.muon_lr", {"optim": "muon"})
    assert not space.applies("optim.muon_lr", {"optim": "adamw"})
    assert space.applies("schedule.lr", {})


def test_trials_search_the_conditional_param_only_in_their_branch(cfg):
    space = parse_search_space(PARAMS, cfg, CONF, WHEN)
    study = optuna.create_study(sampler=build_sampler(SamplerConfig(name="random", seed=0), space))
    study.optimize(lambda t: len(space.sample(t)), n_trials=16)
    branches = {t.params["optim"] for t in study.trials}
    assert branches == {"adamw", "muon"}  # 16 fair coin flips: both come up (seeded)
    for t in study.trials:
        expected = {"optim", "schedule.lr"} | ({"optim.muon_lr"} if t.params["optim"] == "muon" else set())
        assert set(t.params) == expected, t.params
        assert t.value == len(expected)


def test_tpe_models_a_conditional_space_without_failing(cfg):
    space = parse_search_space(PARAMS, cfg, CONF, WHEN)
    study = optuna.create_study(sampler=build_sampler(SamplerConfig(name="tpe", seed=0, n_startup_trials=3), space))
    study.optimize(lambda t: space.sample(t).get("optim.muon_lr", 0.05), n_trials=10)
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)


def test_the_baseline_takes_only_its_branchs_params(cfg):
    cfg.schedule.lr = 1e-3
    space = parse_search_space(PARAMS, cfg, CONF, WHEN)
    assert space.baseline_values(cfg, {"optim": "adamw"}) == {"optim": "adamw", "schedule.lr": 1e-3}
    cfg.optim.muon_lr = 0.02
    assert space.baseline_values(cfg, {"optim": "muon"}) == {"optim": "muon", "schedule.lr": 1e-3,
                                                              "optim.muon_lr": 0.02}


def test_a_condition_must_name_a_choice_and_one_of_its_values(cfg):
    assert "'optim=sgd': 'sgd' is not one of optim's choices (adamw, muon)" in error(
        cfg, when={"optim=sgd": {"optim.muon_lr": "0.02"}})
    assert "'schedule.lr=0.001' is invalid: a condition is PARAM=VALUE, PARAM a choice() of sweep.params " \
           "(here: optim)" in error(cfg, when={"schedule.lr=0.001": {"optim.muon_lr": "0.02"}})
    assert "a condition is PARAM=VALUE" in error(cfg, when={"optim": {"optim.muon_lr": "0.02"}})


def test_a_param_is_searched_in_one_place(cfg):
    assert "'schedule.lr' is already searched in sweep.params" in error(
        cfg, when={"optim=muon": {"schedule.lr": "interval(1e-3, 1e-2)"}})
    twice = {"optim=muon": {"optim.muon_lr": "0.02"}, "optim=adamw": {"optim.muon_lr": "0.03"}}
    assert "'optim.muon_lr' is already searched under another condition" in error(cfg, when=twice)


def test_a_conditional_param_is_checked_like_any_other(cfg):
    assert "optim.muon_lrr" in error(cfg, when={"optim=muon": {"optim.muon_lrr": "0.02"}})


def test_the_grid_refuses_a_conditional_space(cfg):
    params = {"optim": "choice(adamw, muon)", "schedule.lr": "choice(1e-3, 2e-3)"}
    space = parse_search_space(params, cfg, CONF, {"optim=muon": {"optim.muon_lr": "choice(0.01, 0.02)"}})
    with pytest.raises(SearchSpaceError, match="grid sampler needs every param in every trial, but sweep.when "
                                               "searches optim.muon_lr only in some"):
        build_sampler(SamplerConfig(name="grid"), space)


def test_the_optimizer_sweep_trains_muon_trials_with_their_own_lr(workdir):
    from sweeps.compose import compose_study_config
    from sweeps.runner import run
    from tests.test_study_runner import TINY, sqlite_url
    from trainer import checkpoint_config

    cwd, common = workdir
    overrides = ["+sweep=optimizer", *TINY, "schedule.max_iters=10", "study.n_trials=4", "study.sampler.name=random",
                 "study.pruner.name=none", f"study.storage={sqlite_url(cwd)}", *common]
    study = run(compose_study_config(overrides), overrides)
    trials = study.get_trials(deepcopy=False)
    assert trials[0].params == {}  # the baseline as given: TINY's warmup share is outside the space
    assert {t.params["optim"] for t in trials[1:]} == {"adamw", "muon"}  # seed 0 draws both
    for t in trials:
        trained = checkpoint_config(cwd / "outputs" / "studies" / "optimizer" / f"trial_{t.number:04d}" / "ckpt.pt")
        assert trained["optim"]["name"] == t.params.get("optim", "adamw")
        assert trained["schedule"]["lr"] == t.params.get("schedule.lr", 6e-4)
        if t.params.get("optim") == "muon":
            assert trained["optim"]["muon_lr"] == t.params["optim.muon_lr"]
        else:
            assert "optim.muon_lr" not in t.params
        assert t.state == optuna.trial.TrialState.COMPLETE
