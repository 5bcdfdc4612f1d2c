"""A sampler whose random draws for trial n depend on n only, not on the worker that runs it."""

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
    (TPE, random and CMA-ES read everything else from the storage). With ``seed=None`` every
    trial gets a fresh OS-random seed.

    Args:
        make: Builds the inner sampler from a seed (``None``: unseeded).
        seed: The study's sampler seed, or ``None``.
    """

    def __init__(self, make: Callable[[Optional[int]], BaseSampler], seed: Optional[int]) -> None:
        self._make = make
        self._seed = seed
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
        return self._inner.sample_relative(study, trial, search_space)

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: Study, trial: FrozenTrial, state: optuna.trial.TrialState,
                    values: Optional[list]) -> None:
        self._inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        # Every trial is reseeded from its number already; Optuna calls this for n_jobs > 1.
        self._inner.reseed_rng()
