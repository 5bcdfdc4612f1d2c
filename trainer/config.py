"""Typed configuration of a training run.

The CLIs register these dataclasses in Hydra's ConfigStore as their configs' schema
(`trainer/__main__.py` for `conf/train.yaml`; `study_runner.py` extends them), so a mistyped override (`schedule.lrr=1e-3`) fails at
once instead of being silently ignored; the library itself needs no Hydra. Key names follow
nanoGPT's train.py (`n_layer`, `lr`, `min_lr`, `warmup_iters`, ...).

Enum-like fields are typed `str` because OmegaConf's structured configs reject `Literal`; each
names its `Literal` alias, whose values `check_config` accepts and nothing else re-lists.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Literal, Optional, get_args

ScheduleName = Literal["cosine", "constant", "wsd"]
DecayShape = Literal["linear", "1-sqrt"]
OptimName = Literal["adamw", "muon"]
DType = Literal["auto", "float32", "bfloat16", "float16"]
CheckpointPolicy = Literal["best", "last", "none"]
InitFrom = Literal["scratch", "resume"]
SCHEDULE_NAMES = get_args(ScheduleName)
DECAY_SHAPES = get_args(DecayShape)
OPTIM_NAMES = get_args(OptimName)
DTYPES = get_args(DType)
CHECKPOINT_POLICIES = get_args(CheckpointPolicy)
INIT_FROM = get_args(InitFrom)


@dataclass
class ModelConfig:
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    block_size: int = 1024
    bias: bool = False
    dropout: float = 0.0
    vocab_size: int = 50304  # GPT-2's 50257 padded up to a multiple of 64 for speed


@dataclass
class DataConfig:
    name: str = "sample"  # sample: the embedded Shakespeare plays; parquet: your files
    files: List[str] = field(default_factory=list)  # parquet files or globs
    val_files: List[str] = field(default_factory=list)  # when set, val comes from these
    text_column: str = "text"
    val_fraction: float = 0.005  # share of documents held out for val (when no val_files)
    split_seed: int = 1337  # which documents go to val
    tokenizer: str = "r50k_base"  # a tiktoken encoding (r50k_base: the ids of "gpt2"), or bytes (UTF-8, 257 ids)
    cache_dir: str = "outputs/data_cache"  # tokenized splits, reused across runs


@dataclass
class ScheduleConfig:
    name: str = "cosine"  # ScheduleName
    lr: float = 6e-4  # peak learning rate (nanoGPT's learning_rate)
    min_lr: float = 6e-5
    min_lr_ratio: Optional[float] = None  # when set, min_lr = lr * min_lr_ratio
    max_iters: int = 5000
    warmup_iters: int = 100
    warmup_fraction: Optional[float] = None  # when set, warmup_iters = round(max_iters * fraction)
    lr_decay_iters: Optional[int] = None  # None: follows max_iters
    lr_decay_fraction: Optional[float] = None  # when set, lr_decay_iters = round(max_iters * fraction)
    decay_fraction: float = 0.2  # wsd: share of max_iters spent decaying to min_lr
    decay_shape: str = "linear"  # DecayShape; wsd: linear, or 1-sqrt (Hägele et al. 2024: lower loss)


@dataclass
class OptimConfig:
    name: str = "adamw"  # OptimName
    weight_decay: float = 0.1  # applied to 2-D weights only
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0  # 0 disables clipping
    muon_lr: float = 0.02  # muon: peak LR of the blocks' 2-D weights (the rest: schedule.lr)
    muon_momentum: float = 0.95  # muon


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    batch_size: int = 12  # micro-batch, sequences
    gradient_accumulation_steps: int = 1
    eval_interval: int = 250  # iterations between evaluations
    eval_iters: int = 20  # batches per evaluation
    log_interval: int = 10
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # DType
    compile: bool = False
    seed: int = 1337
    out_dir: str = "outputs/runs/default"
    checkpoint: str = "best"  # CheckpointPolicy; best: on val improvement (nanoGPT) | last: every eval
    init_from: str = "scratch"  # InitFrom; resume: from out_dir/ckpt.pt
    # the peak FLOP/s MFU is measured against; null: the GPU's own (trainer.estimate.GPU_PEAK_TFLOPS).
    # MFU is shown on GPUs only.
    mfu_peak_flops: Optional[float] = None


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names it and what would be valid.
    `key` is the setting whose own check failed ("model.dropout"), when one did."""

    def __init__(self, message: str, key: Optional[str] = None):
        super().__init__(message)
        self.key = key


def as_train_config(cfg) -> TrainConfig:
    """A TrainConfig from a TrainConfig, a DictConfig or a dict holding (at least) its keys.

    Keys of a larger config (a study's `study`, `sweep`, `mode`) are dropped; every kept key is
    type-checked against the schema. Always a new object: the caller's config is never changed."""
    from dataclasses import fields

    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, TrainConfig):
        container = OmegaConf.structured(cfg)
    elif isinstance(cfg, DictConfig):
        container = cfg
    else:
        container = OmegaConf.create(cfg)
    names = {f.name for f in fields(TrainConfig)}
    subset = {k: container[k] for k in container if k in names}
    merged = OmegaConf.merge(OmegaConf.structured(TrainConfig), subset)
    return OmegaConf.to_object(merged)


