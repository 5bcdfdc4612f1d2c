"""Cooldown multi-fidelity against full-length trials, on CPU: record once, replay many orders.

    python bench/cooldown_fidelity.py record --out bench/results/cooldown_grid.json   # ~30-60 min, 2 cores
    python bench/cooldown_fidelity.py replay bench/results/cooldown_grid.json --orders 200 \
        > bench/results/cooldown_fidelity.md
    python bench/cooldown_fidelity.py record --grid absolute1200 --out bench/results/cooldown_grid_absolute1200.json
    python bench/cooldown_fidelity.py record --grid bytes2000 --seed 1 --out bench/results/cooldown_grid_bytes2000_seed1.json
    python bench/cooldown_fidelity.py predict bench/results/cooldown_long_bytes2000.json
    python bench/cooldown_fidelity.py record --grid bytes2000fine --eta 4 --no-noise \
        --cosine-from bench/results/cooldown_grid_bytes2000fine.json --out bench/results/cooldown_grid_bytes2000fine_eta4.json
    python bench/cooldown_fidelity.py merge bench/results/cooldown_grid_bytes2000.json --grid bytes2000fine --out FILE

`record` trains every point of a grid (GRIDS: peak lr x warmup, a share of the run at the
cpu_demo budget's 400 iterations as the lr_warmup sweep searches it, or a number of iterations at
1200 or, on the nano and the sample's bytes, 2000; the grid's model on the sample data, 21
evaluations) twice, each exactly as a study's trial would:
  - the ground truth: a full-length cosine run (what a trial is without study.fidelity), its
    whole curve in bench/pruner_replay.py's format, so Optuna's pruners can be replayed on it;
  - the cooldown trial: `sweeps.cooldown.train_with_rungs` with every rung of RECORD_RUNGS (none
    stopped), each rung's decayed val loss and the stable phase's curve.
It also runs the cosine ground truth of the grid's best point at NOISE_SEEDS more seeds: the
spread of one config across seeds ("one seed's noise"). A killed `record` resumes: points already
in --out are kept. `seeds` runs every point's ground truth at more seeds (`replay --seeds`: a
point's truth is then its mean over seeds, and the noise the spread within points); `record --seed`
records the whole grid, cosine runs and cooldown trials, at another seed, for `replay --seeds` (the
WSD runs' truth a mean over seeds too) or to replay the methods at that seed. `long` extends two
configs' cooldown trials to 10x the trial horizon; `predict` scores the power law of their first
three rungs at the last two. `record --eta E --cosine-from RECORD` records the cooldown trials
with rungs at eta E, keeping RECORD's cosine runs (no rung changes them); `merge --grid G` fills a
larger grid with a smaller one's points (the same runs).

`replay` then plays the grid in many random orders through each method and scores it: the tokens
it trains (branches included) as a share of the full grid's cosine tokens, and the regret of the
config it picks (that config's full-length cosine loss minus the grid's best). Methods: no
pruning; the plateau pruner, Optuna's median pruner with warmup steps and Optuna's Hyperband on
the raw cosine curves (via bench.pruner_replay); ASHA (sweeps.rung_pruner) on the decayed rung
values, for the last 3, 4 and 5 rungs. And the Spearman rank correlation, against the
full-length cosine ranking, of the decayed value at each rung and of the raw cosine curve's
value at the same tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.cooldown_replay import RECORD_SEED  # noqa: E402  the seed of a record's own runs unless `record --seed`
from sweeps.compose import compose_study_config  # noqa: E402
from sweeps.cooldown import rungs_of, train_with_rungs  # noqa: E402
from sweeps.objective import batch_group_means, batch_groups  # noqa: E402
from trainer import ConfigError, as_train_config, eval_points, lr_area, tokens_per_iter, train, warmup_iters_of  # noqa: E402

GRID_LRS = (1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2)


# A narrow nano (the same 2 layers, half the width) on 4 x 32-token sequences: an eighth of the
# nano's cost per iteration on GPT-2's tokens, so the first grids' 15 points x 2 runs fit an hour
# of this 2-core machine.
NARROW_NANO = ("model.n_layer=2", "model.n_head=2", "model.n_embd=32", "model.block_size=32", "batch_size=4")
# The nano itself (and cpu_demo's batch of 8) on the sample's UTF-8 bytes: a 320-row head instead
# of 50k makes its step as cheap as the narrow nano's on GPT-2, and its loss falls far below the
# unigram plateau where the GPT-2-token grids stay, so configs differ by more than a seed's noise.
NANO_BYTES = ("data.tokenizer=bytes", "model.vocab_size=320")


@dataclass(frozen=True)
class Grid:
    """The points a `record` trains: every lr with every warmup, at one horizon, on one model."""

    warmup_key: str  # schedule.warmup_fraction (a share of max_iters) or schedule.warmup_iters
    warmups: tuple
    max_iters: int
    model: tuple = NARROW_NANO  # overrides of the lr_warmup sweep's model, data and batch
    lrs: tuple = GRID_LRS

    def points(self) -> list:
        return [(lr, warmup) for lr in self.lrs for warmup in self.warmups]

    def overrides(self, lr: float, warmup: float) -> list:
        warmup_overrides = ([f"schedule.warmup_fraction={warmup}"] if self.warmup_key == "schedule.warmup_fraction"
                            else ["schedule.warmup_fraction=null", f"schedule.warmup_iters={int(warmup)}"])
        # 21 evaluations at every horizon, as the cpu_demo budget has at 400 iterations
        return [*self.model, f"schedule.lr={lr}", *warmup_overrides, f"schedule.max_iters={self.max_iters}",
                f"eval_interval={self.max_iters // 20}"]


GRIDS = {
    # the lr_warmup sweep's own axes and the cpu_demo budget's 400 iterations
    "share400": Grid("schedule.warmup_fraction", (0.02, 0.1, 0.3), 400),
    # warmups as a WSD run sets them, a fixed number of iterations (0.8-8% of the run), and a
    # horizon 3x longer: the shape of a user's long run, where warmup is a small share of it
    "absolute1200": Grid("schedule.warmup_iters", (10, 30, 100), 1200),
    # the same warmups (0.5-5% of the run) on the nano itself, on bytes, at 2000 iterations (1M tokens)
    "bytes2000": Grid("schedule.warmup_iters", (10, 30, 100), 2000, model=NANO_BYTES),
    # bytes2000 and 17 more points, 32 in all: three lrs between its own around its best, and a
    # warmup of 300 (15%) past its longest, where its best lies; a study of 32 trials, where the
    # two that ASHA always runs to the end cost half the share they do in 15
    "bytes2000fine": Grid("schedule.warmup_iters", (10, 30, 100, 300), 2000, model=NANO_BYTES,
                          lrs=(1e-3, 2e-3, 2.8e-3, 4e-3, 5.7e-3, 8e-3, 1.1e-2, 1.6e-2)),
}
RECORD_RUNGS = dict(count=5, eta=3, cooldown_fraction=0.2, shape="1-sqrt")
NOISE_SEEDS = (1, 2)
def save_json(path: Path, data: dict, indent=None) -> None:
    """`data` written to `path` through a temp file beside it: a kill leaves the previous file whole."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=indent))
    os.replace(tmp, path)


