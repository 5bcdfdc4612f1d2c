"""`study.sampler` -> an Optuna sampler for the sweep's search space.

    tpe     multivariate TPE, `n_startup_trials` random trials first (the default)
    random  independent uniform sampling
    cmaes   CMA-ES after `n_startup_trials` random ones (numeric params; categoricals are sampled
            independently at random)
    qmc     scrambled Sobol sequence (quasi-random, space-filling)
    grid    every point of the space once: every param must be a choice() or a range()

All are seeded with `seed` (null: unseeded). tpe, random and cmaes draw trial n from the seed
`seed + n` (TrialSeededSampler), so parallel workers and resumed studies never repeat each other's
random points; qmc and grid walk one sequence that every worker shares. All but grid can pin
trial 0 to the baseline's values (a grid's trials are its points).
"""

from __future__ import annotations

import itertools
import logging
import math
import warnings
from decimal import Decimal
from typing import Any, Callable, Optional

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from sweeps.search_space import SearchSpace, SearchSpaceError
from sweeps.trial_seeded_sampler import TrialSeededSampler

SAMPLERS = ("tpe", "random", "cmaes", "qmc", "grid")
_log = logging.getLogger(__name__)


def build_sampler(cfg: Any, space: SearchSpace,
                  first_trial: Optional[dict] = None) -> optuna.samplers.BaseSampler:
    """The sampler `cfg.name` (a SamplerConfig: name, seed, n_startup_trials) for `space`;
    `first_trial`, values for trial 0 (the baseline), is ignored by grid."""
    name = str(cfg.name).lower()
    seed: Optional[int] = cfg.seed
    n_startup = int(getattr(cfg, "n_startup_trials", 4))
    makers: dict[str, Callable[[Optional[int]], optuna.samplers.BaseSampler]] = {
        # group=True: TPE models each set of params that trials share (a conditional space) jointly
        "tpe": lambda trial_seed: optuna.samplers.TPESampler(
            seed=trial_seed, n_startup_trials=n_startup, multivariate=True, group=bool(space.conditions)),
        "random": lambda trial_seed: optuna.samplers.RandomSampler(seed=trial_seed),
        "cmaes": lambda trial_seed: optuna.samplers.CmaEsSampler(
            seed=trial_seed, n_startup_trials=n_startup, warn_independent_sampling=False),
        # one Sobol sequence, shared by every trial and worker
        "qmc": lambda _: optuna.samplers.QMCSampler(qmc_type="sobol", scramble=True, seed=seed),
    }
    if name == "cmaes":
        categorical = [k for k, d in space.distributions.items()
                       if isinstance(d, CategoricalDistribution) and not d.single()]
        if categorical:
            warnings.warn(
                f"CMA-ES cannot search categorical params ({', '.join(categorical)}): Optuna samples them "
                f"independently at random while CMA-ES searches the numeric ones; use sampler tpe to model them",
                UserWarning, stacklevel=2)
    if name in makers:
        def make(trial_seed: Optional[int]) -> optuna.samplers.BaseSampler:
            with warnings.catch_warnings():  # multivariate TPE, CMA-ES and QMC are "experimental"
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return makers[name](trial_seed)
        return TrialSeededSampler(make, seed, first_trial)
    if name == "grid":
        grid = grid_search_space(space)
        _log.info("grid sampler: %d points", grid_size(space))
        return optuna.samplers.GridSampler(grid, seed=seed)
    raise ValueError(f"study.sampler.name={cfg.name!r} is invalid; valid: {', '.join(SAMPLERS)}")


def grid_values(key: str, dist: BaseDistribution, interval: bool = False) -> list[Any]:
    """Every value a grid takes for one param; SearchSpaceError unless it is a choice or a range
    (`interval`: the param was written as interval(), even one with int bounds)."""
    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    if isinstance(dist, IntDistribution) and not interval:
        return list(range(dist.low, dist.high + 1, dist.step))
    if isinstance(dist, FloatDistribution) and dist.step is not None and not interval:
        low, step = Decimal(repr(dist.low)), Decimal(repr(dist.step))
        n = int((Decimal(repr(dist.high)) - low) / step + Decimal("1e-9")) + 1
        return [float(low + i * step) for i in range(n)]
    raise SearchSpaceError(
        f"sweep param {key!r}: an interval ({dist}), but the grid sampler needs a finite set of values: "
        f"use choice(a, b, ...) or range(start, stop, step) for {key}, or another sampler (tpe, random, qmc, cmaes)")


def grid_search_space(space: SearchSpace) -> dict[str, list[Any]]:
    """The GridSampler search space: param -> its values."""
    if space.conditions:
        raise SearchSpaceError(
            f"the grid sampler needs every param in every trial, but sweep.when searches "
            f"{', '.join(space.conditions)} only in some; use another sampler (tpe, random, qmc, cmaes)")
    return {key: grid_values(key, dist, key in space.intervals) for key, dist in space.distributions.items()}


def grid_size(space: SearchSpace) -> int:
    """How many points a grid over `space` has (SearchSpaceError if it has intervals)."""
    return math.prod(len(v) for v in grid_search_space(space).values())


def grid_points(space: SearchSpace) -> list[dict[str, Any]]:
    """Every point of the grid over `space` (for tests and dry runs)."""
    grid = grid_search_space(space)
    return [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())]
