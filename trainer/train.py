"""The training loop: nanoGPT's train.py as a function that can run many times in one process.

`train(cfg, on_eval)` returns a TrainResult instead of exiting, and calls `on_eval` after every
evaluation so a caller (a sweep) can stop the run early without this package knowing why. Every
line it prints goes through `log` (default: the console), so a caller can send a run's log to a
file instead. It
reads top to bottom in named stages: `setup` (config, device, data, model, optimizer, resume),
then per iteration `evaluate` (and `write_checkpoint`) and `train_step`, then `result_of`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, List, Optional

import torch
from torch.nn.parallel import DistributedDataParallel

from trainer.checkpoint import (MODEL_ARG_KEYS, check_resumable, load_checkpoint, model_from_checkpoint,
                                save_checkpoint)
from trainer.config import ConfigError, ModelConfig, TrainConfig, as_train_config, check_config
from trainer.data import PreparedData, prepare_data
from trainer.distributed import Ranks, barrier, from_main, ranks_from_env, start, stop
from trainer.estimate import device_peak_flops, flops_per_token
from trainer.memory import keep_freed_memory_mapped
from trainer.model import GPT
from trainer.optim import build_optimizer, set_lr
from trainer.schedule import get_lr, lr_sum, schedule_warnings

CHECKPOINT_NAME = "ckpt.pt"
METRICS_NAME = "metrics.jsonl"


@dataclass
class EvalMetrics:
    iter: int
    tokens: int  # training tokens seen before this evaluation
    epochs: float  # tokens / unique training tokens
    lr: float
    train_loss: float
    val_loss: float
    val_loss_se: float  # standard error of val_loss over the eval batches
    best_val_loss: float  # best so far, this evaluation included
    # The mean val loss of each eval batch, in order. The batches are the same at every
    # evaluation and in every run with the same `val_batches`, so two evaluations can be
    # compared batch by batch (a paired difference has a far smaller standard error).
    val_batch_losses: list = field(default_factory=list)
    val_batches: str = ""  # names the eval batches: data, seed, batch_size, block_size, eval_iters
    # The LR summed over the training tokens before this evaluation (lr x tokens, see lr_area):
    # how much learning the run has done, since Adam moves the weights in proportion to the LR.
    lr_area: float = 0.0


@dataclass
class TrainResult:
    status: str  # completed | stopped (on_eval asked) | diverged (NaN/inf loss)
    stop_reason: str
    best_val_loss: float
    best_iter: int
    iters: int  # iterations run, counted from 0 (a resumed run counts the earlier ones too)
    tokens_seen: int
    epochs: float
    wall_time_s: float
    ms_per_iter: float  # mean over this call's iterations
    num_params: int
    num_params_non_embedding: int  # without token and position embeddings
    tokens_per_iter: int
    unique_train_tokens: int
    out_dir: str
    checkpoint_path: Optional[str]  # None when no checkpoint was written
    last_eval: Optional[EvalMetrics] = None
    evals: list = field(default_factory=list)  # every EvalMetrics of this call


OnEval = Callable[[EvalMetrics], Optional[str]]  # returns a reason to stop, or None to go on
Log = Callable[[str], None]  # takes one line of the run's log


def tokens_per_iter(cfg: TrainConfig) -> int:
    """Training tokens consumed by one optimizer step: the one place this is counted."""
    return cfg.batch_size * cfg.gradient_accumulation_steps * cfg.model.block_size


def eval_points(cfg: TrainConfig) -> list[int]:
    """The iterations at which a run evaluates: 0, every `eval_interval`, and the last one."""
    every = list(range(0, cfg.schedule.max_iters, cfg.eval_interval))
    return every + [cfg.schedule.max_iters]


def lr_area(cfg: TrainConfig, iters: int) -> float:
    """The LR summed over the training tokens of iterations 0 .. iters - 1 (lr x tokens)."""
    return lr_sum(cfg.schedule, 0, iters) * tokens_per_iter(cfg)


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but CUDA is not available here; use device=auto or device=cpu")
    return name


def resolve_dtype(name: str, device: str) -> torch.dtype:
    if name == "auto":
        if device == "cpu":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if name == "float16" and device == "cpu":
        raise ConfigError("dtype='float16' needs a CUDA device; on CPU use dtype=auto, float32 or bfloat16")
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def _batch_generator(seed: int, stream: int) -> torch.Generator:
    # every iteration and every eval split gets its own stream, so resuming needs no RNG state
    return torch.Generator().manual_seed(seed * 1_000_003 + stream)


def _to_device(x: torch.Tensor, device: str) -> torch.Tensor:
    if device.startswith("cuda"):
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


@dataclass
class Run:
    """A run once set up: what the stages read, and the counters they advance."""

    cfg: TrainConfig  # this run's own config (on resume, with the checkpoint's architecture)
    device: str
    log: Log
    autocast: Any  # a context manager: autocast to the run's dtype, or nothing in float32
    data: PreparedData
    raw_model: GPT
    model: torch.nn.Module  # raw_model, or its torch.compile wrapper
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    out_dir: Path
    val_batches: str
    ranks: Ranks = field(default_factory=Ranks)  # under torchrun: this process's rank
    iter_num: int = 0
    start_iter: int = 0  # the iteration this call started at (> 0 when resumed)
    best_val_loss: float = math.inf
    best_iter: int = 0
    lr_summed_to: int = 0  # get_lr is summed over iterations 0 .. lr_summed_to - 1 ...
    lr_summed: float = 0.0  # ... into this

    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / CHECKPOINT_NAME


# -- setup ---------------------------------------------------------------------------------------

def _print_plan(cfg: TrainConfig, model: GPT, data: PreparedData, start_iter: int, log: Log) -> None:
    per_iter = tokens_per_iter(cfg)
    unique = data.train.num_tokens
    planned = cfg.schedule.max_iters * per_iter
    epochs = planned / unique
    n_total = model.get_num_params(non_embedding=False)
    n_blocks = n_total - model.transformer.wte.weight.numel() - model.transformer.wpe.weight.numel()
    log(f"parameters: {n_total / 1e6:.2f}M total, {model.get_num_params() / 1e6:.2f}M without position "
          f"embeddings (nanoGPT's count), {n_blocks / 1e6:.2f}M without any embeddings")
    log(f"tokens per iteration: {per_iter:,} = batch {cfg.batch_size} x accumulation "
          f"{cfg.gradient_accumulation_steps} x block {cfg.model.block_size}")
    log(f"unique training tokens: {unique:,} (val {data.val.num_tokens:,})")
    log(f"planned: {cfg.schedule.max_iters:,} iterations = {planned:,} tokens = {epochs:.2f} epochs"
          + (f" (resuming at iteration {start_iter:,})" if start_iter else ""))
    if epochs > 1:
        log(f"WARNING: the run repeats its training data {epochs:.1f} times; past ~1 epoch val loss "
              f"stops tracking train loss (more data or a shorter run will help more than tuning)")
    for warning in schedule_warnings(cfg.schedule):
        log(f"WARNING: {warning}")


def _prepare_data(cfg: TrainConfig, log: Optional[Log]) -> PreparedData:
    data = prepare_data(cfg.data, log=log)
    data.check_fits(cfg.model.block_size)
    n_vocab = data.meta["vocab_size"]  # the tokenizer's, recorded when the data was tokenized
    if cfg.model.vocab_size < n_vocab:
        raise ConfigError(f"model.vocab_size={cfg.model.vocab_size} is smaller than the tokenizer's "
                          f"{n_vocab} tokens; use at least {n_vocab}, best the next multiple of 64 "
                          f"({-(-n_vocab // 64) * 64})")
    return data


def make_writable_dir(out_dir: Path) -> None:
    """Create `out_dir`, or ConfigError saying why it cannot be used."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"out_dir={str(out_dir)!r} cannot be created ({e.strerror or e}); give a folder "
                          f"this user can write", key="out_dir") from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise ConfigError(f"out_dir={str(out_dir)!r} is not writable by this user; give another folder",
                          key="out_dir")


