"""The numbers a study report states, read once from a study: compute used and saved, the best
trial and the baseline, the tokens the best needed to reach the baseline, the top trials, and the
params' fANOVA importances. Plots and text only present these."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Tuple

import optuna
from optuna.distributions import BaseDistribution
from optuna.importance import FanovaImportanceEvaluator, get_param_importances
from optuna.trial import FrozenTrial, TrialState

from sweeps import trial_record
from sweeps.long_run_prediction import LongRunPrediction, predict_long_run
from sweeps.promotions import continued
from sweeps.retries import first_of_series

# fANOVA fits a random forest to (params -> val loss): on fewer complete trials its importances
# are noise, so the report states why it shows none rather than ranking noise.
MIN_IMPORTANCE_TRIALS = 5
IMPORTANCE_SEED = 0  # the forest is random: the same study gives the same importances
TOP_K = 5


def trial_compute(trial: FrozenTrial) -> Tuple[int, int]:
    """(training tokens the trial ran, tokens pruning or an early stop saved it).

    Used: its recorded ``tokens_seen``, else (a trial that crashed or still runs) the step of its
    last reported evaluation; for a retry that continued an earlier attempt, less the step it
    continued from. Saved: for a PRUNED trial or an early-stopped leader, its planned
    budget minus what its run trained, its earlier attempts' part included (0 when the budget
    was not recorded); none for any other trial."""
    seen = trial_record.tokens_trained(trial)
    saved = 0
    if trial.state == TrialState.PRUNED or trial_record.status(trial) == "stopped":
        budget = trial_record.budget_step(trial)
        run = trial_record.tokens_seen(trial)  # the whole run, earlier attempts' part too
        run = seen if run is None else run
        saved = max(0, (run if budget is None else budget) - run)
    return seen, saved


def compute_by_trial(trials: List[FrozenTrial]) -> Dict[int, Tuple[int, int]]:
    """{trial: :func:`trial_compute`}, where a paused trial that a continuation goes on with saved
    nothing (its config's saving, if any, is its last trial's)."""
    per_trial = {t.number: trial_compute(t) for t in trials}
    for paused in continued(trials):
        if paused in per_trial:
            per_trial[paused] = (per_trial[paused][0], 0)
    return per_trial


def compute_of(study: optuna.Study) -> Tuple[int, int]:
    """(training tokens used by all trials, tokens pruning and early stopping saved)."""
    return total_compute(compute_by_trial(study.get_trials(deepcopy=False)).values())


def total_compute(per_trial: Iterable[Tuple[int, int]]) -> Tuple[int, int]:
    """The sums of (used, saved) pairs of :func:`trial_compute`."""
    used = saved = 0
    for u, s in per_trial:
        used, saved = used + u, saved + s
    return used, saved


def curve_of(trial: FrozenTrial) -> Tuple[List[int], List[float]]:
    """The trial's val loss at each evaluation: (training tokens, val loss), in token order."""
    steps = sorted(trial.intermediate_values)
    return steps, [float(trial.intermediate_values[s]) for s in steps]


def tokens_to_reach(trial: FrozenTrial, loss: float) -> Optional[int]:
    """The training tokens at the trial's first evaluation with val loss at or below ``loss``
    (measured at evaluations, so an upper bound by up to one eval interval); None if none."""
    for step, value in zip(*curve_of(trial)):
        if value <= loss:
            return step
    return None


@dataclass(frozen=True)
class TokenGain:
    """The gain in the unit a user budgets in: ``best_tokens``, the tokens the best trial needed
    to reach ``target`` (the baseline's val loss), as a ``share`` of ``baseline_tokens``, the
    tokens at which the baseline itself reached it."""

    target: float
    best_tokens: int
    baseline_tokens: int

    @property
    def share(self) -> float:
        return self.best_tokens / self.baseline_tokens


def token_gain(best: FrozenTrial, baseline: FrozenTrial) -> Optional[TokenGain]:
    """The TokenGain of ``best`` over ``baseline``; None when either lacks the evaluations."""
    target = float(baseline.value)
    best_tokens, baseline_tokens = tokens_to_reach(best, target), tokens_to_reach(baseline, target)
    if best_tokens is None or not baseline_tokens:
        return None
    return TokenGain(target, best_tokens, baseline_tokens)


def _shared_params(trials: List[FrozenTrial]) -> Dict[str, BaseDistribution]:
    """The params (and distributions) every one of ``trials`` has, with the same distribution."""
    shared: Optional[Dict[str, BaseDistribution]] = None
    for t in trials:
        dists = dict(t.distributions)
        shared = dists if shared is None else {k: d for k, d in shared.items() if dists.get(k) == d}
    return shared or {}


@dataclass(frozen=True)
class Importances:
    """fANOVA importances (summing to 1) of the searched params, most important first; when there
    are none, ``why`` says so. ``n_trials``: the complete trials they were fitted on."""

    values: Dict[str, float]
    n_trials: int
    why: Optional[str] = None


