"""sweeps.search_space: Hydra sweep grammar -> Optuna distributions, errors, baseline, overrides."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from sweeps.config import RunnerConfig, SamplerConfig
from sweeps.samplers import build_sampler
from sweeps.search_space import SearchSpace, SearchSpaceError, format_value, parse_search_space

CONF = Path(__file__).parents[1] / "conf"
MODEL_OPTIONS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))


@pytest.fixture()
def cfg():
    return OmegaConf.structured(RunnerConfig)


def dist(text: str, cfg, key: str = "schedule.lr"):
    return parse_search_space({key: text}, cfg, CONF).distributions[key]


def error(params: dict, cfg) -> str:
    with pytest.raises(SearchSpaceError) as info:
        parse_search_space(params, cfg, CONF)
    assert isinstance(info.value, ValueError)
    return str(info.value)


# ------------------------------------------------------------------------------------------- mapping

def test_the_example_sweep(cfg):
    space = parse_search_space({
        "schedule.lr": "tag(log, interval(1e-4, 3e-3))",
        "schedule.warmup_iters": "range(0, 200, 20)",
        "model.dropout": "choice(0.0, 0.1, 0.2)",
        "model": "choice(nano, mini)",
    }, cfg, CONF)
    assert space.distributions == {
        "schedule.lr": FloatDistribution(1e-4, 3e-3, log=True),
        "schedule.warmup_iters": IntDistribution(0, 180, step=20),
        "model.dropout": CategoricalDistribution([0.0, 0.1, 0.2]),
        "model": CategoricalDistribution(["nano", "mini"]),
    }
    assert list(space.distributions) == ["schedule.lr", "schedule.warmup_iters", "model.dropout", "model"]
    assert space.groups == frozenset({"model"})
    assert space.intervals == frozenset({"schedule.lr"})


def test_choice(cfg):
    assert dist("choice(0.0, 0.1, 0.2)", cfg, "model.dropout") == CategoricalDistribution([0.0, 0.1, 0.2])
    assert dist("0.0,0.1", cfg, "model.dropout") == CategoricalDistribution([0.0, 0.1])  # simple form
    assert dist("choice(true, false)", cfg, "model.bias") == CategoricalDistribution([True, False])
    assert dist("choice(cosine, wsd)", cfg, "schedule.name") == CategoricalDistribution(["cosine", "wsd"])
    assert dist("sort(choice(0.2, 0.0, 0.1))", cfg, "model.dropout") == CategoricalDistribution([0.0, 0.1, 0.2])


def test_int_range_excludes_stop(cfg):
    assert dist("range(0, 200, 20)", cfg, "schedule.warmup_iters") == IntDistribution(0, 180, step=20)
    assert dist("range(0, 201, 20)", cfg, "schedule.warmup_iters") == IntDistribution(0, 200, step=20)
    assert dist("range(1, 5)", cfg, "model.n_layer") == IntDistribution(1, 4)
    assert dist("range(4)", cfg, "model.n_layer") == IntDistribution(0, 3)  # range(stop) starts at 0
    assert dist("range(8, 2, -2)", cfg, "model.n_layer") == IntDistribution(4, 8, step=2)  # 8, 6, 4
    assert dist("range(3, 4)", cfg, "model.n_layer") == IntDistribution(3, 3)  # one value


def test_float_range_excludes_stop(cfg):
    d = dist("range(0.0, 0.3, 0.1)", cfg, "optim.weight_decay")
    assert d == FloatDistribution(0.0, 0.2, step=0.1)
    d = dist("range(0.0, 0.31, 0.1)", cfg, "optim.weight_decay")
    assert d == FloatDistribution(0.0, 0.3, step=0.1)
    # bounds are exact decimals, not accumulated float error (0.0001 + 5 * 0.0005 = 0.0026)
    assert dist("range(1e-4, 3e-3, 5e-4)", cfg) == FloatDistribution(1e-4, 0.0026, step=5e-4)
    assert dist("range(0, 1, 0.25)", cfg) == FloatDistribution(0.0, 0.75, step=0.25)  # int start, float step


def test_log_range(cfg):
    assert dist("tag(log, range(1, 9))", cfg, "model.n_layer") == IntDistribution(1, 8, log=True)


def test_interval(cfg):
    assert dist("interval(1e-4, 3e-3)", cfg) == FloatDistribution(1e-4, 3e-3)
    assert dist("tag(log, interval(1e-4, 3e-3))", cfg) == FloatDistribution(1e-4, 3e-3, log=True)
    assert dist("interval(0, 0.5)", cfg, "model.dropout") == FloatDistribution(0.0, 0.5)
    # two int bounds: an int param (as hydra-optuna-sweeper intends)
    assert dist("interval(50, 300)", cfg, "schedule.warmup_iters") == IntDistribution(50, 300)
    assert dist("tag(log, interval(16, 512))", cfg, "batch_size") == IntDistribution(16, 512, log=True)
    # ... but not for a float field, where interval(0, 1) means the continuous [0, 1]
    assert dist("interval(0, 1)", cfg, "model.dropout") == FloatDistribution(0.0, 1.0)
    assert dist("tag(log, interval(1, 10))", cfg, "schedule.min_lr_ratio") == FloatDistribution(1.0, 10.0, log=True)
    plain = OmegaConf.create({"model": {"dropout": 0.0, "n_layer": 4}})  # untyped: by the current value
    assert dist("interval(0, 1)", plain, "model.dropout") == FloatDistribution(0.0, 1.0)
    assert dist("interval(2, 8)", plain, "model.n_layer") == IntDistribution(2, 8)


def test_plain_value_is_fixed(cfg):
    space = parse_search_space({"model.dropout": "0.1", "model": "mini", "model.bias": "true",
                                "schedule.min_lr_ratio": "null"}, cfg, CONF)
    assert space.distributions["model.dropout"] == CategoricalDistribution([0.1])
    assert space.distributions["model"] == CategoricalDistribution(["mini"])
    assert space.distributions["model.bias"] == CategoricalDistribution([True])
    assert space.distributions["schedule.min_lr_ratio"] == CategoricalDistribution([None])
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(3):
        trial = study.ask()
        assert space.sample(trial) == {"model.dropout": 0.1, "model": "mini", "model.bias": True,
                                       "schedule.min_lr_ratio": None}
        study.tell(trial, 0.0)


def test_non_string_values_are_read_as_written(cfg):
    # a params mapping built in Python (YAML through SweepConfig always gives strings)
    space = parse_search_space({"model.dropout": 0.1, "model.bias": False, "model.n_layer": 4}, cfg, CONF)
    assert space.distributions["model.dropout"] == CategoricalDistribution([0.1])
    assert space.distributions["model.bias"] == CategoricalDistribution([False])
    assert space.distributions["model.n_layer"] == CategoricalDistribution([4])


def test_optional_keys_are_valid(cfg):
    assert cfg.schedule.min_lr_ratio is None and cfg.schedule.lr_decay_iters is None
    space = parse_search_space({"schedule.min_lr_ratio": "interval(0.05, 0.2)",
                                "schedule.lr_decay_iters": "range(1000, 5001, 1000)"}, cfg, CONF)
    assert space.distributions["schedule.min_lr_ratio"] == FloatDistribution(0.05, 0.2)
    assert space.distributions["schedule.lr_decay_iters"] == IntDistribution(1000, 5000, step=1000)


def test_empty_params(cfg):
    assert parse_search_space({}, cfg, CONF) == SearchSpace({}, frozenset())
    assert parse_search_space(None, cfg, CONF).distributions == {}


def test_params_from_an_omegaconf_node(cfg):
    from sweeps.config import SweepConfig

    cfg.sweep = SweepConfig(name="t", params={"schedule.lr": "interval(1e-4, 1e-3)", "model": "choice(nano, mini)"})
    space = parse_search_space(cfg.sweep.params, cfg, CONF)
    assert set(space.distributions) == {"schedule.lr", "model"}


def test_against_a_hydra_composed_config():
    """The runner passes Hydra's composed (struct, typed) config: checks work on it too."""
    from hydra import compose, initialize_config_dir

    from trainer.__main__ import register_configs

    register_configs()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        composed = compose("train")
    space = parse_search_space({"schedule.lr": "tag(log, interval(1e-4, 3e-3))", "model": "choice(nano, mini)",
                                "schedule.lr_decay_iters": "range(100, 300, 100)"}, composed, CONF)
    assert space.groups == {"model"}
    assert "unknown config key" in error({"schedule.lrr": "1e-3"}, composed)
    assert "does not fit" in error({"schedule.warmup_iters": "interval(0.5, 10.5)"}, composed)


