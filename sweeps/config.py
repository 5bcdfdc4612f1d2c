"""Typed configuration of a study: the trainer's TrainConfig plus `study`, `sweep` and `mode`.

Registered in Hydra's ConfigStore as the schema of `conf/study_runner.yaml`, so a typo in a study
override (`study.n_trial=5`) fails before any training starts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, Literal, Optional, get_args

from hydra.core.config_store import ConfigStore

from sweeps.storage import GRACE_PERIOD_S, HEARTBEAT_INTERVAL_S
from trainer import DECAY_SHAPES, TrainConfig

# A trial's value is its best val loss, so a study minimizes it (OmegaConf rejects Literal
# fields, so the fields are str and these aliases hold the valid values).
Direction = Literal["minimize"]
Mode = Literal["sweep", "best", "report", "plan"]
LauncherName = Literal["none", "local", "slurm"]  # none: this process is the study's one worker
Fidelity = Literal["full", "cooldown"]  # how a trial is judged: its whole run | decayed losses at rungs
DIRECTIONS = get_args(Direction)
MODES = get_args(Mode)
LAUNCHERS = get_args(LauncherName)
FIDELITIES = get_args(Fidelity)


class StudyError(ValueError):
    """A study that cannot be run as asked; the message says what would work."""


# A study's name is also its folder (outputs/studies/NAME) and a Hydra override value (mode=best
# passes out_dir=...), so it is one plain path component that Hydra's grammar reads as is.
STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def check_study_name(name: str) -> str:
    """`name`, or StudyError unless it is 1-100 letters, digits, '_', '-' or '.' (not first), without '..'."""
    if not isinstance(name, str) or not STUDY_NAME.fullmatch(name) or ".." in name:
        raise StudyError(f"study name {name!r} is invalid: use 1-100 letters, digits, '_', '-' and '.', "
                         f"starting with a letter or digit (it names the folder outputs/studies/NAME)")
    return name


@dataclass
class SamplerConfig:
    name: str = "tpe"  # tpe | random | cmaes | qmc | grid
    seed: Optional[int] = 0  # seeds the sampler; null for a fresh seed per process
    n_startup_trials: int = 4  # tpe/cmaes: random trials before the model takes over


@dataclass
class PrunerConfig:
    # auto: plateau, or asha with study.fidelity=cooldown
    name: str = "auto"  # auto | plateau | median | percentile | patient | successive_halving | hyperband | asha | none
    percentile: float = 50.0  # plateau/percentile: the level of the other trials to beat
    patience: int = 3  # plateau/patient: evaluations over which recent improvement is measured
    min_evals: int = 4  # plateau: never prune before this many evaluations
    z: float = 1.0  # plateau: differences below z standard errors (paired over the val batches) count as none
    n_startup_trials: int = 4  # plateau/median/percentile: finished trials before pruning a stall
    n_warmup_steps: int = 0  # median/percentile/patient: steps (tokens) before pruning starts
    min_resource: Optional[int] = None  # successive_halving/hyperband; null: Optuna's "auto"
    reduction_factor: int = 3  # successive_halving/hyperband


@dataclass
class RungsConfig:
    """study.fidelity=cooldown: where trials are judged (sweeps.cooldown)."""
    count: int = 4  # rungs; horizons max_iters / eta^k for k = count-1 .. 0
    eta: int = 3  # horizon ratio between rungs; asha keeps the top 1/eta of the trials at a rung
    cooldown_fraction: float = 0.2  # each rung's cooldown: this share of its horizon, down to min_lr
    shape: str = "1-sqrt"  # the cooldown's shape: 1-sqrt | linear (trainer.config.DecayShape)
    # asha: a trial outside the top 1/eta pauses (its checkpoint kept) and is continued once it is
    # in the top of the trials at its rung (sweeps.promotions); false: it is pruned, and while
    # fewer than eta trials reached a rung they all go on; null: on wherever asha prunes
    promotions: Optional[bool] = None


@dataclass
class StudyConfig:
    name: Optional[str] = None  # null: the sweep's name
    storage: str = "sqlite:///outputs/optuna.db"  # any SQLAlchemy URL
    n_trials: int = 12  # configs with a finished trial the study should hold; a resumed study runs only the rest
    direction: str = "minimize"  # Direction
    baseline: bool = True  # a new study's trial 0 is the config as given, unswept (not with grid)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    pruner: PrunerConfig = field(default_factory=PrunerConfig)
    fidelity: str = "full"  # Fidelity; cooldown: judge trials on decayed losses at rungs (sweeps.cooldown)
    rungs: RungsConfig = field(default_factory=RungsConfig)
    workers: str = "1"  # worker processes on this machine, one GPU each; auto: one per visible GPU
    heartbeat_interval: int = HEARTBEAT_INTERVAL_S  # seconds
    grace_period: int = GRACE_PERIOD_S  # seconds


@dataclass
class SweepConfig:
    name: str = "???"
    description: str = ""
    # config path or group -> Hydra sweep grammar, as hydra-optuna-sweeper's `params:`
    params: Dict[str, str] = field(default_factory=dict)
    # "param=value" -> params searched only where that choice is taken (sweeps.search_space)
    when: Dict[str, Dict[str, str]] = field(default_factory=dict)


@dataclass
class LauncherConfig:
    """`launcher=slurm|local` (conf/launcher/): the study's workers as a job array (sweeps.launch)."""
    name: str = "none"  # LauncherName
    array_size: int = 4  # tasks in the job array, each one worker on the study
    max_parallel: Optional[int] = None  # slurm: tasks running at once (the array's %N); null: all
    partition: Optional[str] = None  # slurm partition; null: the cluster's default
    gpus_per_task: int = 1
    cpus_per_task: int = 8
    mem_gb: Optional[int] = None  # null: the partition's default
    timeout_min: int = 240  # a task's time limit; at it SLURM sends SIGTERM and the trial is queued again
    slurm_additional: Dict[str, str] = field(default_factory=dict)  # e.g. {account: lab, qos: high}
    wait: bool = False  # wait for every task to end, failing if one failed (local always waits)


