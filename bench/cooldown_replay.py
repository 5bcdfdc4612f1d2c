"""Score the methods on a grid recorded by `bench/cooldown_fidelity.py record` (see its docstring).

Every method sees the same seeded random orders of the grid's points, one trial after another
(one worker). Ground truth: each point's full-length cosine run; a method's regret is the best
cosine val loss of the config it picks minus the grid's best, and its compute is every token it
trains (cooldown branches included) as a share of the grid's cosine tokens.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Dict, List, Sequence

import numpy as np
import optuna
from optuna.trial import TrialState
from scipy.stats import spearmanr

from bench.pruner_replay import Curve, first_eval_after_warmup, replay_order
from sweeps import trial_record
from sweeps.config import RungsConfig
from sweeps.long_run_prediction import predict_long_run
from sweeps.plateau_pruner import PlateauFallbackWarning, PlateauPruner
from sweeps.rung_pruner import RungHalvingPruner


@dataclass
class Score:
    method: str
    compute: float  # mean share of the grid's tokens
    mean_regret: float
    max_regret: float
    within_noise: float  # share of orders whose regret is within one seed's noise
    # the pick's full-length WSD run (its cooldown trial's last rung) minus the best one: the run
    # `mode=best` of a cooldown study trains, where the cosine truth is what the issue asks
    mean_wsd_regret: float
    picks: Dict[str, int]  # the configs picked, with how many orders picked each
    within_contender_noise: float = float("nan")  # share of orders within the contenders' noise (seed_noise)


def cosine_curves(points: Sequence[dict]) -> List[Curve]:
    return [Curve(params=p["params"], steps=p["cosine"]["steps"], values=p["cosine"]["values"],
                  se=p["cosine"]["se"], warmup_step=p["cosine"]["warmup_step"], budget_step=p["cosine"]["budget_step"],
                  lr_area=p["cosine"]["lr_area"], lr_area_budget=p["cosine"]["lr_area_budget"],
                  batch_losses=p["cosine"]["batch_losses"], val_batches=p["cosine"]["val_batches"])
            for p in points]


DEFAULT_RUNGS = RungsConfig().count  # a cooldown study's study.rungs.count unless set
RECORD_SEED = 1337  # the seed of a record's own runs where its meta names none (`record --seed` sets another)
KINDS = ("best", "wsd")  # a point's truth: its full-length cosine run (its best), or its full-length WSD run


def own_value(point: dict, kind: str) -> float:
    """A recorded point's own full-length value: its cosine run's best val loss, or its WSD run's
    (the cooldown trial's last rung, the run `mode=best` of a cooldown study trains)."""
    if kind == "best":
        return float(np.nanmin(point["cosine"]["values"]))
    return float(point["cooldown"]["rungs"][-1]["val_loss"])


def seed_table(points: Sequence[dict], seed_runs: Sequence[dict] = (), record_seed: int = RECORD_SEED,
               kind: str = "best") -> tuple[List[int], np.ndarray]:
    """Each point's full-length val loss of `kind` (KINDS) at each seed it was run at, a row per
    point: the record's own run (at `record_seed`), then the seeds of `seed_runs` (`read_seed_runs`)
    that every point has a completed run of that kind at. A seed only some points have is left out:
    a seed shifts every point's loss alike (it draws its own eval batches), so it would favour the
    points it has."""
    values = {(_key(p["params"]), record_seed): own_value(p, kind) for p in points}
    values.update({(_key(run["params"]), run["seed"]): run[kind] for run in seed_runs
                   if run["status"] == "completed" and kind in run and run["seed"] != record_seed})
    seeds = sorted({s for _, s in values if s != record_seed})
    columns = [record_seed] + [s for s in seeds if all((_key(p["params"]), s) in values for p in points)]
    return columns, np.array([[values[(_key(p["params"]), s)] for s in columns] for p in points])


def ground_truth(points: Sequence[dict], seed_runs: Sequence[dict] = (), record_seed: int = RECORD_SEED,
                 kind: str = "best") -> tuple[List[float], List[int]]:
    """Each point's truth, its mean over the seeds of `seed_table`, and how many seeds that is."""
    columns, table = seed_table(points, seed_runs, record_seed, kind)
    return table.mean(axis=1).tolist(), [len(columns)] * len(points)


def paired_sd(table: np.ndarray) -> float:
    """The sd of the residual of an additive fit (row + column) to a points x seeds table."""
    residual = table - table.mean(axis=1, keepdims=True) - table.mean(axis=0, keepdims=True) + table.mean()
    return float(np.sqrt((residual ** 2).sum() / ((table.shape[0] - 1) * (table.shape[1] - 1))))


def seed_noise(points: Sequence[dict], seed_runs: Sequence[dict], record_seed: int = RECORD_SEED,
               kind: str = "best") -> dict:
    """One seed's noise over the grid's `seed_table`. A seed shifts every point alike
    (`seed_shifts`: each seed's mean minus the grand mean), a shift configs compared at one seed
    never see; `paired_sd` is the rest, the sd of the residual of an additive fit (point + seed):
    what a comparison of two configs at one seed is off by. `within_sd` is the raw spread within
    points, shift included. `contender_sd` is `paired_sd` over the best third of the points by
    their mean (at least 3): an unstable config (a high LR, a short warmup) can swing by far more
    than a stable one, and a method's pick, so its regret, lies among the contenders."""
    columns, table = seed_table(points, seed_runs, record_seed, kind)
    if len(columns) < 2:
        return {"paired_sd": 0.0, "within_sd": 0.0, "contender_sd": 0.0, "contenders": 0, "seed_shifts": {},
                "points": len(points)}
    contenders = np.argsort(table.mean(axis=1))[:max(3, len(points) // 3)]
    return {"paired_sd": paired_sd(table),
            "within_sd": float(np.sqrt(np.mean(np.var(table, axis=1, ddof=1)))),
            "contender_sd": paired_sd(table[contenders]), "contenders": len(contenders),
            "seed_shifts": {str(s): float(v) for s, v in zip(columns, table.mean(axis=0) - table.mean())},
            "points": len(points)}


def _label(params: dict) -> str:
    return ", ".join(f"{k.split('.')[-1]}={v:g}" for k, v in params.items())


def only_warmups(points: Sequence[dict], warmups: str | None) -> List[dict]:
    """The points whose warmup (the grid's warmup axis) is one of the comma-separated `warmups`;
    all of them without."""
    if not warmups:
        return list(points)
    axis = next(k for k in points[0]["params"] if k != "schedule.lr")
    have = sorted({p["params"][axis] for p in points})
    try:
        wanted = {float(w) for w in warmups.split(",")}
    except ValueError:
        raise SystemExit(f"--warmups {warmups!r}: give comma-separated numbers of the grid's {axis}, "
                         f"e.g. {','.join(f'{w:g}' for w in have)}") from None
    if not wanted <= set(have):
        raise SystemExit(f"--warmups {warmups}: the grid's {axis} values are {', '.join(f'{w:g}' for w in have)}")
    return [p for p in points if p["params"][axis] in wanted]


def tokens_per_iter_of(point: dict) -> int:
    """A recorded point's training tokens per iteration, from its last rung."""
    last = point["cooldown"]["rungs"][-1]
    return last["step"] // last["horizon"]


def complete_rungs(points: Sequence[dict]) -> List[dict]:
    """`points` with every rung of the grid in each point's list, shortest first: a trial trains no
    branch for a rung whose cooldown would start inside its warmup, so its record lacks it; here
    such a rung has no value (NaN) and no stable tokens a trial could be judged at."""
    horizons = sorted({r["horizon"] for p in points for r in p["cooldown"]["rungs"]})
    completed = []
    for p in points:
        have = {r["horizon"]: r for r in p["cooldown"]["rungs"]}
        per_iter = tokens_per_iter_of(p)
        rungs = [have.get(h, {"horizon": h, "decay_start": None, "step": h * per_iter, "stable_tokens": -1,
                              "branch_tokens": 0, "val_loss": float("nan"), "se": float("nan")}) for h in horizons]
        completed.append({**p, "cooldown": {**p["cooldown"], "rungs": rungs}})
    return completed


def judged_rungs(point: dict, rungs: Sequence[int], inside_warmup: bool = False) -> List[int]:
    """The rungs of `rungs` a trial of `point` is judged at: those whose cooldown starts after its
    warmup, and the last, as sweeps.cooldown.train_with_rungs trains them (`inside_warmup`: all)."""
    record, warmup_tokens = point["cooldown"]["rungs"], point["cosine"]["warmup_step"]
    return [r for r in rungs if inside_warmup or record[r]["stable_tokens"] >= warmup_tokens or r == rungs[-1]]


def asha_order(points: Sequence[dict], order: Sequence[int], rungs: Sequence[int], eta: int,
               prune: bool = True, inside_warmup: bool = False, spent: Dict[int, int] | None = None) -> tuple[int, int]:
    """One study of the cooldown trials through RungHalvingPruner, judged at the recorded rungs
    `rungs` (indices) that start their cooldown after the trial's warmup, and at the last, as
    sweeps.cooldown.train_with_rungs does (`inside_warmup`: at every rung, as it did before that
    rule): (tokens trained, the index of the picked point); `spent` adds up each point's tokens."""
    study = optuna.create_study(direction="minimize", pruner=RungHalvingPruner(eta) if prune
                                else optuna.pruners.NopPruner())
    tokens = 0
    for idx in order:
        record = points[idx]["cooldown"]["rungs"]
        judged = judged_rungs(points[idx], rungs, inside_warmup)
        trial = study.ask()
        trial_record.set_replay_curve(trial, int(idx))
        trial_record.set_rung_steps(trial, [record[r]["step"] for r in rungs])
        state, value, before = TrialState.COMPLETE, None, tokens
        for k, r in enumerate(judged):
            rung = record[r]
            trial.report(rung["val_loss"], rung["step"])
            tokens += rung["branch_tokens"]
            value = rung["val_loss"]
            last_stable = rung["stable_tokens"]
            if k < len(judged) - 1 and trial.should_prune():
                state = TrialState.PRUNED
                break
        tokens += last_stable
        if spent is not None:
            spent[idx] = spent.get(idx, 0) + tokens - before
        if state == TrialState.COMPLETE and math.isfinite(value):
            study.tell(trial, value)
        else:
            study.tell(trial, state=TrialState.PRUNED)
    best = min(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.value)
    return tokens, trial_record.replay_curve(best)


def asha_promotion_order(points: Sequence[dict], order: Sequence[int], rungs: Sequence[int], eta: int) -> tuple[int, int]:
    """The grid in `order` through ASHA as Li et al. (2020) run it, with promotions: one worker,
    which at each turn resumes the best paused trial that is in the top floor(n / eta) of the n
    trials that reached its rung (the highest such rung first), from its checkpoint there, up to
    its next rung; else starts the next point and trains it to its first rung. A trial pauses at
    every rung (its branch trained), so while new trials remain none goes on only because too few
    others have reached its rung. When the worker can do neither and no trial has finished the
    last rung, it resumes the best trial at the highest rung reached, whatever the count (a study
    ends with a full-length trial); then it stops. Judged at the rungs `rungs` after each trial's
    warmup, as asha_order. A live study does this with sweeps.promotions (the default where asha
    prunes), which continues a trial in the top at once instead of at the worker's next turn.
    (tokens trained, the index of the picked point)."""
    judged = {idx: judged_rungs(points[idx], rungs) for idx in order}
    at = {}  # point -> its position in judged[point] (paused there, or finished at the last)
    reached: Dict[int, List[tuple]] = {r: [] for r in rungs}  # rung -> (value, point) of those that reached it
    tokens, waiting = 0, list(order)

    def train_to(idx: int, k: int) -> None:
        nonlocal tokens
        rung = points[idx]["cooldown"]["rungs"][judged[idx][k]]
        previous = points[idx]["cooldown"]["rungs"][judged[idx][k - 1]]["stable_tokens"] if k else 0
        tokens += rung["stable_tokens"] - previous + rung["branch_tokens"]
        at[idx] = k
        value = rung["val_loss"]
        reached[judged[idx][k]].append((value if math.isfinite(value) else math.inf, idx))

    def promotable():
        for r in reversed(rungs[:-1]):
            ranked = sorted(reached[r])
            kept = ranked[:len(ranked) // eta]
            for value, idx in kept:
                if judged[idx][at[idx]] == r and math.isfinite(value):  # paused here, not resumed past it
                    return idx, r
        return None

    while True:
        found = promotable()
        if found is not None:
            idx, _ = found
            train_to(idx, at[idx] + 1)
        elif waiting:
            train_to(waiting.pop(0), 0)
        elif not reached[rungs[-1]]:
            r = next(r for r in reversed(rungs) if reached[r])
            idx = min(v for v in reached[r] if judged[v[1]][at[v[1]]] == r)[1]
            train_to(idx, at[idx] + 1)
        else:
            break
    return tokens, min(reached[rungs[-1]])[1]


def score(method: str, results: Sequence[tuple[int, int]], truth: Sequence[float], grid_tokens: int,
          noise: float, points: Sequence[dict], wsd_truth: Sequence[float],
          contender_noise: float | None = None) -> Score:
    """`results` (tokens, pick) per order scored against `truth`; the WSD regret against
    `wsd_truth` (each point's full-length WSD run, its mean over seeds where there are more)."""
    best = min(truth)
    regrets = np.array([truth[pick] - best for _, pick in results])
    picks: Dict[str, int] = {}
    for _, pick in results:
        label = _label(points[pick]["params"])
        picks[label] = picks.get(label, 0) + 1
    wsd_regrets = np.array([wsd_truth[pick] - min(wsd_truth) for _, pick in results])
    return Score(method, float(np.mean([t for t, _ in results]) / grid_tokens), float(regrets.mean()),
                 float(regrets.max()), float(np.mean(regrets <= noise + 1e-12)), mean_wsd_regret=float(wsd_regrets.mean()),
                 picks=picks, within_contender_noise=float(np.mean(regrets <= contender_noise + 1e-12))
                 if contender_noise is not None else float("nan"))


def compute_by_warmup(points: Sequence[dict], spent: Dict[int, int], n_orders: int) -> List[dict]:
    """Per warmup of the grid, from `spent` (tokens per point summed over `n_orders` orders): the
    mean tokens a trial of it trains, as a share of its full-length cosine run, and the share of the
    grid's compute its trials take: where a study's tokens go."""
    grid_tokens = sum(p["cosine"]["tokens"] for p in points)
    warmups: Dict[int, List[int]] = {}
    for i, p in enumerate(points):
        warmups.setdefault(p["cosine"]["warmup_step"], []).append(i)
    per_iter = tokens_per_iter_of(points[0])
    return [{"warmup_iters": step // per_iter, "points": len(idx),
             "per_trial": float(np.mean([spent.get(i, 0) / n_orders / points[i]["cosine"]["tokens"] for i in idx])),
             "of_grid": sum(spent.get(i, 0) for i in idx) / n_orders / grid_tokens} for step, idx in sorted(warmups.items())]


def raw_pruner_order(curves, order, pruner) -> tuple[int, int]:
    """bench.pruner_replay's replay of the cosine curves: (tokens trained, the picked point)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PlateauFallbackWarning)
        warnings.filterwarnings("ignore", "All-NaN slice", RuntimeWarning)
        result = replay_order(curves, order, pruner, study_name="cooldown-bench")
    # replay_order reports the regret against the curves' best; the pick is the curve whose best it is
    target = min(c.best for c in curves) + result.regret
    pick = min(range(len(curves)), key=lambda i: abs(curves[i].best - target))
    return result.steps_run, pick


def rank_correlations(points: Sequence[dict], truth: Sequence[float], wsd_truth: Sequence[float]) -> List[dict]:
    """Spearman correlation with the full-length cosine ranking, per rung: of the decayed values,
    and of the raw cosine curve's values at the same tokens (its last evaluation at or before); and
    of the decayed values against the full-length WSD ranking (`wsd_truth`), the question a
    cooldown study's rungs ask."""
    rows = []
    for r in range(len(points[0]["cooldown"]["rungs"])):
        step = points[0]["cooldown"]["rungs"][r]["step"]
        have = [p for p in points if math.isfinite(p["cooldown"]["rungs"][r]["val_loss"])]  # after their warmup
        decayed = [p["cooldown"]["rungs"][r]["val_loss"] for p in have]
        truth_here = [t for p, t in zip(points, truth) if math.isfinite(p["cooldown"]["rungs"][r]["val_loss"])]
        wsd_here = [t for p, t in zip(points, wsd_truth) if math.isfinite(p["cooldown"]["rungs"][r]["val_loss"])]
        raw = []
        for p in have:
            steps, values = p["cosine"]["steps"], p["cosine"]["values"]
            raw.append(values[max(i for i, s in enumerate(steps) if s <= step)])
        if len(have) < 3:
            continue
        rows.append({"rung": r, "tokens": step, "points": len(have),
                     "decayed": float(spearmanr(decayed, truth_here).statistic),
                     "raw": float(spearmanr(raw, truth_here).statistic),
                     "decayed_wsd": float(spearmanr(decayed, wsd_here).statistic)})
    return rows


def prediction_errors(points: Sequence[dict], fit_rungs: Sequence[int], at_rungs: Sequence[int]) -> List[dict]:
    """The power law fit to the rungs `fit_rungs` of each point (those after its warmup, as a
    trial reports them), read at the later rungs `at_rungs`, against what those rungs measured."""
    rows = []
    for p in points:
        rungs = p["cooldown"]["rungs"]
        fit = [rungs[i] for i in fit_rungs if rungs[i]["stable_tokens"] >= p["cosine"]["warmup_step"]]  # as a trial has them
        for j in at_rungs:
            prediction = predict_long_run([r["step"] for r in fit], [r["val_loss"] for r in fit],
                                          [r["se"] for r in fit], rungs[j]["step"])
            if prediction is None:
                continue
            rows.append({"params": p["params"], "at_tokens": rungs[j]["step"],
                         "ratio": rungs[j]["step"] / fit[-1]["step"], "predicted": prediction.loss,
                         "low": prediction.low, "high": prediction.high, "measured": rungs[j]["val_loss"],
                         "error": prediction.loss - rungs[j]["val_loss"], "trusted": prediction.trusted})
    return rows


def replay_main(args) -> int:
    import json

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    data = json.loads(args.record.read_text())
    points = complete_rungs(only_warmups(data["points"], getattr(args, "warmups", None)))
    curves = cosine_curves(points)
    record_seed = data["meta"].get("seed", RECORD_SEED)
    seed_runs = read_seed_runs(getattr(args, "seeds", None) or [], record_seed)
    truth, n_seeds = ground_truth(points, seed_runs, record_seed)
    wsd_truth, n_wsd_seeds = ground_truth(points, seed_runs, record_seed, "wsd")
    grid_tokens = sum(p["cosine"]["tokens"] for p in points)
    best_idx = int(np.argmin(truth))
    spread = seed_noise(points, seed_runs, record_seed) if seed_runs else None
    wsd_spread = seed_noise(points, seed_runs, record_seed, "wsd") if n_wsd_seeds[0] > 1 else None
    if spread is not None:
        noise, seeds = spread["paired_sd"], list(spread["seed_shifts"])  # the noise a comparison at one seed has
        contender_noise = spread["contender_sd"]
    else:
        seeds = [curves[best_idx].best] + [n["final"] for n in data.get("noise", [])]
        noise = float(np.std(seeds, ddof=1)) if len(seeds) > 1 else 0.0
        contender_noise = None
    rng = np.random.default_rng(args.seed)
    orders = [rng.permutation(len(points)).tolist() for _ in range(args.orders)]
    n_rungs = len(points[0]["cooldown"]["rungs"])
    eta = data["meta"]["rungs"]["eta"]
    first = first_eval_after_warmup(curves)
    budget = max(int(c.budget_step) for c in curves)
    warmup = int(np.median([c.warmup_step for c in curves]))
    raw = {
        "no pruning (the grid)": lambda: optuna.pruners.NopPruner(),
        "plateau (default)": PlateauPruner,
        f"median (n_startup_trials=4, n_warmup_steps={warmup})":
            lambda: optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=warmup),
        f"hyperband (min_resource={first}, rf=3)":
            lambda: optuna.pruners.HyperbandPruner(min_resource=first, max_resource=budget, reduction_factor=3),
    }
    scores = []
    t0 = time.time()
    for name, make in raw.items():
        scores.append(score(name, [raw_pruner_order(curves, o, make()) for o in orders], truth, grid_tokens, noise,
                            points, wsd_truth, contender_noise))
    spent: Dict[int, int] = {}  # the default study's tokens per point (DEFAULT_RUNGS rungs), over every order
    for count in range(min(n_rungs, 5), 1, -1):
        rungs = list(range(n_rungs - count, n_rungs))
        scores.append(score(f"cooldown + ASHA, {count} rungs (eta={eta})",
                            [asha_order(points, o, rungs, eta, spent=spent if count == DEFAULT_RUNGS else None)
                             for o in orders],
                            truth, grid_tokens, noise, points, wsd_truth, contender_noise))
    if n_rungs >= DEFAULT_RUNGS:
        rungs = list(range(n_rungs - DEFAULT_RUNGS, n_rungs))
        scores.append(score(f"cooldown + ASHA with promotions, {DEFAULT_RUNGS} rungs (eta={eta}; a study's default)",
                            [asha_promotion_order(points, o, rungs, eta) for o in orders], truth, grid_tokens, noise,
                            points, wsd_truth, contender_noise))
    recorded_inside_warmups = all(math.isfinite(r["val_loss"]) for p in points for r in p["cooldown"]["rungs"])
    if recorded_inside_warmups:  # a record made before trials skipped those rungs
        scores.append(score(f"cooldown + ASHA, {DEFAULT_RUNGS} rungs (eta={eta}), judged inside warmups too",
                            [asha_order(points, o, list(range(n_rungs - DEFAULT_RUNGS, n_rungs)), eta, inside_warmup=True)
                             for o in orders], truth, grid_tokens, noise, points, wsd_truth, contender_noise))
    scores.append(score(f"cooldown, no pruning ({n_rungs} rungs)",
                        [asha_order(points, o, list(range(n_rungs)), eta, prune=False) for o in orders[:1]],
                        truth, grid_tokens, noise, points, wsd_truth, contender_noise))
    correlations = rank_correlations(points, truth, wsd_truth)
    # how well one seed's own full-length run ranks the mean over seeds: the most a rung could reach
    single_seed = float(spearmanr([c.best for c in curves], truth).statistic) if seed_runs else None
    # the grid's own check of the long-run fit: every rung but the last predicts the last (eta x further)
    predictions = prediction_errors(points, list(range(n_rungs - 1)), [n_rungs - 1]) if n_rungs >= 4 else []
    out = {"meta": data["meta"], "orders": args.orders, "seed": args.seed, "warmups": getattr(args, "warmups", None),
           "noise_sd": noise, "seeds": seeds,
           "seeds_per_point": n_seeds, "single_seed_correlation": single_seed, "seed_spread": spread,
           "grid_best": {"params": points[best_idx]["params"], "cosine_best": truth[best_idx]},
           "wsd_best": {"params": points[int(np.argmin(wsd_truth))]["params"], "wsd": min(wsd_truth),
                        "seeds_per_point": n_wsd_seeds[0]}, "wsd_seed_spread": wsd_spread,
           "scores": [s.__dict__ for s in scores], "rank_correlations": correlations, "predictions": predictions,
           "asha_compute_by_warmup": compute_by_warmup(points, spent, len(orders)) if spent else [],
           "seconds": round(time.time() - t0, 1)}
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    print(format_report(out, points, truth))
    return 0


def read_seed_runs(paths: Sequence, record_seed: int = RECORD_SEED) -> List[dict]:
    """The runs of `cooldown_fidelity.py seeds` outputs (cosine runs) and of whole `record`s made
    at other seeds (`record --seed`: each point's cosine and WSD run), as one list of runs: params,
    seed, status, and its value of each kind (KINDS) it has. A record at the replayed record's own
    seed is refused: it would count that seed twice."""
    import json
    from pathlib import Path

    runs = []
    for path in paths:
        data = json.loads(Path(path).read_text())
        if "runs" in data:
            runs += data["runs"]
            continue
        seed = data["meta"].get("seed", RECORD_SEED)
        if seed == record_seed:
            raise SystemExit(f"--seeds {path}: a record at seed {seed}, the seed of the record replayed; "
                             f"give records at other seeds")
        runs += [{"params": p["params"], "seed": seed, "status": p["cosine"]["status"], "final": p["cosine"]["final"],
                  "best": own_value(p, "best"), "wsd": own_value(p, "wsd")} for p in data["points"]]
    return runs


def format_report(out: dict, points: Sequence[dict], truth: Sequence[float]) -> str:
    meta = out["meta"]
    subset = f" at warmups {out['warmups']} only" if out.get("warmups") else ""
    lines = [f"# Cooldown multi-fidelity against full-length trials ({len(points)} grid points{subset}, {out['orders']} orders)",
             "", f"Recorded: `{meta.get('command')}` ({meta.get('started')} to {meta.get('finished')}, {meta.get('machine')}); "
             f"rungs {meta.get('rungs')}.", "",
             f"Grid best: {_label(out['grid_best']['params'])}, cosine val loss {out['grid_best']['cosine_best']:.4f}; "
             + (f"one seed's noise (sd over seeds {', '.join(f'{s:.4f}' for s in out['seeds'])}): {out['noise_sd']:.4f}."
                if out.get("single_seed_correlation") is None else
                f"each point's truth the mean of {min(out['seeds_per_point'])}-{max(out['seeds_per_point'])} seeds "
                f"({', '.join(out['seeds'])}). A seed shifts every point alike (it draws its own eval batches): "
                f"by {', '.join(f'{v:+.3f}' for v in out['seed_spread']['seed_shifts'].values())}; the raw sd within a point "
                f"is {out['seed_spread']['within_sd']:.4f}, and one seed's noise for comparing configs (the sd left "
                f"after each point's mean and each seed's shift, {out['seed_spread']['points']} points) "
                f"{out['noise_sd']:.4f}, and among the best {out['seed_spread'].get('contenders', 0)} points (the "
                f"contenders, where a pick lies) {out['seed_spread'].get('contender_sd', 0.0):.4f}; "
                f"one seed's own full-length run ranks the means "
                f"at Spearman {out['single_seed_correlation']:.3f}."), "",
             "| method | compute (share of the grid's tokens) | mean regret | max regret | regret within noise | "
             "within the contenders' noise | mean regret on the full-length WSD runs | picks |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for s in out["scores"]:
        picks = "; ".join(f"{k} x{v}" for k, v in sorted(s["picks"].items(), key=lambda kv: -kv[1])[:3])
        lines.append(f"| {s['method']} | {100 * s['compute']:.1f}% | {s['mean_regret']:.4f} | {s['max_regret']:.4f} | "
                     f"{100 * s['within_noise']:.0f}% | {_share(s.get('within_contender_noise'))} | "
                     f"{s['mean_wsd_regret']:.4f} | {picks} |")
    wsd = out.get("wsd_best")
    if wsd:
        spread = out.get("wsd_seed_spread")
        over = f", its mean over {wsd['seeds_per_point']} seeds" if wsd["seeds_per_point"] > 1 else ", one seed"
        lines += ["", f"Full-length WSD runs (each point's last rung{over}): "
                  f"best {_label(wsd['params'])}, {wsd['wsd']:.4f}"
                  + (f"; one seed's noise for comparing configs {spread['paired_sd']:.4f}, among the best "
                     f"{spread['contenders']} points {spread['contender_sd']:.4f}." if spread else ".")]
    if out.get("asha_compute_by_warmup"):
        lines += ["", f"Where cooldown + ASHA's tokens go ({DEFAULT_RUNGS} rungs), by warmup: a trial's mean tokens as a share of its "
                  "full-length cosine run, and its warmup's share of the grid's compute:", "",
                  "| warmup (iterations) | points | tokens a trial | share of the grid's compute |", "|---:|---:|---:|---:|"]
        lines += [f"| {w['warmup_iters']:,} | {w['points']} | {100 * w['per_trial']:.1f}% | {100 * w['of_grid']:.1f}% |"
                  for w in out["asha_compute_by_warmup"]]
    lines += ["", "Rank correlation (Spearman) with the full-length cosine ranking, and of the decayed values with the "
              "full-length WSD ranking:", "",
              "| rung | tokens | points (their warmup done) | decayed value at the rung | raw cosine value at those tokens | "
              "decayed value against the WSD ranking |",
              "|---:|---:|---:|---:|---:|---:|"]
    for r in out["rank_correlations"]:
        lines.append(f"| {r['rung']} | {r['tokens']:,} | {r.get('points', len(points))} | {r['decayed']:.3f} | {r['raw']:.3f} | "
                     f"{r['decayed_wsd']:.3f} |" if "decayed_wsd" in r else
                     f"| {r['rung']} | {r['tokens']:,} | {r.get('points', len(points))} | {r['decayed']:.3f} | {r['raw']:.3f} | |")
    if out["predictions"]:
        errors = np.array([p["error"] for p in out["predictions"]])
        inside = np.mean([p["low"] <= p["measured"] <= p["high"] for p in out["predictions"]])
        lines += ["", f"Long-run fit inside the grid: the power law over every rung but the last, read at the last "
                  f"({out['predictions'][0]['ratio']:.0f}x further past the last rung fit; the {len(out['predictions'])} "
                  f"points with 3+ rungs after their warmup): mean error {errors.mean():+.4f}, mean |error| "
                  f"{np.abs(errors).mean():.4f}, max |error| {np.abs(errors).max():.4f}; the measured value inside the "
                  f"95% interval for {100 * inside:.0f}% of the {len(errors)} points; "
                  f"{sum(p['trusted'] for p in out['predictions'])} fits trusted."]
    lines += ["", "Each point: cosine best, then the decayed value at each rung:", "",
              "| config | cosine" + (" (mean over seeds)" if out.get("single_seed_correlation") is not None else "") + " | " + " | ".join(f"rung {i}" for i in range(len(points[0]['cooldown']['rungs']))) + " |",
              "|---|---:|" + "---:|" * len(points[0]["cooldown"]["rungs"])]
    for p, t in sorted(zip(points, truth), key=lambda pt: pt[1]):
        lines.append(f"| {_label(p['params'])} | {t:.4f} | "
                     + " | ".join(f"{r['val_loss']:.4f}" if math.isfinite(r["val_loss"]) else "(in warmup)"
                                  for r in p["cooldown"]["rungs"]) + " |")
    return "\n".join(lines)


def _share(x) -> str:
    return "" if x is None or not math.isfinite(x) else f"{100 * x:.0f}%"


def _key(params: dict) -> tuple:
    return tuple(sorted((k, float(v)) for k, v in params.items()))


def compare_live(points: Sequence[dict], study: optuna.Study, eta: int, count: int,
                 seed_runs: Sequence[dict] = ()) -> dict:
    """A live cooldown study of the recorded grid's points against the record: each rung value it
    reported beside the recorded one at the same step (the replay models the study only if they
    agree), its compute (each trial's own tokens: a continuation's carried part counts where it was
    trained) and its pick scored as the replay scores a method, and the replay of its configs in
    the order they started (one worker's view of the same order), with promotions where the study
    paused trials (study.rungs.promotions)."""
    truth, _ = ground_truth(points, seed_runs)
    grid_tokens = sum(p["cosine"]["tokens"] for p in points)
    index = {_key(p["params"]): i for i, p in enumerate(points)}
    finished = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))]
    trials, diffs, live_values = [], [], {}
    for t in sorted(finished, key=lambda t: t.number):
        idx = index[_key(t.params)]
        recorded = {r["step"]: r["val_loss"] for r in points[idx]["cooldown"]["rungs"]}
        diffs += [abs(v - recorded[s]) for s, v in t.intermediate_values.items()]  # a live trial skips NaN rungs too
        live_values.setdefault(idx, {}).update(t.intermediate_values)
        trials.append({"number": t.number, "params": t.params, "state": t.state.name, "point": idx,
                       "rungs": len(t.intermediate_values), "tokens": trial_record.tokens_trained(t),
                       "continues": trial_record.continues(t), "paused_at_rung": trial_record.paused_at_rung(t)})
    complete = [t for t in finished if t.state == TrialState.COMPLETE]
    pick = index[_key(min(complete, key=lambda t: t.value).params)]
    order = list(dict.fromkeys(t["point"] for t in trials))  # each config where its first trial started
    promotions = any(t["paused_at_rung"] is not None for t in trials)
    n_rungs = len(points[0]["cooldown"]["rungs"])
    rungs = list(range(n_rungs - count, n_rungs))
    replay = asha_promotion_order if promotions else asha_order
    replay_tokens, replay_pick = replay(points, order, rungs, eta)
    # the same replay on the values the study measured (the record's where it measured none): what
    # is left of a difference from the live study is its scheduling (two workers), not the values
    live_tokens, live_pick = replay(with_values(points, live_values), order, rungs, eta)
    return {"trials": trials, "configs": len(order), "promotions": promotions,
            "continuations": sum(t["continues"] is not None for t in trials),
            "max_rung_difference": max(diffs), "rung_values": len(diffs),
            "compute": sum(t["tokens"] for t in trials) / grid_tokens, "pick": points[pick]["params"],
            "regret": truth[pick] - min(truth), "replay_compute": replay_tokens / grid_tokens,
            "replay_pick": points[replay_pick]["params"], "replay_regret": truth[replay_pick] - min(truth),
            "replay_of_live_values_compute": live_tokens / grid_tokens,
            "replay_of_live_values_pick": points[live_pick]["params"],
            "replay_of_live_values_regret": truth[live_pick] - min(truth)}


def with_values(points: Sequence[dict], values: Dict[int, Dict[int, float]]) -> List[dict]:
    """`points` with the rung values `values` ({point: {step: value}}) in place of the recorded ones."""
    replaced = []
    for i, p in enumerate(points):
        mine = values.get(i, {})
        rungs = [{**r, "val_loss": mine.get(r["step"], r["val_loss"])} for r in p["cooldown"]["rungs"]]
        replaced.append({**p, "cooldown": {**p["cooldown"], "rungs": rungs}})
    return replaced


def live_main(args) -> int:
    import json

    from sweeps.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    data = json.loads(args.record.read_text())
    study = optuna.load_study(study_name=args.study, storage=open_storage(args.storage, create=False))
    out = compare_live(complete_rungs(only_warmups(data["points"], getattr(args, "warmups", None))), study,
                       data["meta"]["rungs"]["eta"], args.rungs, read_seed_runs(args.seeds or []))
    out["command"], out["warmups"] = args.command_line, getattr(args, "warmups", None)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    continuations = f" ({out['continuations']} continuations of paused trials)" if out["promotions"] else ""
    print(f"live study {args.study!r}: {out['configs']} configs in {len(out['trials'])} trials{continuations}, compute {100 * out['compute']:.1f}% of the grid's "
          f"tokens, pick {_label(out['pick'])} (regret {out['regret']:.4f}); its {out['rung_values']} rung values "
          f"differ from the record's by at most {out['max_rung_difference']:.2e}")
    print(f"the replay of the same order{' with promotions' if out['promotions'] else ''}, one worker: compute {100 * out['replay_compute']:.1f}%, pick "
          f"{_label(out['replay_pick'])} (regret {out['replay_regret']:.4f}); on the values the study measured: "
          f"compute {100 * out['replay_of_live_values_compute']:.1f}%, pick {_label(out['replay_of_live_values_pick'])} "
          f"(regret {out['replay_of_live_values_regret']:.4f})")
    return 0


def long_main(args) -> int:
    """The prediction check of `cooldown_fidelity.py long` runs: each run's power law fit to its
    first three rungs (those a trial has), read at its last two (4x and 10x the trial), against
    what those rungs measured, as a markdown table; then the law fit to the three rungs after the
    first (the trial's last two and the 4x run) read at 10x: whether the form holds once the
    rungs are past the loss's first fall."""
    import json

    runs = json.loads(args.record.read_text())["runs"]
    lines = ["| config | rungs fit (iterations) | at (iterations) | predicted (95% interval) | measured | error | "
             "trusted (its doubts) |", "|---|---|---:|---|---:|---:|---|"]
    checks = [(run, run["rungs"][:3], rung) for run in runs for rung in run["rungs"][3:]]
    checks += [(run, run["rungs"][1:4], run["rungs"][4]) for run in runs if len(run["rungs"]) >= 5]
    for run, fit, rung in checks:
        prediction = predict_long_run([r["step"] for r in fit], [r["val_loss"] for r in fit],
                                      [r["se"] for r in fit], rung["step"])
        head = f"| {_label(run['params'])} | {', '.join(str(r['horizon']) for r in fit)} | {rung['horizon']:,} | "
        if prediction is None:
            lines.append(head + f"(no fit) | {rung['val_loss']:.4f} | | |")
            continue
        lines.append(head + f"{prediction.loss:.4f} ({prediction.low:.3f} to {prediction.high:.3f}) | {rung['val_loss']:.4f} | "
                     f"{prediction.loss - rung['val_loss']:+.4f} | "
                     f"{'yes' if prediction.trusted else 'no: ' + '; '.join(prediction.doubts)} |")
    print("\n".join(lines))
    return 0