def logged_records(path: Path) -> tuple[List[dict], int]:
    """The records of a run's `metrics.jsonl` at `path`, in order, and how many lines were left out:
    a line cut short by a kill mid-write (no newline, or not a JSON object)."""
    records, cut = [], 0
    for line in path.read_text().splitlines(keepends=True):
        try:
            record = json.loads(line) if line.endswith("\n") else None
        except ValueError:
            record = None
        if isinstance(record, dict):
            records.append(record)
        elif line.strip():
            cut += 1
    return records, cut


def logged_evals(path: Path) -> List[EvalMetrics]:
    """The evaluations a run's `metrics.jsonl` at `path` holds, in order (none when it is absent).
    Written before the checkpoint and before `on_eval`, they are the run's record of what it
    evaluated, even when it was killed before reporting."""
    if not path.is_file():
        return []
    fields = {f.name for f in dataclasses.fields(EvalMetrics)}
    evals = []
    for record in logged_records(path)[0]:
        if record.get("type") == "eval":
            try:
                evals.append(EvalMetrics(**{k: v for k, v in record.items() if k in fields}))
            except TypeError:  # a record of another version, missing a field
                continue
    return evals


def _trim_metrics_after(path: Path, iter_num: int) -> None:
    """Drop the records `path` holds past `iter_num` (those after the checkpoint a run resumes
    from: the resumed run logs those iterations again), so the file holds one curve."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = []
    for line in lines:
        try:
            if not line.endswith("\n") or json.loads(line)["iter"] > iter_num:  # no newline: cut short
                continue
        except (ValueError, KeyError, TypeError):  # a line cut short by a kill mid-write
            continue
        kept.append(line)
    if len(kept) < len(lines):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(kept))
        os.replace(tmp, path)


def _with_checkpoint_architecture(cfg: TrainConfig, checkpoint: dict) -> TrainConfig:
    """`cfg` with the checkpoint's architecture, as nanoGPT resumes; dropout stays this run's."""
    args = {k: checkpoint["model_args"][k] for k in MODEL_ARG_KEYS if k != "dropout"}
    return dataclasses.replace(cfg, model=ModelConfig(**args, dropout=cfg.model.dropout))


def setup(cfg, log: Optional[Log] = None) -> Run:
    """Check the config, pick device and dtype, prepare the data, and build (or resume) the model
    and optimizer. Every bad setting fails here, before a step is trained. `log` takes the run's
    lines; None: the console (the data's summary on stderr)."""
    cfg = as_train_config(cfg)  # a copy: the caller's config is never changed
    check_config(cfg)
    ranks = ranks_from_env()
    if ranks.enabled and cfg.gradient_accumulation_steps % ranks.world_size:
        raise ConfigError(f"gradient_accumulation_steps={cfg.gradient_accumulation_steps} is invalid under torchrun "
                          f"with {ranks.world_size} processes: must be a multiple of {ranks.world_size} (each "
                          f"process takes an equal share, so the tokens per iteration stay as configured)",
                          key="gradient_accumulation_steps")
    device = resolve_device(cfg.device)
    device_type = "cuda" if device.startswith("cuda") else "cpu"
    if ranks.enabled and device_type == "cuda":
        device = f"cuda:{ranks.local_rank}"  # each process its own GPU
        torch.cuda.set_device(device)
    start(ranks, device_type)
    if not ranks.main:
        log = _silent  # rank 0 speaks for all
    if device_type == "cpu":
        keep_freed_memory_mapped()
    ptdtype = resolve_dtype(cfg.dtype, device)
    # each rank resolved its own config (an out_dir of `${now:...}` can differ by a second): the run's is rank 0's
    cfg = dataclasses.replace(cfg, out_dir=from_main(ranks, cfg.out_dir))
    out_dir = Path(cfg.out_dir)
    ckpt_path = out_dir / CHECKPOINT_NAME
    if cfg.init_from == "resume" and not ckpt_path.is_file():
        raise ConfigError(f"init_from=resume but there is no checkpoint at {ckpt_path}; use init_from=scratch")
    make_writable_dir(out_dir)  # before the data: preparing it can take minutes
    if not ranks.main:
        barrier(ranks)  # rank 0 tokenizes (or checks) the cache first; the others then reuse it
    data = _prepare_data(cfg, log)
    if ranks.main:
        barrier(ranks)
    say = log or print

    torch.manual_seed(cfg.seed)
    checkpoint = load_checkpoint(ckpt_path, device) if cfg.init_from == "resume" else None
    if checkpoint is not None:
        check_resumable(checkpoint, ckpt_path, cfg.optim.name)
        cfg = _with_checkpoint_architecture(cfg, checkpoint)
        model = model_from_checkpoint({**checkpoint, "model_args": asdict(cfg.model)}, ckpt_path)
    else:
        model = GPT(cfg.model)
    model.to(device)
    optimizer = build_optimizer(model, cfg.optim, cfg.schedule.lr, device_type)
    scaler = torch.amp.GradScaler(device_type, enabled=ptdtype == torch.float16)
    val_batches = hashlib.sha256(json.dumps(
        [data.meta["key"], cfg.seed, cfg.batch_size, cfg.model.block_size, cfg.eval_iters]).encode()).hexdigest()[:16]
    run = Run(cfg=cfg, device=device, log=say, data=data, raw_model=model, model=model, optimizer=optimizer,
              scaler=scaler, out_dir=out_dir, val_batches=val_batches, ranks=ranks,
              autocast=(nullcontext() if ptdtype == torch.float32
                        else torch.autocast(device_type=device_type, dtype=ptdtype)))
    if checkpoint is not None:
        optimizer.load_state_dict(checkpoint["optimizer"])
        if "scaler" in checkpoint and scaler.is_enabled():
            scaler.load_state_dict(checkpoint["scaler"])
        run.iter_num = run.start_iter = int(checkpoint["iter_num"])
        _trim_metrics_after(out_dir / METRICS_NAME, run.start_iter)
        run.best_val_loss = float(checkpoint["best_val_loss"])
        run.best_iter = int(checkpoint.get("best_iter", run.iter_num))
        del checkpoint  # free the state dicts before training
    elif ranks.main:  # a run from scratch starts a new curve, whatever an earlier run left in out_dir
        (out_dir / METRICS_NAME).unlink(missing_ok=True)
    _print_plan(cfg, model, data, run.start_iter, say)
    if cfg.compile:
        say("compiling the model (takes a minute)...")
        run.model = torch.compile(model)
    if ranks.enabled:
        run.model = DistributedDataParallel(run.model, device_ids=[ranks.local_rank] if device_type == "cuda" else None)
    return run


def _silent(line: str) -> None:
    """The log of a rank other than 0."""


# -- evaluate ------------------------------------------------------------------------------------

@torch.no_grad()
def _split_losses(run: Run) -> dict:
    """Mean loss of each eval batch of both splits; the same batches at every evaluation."""
    cfg, out = run.cfg, {}
    run.model.eval()
    for stream, name, split in ((-1, "train", run.data.train), (-2, "val", run.data.val)):
        gen = _batch_generator(cfg.seed, stream)
        losses = torch.empty(cfg.eval_iters)
        for k in range(cfg.eval_iters):
            x, y = split.sample_batch(cfg.batch_size, cfg.model.block_size, gen)
            with run.autocast:
                _, loss = run.model(_to_device(x, run.device), _to_device(y, run.device))
            losses[k] = loss.item()
        out[name] = losses
    run.model.train()
    return out


def evaluate(run: Run, lr: float) -> Optional[EvalMetrics]:
    """Measure train and val loss at the current iteration and update the best; None when a loss
    is not finite (the run diverged)."""
    cfg = run.cfg
    losses = _split_losses(run)
    train_loss, val_loss = losses["train"].mean().item(), losses["val"].mean().item()
    val_se = losses["val"].std().item() / math.sqrt(cfg.eval_iters) if cfg.eval_iters > 1 else 0.0
    if not all(math.isfinite(x) for x in (train_loss, val_loss, val_se)):
        return None
    if val_loss < run.best_val_loss:
        run.best_val_loss, run.best_iter = val_loss, run.iter_num
    run.lr_summed += lr_sum(cfg.schedule, run.lr_summed_to, run.iter_num)
    run.lr_summed_to = run.iter_num
    per_iter = tokens_per_iter(cfg)
    tokens = run.iter_num * per_iter
    return EvalMetrics(run.iter_num, tokens, tokens / run.data.train.num_tokens, lr, train_loss, val_loss,
                       val_se, run.best_val_loss, losses["val"].tolist(), run.val_batches,
                       run.lr_summed * per_iter)


# -- checkpoint ----------------------------------------------------------------------------------

def write_checkpoint(run: Run) -> None:
    """nanoGPT's checkpoint keys (plus the whole config and best_iter), replaced atomically."""
    save_checkpoint({
        "model": run.raw_model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "model_args": {k: getattr(run.cfg.model, k) for k in MODEL_ARG_KEYS},
        "iter_num": run.iter_num,
        "best_val_loss": run.best_val_loss,
        "config": asdict(run.cfg),
        "best_iter": run.best_iter,
        **({"scaler": run.scaler.state_dict()} if run.scaler.is_enabled() else {}),
    }, run.checkpoint_path)


def _checkpoint_due(run: Run, improved: bool) -> bool:
    policy = run.cfg.checkpoint
    return run.iter_num > 0 and (policy == "last" or (policy == "best" and improved))


# -- step ----------------------------------------------------------------------------------------

def train_step(run: Run) -> torch.Tensor:
    """One optimizer step of gradient_accumulation_steps micro-batches (under torchrun, this
    rank's share of them); returns the last one's loss, still on the device."""
    cfg = run.cfg
    mine = run.ranks.micro_batches(cfg.gradient_accumulation_steps)
    torch.manual_seed(cfg.seed * 1_000_003 + run.iter_num)  # dropout masks, reproducible on resume
    gen = _batch_generator(cfg.seed, run.iter_num)
    for k in range(cfg.gradient_accumulation_steps):
        x, y = run.data.train.sample_batch(cfg.batch_size, cfg.model.block_size, gen)  # every rank draws all
        if k not in mine:
            continue
        syncing = k == mine[-1] or not isinstance(run.model, DistributedDataParallel)
        with nullcontext() if syncing else run.model.no_sync():  # all-reduce the grads once, at the last
            with run.autocast:
                # the logits are dropped before backward, which then holds only the loss's fp32 tensors
                loss = run.model(_to_device(x, run.device), _to_device(y, run.device))[1]
            run.scaler.scale(loss / len(mine)).backward()
    if cfg.optim.grad_clip > 0:
        run.scaler.unscale_(run.optimizer)
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.optim.grad_clip)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.optimizer.zero_grad(set_to_none=True)
    run.iter_num += 1
    return loss