# -------------------------------------------------------------------------------------------- errors

def test_unknown_key_lists_close_matches(cfg):
    msg = error({"schedule.lrr": "interval(1e-4, 1e-3)"}, cfg)
    assert "'schedule.lrr'" in msg and "unknown config key" in msg and "schedule.lr" in msg
    msg = error({"model.dropuot": "0.1"}, cfg)
    assert "model.dropout" in msg
    msg = error({"modle": "choice(nano, mini)"}, cfg)
    assert "'modle'" in msg and "model" in msg
    assert "unknown config key" in error({"model.n_layer.deeper": "1"}, cfg)  # below a leaf
    assert "unknown config key" in error({"nothing_like_it": "1"}, cfg)


def test_study_settings_are_not_hyperparameters(cfg):
    for key in ("study.n_trials", "sweep.name", "mode"):
        assert "study runner's own settings" in error({key: "1"}, cfg)


def test_not_a_plain_key(cfg):
    assert "'+schedule.lr'" in error({"+schedule.lr": "1e-3"}, cfg)
    assert "'~schedule.lr'" in error({"~schedule.lr": "1e-3"}, cfg)


def test_unknown_group_option_lists_options(cfg):
    msg = error({"model": "choice(nano, huge)"}, cfg)
    assert "'huge'" in msg and "model" in msg
    for option in MODEL_OPTIONS:
        assert option in msg
    assert "'gpt3'" in error({"model": "gpt3"}, cfg)  # a fixed group option too
    assert "config group" in error({"model": "range(1, 3)"}, cfg)
    assert "config group" in error({"model": "interval(1, 3)"}, cfg)


