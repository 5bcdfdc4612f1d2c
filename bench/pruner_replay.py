"""Replay recorded learning curves through Optuna pruners and score what each would have done.

Input: a JSON file of curves recorded by a sweep that pruned nothing::

    {"meta": {...},
     "trials": [{"params": {...}, "steps": [...], "values": [...], "se": [...],
                 "warmup_step": int, "budget_step": int,
                 "lr_area": [...], "lr_area_budget": float,
                 "batch_losses": [[...], ...], "val_batches": str}, ...]}

``steps`` are training tokens (the steps the objective reports), ``values`` the val losses
reported at them (NaN allowed), ``se`` their standard errors, ``lr_area`` the LR summed over the
tokens trained before each step and ``lr_area_budget`` over the whole budget, ``batch_losses``
the val loss of each eval batch (or run of batches) at each step and ``val_batches`` the name of
those batches (each pair optional).

Every pruner sees the same N seeded random orders of the trials. For each (pruner, order) a
fresh in-memory study and a fresh pruner replay the trials one after another, as the sweep's
objective would, through the same :mod:`sweeps.trial_record` writers: ask, record the plan
(``warmup_step``, ``budget_step``, ``lr_area_budget``), then for each evaluation record
``val_loss_se``, ``lr_area`` and ``val_batch_losses`` (on ``val_batches``) and report, and ask
``should_prune()``. A "stop" verdict (:class:`~sweeps.plateau_pruner.StopsLeaders`) is told
COMPLETE with the best value so far, any other prune is told PRUNED, and a trial that runs out
is told COMPLETE with the best value of its curve.

Scores per pruner, over the orders:
  steps used   training tokens actually run (from each trial's first to its last reported
               evaluation) / the tokens of all full curves
  winner kept  fraction of orders where the no-pruning winner (lowest best value) ends COMPLETE
               with a value equal to its true best
  regret       study best value - the true best value (mean and max over orders)

The "oracle (floor)" row knows every curve's end and prunes all but the winner as early as the
plateau pruner's protections allow: the least compute any such pruner can use on these curves.
The "oracle (plateau rule exactly)" row is the plateau pruner's stalled-loser rule with exact
projections: it prunes, as early, a trial once it is behind the median of the finished trials
at the same step and if it ends worse than the median of their ends; "...; end vs best" compares
the end with the best finished trial instead. They show what the rule at its default median
allows on the curves.

Usage::

    python -m bench.pruner_replay curves.json [--orders 200] [--seed 0] [--json OUT]
    python -m bench.pruner_replay curves.json --percentiles 40,25,10 --pruners plateau
    python -m bench.pruner_replay --synthetic [--dump-curves OUT]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import optuna
from optuna.trial import TrialState

try:  # runs as `python -m bench.pruner_replay` from the repo root, or as a script
    from sweeps import trial_record
    from sweeps.plateau_pruner import PlateauFallbackWarning, PlateauPruner, StopsLeaders
except ImportError:  # pragma: no cover
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    from sweeps import trial_record
    from sweeps.plateau_pruner import PlateauFallbackWarning, PlateauPruner, StopsLeaders

__all__ = [
    "Curve",
    "OraclePruner",
    "OrderResult",
    "PlateauPrunerNoStop",
    "PrunerScore",
    "default_pruners",
    "fair_optuna_pruners",
    "first_eval_after_warmup",
    "format_table",
    "load_curves",
    "main",
    "parse_curves",
    "replay_order",
    "run_benchmark",
    "synthetic_curves",
]

PrunerFactory = Callable[[], optuna.pruners.BasePruner]


# -- curves ------------------------------------------------------------------------------------


@dataclass
class Curve:
    params: Dict[str, Any]
    steps: List[int]
    values: List[float]
    se: List[float]
    warmup_step: int = 0
    budget_step: Optional[int] = None
    lr_area: Optional[List[float]] = None
    lr_area_budget: Optional[float] = None
    batch_losses: Optional[List[List[float]]] = None  # per evaluation, on the batches named:
    val_batches: Optional[str] = None

    def __post_init__(self) -> None:
        if not self.steps:
            raise ValueError("a curve needs at least one evaluation")
        if not (len(self.steps) == len(self.values) == len(self.se)):
            raise ValueError(
                f"steps, values and se differ in length: "
                f"{len(self.steps)}, {len(self.values)}, {len(self.se)}"
            )
        if any(b <= a for a, b in zip(self.steps, self.steps[1:])):
            raise ValueError("steps must be strictly increasing")
        if (self.lr_area is None) != (self.lr_area_budget is None):
            raise ValueError("lr_area and lr_area_budget come together or not at all")
        if self.lr_area is not None and len(self.lr_area) != len(self.steps):
            raise ValueError(f"lr_area has {len(self.lr_area)} values for {len(self.steps)} steps")
        if (self.batch_losses is None) != (self.val_batches is None):
            raise ValueError("batch_losses and val_batches come together or not at all")
        if self.batch_losses is not None and len(self.batch_losses) != len(self.steps):
            raise ValueError(
                f"batch_losses has {len(self.batch_losses)} lists for {len(self.steps)} steps"
            )
        if self.budget_step is None:
            self.budget_step = int(self.steps[-1])

    @property
    def best(self) -> float:
        """The best (lowest) finite value of the curve; +inf if none is finite."""
        finite = [v for v in self.values if math.isfinite(v)]
        return min(finite) if finite else math.inf

    @property
    def length(self) -> int:
        """Tokens from the first to the last evaluation."""
        return int(self.steps[-1] - self.steps[0])


def _float(x: Any) -> float:
    return math.nan if x is None else float(x)


def parse_curves(data: Dict[str, Any]) -> List[Curve]:
    curves = []
    for i, t in enumerate(data["trials"]):
        try:
            curves.append(
                Curve(
                    params=dict(t.get("params", {})),
                    steps=[int(s) for s in t["steps"]],
                    values=[_float(v) for v in t["values"]],
                    se=[
                        0.0 if v is None else float(v)
                        for v in t.get("se", [0.0] * len(t["steps"]))
                    ],
                    warmup_step=int(t.get("warmup_step") or 0),
                    budget_step=None if t.get("budget_step") is None else int(t["budget_step"]),
                    lr_area=None if t.get("lr_area") is None else [float(a) for a in t["lr_area"]],
                    lr_area_budget=None if t.get("lr_area_budget") is None else float(t["lr_area_budget"]),
                    batch_losses=None
                    if t.get("batch_losses") is None
                    else [[float(x) for x in b] for b in t["batch_losses"]],
                    val_batches=None if t.get("val_batches") is None else str(t["val_batches"]),
                )
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"trial {i} of the curve file is malformed: {e}") from e
    if not curves:
        raise ValueError("the curve file holds no trials")
    return curves


def load_curves(path: str) -> Dict[str, Any]:
    with open(path) as f:
        return json.load(f)


# -- synthetic curves ----------------------------------------------------------------------------


def synthetic_curves(seed: int = 0) -> Dict[str, Any]:
    """A no-pruning lr x warmup sweep of a small GPT, in the shapes real ones have.

    Loss is modelled on the cumulative learning rate A(t) (warmup, then cosine to 10%):
    a fast drop from ln(vocab) to the unigram plateau (~7.3), a stay on it until A reaches an
    escape level, then a drop whose sharpness grows with the LR (high LR: a cliff; low LR: a
    steady slide that never catches up), an annealing gain as the LR decays, and a floor that
    is best at LR 4e-3 and, for high LRs, better with a longer warmup. LR 8e-3 with the
    shortest warmup diverges. Evaluation noise is Gaussian with the recorded SE.
    """
    rng = np.random.default_rng(seed)
    start, plateau = 10.83, 7.3
    tokens_per_iter = 16 * 1024
    max_iters, eval_interval = 2000, 50
    lrs = [3e-4, 6e-4, 1e-3, 2e-3, 4e-3, 8e-3]
    warmups = [50, 200, 600, 1000]
    iters = np.arange(max_iters + 1)
    eval_iters = np.arange(0, max_iters + 1, eval_interval)
    trials = []
    for lr in lrs:
        for warmup in warmups:
            prog = np.clip((iters - warmup) / (max_iters - warmup), 0.0, 1.0)
            sched = np.where(
                iters < warmup,
                lr * (iters + 1) / warmup,
                lr * (0.1 + 0.45 * (1 + np.cos(np.pi * prog))),
            )
            cum = np.concatenate([[0.0], np.cumsum(sched)[:-1]])  # A(t): LR summed before t
            ev = eval_iters  # this trial's evaluations (a diverged run ends early)
            a = cum[ev]
            a_esc = 0.45 * math.exp(rng.normal(0.0, 0.12))
            floor = (
                3.3
                + 0.08 * math.log2(lr / 4e-3) ** 2
                + 0.3 * max(0.0, lr / 2e-3 - 1.0) * math.sqrt(50 / warmup)
                + rng.normal(0.0, 0.01)
            )
            width = 0.12 * max(1.0, 1e-3 / lr) ** 0.7  # low LR: a slow slide, not a cliff
            escaped = 1.0 / (1.0 + np.exp(-(a - a_esc) / width))
            residual = np.exp(-np.clip(a - a_esc, 0.0, None) / 0.3)
            # what the LR decay still has to give (0.2 at peak LR, 0 at the end), once escaped
            anneal_left = 0.2 * (1.0 - (1.0 - sched[ev] / lr) / 0.9) * escaped
            mean = (
                floor
                + anneal_left
                + (start - plateau) * np.exp(-a / 0.03)
                + (plateau - floor) * ((1.0 - escaped) + escaped * residual)
            )
            mean[0] = start
            if lr >= 8e-3 and warmup <= 50:  # loss spikes and never recovers
                t_div = 300 + warmup
                blow = np.clip(ev - t_div, 0.0, None)
                mean = mean + 0.4 * np.expm1(blow / 80.0)
                mean = np.where(mean > 14.0, np.nan, mean)
                first_nan = int(np.argmax(np.isnan(mean)))
                if first_nan > 0:  # the recorder ends a run at its first NaN
                    ev, mean = ev[: first_nan + 1], mean[: first_nan + 1]
            se = 0.012 + 0.006 * rng.random(len(ev))
            values = mean + rng.normal(0.0, 1.0, len(ev)) * se
            values[0] = start + rng.normal(0.0, 0.005)
            trials.append(
                {
                    "params": {"optim.lr": lr, "schedule.warmup_iters": warmup},
                    "steps": [int(i * tokens_per_iter) for i in ev],
                    "values": [round(float(v), 5) if math.isfinite(v) else None for v in values],
                    "se": [round(float(s), 5) for s in se],
                    "warmup_step": int(warmup * tokens_per_iter),
                    "budget_step": int(max_iters * tokens_per_iter),
                    "lr_area": [float(cum[i] * tokens_per_iter) for i in ev],
                    "lr_area_budget": float(cum[max_iters] * tokens_per_iter),
                }
            )
    return {
        "meta": {
            "synthetic": True,
            "seed": seed,
            "tokens_per_iter": tokens_per_iter,
            "max_iters": max_iters,
            "eval_interval": eval_interval,
            "grid": {"optim.lr": lrs, "schedule.warmup_iters": warmups},
        },
        "trials": trials,
    }


# -- replay ----------------------------------------------------------------------------------


def _best_up_to(trial: "optuna.trial.FrozenTrial", step: int) -> float:
    """The trial's best finite value reported at steps <= ``step``; NaN if none."""
    return float(np.fmin.reduce([v for st, v in trial.intermediate_values.items() if st <= step] or [np.nan]))