@dataclass
class PlanConfig:
    """What `mode=plan` (and the short plan a sweep prints first) assumes about the GPU and the long run."""

    mfu: float = 0.3  # the model FLOPs utilization hours are estimated at
    gpu_tflops: Optional[float] = None  # the target GPU's bf16 peak; null: the visible GPU's, else an RTX 4070's
    gpu_mem_gb: Optional[float] = None  # the target GPU's memory in GiB; null: the visible GPU's, else 12
    long_run_iters: int = 20000  # the intended long run's iterations (at the baseline's tokens per iteration)


@dataclass
class RunnerConfig(TrainConfig):
    mode: str = "sweep"  # Mode; sweep: run the study | best: re-run its best trial long | report: write
    # the report folder of a stored study | plan: print the plan
    verbose: bool = False  # sweep: each trial's per-iteration log on the console too (always in its train.log)
    study: StudyConfig = field(default_factory=StudyConfig)
    sweep: Optional[SweepConfig] = None
    plan: PlanConfig = field(default_factory=PlanConfig)
    launcher: LauncherConfig = field(default_factory=LauncherConfig)


def register_configs() -> None:
    ConfigStore.instance().store(name="study_runner_schema", node=RunnerConfig)


def check_study(study: StudyConfig) -> None:
    """StudyError for study settings that cannot work, before anything is opened or trained."""
    if study.n_trials <= 0:
        raise StudyError(f"study.n_trials={study.n_trials} is invalid: must be a positive integer")
    if study.fidelity not in FIDELITIES:
        raise StudyError(f"study.fidelity={study.fidelity!r} is invalid: valid: {', '.join(FIDELITIES)}")
    _check_pruner_fits_fidelity(study.pruner.name, study.fidelity)
    if study.rungs.promotions and not promotions_on(study):
        raise StudyError(f"study.rungs.promotions=true continues trials that asha paused at a cooldown rung, but "
                         f"this study has study.fidelity={study.fidelity} and study.pruner.name={study.pruner.name}; "
                         f"use study.fidelity=cooldown with study.pruner.name=asha (or auto), or drop the promotions")
    if study.fidelity == "cooldown" and study.rungs.shape not in DECAY_SHAPES:
        raise StudyError(f"study.rungs.shape={study.rungs.shape!r} is invalid: valid: {', '.join(DECAY_SHAPES)}")
    if study.direction not in DIRECTIONS:
        raise StudyError(f"study.direction={study.direction!r} is invalid: a trial's value is its best "
                         f"val loss, which the study minimizes; valid: {', '.join(DIRECTIONS)}")


