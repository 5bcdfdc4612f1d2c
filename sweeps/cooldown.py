"""Cooldown multi-fidelity: a trial's stable phase is shared by every horizon it is judged at.

With `study.fidelity=cooldown` a trial trains warmup and then a constant LR. At each rung it
branches: from the stable phase's checkpoint at the rung's decay start, a cooldown to min_lr
over `cooldown_fraction` of the rung's horizon (linear or 1-sqrt) ends exactly at the horizon,
and that branch's val loss is the trial's value at the rung: the loss of a warmup-stable-decay
run of that length (MiniCPM; Hägele et al. 2024: such a cooldown matches a cosine run of the same
length). The stable phase then goes on from the same checkpoint, so nothing before a rung is
trained twice. Rung horizons are `max_iters / eta^k` (k = count-1 .. 0): the last rung's branch
is the trial's full-length run, whose stable part is kept as the trial's checkpoint for the long
run (sweeps.best_run continues it). A rung whose cooldown would start inside the trial's warmup is
skipped for that trial (its branch would decay an LR still warming up and so judge the warmup's
length, not the config); the last rung never is.

This module runs one trial's rungs (`train_with_rungs`) through `trainer.train` alone; the
objective reports each rung's value and the pruner (sweeps.rung_pruner) decides whether the
stable phase goes on past it.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional

from sweeps.resume_checks import run_settings
from trainer import (CHECKPOINT_NAME, ConfigError, EvalMetrics, TrainConfig, TrainResult, as_train_config, min_lr_of,
                     tokens_per_iter, train, warmup_iters_of, wsd_decay_start)

BRANCHES_DIR = "cooldown"  # in a trial's run dir: one folder per rung's branch


@dataclass(frozen=True)
class Rung:
    """One horizon a trial is judged at, in iterations."""

    index: int  # 0 for the shortest
    horizon: int  # the branch ends here: its val loss is that of a warmup-stable-decay run this long
    decay_start: int  # the stable phase's iteration the branch starts its cooldown from

    @property
    def cooldown_iters(self) -> int:
        return self.horizon - self.decay_start


@dataclass
class RungValue:
    """What a rung's branch measured."""

    rung: Rung
    step: int  # the horizon in training tokens: the step the objective reports the value at
    val_loss: float
    val_loss_se: float
    branch_dir: str


@dataclass
class RungsResult:
    status: str  # completed (every rung) | stopped (on_rung asked) | diverged
    stop_reason: str
    values: List[RungValue] = field(default_factory=list)
    stable: Optional[TrainResult] = None  # the stable phase's last segment
    tokens_trained: int = 0  # the stable phase's tokens plus every branch's
    branch_tokens: int = 0  # the branches' share of tokens_trained
    wall_time_s: float = 0.0
    ms_per_iter: float = float("nan")

    @property
    def value(self) -> Optional[float]:
        """The decayed val loss at the last rung reached."""
        return self.values[-1].val_loss if self.values else None


def rungs_of(max_iters: int, count: int, eta: int, cooldown_fraction: float) -> List[Rung]:
    """The rungs of a trial of `max_iters` iterations: horizons max_iters / eta^k, shortest first,
    each with its last `cooldown_fraction` of iterations as the branch's cooldown (as a wsd
    schedule of that length places it). ConfigError for rungs that cannot be told apart."""
    if count < 1 or eta < 2:
        raise ConfigError(f"study.rungs: count={count}, eta={eta} is invalid: count >= 1 and eta >= 2")
    if not 0.0 < cooldown_fraction < 1.0:
        raise ConfigError(f"study.rungs.cooldown_fraction={cooldown_fraction!r} is invalid: must be in (0, 1)")
    rungs = []
    for index in range(count):
        horizon = round(max_iters / eta ** (count - 1 - index))
        decay_start = horizon - round(cooldown_fraction * horizon)
        rungs.append(Rung(index, horizon, decay_start))
    starts = [r.decay_start for r in rungs]
    if starts[0] < 1 or any(r.cooldown_iters < 1 for r in rungs) or len(set(starts)) < count:
        raise ConfigError(f"study.rungs: {count} rungs at eta={eta} of max_iters={max_iters} give horizons "
                          f"{[r.horizon for r in rungs]} with cooldowns from {starts}: the shortest needs at "
                          f"least one stable and one cooldown iteration; use fewer rungs, a smaller eta or a "
                          f"longer run")
    return rungs