def point_config(lr: float, warmup: float, workdir: Path, name: str, seed: int = RECORD_SEED,
                 grid: Grid = GRIDS["share400"]):
    cfg = compose_study_config(["+sweep=lr_warmup", *grid.overrides(lr, warmup), f"seed={seed}",
                                f"data.cache_dir={workdir / 'data_cache'}"])
    train_cfg = as_train_config(cfg)
    train_cfg.out_dir = str(workdir / name)
    train_cfg.checkpoint = "none"
    return train_cfg


def cosine_curve(train_cfg) -> dict:
    """A full-length cosine run as bench/pruner_replay.py reads a curve."""
    groups = batch_groups(train_cfg.eval_iters, len(eval_points(train_cfg)))
    per_iter = tokens_per_iter(train_cfg)
    t0 = time.time()
    result = train(train_cfg, log=lambda line: None)
    evals = result.evals
    return {
        "steps": [m.tokens for m in evals], "values": [m.val_loss for m in evals],
        "se": [m.val_loss_se for m in evals], "lr_area": [m.lr_area for m in evals],
        "batch_losses": [batch_group_means(m.val_batch_losses, groups) for m in evals] if groups else None,
        "val_batches": evals[0].val_batches if evals else None,
        "warmup_step": warmup_iters_of(train_cfg.schedule) * per_iter,
        "budget_step": train_cfg.schedule.max_iters * per_iter,
        "lr_area_budget": lr_area(train_cfg, train_cfg.schedule.max_iters),
        "final": evals[-1].val_loss, "tokens": result.tokens_seen, "status": result.status,
        "wall_s": round(time.time() - t0, 1),
    }