class OraclePruner(optuna.pruners.BasePruner):
    """Knows every curve's final best and prunes a trial as early as the plateau pruner's
    protections allow (after its warmup, ``min_evals`` and ``patience`` evaluations, once
    ``n_startup_trials`` trials are COMPLETE) when it is a loser: with ``end_percentile=None``
    every trial but the winner; with a number ``p``, a trial whose final best is worse than the
    ``p``-th percentile of the COMPLETE trials' values at that moment. With ``now_percentile=q``
    it also waits until the trial's best so far is worse than the ``q``-th percentile of the
    COMPLETE trials' bests at steps up to its own (no noise margin).

    Both ``None`` gives the floor any pruner with those protections can reach while keeping the
    winner. ``now_percentile=q, end_percentile=q`` is the plateau pruner's stalled-loser rule at
    ``percentile=q`` with exact projections and no noise: it prunes a trial that is behind the
    peers' ``q``-th percentile at the same step and truly ends worse than their ``q``-th
    percentile end, and keeps every other. The plateau pruner, whose projections are optimistic,
    keeps at least those (its leader stops, and the other histories its own prunes make, can
    still save it a little more)."""

    def __init__(self, curves: Sequence["Curve"], n_startup_trials: Optional[int] = None,
                 end_percentile: Optional[float] = None,
                 now_percentile: Optional[float] = None) -> None:
        self._ends = [c.best for c in curves]
        self._winner = min(self._ends)
        self._end_percentile, self._now_percentile = end_percentile, now_percentile
        defaults = PlateauPruner()  # the plateau pruner's own protections
        self._min_evals, self._patience = defaults.min_evals, defaults.patience
        self._n_startup = (defaults.n_startup_trials if n_startup_trials is None
                           else n_startup_trials)

    def prune(self, study: "optuna.study.Study", trial: "optuna.trial.FrozenTrial") -> bool:
        k, step = len(trial.intermediate_values), max(trial.intermediate_values, default=0)
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not (step > trial_record.warmup_step(trial) and k >= self._min_evals
                and k > self._patience and len(complete) >= self._n_startup):
            return False
        if self._now_percentile is not None:
            peers_now = [x for x in (_best_up_to(t, step) for t in complete) if not np.isnan(x)]
            if not peers_now or _best_up_to(trial, step) <= np.percentile(peers_now, self._now_percentile):
                return False
        end = self._ends[trial_record.replay_curve(trial)]
        if self._end_percentile is None:
            return end > self._winner
        return end > float(np.percentile([t.value for t in complete], self._end_percentile))