def _need(ok: bool, key: str, value, valid: str, own: bool = True) -> None:
    """ConfigError unless `ok`; `own=False` for a rule between two settings (the error then
    names no single field, so a search over one of them is not refused up front)."""
    if not ok:
        raise ConfigError(f"{key}={value!r} is invalid: {valid}", key=key if own else None)


def check_model(m: ModelConfig) -> None:
    """Raise ConfigError for an architecture that cannot be built (the GPT checks with this too)."""
    for key in ("n_layer", "n_head", "n_embd", "block_size"):
        _need(getattr(m, key) > 0, f"model.{key}", getattr(m, key), "must be a positive integer")
    _need(m.n_embd % m.n_head == 0, "model.n_embd", m.n_embd, f"must be divisible by model.n_head={m.n_head}",
          own=False)
    _need(0.0 <= m.dropout < 1.0, "model.dropout", m.dropout, "must be in [0, 1)")


def check_config(cfg: TrainConfig) -> None:
    """Raise ConfigError for values that cannot work, before any data or model is touched."""
    need = _need
    m, s, o = cfg.model, cfg.schedule, cfg.optim
    check_model(m)
    for key, value in [("batch_size", cfg.batch_size),
                       ("gradient_accumulation_steps", cfg.gradient_accumulation_steps),
                       ("eval_interval", cfg.eval_interval), ("eval_iters", cfg.eval_iters),
                       ("log_interval", cfg.log_interval), ("schedule.max_iters", s.max_iters)]:
        need(value > 0, key, value, "must be a positive integer")
    need(s.name in SCHEDULE_NAMES, "schedule.name", s.name, f"valid: {', '.join(SCHEDULE_NAMES)}")
    need(math.isfinite(s.lr) and s.lr > 0, "schedule.lr", s.lr, "must be a finite number > 0")
    need(math.isfinite(s.min_lr) and s.min_lr >= 0, "schedule.min_lr", s.min_lr, "must be a finite number >= 0")
    need(s.min_lr <= s.lr or s.min_lr_ratio is not None, "schedule.min_lr", s.min_lr,
         f"must not exceed schedule.lr={s.lr}", own=False)
    need(s.min_lr_ratio is None or 0.0 <= s.min_lr_ratio <= 1.0, "schedule.min_lr_ratio", s.min_lr_ratio,
         "must be in [0, 1] (min_lr = lr * min_lr_ratio)")
    need(s.warmup_iters >= 0, "schedule.warmup_iters", s.warmup_iters, "must be >= 0")
    for key in ("warmup_fraction", "lr_decay_fraction"):
        value = getattr(s, key)
        need(value is None or 0.0 <= value <= 1.0, f"schedule.{key}", value, "must be in [0, 1] or null")
    need(0.0 <= s.decay_fraction <= 1.0, "schedule.decay_fraction", s.decay_fraction, "must be in [0, 1]")
    need(s.decay_shape in DECAY_SHAPES, "schedule.decay_shape", s.decay_shape, f"valid: {', '.join(DECAY_SHAPES)}")
    need(math.isfinite(o.weight_decay) and o.weight_decay >= 0, "optim.weight_decay", o.weight_decay,
         "must be a finite number >= 0")
    need(0.0 <= o.beta1 < 1.0, "optim.beta1", o.beta1, "must be in [0, 1)")
    need(0.0 <= o.beta2 < 1.0, "optim.beta2", o.beta2, "must be in [0, 1)")
    need(math.isfinite(o.grad_clip) and o.grad_clip >= 0, "optim.grad_clip", o.grad_clip,
         "must be a finite number >= 0 (0 disables clipping)")
    need(o.name in OPTIM_NAMES, "optim.name", o.name, f"valid: {', '.join(OPTIM_NAMES)}")
    need(math.isfinite(o.muon_lr) and o.muon_lr > 0, "optim.muon_lr", o.muon_lr, "must be a finite number > 0")
    need(0.0 <= o.muon_momentum < 1.0, "optim.muon_momentum", o.muon_momentum, "must be in [0, 1)")
    need(cfg.dtype in DTYPES, "dtype", cfg.dtype, f"valid: {', '.join(DTYPES)}")
    need(cfg.checkpoint in CHECKPOINT_POLICIES, "checkpoint", cfg.checkpoint,
         f"valid: {', '.join(CHECKPOINT_POLICIES)}")
    need(cfg.init_from in INIT_FROM, "init_from", cfg.init_from, f"valid: {', '.join(INIT_FROM)}")
    dev = cfg.device
    need(dev in ("auto", "cpu", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit()), "device", dev,
         "valid: auto, cpu, cuda, cuda:N")