def test_low_above_high(cfg):
    msg = error({"schedule.lr": "interval(3e-3, 1e-4)"}, cfg)
    assert "'schedule.lr'" in msg and "0.003" in msg and "low" in msg and "high" in msg


def test_log_needs_positive_low(cfg):
    msg = error({"optim.weight_decay": "tag(log, interval(0.0, 0.3))"}, cfg)
    assert "'optim.weight_decay'" in msg and "log" in msg and "> 0" in msg
    assert "> 0" in error({"model.n_layer": "tag(log, range(0, 4))"}, cfg)


def test_log_range_needs_ints_and_step_1(cfg):
    assert "step 1" in error({"schedule.warmup_iters": "tag(log, range(10, 200, 10))"}, cfg)
    assert "interval" in error({"schedule.lr": "tag(log, range(0.1, 1.0, 0.1))"}, cfg)


def test_log_on_choice(cfg):
    assert "only to range() or interval()" in error({"model.dropout": "tag(log, choice(0.1, 0.2))"}, cfg)


def test_empty_range(cfg):
    for text in ("range(5, 5)", "range(10, 0)", "range(0, 10, -1)"):
        msg = error({"schedule.warmup_iters": text}, cfg)
        assert "empty range" in msg and "stop is excluded" in msg and text in msg
    assert "empty range" in error({"schedule.lr": "range(0.5, 0.5, 0.1)"}, cfg)
    assert "step 0" in error({"schedule.warmup_iters": "range(0, 10, 0)"}, cfg)


def test_unknown_tag(cfg):
    msg = error({"schedule.lr": "tag(logarithmic, interval(1e-4, 1e-3))"}, cfg)
    assert "logarithmic" in msg and "'log'" in msg