def cooldown_record(train_cfg, rungs: list) -> dict:
    train_cfg.eval_interval = train_cfg.schedule.max_iters  # the stable phase is judged only at the rungs
    stable = []
    t0 = time.time()
    result = train_with_rungs(train_cfg, rungs, RECORD_RUNGS["shape"], on_rung=lambda v: None,
                              on_stable_eval=lambda m: stable.append((m.tokens, m.val_loss)), log=lambda line: None)
    per_iter = tokens_per_iter(train_cfg)
    return {
        "rungs": [{"horizon": v.rung.horizon, "decay_start": v.rung.decay_start, "step": v.step,
                   "stable_tokens": v.rung.decay_start * per_iter, "branch_tokens": v.rung.cooldown_iters * per_iter,
                   "val_loss": v.val_loss, "se": v.val_loss_se} for v in result.values],
        "stable_curve": stable, "status": result.status, "tokens": result.tokens_trained,
        "wall_s": round(time.time() - t0, 1),
    }


def record(out: Path, workdir: Path, lrs=None, noise: bool = True, grid_name: str = "share400",
           seed: int = RECORD_SEED, eta: int = RECORD_RUNGS["eta"], cosine_from: Path | None = None) -> None:
    """Every point of the grid (those of `lrs`) at `seed`: its cosine run and its cooldown trial.
    A record at another seed than RECORD_SEED is a whole grid again, for `replay --seeds` (each
    point's truth its mean over seeds, of the cosine and of the WSD runs) or to replay the methods
    at that seed; the best point's noise seeds are then not run. With `eta`, the cooldown trials'
    rungs are max_iters / eta^k; `cosine_from` (a record of the same grid and seed) gives each
    point's cosine run, which no rung changes, so only the cooldown trials are trained."""
    grid = GRIDS[grid_name]
    try:
        rungs = rungs_of(grid.max_iters, RECORD_RUNGS["count"], eta, RECORD_RUNGS["cooldown_fraction"])
    except ConfigError as e:
        raise SystemExit(f"--eta {eta}: {e}") from None
    cosines = cosine_runs_of(cosine_from, grid_name, seed) if cosine_from is not None else None
    lrs = grid.lrs if lrs is None else lrs
    if not set(lrs) <= set(grid.lrs):
        raise SystemExit(f"--lrs {','.join(f'{lr:g}' for lr in lrs)}: the grid {grid_name!r} has lrs "
                         f"{', '.join(f'{lr:g}' for lr in grid.lrs)}")
    data = json.loads(out.read_text()) if out.is_file() else {"meta": {}, "points": [], "noise": []}
    if data["meta"] and data["meta"].get("grid_name", "share400") != grid_name:
        raise SystemExit(f"{out} holds the grid {data['meta'].get('grid_name', 'share400')!r}, not {grid_name!r}")
    if data["meta"] and data["meta"].get("seed", RECORD_SEED) != seed:
        raise SystemExit(f"{out} holds seed {data['meta'].get('seed', RECORD_SEED)}, not {seed}: one file per seed")
    held_eta = data["meta"].get("rungs", RECORD_RUNGS)["eta"] if data["meta"] else eta
    if held_eta != eta:
        raise SystemExit(f"{out} holds rungs at eta {held_eta}, not {eta}: one file per eta")
    data["meta"] = {"command": " ".join(sys.argv), "machine": f"{platform.node()} {os.cpu_count()} cpus",
                    "model": list(grid.model), "grid_name": grid_name, "max_iters": grid.max_iters, "seed": seed,
                    "grid": {"schedule.lr": grid.lrs, grid.warmup_key: grid.warmups},
                    "rungs": {**RECORD_RUNGS, "eta": eta}, "cosine_from": str(cosine_from) if cosine_from else None,
                    "started": data["meta"].get("started", time.strftime("%Y-%m-%d %H:%M")),
                    "load_before": os.getloadavg(),
                    **({"parts": data["meta"]["parts"]} if "parts" in data["meta"] else {})}  # a merge's sources
    done = {(p["params"]["schedule.lr"], p["params"][grid.warmup_key]) for p in data["points"]}

    def save() -> None:
        save_json(out, data)

    for lr in lrs:
        for warmup in grid.warmups:
            if (lr, warmup) in done:
                continue
            name = f"lr{lr:g}_w{warmup:g}" + (f"_seed{seed}" if seed != RECORD_SEED else "")
            cfg = point_config(lr, warmup, workdir, name + "_cosine", seed, grid)
            point = {"params": {"schedule.lr": lr, grid.warmup_key: warmup}, "config": asdict(cfg),
                     "cosine": cosine_curve(cfg) if cosines is None else cosines[(lr, warmup)]}
            rung_cfg = point_config(lr, warmup, workdir, name + "_cooldown", seed, grid)
            point["cooldown"] = cooldown_record(rung_cfg, rungs)
            shutil.rmtree(workdir / (name + "_cooldown"), ignore_errors=True)
            data["points"].append(point)
            save()
            print(f"{name}: cosine {point['cosine']['final']:.4f} ({point['cosine']['wall_s']} s), rungs "
                  f"{[round(r['val_loss'], 4) for r in point['cooldown']['rungs']]} ({point['cooldown']['wall_s']} s)",
                  flush=True)
    if noise and seed == RECORD_SEED:
        best = min(data["points"], key=lambda p: p["cosine"]["final"])["params"]
        done_seeds = {n["seed"] for n in data["noise"]}
        for noise_seed in NOISE_SEEDS:
            if noise_seed in done_seeds:
                continue
            cfg = point_config(best["schedule.lr"], best[grid.warmup_key], workdir, f"noise_seed{noise_seed}",
                               noise_seed, grid)
            data["noise"].append({"seed": noise_seed, "params": best, "final": cosine_curve(cfg)["final"]})
            save()
            print(f"best point at seed {noise_seed}: {data['noise'][-1]['final']:.4f}", flush=True)
    data["meta"]["finished"] = time.strftime("%Y-%m-%d %H:%M")
    save()