class PlateauPrunerNoStop(PlateauPruner):
    """PlateauPruner whose "stop" verdicts are ignored (the trial runs on): shows what the
    early stops of plateaued leaders save and cost."""

    def prune(self, study: "optuna.study.Study", trial: "optuna.trial.FrozenTrial") -> bool:
        return super().prune(study, trial) and not self.last_decision(trial.number).stops


def default_pruners(curves: Sequence[Curve]) -> Dict[str, PrunerFactory]:
    """The pruners compared, each as a factory for a fresh instance."""
    typical_warmup = int(np.median([c.warmup_step for c in curves]))

    def patient() -> optuna.pruners.BasePruner:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.pruners.PatientPruner(optuna.pruners.MedianPruner(), patience=3)

    return {
        "plateau": PlateauPruner,
        "plateau (n_startup_trials=3)": lambda: PlateauPruner(n_startup_trials=3),
        "plateau (stops ignored)": PlateauPrunerNoStop,
        "median": optuna.pruners.MedianPruner,
        f"median(n_warmup_steps={typical_warmup})": lambda: optuna.pruners.MedianPruner(
            n_warmup_steps=typical_warmup
        ),
        "patient(median, 3)": patient,
        "hyperband": optuna.pruners.HyperbandPruner,
        "none": optuna.pruners.NopPruner,
        "oracle (floor)": lambda: OraclePruner(curves),
        "oracle (plateau rule exactly)": lambda: OraclePruner(
            curves, now_percentile=50.0, end_percentile=50.0),
        "oracle (plateau rule exactly; end vs best)": lambda: OraclePruner(
            curves, now_percentile=50.0, end_percentile=0.0),
    }