def test_unparsable_shows_the_parser_message(cfg):
    msg = error({"schedule.lr": "interval(1e-4, "}, cfg)
    assert "cannot parse" in msg and "'schedule.lr'" in msg and "interval(1e-4, " in msg
    assert "no viable alternative" in msg  # hydra's own message
    assert "missing a required argument" in error({"schedule.lr": "interval(1e-4)"}, cfg)
    assert "Unknown function" in error({"schedule.lr": "uniform(0, 1)"}, cfg)


def test_unsupported_functions(cfg):
    assert "shuffle" in error({"schedule.warmup_iters": "shuffle(range(0, 100, 10))"}, cfg)
    assert "shuffle" in error({"model.dropout": "shuffle(choice(0.0, 0.1))"}, cfg)
    assert "glob" in error({"model": "glob(*)"}, cfg)


def test_bad_values(cfg):
    assert "equal" in error({"model.dropout": "choice(0.1, 0.1)"}, cfg)
    assert "list" in error({"model.dropout": "choice([0.1], [0.2])"}, cfg)
    assert "dict" in error({"model.dropout": "{a: 1}"}, cfg)


def test_values_must_fit_the_field_type(cfg):
    msg = error({"schedule.warmup_iters": "interval(0.5, 100)"}, cfg)
    assert "'schedule.warmup_iters'" in msg and "does not fit" in msg and "int" in msg
    assert "does not fit" in error({"schedule.warmup_iters": "range(0.0, 100.0, 10.0)"}, cfg)
    assert "'fast'" in error({"schedule.lr": "choice(1e-3, fast)"}, cfg)
    assert "does not fit" in error({"model.n_layer": "null"}, cfg)  # not Optional


# ------------------------------------------------------------------------------------------ sampling

def test_sample_suggests_every_param_within_its_distribution(cfg):
    space = parse_search_space({
        "schedule.lr": "tag(log, interval(1e-4, 3e-3))",
        "schedule.warmup_iters": "range(0, 200, 20)",
        "optim.weight_decay": "range(0.0, 0.3, 0.1)",
        "model.dropout": "choice(0.0, 0.1, 0.2)",
        "model": "choice(nano, mini)",
        "schedule.lr_decay_iters": "interval(1000, 5000)",
    }, cfg, CONF)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        trial = study.ask()
        values = space.sample(trial)
        assert set(values) == set(space.distributions) == set(trial.params)
        for key, value in values.items():
            d = space.distributions[key]
            assert d._contains(d.to_internal_repr(value)), (key, value)
        assert values["schedule.warmup_iters"] % 20 == 0 and values["schedule.warmup_iters"] < 200
        assert isinstance(values["schedule.lr_decay_iters"], int)
        study.tell(trial, values["schedule.lr"])
    assert trial.distributions == space.distributions


# ------------------------------------------------------------------------------------------ overrides

def test_to_overrides_formats_and_puts_groups_first(cfg):
    space = parse_search_space({"schedule.lr": "interval(1e-4, 1e-2)", "model": "choice(nano, mini)",
                                "model.bias": "choice(true, false)"}, cfg, CONF)
    assert space.to_overrides({"schedule.lr": 0.00123, "model": "mini", "model.bias": False}) == [
        "model=mini", "schedule.lr=0.00123", "model.bias=false"]
    assert space.to_overrides({"schedule.min_lr_ratio": None, "schedule.warmup_iters": 40}) == [
        "schedule.min_lr_ratio=null", "schedule.warmup_iters=40"]
    assert space.to_overrides({}) == []


@pytest.mark.parametrize("value", [
    0.00123, 1e-5, 3.0000000000000004e-4, 0.1 + 0.2, 1 / 3, 5e-324, 1.7976931348623157e308, -2.5, 0.0,
    float("inf"), 7, -3, 0, True, False, None, "mini", "gpt_40m", "a b", "it's", 'say "hi"', "1", "true",
    "null", "a,b", "x=y", "ü", "", "back\\slash",
])
def test_override_round_trip_is_exact(value):
    text = format_value(value)
    parsed = OverridesParser.create().parse_overrides([f"schedule.lr={text}"])[0].value()
    assert parsed == value and type(parsed) is type(value), (value, text, parsed)