def cosine_runs_of(path: Path, grid_name: str, seed: int) -> dict:
    """{(lr, warmup): cosine run} of the record at `path`, which must be of `grid_name` at `seed`
    and hold every point of the grid: refused before any training otherwise."""
    data = json.loads(path.read_text())
    grid = GRIDS[grid_name]
    if (data["meta"].get("grid_name", "share400"), data["meta"].get("seed", RECORD_SEED)) != (grid_name, seed):
        raise SystemExit(f"--cosine-from {path}: it holds grid {data['meta'].get('grid_name', 'share400')!r} at seed "
                         f"{data['meta'].get('seed', RECORD_SEED)}, not {grid_name!r} at seed {seed}")
    runs = {(p["params"]["schedule.lr"], p["params"][grid.warmup_key]): p["cosine"] for p in data["points"]}
    missing = [f"lr={lr:g}, warmup={w:g}" for lr, w in grid.points() if (lr, w) not in runs]
    if missing:
        raise SystemExit(f"--cosine-from {path}: it lacks {len(missing)} of the grid's points ({'; '.join(missing[:3])} ...)")
    return runs


def record_seeds(record_path: Path, out: Path, workdir: Path, seeds: tuple, lrs=None) -> None:
    """The cosine ground truth of every point of the grid in `record_path` (those of `lrs`) again at
    each of `seeds`: with the record's own seed, a point's truth is the mean over seeds, and the
    spread within points is one seed's noise measured on the whole grid rather than at one point.
    Written to `out` after each run; a killed run resumes, keeping the runs already there."""
    data = json.loads(record_path.read_text())
    grid_name = data["meta"].get("grid_name", "share400")
    grid = GRIDS[grid_name]
    runs = json.loads(out.read_text()) if out.is_file() else {"meta": {}, "runs": []}
    runs["meta"] = {"command": " ".join(sys.argv), "record": str(record_path), "grid_name": grid_name,
                    "machine": f"{platform.node()} {os.cpu_count()} cpus", "model": list(grid.model),
                    "started": runs["meta"].get("started", time.strftime("%Y-%m-%d %H:%M")),
                    "load_before": os.getloadavg()}
    recorded_lrs = sorted({p["params"]["schedule.lr"] for p in data["points"]})
    lrs = recorded_lrs if lrs is None else lrs
    if not set(lrs) <= set(recorded_lrs):
        raise SystemExit(f"--lrs {','.join(f'{lr:g}' for lr in lrs)}: {record_path} has points at lr "
                         f"{', '.join(f'{lr:g}' for lr in recorded_lrs)} only")
    done = {(r["params"]["schedule.lr"], r["params"][grid.warmup_key], r["seed"]) for r in runs["runs"]}
    # a seed at every point before the next seed: a seed's shift is measured only where it has them all
    for seed in seeds:
        for point in data["points"]:
            lr, warmup = point["params"]["schedule.lr"], point["params"][grid.warmup_key]
            if lr not in lrs or (lr, warmup, seed) in done:
                continue
            name = f"lr{lr:g}_w{warmup:g}_seed{seed}"
            curve = cosine_curve(point_config(lr, warmup, workdir, name, seed, grid))
            shutil.rmtree(workdir / name, ignore_errors=True)
            runs["runs"].append({"params": point["params"], "seed": seed, "final": curve["final"],
                                 "best": float(np.nanmin(curve["values"])), "status": curve["status"],
                                 "wall_s": curve["wall_s"]})
            runs["meta"]["finished"] = time.strftime("%Y-%m-%d %H:%M")
            save_json(out, runs, indent=1)
            print(f"{name}: {curve['final']:.4f} ({curve['wall_s']} s)", flush=True)


