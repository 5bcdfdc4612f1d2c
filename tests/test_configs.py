"""Every config in conf/ composes and types, for both entry points, and every sweep runs.

Every option of every group is composed through `conf/train.yaml` (`python -m trainer`) and
`conf/study_runner.yaml` (`python study_runner.py`) and checked as a TrainConfig; every sweep file
(found in conf/sweep/, so a new one is covered without editing this file) composes, parses its
search space and runs one short trial end to end. A config that only breaks when someone picks it
fails here, not in the first study that picks it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import optuna
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf, open_dict
from optuna.trial import TrialState

from sweeps.compose import compose_study_config
from sweeps.pruners import build_pruner
from sweeps.samplers import build_sampler
from sweeps.search_space import parse_search_space
from tests.test_study_runner import run_cli, sqlite_url
from trainer import as_train_config, check_config
from trainer.__main__ import register_configs

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"
GROUPS = ("model", "data", "schedule", "optim", "experiment", "budget")
RUNNER_GROUPS = ("launcher",)  # the study runner's own: how its workers start
SWEEPS = sorted(p.stem for p in (CONF_DIR / "sweep").glob("*.yaml"))
BUDGETS = sorted(p.stem for p in (CONF_DIR / "budget").glob("*.yaml"))
BUDGET_KEYS = ("schedule.max_iters", "eval_interval", "eval_iters", "batch_size")
SAMPLE_PARQUET = ROOT / "trainer" / "sample_data" / "shakespeare_plays.parquet"
# what an option needs besides itself to make a valid run
NEEDS = {("data", "parquet"): [f"data.files=[{SAMPLE_PARQUET}]"]}


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def compose_train_config(overrides: list[str]) -> DictConfig:
    """`conf/train.yaml` with `overrides`, as `python -m trainer` composes it (hydra node included)."""
    register_configs()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        return compose("train", overrides=overrides, return_hydra_config=True)


ENTRY_POINTS = {
    "train": compose_train_config,
    "study_runner": lambda overrides: compose_study_config(overrides, return_hydra_config=True),
}


def composed(entry: str, overrides: list[str]) -> tuple[DictConfig, dict]:
    """The config an entry point composes from `overrides`, without its hydra node, and the option
    each group resolved to."""
    cfg = ENTRY_POINTS[entry](overrides)
    choices = {k: v for k, v in cfg.hydra.runtime.choices.items() if not k.startswith("hydra/")}
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, choices


def option_values(group: str, option: str) -> tuple[DictConfig, DictConfig | None]:
    """An option file's own values (its defaults list aside) and the package they land in."""
    path = CONF_DIR / group / f"{option}.yaml"
    values = OmegaConf.load(path)
    with open_dict(values):
        values.pop("defaults", None)
    is_global = path.read_text().startswith("# @package _global_")
    return values, None if is_global else group


def assert_holds(cfg: DictConfig, expected: DictConfig, where: str = "") -> None:
    """Every value set in `expected` (`???` aside) is the one in `cfg`."""
    for key in expected:
        path = f"{where}{key}"
        if OmegaConf.is_missing(expected, key):
            continue
        value = expected[key]
        if isinstance(value, DictConfig):
            assert_holds(cfg[key], value, path + ".")
        else:
            assert cfg[key] == value, f"{path}: composed {cfg[key]!r}, the option sets {value!r}"


def budget_of(cfg: DictConfig) -> dict:
    return {key: OmegaConf.select(cfg, key) for key in BUDGET_KEYS}


# ------------------------------------------------------------------ every option of every group

CASES = [(entry, group, option) for entry in ENTRY_POINTS for group in GROUPS for option in options(group)]


def test_every_group_has_options_and_no_group_is_forgotten():
    assert all(options(group) for group in GROUPS)
    # a new group folder needs a line in GROUPS (sweep/ is tested below, one test per file)
    assert {p.name for p in CONF_DIR.iterdir() if p.is_dir()} == {*GROUPS, *RUNNER_GROUPS, "sweep"}


RUNNER_CASES = [(group, option) for group in RUNNER_GROUPS for option in options(group)]


@pytest.mark.parametrize("group,option", RUNNER_CASES, ids=[f"{g}={o}" for g, o in RUNNER_CASES])
def test_every_option_of_the_runners_own_groups_composes_and_passes_its_checks(group, option):
    from sweeps.config import check_launcher
    cfg, choices = composed("study_runner", ["+sweep=lr_warmup", f"{group}={option}"])
    assert choices[group] == option
    assert_holds(cfg[group], option_values(group, option)[0])
    check_launcher(OmegaConf.to_object(cfg.launcher), "sweep")
    check_config(as_train_config(cfg))  # the trials it would start are valid runs


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_each_entry_point_composes_a_valid_run_as_it_stands(entry):
    cfg, choices = composed(entry, [])
    check_config(as_train_config(cfg))
    assert choices["experiment"] is None and choices["budget"] is None


@pytest.mark.parametrize("entry,group,option", CASES, ids=[f"{e}-{g}={o}" for e, g, o in CASES])
def test_every_option_of_every_group_composes_to_a_valid_run(entry, group, option):
    overrides = [f"{group}={option}", *NEEDS.get((group, option), [])]
    cfg, choices = composed(entry, overrides)
    assert choices[group] == option
    values, package = option_values(group, option)
    assert_holds(cfg if package is None else cfg[package], values)
    train_cfg = as_train_config(cfg)  # typed: a value of the wrong type fails here
    check_config(train_cfg)
    if (group, option) == ("data", "parquet"):
        assert train_cfg.data.files == [str(SAMPLE_PARQUET)] and SAMPLE_PARQUET.is_file()