# -- result --------------------------------------------------------------------------------------

def result_of(run: Run, status: str, stop_reason: str, evals: list, iter_times: list,
              wall_time_s: float) -> TrainResult:
    timed = iter_times[1:] or iter_times  # the first timing includes warm-up and compilation
    tokens_seen = run.iter_num * tokens_per_iter(run.cfg)
    model = run.raw_model
    n_total = model.get_num_params(non_embedding=False)
    n_embeddings = model.transformer.wte.weight.numel() + model.transformer.wpe.weight.numel()
    ckpt = run.checkpoint_path
    return TrainResult(
        status=status,
        stop_reason=stop_reason,
        best_val_loss=run.best_val_loss,
        best_iter=run.best_iter,
        iters=run.iter_num,
        tokens_seen=tokens_seen,
        epochs=tokens_seen / run.data.train.num_tokens,
        wall_time_s=wall_time_s,
        ms_per_iter=1000 * sum(timed) / len(timed) if timed else float("nan"),
        num_params=n_total,
        num_params_non_embedding=n_total - n_embeddings,
        tokens_per_iter=tokens_per_iter(run.cfg),
        unique_train_tokens=run.data.train.num_tokens,
        out_dir=str(run.out_dir),
        checkpoint_path=str(ckpt) if run.cfg.checkpoint != "none" and ckpt.is_file() else None,
        last_eval=evals[-1] if evals else None,
        evals=evals,
    )