def first_eval_after_warmup(curves: Sequence[Curve]) -> int:
    """The first evaluation step past the median trial's warmup: where a user who read Optuna's
    docs would put successive halving's and Hyperband's `min_resource` (steps are tokens, so
    Optuna's default of 1 is far below any evaluation)."""
    typical_warmup = int(np.median([c.warmup_step for c in curves]))
    after = [step for c in curves for step in c.steps if step > typical_warmup]
    return min(after) if after else max(c.steps[-1] for c in curves)


def fair_optuna_pruners(curves: Sequence[Curve]) -> Dict[str, PrunerFactory]:
    """Optuna's rung-based pruners at settings fit for these curves (`--fair-optuna`), beside
    their defaults: `min_resource` at the first evaluation after warmup, reduction factor 3, and
    the median pruner with the plateau pruner's four startup trials and the median warmup."""
    first = first_eval_after_warmup(curves)
    budget = max(int(c.budget_step) for c in curves)
    typical_warmup = int(np.median([c.warmup_step for c in curves]))
    return {
        "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
        f"successive_halving(min_resource={first}; rf=3)": lambda: optuna.pruners.SuccessiveHalvingPruner(
            min_resource=first, reduction_factor=3),
        f"hyperband(min_resource={first}; max_resource={budget}; rf=3)": lambda: optuna.pruners.HyperbandPruner(
            min_resource=first, max_resource=budget, reduction_factor=3),
        f"median(n_startup_trials=4; n_warmup_steps={typical_warmup})": lambda: optuna.pruners.MedianPruner(
            n_startup_trials=4, n_warmup_steps=typical_warmup),
    }


@dataclass
class OrderResult:
    steps_run: int  # tokens actually run, summed over trials
    winner_kept: bool
    regret: float
    n_pruned: int
    n_stopped: int