def merge_records(parts: list, grid_name: str | None = None) -> dict:
    """One record of `parts` (records of one seed), as the grid `grid_name` (default: the first
    part's): a part of another grid counts when its runs are that grid's (the same model, horizon
    and warmup axis), so a grid's points recorded as a smaller grid fill in a larger one."""
    grid_name = grid_name or parts[0]["meta"].get("grid_name", "share400")
    grid = GRIDS[grid_name]
    seeds = [p["meta"].get("seed", RECORD_SEED) for p in parts]
    if len(set(seeds)) > 1:
        raise SystemExit(f"the parts hold seeds {seeds} (in the order given): merge one seed's records (one file per seed)")
    etas = [p["meta"].get("rungs", RECORD_RUNGS)["eta"] for p in parts]
    if len(set(etas)) > 1:
        raise SystemExit(f"the parts' rungs are at eta {etas} (in the order given): merge records of one eta")
    points, seen = [], set()
    for part in parts:
        part_grid = GRIDS[part["meta"].get("grid_name", "share400")]
        ours, theirs = (grid.model, grid.max_iters, grid.warmup_key), (part_grid.model, part_grid.max_iters, part_grid.warmup_key)
        if theirs != ours:
            differ = [name for name, a, b in zip(("model", "max_iters", "warmup axis"), theirs, ours) if a != b]
            raise SystemExit(f"a part of grid {part['meta'].get('grid_name', 'share400')!r} differs from {grid_name!r} "
                             f"in its {', '.join(differ)}: merge only parts whose runs are the grid's")
        for point in part["points"]:
            key = (point["params"]["schedule.lr"], point["params"][grid.warmup_key])
            if key not in grid.points():
                raise SystemExit(f"point lr={key[0]:g}, warmup={key[1]:g} is not in the grid {grid_name!r} (lrs "
                                 f"{', '.join(f'{lr:g}' for lr in grid.lrs)}; warmups {', '.join(f'{w:g}' for w in grid.warmups)})")
            if key in seen:
                raise SystemExit(f"point lr={key[0]:g}, warmup={key[1]:g} is in two parts")
            seen.add(key)
            points.append(point)
    meta = {**parts[0]["meta"], "grid_name": grid_name, "grid": {"schedule.lr": grid.lrs, grid.warmup_key: grid.warmups},
            "command": " ; ".join(p["meta"]["command"] for p in parts), "parts": [p["meta"] for p in parts]}
    return {"meta": meta, "points": points, "noise": [n for p in parts for n in p["noise"]]}