# Pruners that judge a trial's raw curve, and those that judge decayed losses at rungs.
RUNG_PRUNERS = ("asha", "none", "auto")


def promotions_on(study: StudyConfig) -> bool:
    """Whether asha pauses and continues trials (sweeps.promotions): with study.fidelity=cooldown and
    the asha pruner (auto's there), unless study.rungs.promotions=false."""
    asha = str(study.pruner.name).strip().lower() in ("asha", "auto")
    return study.fidelity == "cooldown" and asha and study.rungs.promotions is not False


def _check_pruner_fits_fidelity(pruner: str, fidelity: str) -> None:
    name = str(pruner).strip().lower()
    if fidelity == "cooldown" and name not in RUNG_PRUNERS:
        raise StudyError(f"study.pruner.name={pruner!r} judges raw learning curves, but study.fidelity=cooldown "
                         f"reports decayed losses at rungs; use study.pruner.name=asha (or auto), or none to run "
                         f"every trial to its full length")
    if fidelity == "full" and name == "asha":
        raise StudyError("study.pruner.name='asha' halves trials on the decayed losses of cooldown rungs; add "
                         "study.fidelity=cooldown, or pick a pruner of raw curves (auto: plateau)")


def check_launcher(launcher: LauncherConfig, mode: str) -> None:
    """StudyError for launcher settings that cannot work, before anything is submitted."""
    if launcher.name not in LAUNCHERS:
        raise StudyError(f"launcher.name={launcher.name!r} is invalid: valid: {', '.join(LAUNCHERS)}")
    for key in ("array_size", "timeout_min", "cpus_per_task"):
        if getattr(launcher, key) < 1:
            raise StudyError(f"launcher.{key}={getattr(launcher, key)} is invalid: must be a positive integer")
    if launcher.gpus_per_task < 0:
        raise StudyError(f"launcher.gpus_per_task={launcher.gpus_per_task} is invalid: must be >= 0")
    if launcher.name != "none" and mode != "sweep":
        raise StudyError(f"launcher={launcher.name} starts sweep workers, not mode={mode}: run mode={mode} "
                         f"without a launcher (on a cluster, inside a job of its own)")


def check_plan(plan: PlanConfig) -> None:
    """StudyError for plan settings that cannot be meant."""
    checks = [("plan.mfu", plan.mfu, 0 < plan.mfu <= 1, "must be in (0, 1], a share of the peak"),
              ("plan.gpu_tflops", plan.gpu_tflops, plan.gpu_tflops is None or plan.gpu_tflops > 0, "must be > 0 or null"),
              ("plan.gpu_mem_gb", plan.gpu_mem_gb, plan.gpu_mem_gb is None or plan.gpu_mem_gb > 0, "must be > 0 or null"),
              ("plan.long_run_iters", plan.long_run_iters, plan.long_run_iters > 0, "must be a positive integer")]
    for key, value, ok, valid in checks:
        if not ok:
            raise StudyError(f"{key}={value!r} is invalid: {valid}")