def replay_order(
    curves: Sequence[Curve],
    order: Sequence[int],
    pruner: optuna.pruners.BasePruner,
    study_name: str = "replay",
) -> OrderResult:
    """Run the trials in ``order`` through a fresh in-memory study using ``pruner``."""
    # A fixed name keeps HyperbandPruner's bracket choice (a hash of name and trial number)
    # the same from run to run.
    study = optuna.create_study(direction="minimize", pruner=pruner, study_name=study_name)
    true_bests = [c.best for c in curves]
    winner = int(np.argmin(true_bests))
    true_best = true_bests[winner]
    winner_value: Optional[float] = None
    winner_state: Optional[TrialState] = None
    steps_run = n_pruned = n_stopped = 0

    for idx in order:
        c = curves[idx]
        trial = study.ask()
        trial_record.set_replay_curve(trial, int(idx))
        trial_record.set_plan(trial, warmup_step=int(c.warmup_step), budget_step=int(c.budget_step),
                              lr_area_budget=c.lr_area_budget)  # None with lr_area None
        evals = trial_record.EvalRecorder(trial)
        best = math.inf
        last = c.steps[0]
        state, value = TrialState.COMPLETE, None
        for i, (step, v, se) in enumerate(zip(c.steps, c.values, c.se)):
            evals.record(step, val_loss_se=float(se),
                         lr_area=None if c.lr_area is None else c.lr_area[i],
                         batch_losses=None if c.batch_losses is None else c.batch_losses[i],
                         val_batches=c.val_batches)
            trial.report(v, step)
            last = step
            if math.isfinite(v):
                best = min(best, v)
            if trial.should_prune():
                decision = (
                    pruner.last_decision(trial.number)
                    if isinstance(pruner, StopsLeaders)
                    else None
                )
                if decision is not None and decision.stops:
                    n_stopped += step < c.steps[-1]  # a stop at the last evaluation saves nothing
                    value = best
                else:
                    n_pruned += 1
                    state = TrialState.PRUNED
                break
        else:
            value = c.best
        if state == TrialState.COMPLETE and not math.isfinite(value):
            state, value = TrialState.FAIL, None  # nothing finite to record
        if state == TrialState.COMPLETE:
            study.tell(trial, value)
        else:
            study.tell(trial, state=state)
        steps_run += int(last - c.steps[0])
        if idx == winner:
            winner_state, winner_value = state, value

    completed = [t.value for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    regret = (min(completed) - true_best) if completed else math.inf
    kept = (
        winner_state == TrialState.COMPLETE
        and winner_value is not None
        and winner_value <= true_best + 1e-12
    )
    return OrderResult(steps_run, bool(kept), float(regret), n_pruned, n_stopped)


@dataclass
class PrunerScore:
    pruner: str
    n_orders: int
    steps_used: float
    winner_kept: float
    mean_regret: float
    max_regret: float
    mean_pruned: float
    mean_stopped: float  # plateau "stop"s before the curve's last evaluation
    seconds: float
    orders: List[Dict[str, Any]] = field(default_factory=list, repr=False)


def run_benchmark(
    data: Dict[str, Any],
    n_orders: int = 200,
    seed: int = 0,
    pruners: Optional[Dict[str, PrunerFactory]] = None,
    keep_orders: bool = False,
) -> List[PrunerScore]:
    curves = parse_curves(data)
    pruners = default_pruners(curves) if pruners is None else pruners
    rng = np.random.default_rng(seed)
    orders = [rng.permutation(len(curves)).tolist() for _ in range(n_orders)]
    total = sum(c.length for c in curves)
    scores = []
    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        for name, make in pruners.items():
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                # Optuna's PatientPruner warns on an all-NaN window (a diverged curve).
                warnings.filterwarnings("ignore", "All-NaN slice", RuntimeWarning)
                # Each order is a study of its own; curves recorded without batch losses or LR
                # sums (the older sets, the synthetic one) would warn in every one of them.
                warnings.simplefilter("ignore", PlateauFallbackWarning)
                results = [
                    replay_order(curves, order, make(), study_name=f"replay-{i}")
                    for i, order in enumerate(orders)
                ]
            regrets = np.array([r.regret for r in results])
            scores.append(
                PrunerScore(
                    pruner=name,
                    n_orders=n_orders,
                    steps_used=float(np.mean([r.steps_run for r in results]) / total)
                    if total
                    else 1.0,
                    winner_kept=float(np.mean([r.winner_kept for r in results])),
                    mean_regret=float(np.mean(regrets)),
                    max_regret=float(np.max(regrets)),
                    mean_pruned=float(np.mean([r.n_pruned for r in results])),
                    mean_stopped=float(np.mean([r.n_stopped for r in results])),
                    seconds=time.perf_counter() - t0,
                    orders=[dict(asdict(r), order=o) for r, o in zip(results, orders)]
                    if keep_orders
                    else [],
                )
            )
    finally:
        optuna.logging.set_verbosity(previous)
    return scores


def format_table(scores: Sequence[PrunerScore]) -> str:
    lines = [
        "| pruner | steps used | winner kept | mean regret | max regret | pruned/order "
        "| stopped/order |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for s in scores:
        lines.append(
            f"| {s.pruner} | {100 * s.steps_used:.1f}% | {100 * s.winner_kept:.1f}% "
            f"| {s.mean_regret:.4f} | {s.max_regret:.4f} | {s.mean_pruned:.1f} "
            f"| {s.mean_stopped:.1f} |"
        )
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("curves", nargs="?", help="JSON file of curves recorded without pruning")
    ap.add_argument("--synthetic", action="store_true", help="use generated curves instead")
    ap.add_argument("--synthetic-seed", type=int, default=0)
    ap.add_argument("--dump-curves", metavar="OUT", help="write the curves used to OUT (JSON)")
    ap.add_argument("--orders", type=int, default=200, help="random trial orders (default 200)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the orders")
    ap.add_argument("--pruners", help="comma-separated subset of the pruner names to run")
    ap.add_argument("--percentiles", metavar="P,P,...",
                    help="also run the plateau pruner at these percentiles (rows "
                         "'plateau (percentile=P)'), e.g. 40,25,10")
    ap.add_argument("--fair-optuna", action="store_true",
                    help="add Optuna's successive halving and Hyperband with min_resource at the first "
                         "evaluation after warmup (and the median pruner with four startup trials)")
    ap.add_argument("--json", metavar="OUT", help="save the scores (and per-order results)")
    ap.add_argument("--trials", type=int, metavar="N",
                    help="replay only the first N curves (the study's first N trials: a smaller study)")
    args = ap.parse_args(argv)

    if args.synthetic == bool(args.curves):
        ap.error("give either a curve file or --synthetic")
    if args.orders < 1:
        ap.error("--orders must be >= 1")
    levels = []
    for raw in (args.percentiles or "").split(","):
        if raw.strip():
            try:
                level = float(raw)
                PlateauPruner(percentile=level)  # its own check of the range
            except ValueError:
                ap.error(f"--percentiles: {raw.strip()!r} is not a number in [0, 100]")
            levels.append(level)
    data = synthetic_curves(args.synthetic_seed) if args.synthetic else load_curves(args.curves)
    if args.trials is not None:
        if not 2 <= args.trials <= len(data["trials"]):
            ap.error(f"--trials {args.trials}: the file holds {len(data['trials'])} curves; give 2 to that many")
        data = {**data, "trials": data["trials"][:args.trials]}
    if args.dump_curves:
        with open(args.dump_curves, "w") as f:
            json.dump(data, f)

    curves = parse_curves(data)
    pruners = default_pruners(curves)
    if args.fair_optuna:
        pruners.update(fair_optuna_pruners(curves))
    if args.pruners:
        wanted = [p.strip() for p in args.pruners.split(",") if p.strip()]
        unknown = [p for p in wanted if p not in pruners]
        if unknown:
            ap.error(f"unknown pruner(s) {unknown}; choose from {list(pruners)}")
        pruners = {p: pruners[p] for p in wanted}
    for level in levels:
        pruners[f"plateau (percentile={level:g})"] = lambda level=level: PlateauPruner(percentile=level)

    scores = run_benchmark(data, args.orders, args.seed, pruners, keep_orders=bool(args.json))
    winner = curves[int(np.argmin([c.best for c in curves]))]
    source = "synthetic curves" if args.synthetic else args.curves
    print(
        f"{len(curves)} trials from {source}, {args.orders} orders (seed {args.seed}); "
        f"no-pruning winner {winner.params} with best {winner.best:.4f}\n"
    )
    print(format_table(scores))
    if args.json:
        out = {
            "source": source,
            "meta": data.get("meta", {}),
            "n_trials": len(curves),
            "orders": args.orders,
            "seed": args.seed,
            "winner": {"params": winner.params, "best": winner.best},
            "scores": [asdict(s) for s in scores],
        }
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