def judged_after_warmup(rung: Rung, warmup_iters: int, rungs: List[Rung]) -> bool:
    """Whether a trial with this warmup branches at `rung`: only once its warmup is over (a
    cooldown from an LR still warming up judges the warmup's length, not the config), and always
    at the last rung, its full length."""
    return rung.decay_start >= warmup_iters or rung.index == rungs[-1].index


def trained_iters(rungs: List[Rung]) -> int:
    """The iterations a trial that reaches the last rung trains: its stable phase and every branch."""
    return rungs[-1].decay_start + sum(r.cooldown_iters for r in rungs)


def stable_config(cfg: TrainConfig, until: int, resume: bool) -> TrainConfig:
    """The trial's stable phase up to iteration `until`: its warmup (in iterations of the full
    trial, so every segment warms up alike) and then its peak LR, checkpointed at every evaluation."""
    schedule = dataclasses.replace(cfg.schedule, name="constant", max_iters=until,
                                   warmup_iters=warmup_iters_of(cfg.schedule), warmup_fraction=None)
    return dataclasses.replace(cfg, schedule=schedule, checkpoint="last",
                               init_from="resume" if resume else "scratch")


def branch_config(cfg: TrainConfig, rung: Rung, branch_dir: Path, shape: str) -> TrainConfig:
    """The cooldown branch of `rung`: a wsd schedule of the rung's horizon (the trial's warmup, lr
    and min_lr) resumed at its decay start, evaluated once, at its end."""
    s = cfg.schedule
    schedule = dataclasses.replace(
        s, name="wsd", max_iters=rung.horizon, warmup_iters=warmup_iters_of(s), warmup_fraction=None,
        min_lr=min_lr_of(s), min_lr_ratio=None, decay_fraction=rung.cooldown_iters / rung.horizon, decay_shape=shape)
    branch = dataclasses.replace(cfg, schedule=schedule, out_dir=str(branch_dir), eval_interval=rung.horizon,
                                 checkpoint="last", init_from="resume")
    assert wsd_decay_start(branch.schedule) == rung.decay_start, (rung, branch.schedule)
    return branch