def test_override_round_trip_through_hydra_compose():
    from hydra import compose, initialize_config_dir

    from trainer.__main__ import register_configs

    register_configs()
    space = parse_search_space({"schedule.lr": "tag(log, interval(1e-4, 3e-3))", "model": "choice(nano, mini)",
                                "optim.weight_decay": "range(0.0, 0.3, 0.1)"}, OmegaConf.structured(RunnerConfig), CONF)
    values = {"schedule.lr": 0.0004134374308918324, "model": "mini", "optim.weight_decay": 0.30000000000000004}
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        composed = compose("train", overrides=space.to_overrides(values))
    mini = OmegaConf.load(CONF / "model" / "mini.yaml")
    assert composed.schedule.lr == values["schedule.lr"]
    assert composed.optim.weight_decay == values["optim.weight_decay"]
    assert composed.model.n_layer == mini.n_layer and composed.model.n_embd == mini.n_embd


# ------------------------------------------------------------------------------------------- baseline

SPACE = {
    "schedule.lr": "tag(log, interval(1e-4, 3e-3))",
    "schedule.warmup_iters": "range(0, 200, 20)",
    "model.dropout": "choice(0.0, 0.1, 0.2)",
    "model": "choice(nano, mini)",
}


def test_baseline_values_are_the_config_s(cfg):
    space = parse_search_space(SPACE, cfg, CONF)
    values = space.baseline_values(cfg, {"model": "nano", "schedule": "cosine"})
    assert values == {"schedule.lr": 6e-4, "schedule.warmup_iters": 100, "model.dropout": 0.0, "model": "nano"}
    assert type(values["schedule.warmup_iters"]) is int
    # trial 0 draws them as they are (every sampler but grid pins it), trial 1 samples
    study = optuna.create_study(sampler=build_sampler(SamplerConfig(name="tpe"), space, first_trial=values))
    assert space.sample(study.ask()) == values
    assert space.sample(study.ask()) != values


def test_baseline_from_a_plain_config(cfg):
    """The runner passes a resolved copy (OmegaConf.create of a container): untyped."""
    plain = OmegaConf.create(OmegaConf.to_container(cfg))
    space = parse_search_space(SPACE, cfg, CONF)
    assert space.baseline_values(plain, {"model": "mini"})["model"] == "mini"


def test_baseline_choice_matches_by_value(cfg):
    space = parse_search_space({"model.dropout": "choice(0, 0.1)"}, cfg, CONF)  # int 0 vs the config's 0.0
    assert space.baseline_values(cfg, {}) == {"model.dropout": 0}


@pytest.mark.parametrize("params,choices", [
    ({"model": "choice(mini, small)"}, {"model": "nano"}),  # current group option not a choice
    ({"model": "choice(nano, mini)"}, {}),  # no group choice known
    ({"model.dropout": "choice(0.1, 0.2)"}, {}),  # 0.0 not a choice
    ({"model.bias": "choice(0, 1)"}, {}),  # False is not 0 here
    ({"model.dropout": "0.1"}, {}),  # fixed to another value
])
def test_no_baseline_when_a_current_value_is_not_a_choice(cfg, params, choices):
    assert parse_search_space(params, cfg, CONF).baseline_values(cfg, choices) is None


@pytest.mark.parametrize("params", [
    {"schedule.lr": "interval(1e-3, 3e-3)"},  # 6e-4 below the interval
    {"schedule.warmup_iters": "range(0, 100, 20)"},  # 100 excluded (stop)
    {"schedule.warmup_iters": "range(0, 200, 30)"},  # 100 off the step
    {"schedule.min_lr_ratio": "interval(0.05, 0.2)"},  # None: no numeric value
])
def test_no_baseline_when_a_current_value_is_outside_a_numeric_param(cfg, params):
    assert parse_search_space(params, cfg, CONF).baseline_values(cfg, {}) is None