# -- the loop ------------------------------------------------------------------------------------

def _mfu_peak(run: Run) -> Optional[float]:
    """The peak FLOP/s MFU is measured against: `mfu_peak_flops`, else the GPU's own; None on CPU
    (MFU is a GPU's figure) or on a GPU whose peak is unknown (said once)."""
    if not run.device.startswith("cuda"):
        return None
    if run.cfg.mfu_peak_flops is not None:
        return run.cfg.mfu_peak_flops
    peak = device_peak_flops(run.device)
    if peak is None:
        run.log(f"MFU is not shown: the peak of {torch.cuda.get_device_name(run.device)!r} is not in "
                f"trainer.estimate.GPU_PEAK_TFLOPS; set mfu_peak_flops=<its bf16 FLOP/s>")
    return peak


def train(cfg, on_eval: Optional[OnEval] = None, log: Optional[Log] = None) -> TrainResult:
    """Train `cfg`; `on_eval(metrics)` after every evaluation may return a reason to stop; `log`
    takes every line the run prints (None: the console)."""
    run = setup(cfg, log)
    cfg, say = run.cfg, run.log
    max_iters = cfg.schedule.max_iters
    eval_at = set(eval_points(cfg))
    flops_per_iter = flops_per_token(cfg.model) * tokens_per_iter(cfg)
    peak_flops = _mfu_peak(run)
    status, stop_reason, evals, iter_times = "completed", "", [], []
    mfu = None  # a running average, once a step after the first is timed on a GPU
    t_start = time.time()
    with open(run.out_dir / METRICS_NAME, "a") if run.ranks.main else nullcontext() as metrics_file:
        def log(record: dict) -> None:
            if metrics_file is not None:  # rank 0 writes for all
                metrics_file.write(json.dumps(record) + "\n")
                metrics_file.flush()

        run.model.train()
        while True:
            lr = get_lr(run.iter_num, cfg.schedule)
            set_lr(run.optimizer, lr)

            resumed_here = run.iter_num == run.start_iter and run.start_iter > 0  # evaluated before
            if run.iter_num in eval_at and not resumed_here:
                best_before = run.best_val_loss
                metrics = evaluate(run, lr)
                if metrics is None:
                    status, stop_reason = "diverged", f"non-finite loss at evaluation, iteration {run.iter_num}"
                    say(f"step {run.iter_num}: {stop_reason}; stopping")
                    break
                evals.append(metrics)
                say(f"step {run.iter_num}: train loss {metrics.train_loss:.4f}, val loss {metrics.val_loss:.4f} "
                      f"(se {metrics.val_loss_se:.4f}), epochs {metrics.epochs:.2f}")
                log({"type": "eval", **asdict(metrics)})
                if run.ranks.main and _checkpoint_due(run, improved=metrics.val_loss < best_before):
                    write_checkpoint(run)
                reason = from_main(run.ranks, on_eval(metrics) if on_eval is not None and run.ranks.main else None)
                if reason:
                    status, stop_reason = "stopped", str(reason)
                    break
            if run.iter_num >= max_iters:
                break

            t0 = time.time()
            loss = train_step(run)

            if run.iter_num % cfg.log_interval == 0 or run.iter_num == max_iters:
                loss_value = from_main(run.ranks, loss.item())  # a sync point: only here
                dt = time.time() - t0
                iter_times.append(dt)
                if not math.isfinite(loss_value):
                    status, stop_reason = "diverged", f"non-finite training loss at iteration {run.iter_num}"
                    say(f"iter {run.iter_num}: {stop_reason}; stopping (the last good checkpoint is kept)")
                    break
                if peak_flops is not None and len(iter_times) > 1:  # the first includes warm-up, compilation
                    step_mfu = flops_per_iter / dt / peak_flops
                    mfu = step_mfu if mfu is None else 0.9 * mfu + 0.1 * step_mfu
                tokens = run.iter_num * tokens_per_iter(cfg)
                say(f"iter {run.iter_num}: loss {loss_value:.4f}, time {dt * 1000:.2f}ms"
                    + (f", mfu {mfu * 100:.2f}%" if mfu is not None else ""))
                log({"type": "train", "iter": run.iter_num, "loss": loss_value, "lr": lr, "tokens": tokens,
                     "epochs": tokens / run.data.train.num_tokens, "ms_per_iter": dt * 1000, "mfu": mfu})

    stop(run.ranks)
    return result_of(run, status, stop_reason, evals, iter_times, time.time() - t_start)
