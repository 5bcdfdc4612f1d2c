"""A sampler whose draws for trial n depend on n only, not on the worker that runs it."""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.study import Study
from optuna.trial import FrozenTrial

__all__ = ["TrialSeededSampler"]


class TrialSeededSampler(BaseSampler):
    """Samples trial ``n`` with a fresh sampler ``make(seed + n)``.

    Optuna's samplers keep one random stream per process, so workers that start a study at the
    same moment with the same seed draw the same start-up points, and a resumed process replays
    the ones it already tried. Trial numbers are unique in a study (the storage hands them out),
    so seeding every trial by its number gives each worker different draws, keeps a resumed
    study from repeating itself, and makes trial ``n``'s draw reproducible whichever worker ran
    it (given the same finished trials before it).

    Only samplers that hold no state between trials beyond their random stream qualify
    (TPE, random, CMA-ES and QMC read everything else from the storage). With ``seed=None``
    every trial gets a fresh OS-random seed.

    ``first_trial`` pins trial 0 to given values (the study's baseline): the storage numbers
    trials atomically, so however many workers start a new study at once, exactly one of them
    runs the baseline, which an enqueued trial cannot promise (each worker would enqueue one).

    Args:
        make: Builds the inner sampler from a seed (``None``: unseeded).
        seed: The study's sampler seed, or ``None``.
        first_trial: Param name -> value for trial 0, or ``None`` to sample it like any other.
    """

    def __init__(self, make: Callable[[Optional[int]], BaseSampler], seed: Optional[int],
                 first_trial: Optional[Dict[str, Any]] = None) -> None:
        self._make = make
        self._seed = seed
        self._first_trial = first_trial
        self._inner = make(seed)

    @property
    def inner(self) -> BaseSampler:
        """The sampler of the latest trial."""
        return self._inner

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self._inner = self._make(None if self._seed is None else self._seed + trial.number)
        self._inner.before_trial(study, trial)

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> Dict[str, BaseDistribution]:
        return self._inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study: Study, trial: FrozenTrial,
                        search_space: Dict[str, BaseDistribution]) -> Dict[str, Any]:
        if self._pinned(trial):
            return {}
        return self._inner.sample_relative(study, trial, search_space)

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        if self._pinned(trial) and param_name in self._first_trial:
            return self._first_trial[param_name]
        return self._inner.sample_independent(study, trial, param_name, param_distribution)

    def _pinned(self, trial: FrozenTrial) -> bool:
        return self._first_trial is not None and trial.number == 0

    def after_trial(self, study: Study, trial: FrozenTrial, state: optuna.trial.TrialState,
                    values: Optional[list]) -> None:
        self._inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        # Every trial is reseeded from its number already; Optuna calls this for n_jobs > 1.
        self._inner.reseed_rng()