def copy_atomically(source: Path, target: Path) -> None:
    """Copy `source` over `target` through a temp file of its own: a kill mid-copy leaves `target`
    as it was, and processes copying the same file at once all leave it whole."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# What a cooldown trial trains as given: its peak LR, its warmup and the min_lr it decays to. The
# rest of a schedule (its name, decay, length) is the rungs' own, so a search over it would be ignored.
SCHEDULE_KEYS_KEPT = ("schedule.lr", "schedule.min_lr", "schedule.min_lr_ratio", "schedule.warmup_iters",
                      "schedule.warmup_fraction")


def check_cooldown_study(max_iters: int, count: int, eta: int, cooldown_fraction: float,
                         searched: List[str], warmup_iters: int) -> List[str]:
    """ConfigError for a cooldown study that cannot work: rungs that cannot be told apart, or a
    search over a schedule setting the rungs replace. Returns warnings: a warmup that runs past
    the cooldown start of early rungs (those rungs judge an LR still warming up)."""
    rungs = rungs_of(max_iters, count, eta, cooldown_fraction)
    ignored = [k for k in searched if (k == "schedule" or k.startswith("schedule.")) and k not in SCHEDULE_KEYS_KEPT]
    if ignored:
        raise ConfigError(f"study.fidelity=cooldown trains every trial as warmup, a constant LR and a cooldown at "
                          f"each rung, so the sweep's {', '.join(ignored)} would be ignored; search only "
                          f"{', '.join(SCHEDULE_KEYS_KEPT)} of the schedule, or use study.fidelity=full")
    early = [r for r in rungs if r.decay_start < warmup_iters]
    if not early:
        return []
    return [f"the baseline's warmup ({warmup_iters} iterations) runs past the cooldown start of rung(s) "
            f"{', '.join(str(r.index) for r in early)} (from iteration {early[0].decay_start}): a trial is judged only "
            f"at rungs after its warmup, so trials with long warmups train further before their first judgement"]


def stable_phase_settings(train_cfg: dict) -> dict:
    """What a stable phase trains, flat: a checkpoint of it continues, as another run's stable
    phase, only where these are equal (its length, decay and min_lr are the rungs' or the long
    run's own; the warmup counts in iterations)."""
    cfg = as_train_config(train_cfg)
    settings = {k: v for k, v in run_settings(dataclasses.asdict(cfg)).items() if not k.startswith("schedule.")}
    return {**settings, "schedule.lr": cfg.schedule.lr, "schedule.warmup_iters": warmup_iters_of(cfg.schedule)}


OnRung = Callable[[RungValue], Optional[str]]  # returns a reason to stop past this rung, or None


def train_with_rungs(cfg: TrainConfig, rungs: List[Rung], shape: str, on_rung: OnRung,
                     on_stable_eval: Optional[Callable[[EvalMetrics], Optional[str]]] = None,
                     log: Optional[Callable[[str], None]] = None,
                     carried: Optional[List[RungValue]] = None) -> RungsResult:
    """Train `cfg`'s stable phase rung by rung, branching a cooldown at each; `on_rung` after each
    branch may stop the trial there. The stable phase lives in cfg.out_dir (its checkpoint is the
    trial's); each branch in out_dir/cooldown/rung_K, of which only the latest keeps its checkpoint
    (the trial's decayed model). With `carried` (the first rungs' values, from an earlier attempt
    whose stable-phase checkpoint is in out_dir) it resumes that checkpoint and goes on from the
    next rung."""
    out_dir = Path(cfg.out_dir)
    per_iter = tokens_per_iter(cfg)
    result = RungsResult(status="completed", stop_reason="completed its budget", values=list(carried or []))
    previous_branch: Optional[Path] = None
    warmup = warmup_iters_of(cfg.schedule)
    done = {v.rung.index for v in result.values}
    started = cfg.init_from == "resume"
    for rung in rungs:
        if rung.index in done or not judged_after_warmup(rung, warmup, rungs):
            continue  # carried from an earlier attempt; or a branch that would decay an LR still warming up
        stable = train(stable_config(cfg, rung.decay_start, resume=started), on_eval=on_stable_eval, log=log)
        started = True
        result.stable = stable
        result.wall_time_s += stable.wall_time_s
        if stable.status != "completed":
            result.status, result.stop_reason = stable.status, stable.stop_reason
            break
        branch_dir = out_dir / BRANCHES_DIR / f"rung_{rung.index}"
        copy_atomically(out_dir / CHECKPOINT_NAME, branch_dir / CHECKPOINT_NAME)
        if log is not None:
            log(f"rung {rung.index}: cooldown from iteration {rung.decay_start} to {rung.horizon} ({shape})")
        branch = train(branch_config(cfg, rung, branch_dir, shape), log=log)
        result.wall_time_s += branch.wall_time_s
        result.branch_tokens += rung.cooldown_iters * per_iter
        if branch.status != "completed" or branch.last_eval is None:
            result.status, result.stop_reason = "diverged", f"rung {rung.index}'s cooldown: {branch.stop_reason}"
            break
        if previous_branch is not None:  # only the latest decayed model is kept
            (previous_branch / CHECKPOINT_NAME).unlink(missing_ok=True)
        previous_branch = branch_dir
        value = RungValue(rung, rung.horizon * per_iter, branch.last_eval.val_loss, branch.last_eval.val_loss_se,
                          str(branch_dir))
        result.values.append(value)
        reason = on_rung(value)
        if reason and rung.index < len(rungs) - 1:
            result.status, result.stop_reason = "stopped", reason
            break
    if result.stable is None:  # every rung was carried: the stable phase is where the earlier attempt left it
        result.stable = train(stable_config(cfg, rungs[-1].decay_start, resume=True), log=log)
    stable_iters = result.stable.iters
    result.tokens_trained = stable_iters * per_iter + result.branch_tokens
    result.ms_per_iter = result.stable.ms_per_iter if result.stable is not None else float("nan")
    return result
