"""The training loop: nanoGPT's train.py as a function that can run many times in one process.

`train(cfg, on_eval)` returns a TrainResult instead of exiting, and calls `on_eval` after every
evaluation so a caller (a sweep) can stop the run early without this package knowing why.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import json
import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch

from trainer.checkpoint import MODEL_ARG_KEYS, load_checkpoint, model_from_checkpoint, save_checkpoint
from trainer.config import ConfigError, TrainConfig, as_train_config, check_config
from trainer.data import PreparedData, prepare_data
from trainer.model import GPT
from trainer.schedule import get_lr

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


def tokens_per_iter(cfg: TrainConfig) -> int:
    """Training tokens consumed by one optimizer step: the one place this is counted."""
    return cfg.batch_size * cfg.gradient_accumulation_steps * cfg.model.block_size


def eval_points(cfg: TrainConfig) -> list[int]:
    """The iterations at which a run evaluates: 0, every `eval_interval`, and the last one."""
    every = list(range(0, cfg.schedule.max_iters, cfg.eval_interval))
    return every + [cfg.schedule.max_iters]


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


@functools.cache
def _glibc() -> Optional[ctypes.CDLL]:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to tune
        return None


def keep_freed_memory_mapped() -> None:
    """On glibc, keep freed blocks mapped instead of returning them to the OS. On CPU every step
    allocates and frees logits of batch x block x vocab floats (hundreds of MB); by default each is
    a fresh mmap the kernel must zero again, which took ~40% of a CPU step (bench/README.md)."""
    libc = _glibc()
    if libc is not None:
        libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD: serve blocks up to 1 GiB from the heap
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: keep up to 1 GiB of freed heap


def release_freed_memory() -> None:
    """Give the freed heap back to the OS (glibc's malloc_trim), for a process that runs one
    training after another (a sweep's trials): the heap kept mapped during a run otherwise
    fragments and the process grows by a logits buffer every few runs."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def _batch_generator(seed: int, stream: int) -> torch.Generator:
    # every iteration and every eval split gets its own stream, so resuming needs no RNG state
    return torch.Generator().manual_seed(seed * 1_000_003 + stream)


def _to_device(x: torch.Tensor, device: str) -> torch.Tensor:
    if device.startswith("cuda"):
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


def _print_plan(cfg: TrainConfig, model: GPT, data: PreparedData, start_iter: int) -> None:
    per_iter = tokens_per_iter(cfg)
    unique = data.train.num_tokens
    planned = cfg.schedule.max_iters * per_iter
    epochs = planned / unique
    n_total = model.get_num_params(non_embedding=False)
    n_blocks = n_total - model.transformer.wte.weight.numel() - model.transformer.wpe.weight.numel()
    print(f"parameters: {n_total / 1e6:.2f}M total, {model.get_num_params() / 1e6:.2f}M without position "
          f"embeddings (nanoGPT's count), {n_blocks / 1e6:.2f}M without any embeddings")
    print(f"tokens per iteration: {per_iter:,} = batch {cfg.batch_size} x accumulation "
          f"{cfg.gradient_accumulation_steps} x block {cfg.model.block_size}")
    print(f"unique training tokens: {unique:,} (val {data.val.num_tokens:,})")
    print(f"planned: {cfg.schedule.max_iters:,} iterations = {planned:,} tokens = {epochs:.2f} epochs"
          + (f" (resuming at iteration {start_iter:,})" if start_iter else ""))
    if epochs > 1:
        print(f"WARNING: the run repeats its training data {epochs:.1f} times; past ~1 epoch val loss "
              f"stops tracking train loss (more data or a shorter run will help more than tuning)")


def train(cfg, on_eval: Optional[OnEval] = None) -> TrainResult:
    cfg = as_train_config(cfg)
    check_config(cfg)
    device = resolve_device(cfg.device)
    device_type = "cuda" if device.startswith("cuda") else "cpu"
    if device_type == "cpu":
        keep_freed_memory_mapped()
    ptdtype = resolve_dtype(cfg.dtype, device)
    out_dir = Path(cfg.out_dir)
    ckpt_path = out_dir / CHECKPOINT_NAME
    if cfg.init_from == "resume" and not ckpt_path.is_file():
        raise ConfigError(f"init_from=resume but there is no checkpoint at {ckpt_path}; use init_from=scratch")

    data = prepare_data(cfg.data)
    data.check_fits(cfg.model.block_size)
    n_vocab = data.meta["vocab_size"]  # the tokenizer's, recorded when the data was tokenized
    if cfg.model.vocab_size < n_vocab:
        raise ConfigError(f"model.vocab_size={cfg.model.vocab_size} is smaller than the tokenizer's "
                          f"{n_vocab} tokens; use at least {n_vocab} (50304 pads GPT-2's for speed)")
    out_dir.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(cfg.seed)
    iter_num, best_val_loss, best_iter, checkpoint = 0, math.inf, 0, None
    if cfg.init_from == "resume":
        checkpoint = load_checkpoint(ckpt_path, device)
        for key in MODEL_ARG_KEYS:  # architecture comes from the checkpoint, as in nanoGPT
            if key != "dropout":
                setattr(cfg.model, key, checkpoint["model_args"][key])
        model = model_from_checkpoint({**checkpoint, "model_args": {**checkpoint["model_args"],
                                                                    "dropout": cfg.model.dropout}})
        iter_num = int(checkpoint["iter_num"])
        best_val_loss = float(checkpoint["best_val_loss"])
        best_iter = int(checkpoint.get("best_iter", iter_num))
    else:
        model = GPT(cfg.model)
    model.to(device)
    start_iter = iter_num
    o = cfg.optim
    optimizer = model.configure_optimizer(o.weight_decay, cfg.schedule.lr, (o.beta1, o.beta2), o.eps, device_type)
    scaler = torch.amp.GradScaler(device_type, enabled=ptdtype == torch.float16)
    if checkpoint is not None:
        optimizer.load_state_dict(checkpoint["optimizer"])
        if "scaler" in checkpoint and scaler.is_enabled():
            scaler.load_state_dict(checkpoint["scaler"])
        del checkpoint  # free the state dicts before training
    _print_plan(cfg, model, data, start_iter)

    raw_model = model
    if cfg.compile:
        print("compiling the model (takes a minute)...")
        model = torch.compile(model)
    autocast = (nullcontext() if ptdtype == torch.float32
                else torch.autocast(device_type=device_type, dtype=ptdtype))
    per_iter = tokens_per_iter(cfg)
    eval_at = set(eval_points(cfg))
    unique_tokens = data.train.num_tokens
    flops_per_iter = raw_model.flops_per_token() * per_iter
    accum = cfg.gradient_accumulation_steps
    model_args = {k: getattr(cfg.model, k) for k in MODEL_ARG_KEYS}
    config_dict = asdict(cfg)
    val_batches = hashlib.sha256(json.dumps(
        [data.meta["key"], cfg.seed, cfg.batch_size, cfg.model.block_size, cfg.eval_iters]).encode()).hexdigest()[:16]

    @torch.no_grad()
    def estimate_loss() -> dict:
        model.eval()
        out = {}
        for stream, split in ((-1, data.train), (-2, data.val)):
            gen = _batch_generator(cfg.seed, stream)  # the same batches at every evaluation
            losses = torch.empty(cfg.eval_iters)
            for k in range(cfg.eval_iters):
                x, y = split.sample_batch(cfg.batch_size, cfg.model.block_size, gen)
                with autocast:
                    _, loss = model(_to_device(x, device), _to_device(y, device))
                losses[k] = loss.item()
            out[stream] = losses
        model.train()
        train_losses, val_losses = out[-1], out[-2]
        se = val_losses.std().item() / math.sqrt(cfg.eval_iters) if cfg.eval_iters > 1 else 0.0
        return {"train": train_losses.mean().item(), "val": val_losses.mean().item(), "val_se": se,
                "val_batch_losses": val_losses.tolist()}

    def write_checkpoint() -> None:
        save_checkpoint({
            "model": raw_model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "model_args": model_args,
            "iter_num": iter_num,
            "best_val_loss": best_val_loss,
            "config": config_dict,
            "best_iter": best_iter,
            **({"scaler": scaler.state_dict()} if scaler.is_enabled() else {}),
        }, ckpt_path)

    status, stop_reason, evals = "completed", "", []
    iter_times = []
    t_start = time.time()
    mfu = -1.0
    with open(out_dir / METRICS_NAME, "a") as metrics_file:
        def log(record: dict) -> None:
            metrics_file.write(json.dumps(record) + "\n")
            metrics_file.flush()

        model.train()
        while True:
            lr = get_lr(iter_num, cfg.schedule)
            for group in optimizer.param_groups:
                group["lr"] = lr
            tokens = iter_num * per_iter

            if iter_num in eval_at and not (iter_num == start_iter and start_iter > 0):  # a resume point was evaluated
                losses = estimate_loss()
                if not all(math.isfinite(losses[k]) for k in ("train", "val", "val_se")):
                    status, stop_reason = "diverged", f"non-finite loss at evaluation, iteration {iter_num}"
                    print(f"step {iter_num}: {stop_reason}; stopping")
                    break
                improved = losses["val"] < best_val_loss
                if improved:
                    best_val_loss, best_iter = losses["val"], iter_num
                metrics = EvalMetrics(iter_num, tokens, tokens / unique_tokens, lr, losses["train"],
                                      losses["val"], losses["val_se"], best_val_loss,
                                      losses["val_batch_losses"], val_batches)
                evals.append(metrics)
                print(f"step {iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f} "
                      f"(se {losses['val_se']:.4f}), epochs {metrics.epochs:.2f}")
                log({"type": "eval", **asdict(metrics)})
                if iter_num > 0 and (cfg.checkpoint == "last" or (cfg.checkpoint == "best" and improved)):
                    write_checkpoint()
                if on_eval is not None:
                    reason = on_eval(metrics)
                    if reason:
                        status, stop_reason = "stopped", str(reason)
                        break
            if iter_num >= cfg.schedule.max_iters:
                break

            t0 = time.time()
            torch.manual_seed(cfg.seed * 1_000_003 + iter_num)  # dropout masks, reproducible on resume
            gen = _batch_generator(cfg.seed, iter_num)
            for _ in range(accum):
                x, y = data.train.sample_batch(cfg.batch_size, cfg.model.block_size, gen)
                with autocast:
                    _, loss = model(_to_device(x, device), _to_device(y, device))
                    loss = loss / accum
                scaler.scale(loss).backward()
            if o.grad_clip > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            iter_num += 1

            if iter_num % cfg.log_interval == 0 or iter_num == cfg.schedule.max_iters:
                loss_value = loss.item() * accum  # a sync point, so only at log intervals
                dt = time.time() - t0
                iter_times.append(dt)
                if not math.isfinite(loss_value):
                    status, stop_reason = "diverged", f"non-finite training loss at iteration {iter_num}"
                    print(f"iter {iter_num}: {stop_reason}; stopping (the last good checkpoint is kept)")
                    break
                if len(iter_times) > 1:  # the first timing includes warm-up and compilation
                    step_mfu = flops_per_iter / dt / cfg.mfu_peak_flops
                    mfu = step_mfu if mfu < 0 else 0.9 * mfu + 0.1 * step_mfu
                tokens = iter_num * per_iter
                print(f"iter {iter_num}: loss {loss_value:.4f}, time {dt * 1000:.2f}ms, mfu {mfu * 100:.2f}%")
                log({"type": "train", "iter": iter_num, "loss": loss_value, "lr": lr, "tokens": tokens,
                     "epochs": tokens / unique_tokens, "ms_per_iter": dt * 1000, "mfu": mfu})

    wall = time.time() - t_start
    timed = iter_times[1:] or iter_times
    tokens_seen = iter_num * per_iter
    n_total = raw_model.get_num_params(non_embedding=False)
    n_embeddings = raw_model.transformer.wte.weight.numel() + raw_model.transformer.wpe.weight.numel()
    return TrainResult(
        status=status,
        stop_reason=stop_reason,
        best_val_loss=best_val_loss,
        best_iter=best_iter,
        iters=iter_num,
        tokens_seen=tokens_seen,
        epochs=tokens_seen / unique_tokens,
        wall_time_s=wall,
        ms_per_iter=1000 * sum(timed) / len(timed) if timed else float("nan"),
        num_params=n_total,
        num_params_non_embedding=n_total - n_embeddings,
        tokens_per_iter=per_iter,
        unique_train_tokens=unique_tokens,
        out_dir=str(out_dir),
        checkpoint_path=str(ckpt_path) if cfg.checkpoint != "none" and ckpt_path.is_file() else None,
        last_eval=evals[-1] if evals else None,
        evals=evals,
    )