def long_horizons(grid: Grid) -> tuple:
    """The rungs a trial of the grid's horizon has with 4 rungs at eta 3, its last three (the
    first of four lies in the loss's first fall on these grids), then 4x and 10x its horizon: the
    long runs those three should predict. share400: 44, 133, 400, 1600, 4000."""
    h = grid.max_iters
    return (round(h / 9), round(h / 3), h, 4 * h, 10 * h)


def record_long(out: Path, workdir: Path, lr: float, warmup: float, grid_name: str = "share400") -> None:
    """One config's cooldown trial extended to 10x the trial horizon: its first three rungs are
    those a trial of the grid's horizon has, the last two the long runs (4x, 10x) they should predict."""
    from sweeps.cooldown import Rung

    grid = GRIDS[grid_name]
    horizons = long_horizons(grid)
    name = f"long_{grid_name}_lr{lr:g}_w{warmup:g}"
    cfg = point_config(lr, warmup, workdir, name, grid=grid)
    if grid.warmup_key == "schedule.warmup_fraction":
        cfg.schedule.warmup_iters = round(warmup * cfg.schedule.max_iters)  # the trial's warmup, kept absolute
        cfg.schedule.warmup_fraction = None
    cfg.schedule.max_iters = horizons[-1]
    cfg.eval_interval = horizons[-1]
    fraction = RECORD_RUNGS["cooldown_fraction"]
    rungs = [Rung(i, h, h - round(fraction * h)) for i, h in enumerate(horizons)]
    t0 = time.time()
    result = train_with_rungs(cfg, rungs, RECORD_RUNGS["shape"], on_rung=lambda v: print(
        f"rung {v.rung.index} ({v.rung.horizon} iterations): {v.val_loss:.4f}", flush=True), log=lambda line: None)
    data = json.loads(out.read_text()) if out.is_file() else {"runs": []}
    data["runs"].append({"params": {"schedule.lr": lr, grid.warmup_key: warmup}, "grid_name": grid_name,
                         "config": asdict(cfg),
                         "rungs": [{"horizon": v.rung.horizon, "step": v.step, "val_loss": v.val_loss, "se": v.val_loss_se}
                                   for v in result.values],
                         "command": " ".join(sys.argv), "wall_s": round(time.time() - t0, 1),
                         "date": time.strftime("%Y-%m-%d %H:%M"), "load_before": os.getloadavg()})
    save_json(out, data, indent=1)
    shutil.rmtree(workdir / name, ignore_errors=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record", help="train the grid's cosine runs and cooldown trials")
    rec.add_argument("--out", type=Path, required=True)
    rec.add_argument("--workdir", type=Path, default=Path("outputs/bench_cooldown"))
    rec.add_argument("--lrs", help="comma-separated subset of the grid's lrs (several processes at once); "
                                   "then `merge` their files and `record` once more for the noise seeds")
    rec.add_argument("--no-noise", action="store_true", help="skip the best point's extra seeds")
    rec.add_argument("--grid", choices=sorted(GRIDS), default="share400", help="the grid's warmups and horizon")
    rec.add_argument("--eta", type=int, default=RECORD_RUNGS["eta"],
                     help=f"the cooldown trials' rungs at max_iters / eta^k (default {RECORD_RUNGS['eta']})")
    rec.add_argument("--cosine-from", type=Path, help="a record of the same grid and seed: its cosine runs are "
                     "kept and only the cooldown trials trained (with --eta)")
    rec.add_argument("--seed", type=int, default=RECORD_SEED,
                     help=f"train the grid at this seed (default {RECORD_SEED}; another is a whole grid for replay --seeds)")
    sds = sub.add_parser("seeds", help="every point's cosine ground truth again at more seeds")
    sds.add_argument("record", type=Path)
    sds.add_argument("--out", type=Path, required=True)
    sds.add_argument("--seeds", default="1,2", help="comma-separated seeds (the record's runs are seed 1337)")
    sds.add_argument("--workdir", type=Path, default=Path("outputs/bench_cooldown"))
    sds.add_argument("--lrs", help="comma-separated subset of the grid's lrs (several processes, one --out each)")
    lon = sub.add_parser("long", help="one config's rungs out to 10x the trial horizon (the prediction check)")
    lon.add_argument("--out", type=Path, required=True)
    lon.add_argument("--workdir", type=Path, default=Path("outputs/bench_cooldown"))
    lon.add_argument("--lr", type=float, required=True)
    lon.add_argument("--warmup", type=float, required=True, help="as the grid's warmup axis: a share, or iterations")
    lon.add_argument("--grid", choices=sorted(GRIDS), default="share400", help="the grid whose trial horizon is extended")
    prd = sub.add_parser("predict", help="the power law of each `long` run's first three rungs against its last two")
    prd.add_argument("record", type=Path, help="a `long` --out file")
    mer = sub.add_parser("merge", help="merge record files of grid subsets into --out")
    mer.add_argument("parts", type=Path, nargs="+")
    mer.add_argument("--out", type=Path, required=True)
    mer.add_argument("--grid", choices=sorted(GRIDS), help="the merged file's grid (default: the first part's); "
                     "a part of a smaller grid whose points it holds fills it in")
    rep = sub.add_parser("replay", help="score the methods on a recorded grid")
    rep.add_argument("record", type=Path)
    rep.add_argument("--orders", type=int, default=200)
    rep.add_argument("--seed", type=int, default=0)
    rep.add_argument("--json", type=Path)
    rep.add_argument("--seeds", type=Path, nargs="*", help="`seeds` outputs: each point's truth its mean over seeds")
    rep.add_argument("--warmups", help="comma-separated warmups: replay only the grid's points at these (a smaller study)")
    liv = sub.add_parser("live", help="a live study of the recorded grid (sweep lr_warmup_iters_grid) against the record")
    liv.add_argument("record", type=Path)
    liv.add_argument("--storage", required=True)
    liv.add_argument("--study", required=True)
    liv.add_argument("--rungs", type=int, default=4, help="the study's study.rungs.count")
    liv.add_argument("--json", type=Path)
    liv.add_argument("--seeds", type=Path, nargs="*", help="`seeds` outputs: each point's truth its mean over seeds")
    liv.add_argument("--warmups", help="comma-separated warmups: the grid's points at these only (the study's grid)")
    args = ap.parse_args(argv)
    args.command_line = " ".join(sys.argv)
    if args.command == "record":
        lrs = tuple(float(x) for x in args.lrs.split(",")) if args.lrs else None
        record(args.out, args.workdir, lrs, noise=not args.no_noise, grid_name=args.grid, seed=args.seed,
               eta=args.eta, cosine_from=args.cosine_from)
        return 0
    if args.command == "seeds":
        try:
            seeds = tuple(int(x) for x in args.seeds.split(","))
        except ValueError:
            raise SystemExit(f"--seeds {args.seeds!r}: give comma-separated integers, e.g. 1,2") from None
        if RECORD_SEED in seeds:
            raise SystemExit(f"--seeds: {RECORD_SEED} is the seed the record's own runs were trained at; pick others")
        lrs = tuple(float(x) for x in args.lrs.split(",")) if args.lrs else None
        record_seeds(args.record, args.out, args.workdir, seeds, lrs)
        return 0
    if args.command == "long":
        record_long(args.out, args.workdir, args.lr, args.warmup, args.grid)
        return 0
    if args.command == "merge":
        save_json(args.out, merge_records([json.loads(p.read_text()) for p in args.parts], args.grid))
        return 0
    from bench.cooldown_replay import live_main, long_main, replay_main
    return {"live": live_main, "predict": long_main}.get(args.command, replay_main)(args)


if __name__ == "__main__":
    raise SystemExit(main())