def importances_of(complete: List[FrozenTrial], study: optuna.Study) -> Importances:
    """Optuna's FanovaImportanceEvaluator over the complete trials that were sampled (a baseline
    run as given has no params), on the params they all share."""
    sampled = [t for t in complete if t.params]
    params = _shared_params(sampled)
    varied = [k for k in params if len({repr(t.params[k]) for t in sampled}) > 1]
    if len(sampled) < MIN_IMPORTANCE_TRIALS:
        return Importances({}, len(sampled), f"only {len(sampled)} complete sampled trial(s); fANOVA needs "
                                             f"at least {MIN_IMPORTANCE_TRIALS} to rank params above noise")
    if len(varied) < 2:
        only = f"one param ({varied[0]})" if varied else "no param that varied"
        return Importances({k: 1.0 for k in varied}, len(sampled),
                           f"the study searched {only}: there is nothing to rank it against")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        values = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=IMPORTANCE_SEED),
                                       params=varied)
    return Importances(dict(sorted(values.items(), key=lambda kv: -kv[1])), len(sampled))


@dataclass(frozen=True)
class StudyFacts:
    """What a report states about one study; build it with :func:`facts_of`."""

    name: str
    trials: List[FrozenTrial]
    complete: List[FrozenTrial]  # COMPLETE, best (lowest val loss) first
    best: Optional[FrozenTrial]
    baseline: Optional[FrozenTrial]  # the complete baseline trial, if any
    used: int
    saved: int
    per_trial_compute: Dict[int, Tuple[int, int]]  # trial number -> trial_compute
    gain: Optional[TokenGain]
    importances: Importances
    distributions: Dict[str, BaseDistribution] = field(default_factory=dict)  # every searched param
    top_k: int = TOP_K
    long_run_iters: Optional[int] = None  # the long run the predictions are for (plan.long_run_iters)
    # trial number -> its long run's loss, predicted from its cooldown rungs (trials with 3 or more)
    predictions: Dict[int, LongRunPrediction] = field(default_factory=dict)

    @property
    def top(self) -> List[FrozenTrial]:
        return self.complete[:self.top_k]

    @property
    def promotions_line(self) -> Optional[str]:
        """What ASHA's promotions did (sweeps.promotions): the trials paused at a rung and how
        many a later trial continued; None in a study that paused none."""
        paused = [t for t in self.trials if trial_record.paused_at_rung(t) is not None]
        if not paused:
            return None
        configs = {first_of_series(t) for t in self.trials if t.state != TrialState.FAIL}
        going_on = continued(self.trials)
        return (f"{len(configs)} configs; {len(paused)} trials paused at a rung outside the top 1/eta, "
                f"{sum(t.number in going_on for t in paused)} of them continued later by a trial of their own "
                f"(asha with study.rungs.promotions)")

    @property
    def counts(self) -> Dict[str, int]:
        """Trials per state (states with none left out)."""
        counts = {s.name: sum(t.state == s for t in self.trials) for s in TrialState}
        return {k: v for k, v in counts.items() if v}

    @property
    def beats_baseline(self) -> bool:
        return self.best is not None and self.baseline is not None and self.best is not self.baseline


def _tokens_per_iter(trial: FrozenTrial) -> Optional[int]:
    config, budget = trial_record.config_json(trial), trial_record.budget_step(trial)
    if config is None or budget is None:
        return None
    max_iters = json.loads(config).get("schedule", {}).get("max_iters")
    return budget // max_iters if max_iters else None


def long_run_prediction(trial: FrozenTrial, long_run_iters: int) -> Optional[LongRunPrediction]:
    """Its long run's loss at `long_run_iters` iterations of its config, fit to its decayed rung
    values (sweeps.long_run_prediction); None without three rungs."""
    rungs, per_iter = trial_record.rung_val_loss(trial), _tokens_per_iter(trial)
    if len(rungs) < 3 or per_iter is None:
        return None
    steps = sorted(rungs)
    se = trial_record.val_loss_se(trial)  # the stable phase's, near each rung: the eval noise there
    ses = [min(se.items(), key=lambda kv: abs(kv[0] - s))[1] if se else None for s in steps]
    return predict_long_run(steps, [rungs[s] for s in steps], ses, long_run_iters * per_iter)


def facts_of(study: optuna.Study, top_k: int = TOP_K, long_run_iters: Optional[int] = None) -> StudyFacts:
    trials = study.get_trials(deepcopy=False)
    complete = sorted((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: (t.value, t.number))
    best = complete[0] if complete else None
    baseline = next((t for t in complete if trial_record.is_baseline(t)), None)
    per_trial = compute_by_trial(trials)
    distributions: Dict[str, BaseDistribution] = {}
    for t in trials:
        for k, d in t.distributions.items():
            distributions.setdefault(k, d)
    gain = token_gain(best, baseline) if best is not None and baseline is not None and best is not baseline else None
    used, saved = total_compute(per_trial.values())
    predictions = {}
    if long_run_iters is not None:
        superseded = continued(trials)  # a continuation reports its paused trial's rungs and more
        for t in trials:
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and t.number not in superseded:
                prediction = long_run_prediction(t, long_run_iters)
                if prediction is not None:
                    predictions[t.number] = prediction
    return StudyFacts(
        name=study.study_name, trials=trials, complete=complete, best=best, baseline=baseline,
        used=used, saved=saved, per_trial_compute=per_trial, gain=gain, importances=importances_of(complete, study),
        distributions=distributions, top_k=top_k, long_run_iters=long_run_iters, predictions=predictions)