def test_the_trainer_keeps_its_own_budget_unless_one_is_picked():
    cfg, _ = composed("train", [])
    assert budget_of(cfg) == {"schedule.max_iters": 5000, "eval_interval": 250, "eval_iters": 20, "batch_size": 12}
    cfg, _ = composed("train", ["model=nano", "budget=cpu_demo"])  # a study trial's run, by hand
    assert budget_of(cfg) == budget_of(composed("study_runner", ["+sweep=lr_warmup"])[0])


# ------------------------------------------------------------------------------ every sweep file

def test_sweeps_are_discovered():
    assert {"lr_warmup", "lr_warmup_grid", "model_size", "full"} <= set(SWEEPS)
    assert {"cpu_demo", "gpu"} <= set(BUDGETS)


@pytest.mark.parametrize("sweep", SWEEPS)
def test_every_sweep_composes_and_parses_its_search_space(sweep):
    cfg, choices = composed("study_runner", [f"+sweep={sweep}"])
    assert choices["sweep"] == sweep and cfg.sweep.name == sweep
    check_config(as_train_config(cfg))  # the baseline trial
    space = parse_search_space(cfg.sweep.params, cfg, CONF_DIR)
    assert set(space.distributions) == set(cfg.sweep.params) != set()
    build_sampler(cfg.study.sampler, space)  # a grid sweep's space must be a finite grid
    build_pruner(cfg.study.pruner)
    assert cfg.study.n_trials > 0


@pytest.mark.parametrize("sweep", SWEEPS)
def test_every_sweep_picks_a_shared_budget_and_sets_none_of_its_keys_itself(sweep):
    own = OmegaConf.load(CONF_DIR / "sweep" / f"{sweep}.yaml")
    assert [key for key in BUDGET_KEYS if OmegaConf.select(own, key) is not None] == []
    cfg, choices = composed("study_runner", [f"+sweep={sweep}"])
    assert choices["budget"] in BUDGETS
    assert_holds(cfg, option_values("budget", choices["budget"])[0])


@pytest.mark.parametrize("sweep", SWEEPS)
@pytest.mark.parametrize("budget", BUDGETS)
def test_budget_on_the_command_line_swaps_the_sweeps_preset_and_keys_win_over_both(sweep, budget):
    cfg, choices = composed("study_runner", [f"+sweep={sweep}", f"budget={budget}"])
    assert choices["budget"] == budget
    assert_holds(cfg, option_values("budget", budget)[0])
    cfg, _ = composed("study_runner", [f"+sweep={sweep}", f"budget={budget}", "schedule.max_iters=120",
                                       "eval_interval=10"])
    values = option_values("budget", budget)[0]
    assert budget_of(cfg) == {"schedule.max_iters": 120, "eval_interval": 10, "eval_iters": values.eval_iters,
                              "batch_size": values.batch_size}


def test_the_sweeps_budget_wins_over_an_experiments_run_length_but_not_its_other_keys():
    """A study around experiment=seed_4070 trains the sweep's budget, as it did when each sweep
    file set it: the budget comes after the experiment in study_runner.yaml's defaults."""
    cfg, _ = composed("study_runner", ["+sweep=lr_warmup", "experiment=seed_4070"])
    assert budget_of(cfg) == budget_of(composed("study_runner", ["+sweep=lr_warmup"])[0])
    assert cfg.model.n_embd == 384 and cfg.gradient_accumulation_steps == 32 and cfg.schedule.lr == 1e-3


# ------------------------------------------------------------------- one trial of each sweep, run

# A couple of iterations of one trial, batch 1 (full draws the small model: 30M parameters,
# ~1.3 s an iteration at batch 1 on 2 CPU cores). The sweep's own space is sampled: no baseline.
SHORT = ["study.n_trials=1", "study.baseline=false", "schedule.max_iters=2", "eval_interval=2", "eval_iters=2",
         "batch_size=1", "log_interval=1"]


@pytest.mark.slow
@pytest.mark.parametrize("sweep", SWEEPS)
def test_one_short_trial_of_every_sweep_runs_through_the_runner(workdir, sweep):
    cwd, common = workdir
    url = sqlite_url(cwd)
    code, out = run_cli([f"+sweep={sweep}", *SHORT, f"study.storage={url}", *common], cwd, timeout=300)
    assert code == 0, out
    cfg, _ = composed("study_runner", [f"+sweep={sweep}"])
    trials = optuna.load_study(study_name=sweep, storage=url).get_trials(deepcopy=False)
    assert len(trials) == 1, out
    trial = trials[0]
    assert trial.state == TrialState.COMPLETE and math.isfinite(trial.value), out
    branch = {k for when, params in cfg.sweep.when.items() for k in params
              if trial.params.get(when.split("=")[0]) == when.split("=")[1]}
    assert set(trial.params) == set(cfg.sweep.params) | branch  # a point of the sweep's own space
    trained = json.loads(trial.user_attrs["config"])
    assert (trained["schedule"]["max_iters"], trained["batch_size"]) == (2, 1)  # the command line won
