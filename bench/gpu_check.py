"""One GPU, under 8 minutes: the checks a CPU machine cannot make, written to bench/results/gpu/.

    python bench/gpu_check.py [--out bench/results/gpu] [--nanogpt PATH] [--deadline 450] [--only a,b]
    python bench/gpu_check.py --dry-run --out /tmp/gpu_check   # the same code on CPU at toy size, < 1 min

Sections, in this order, each under its own time limit (`Sizes.limits`); a section that fails is
recorded and the next one runs; past the total deadline the rest are recorded "skipped: deadline":

- precision: model=gpt_40m trained a few hundred iterations in float16 (with the grad scaler) and
  in bfloat16 on the embedded sample data: first and last loss, whether val loss fell, whether
  every loss is finite, tokens/s and MFU;
- memory: mode=plan's peak memory of a step (`sweeps.plan.memory_rows`) against
  `torch.cuda.max_memory_allocated` over two real steps (`bench.memory_estimate.measure`), for
  gpt_40m and gpt2 at budget=gpu's micro-batch (or, where the plan says it does not fit, the
  largest that does);
- compile: gpt_40m in bfloat16, compile=true against eager: tokens/s of each and the ratio;
- sweep: a 3-trial `study_runner.py +sweep=lr_warmup budget=gpu` of short gpt_40m trials: each
  trial's state and value, and the best;
- nanogpt: gpt2 (124M, bfloat16, compile) against karpathy/nanoGPT's train.py at the same config,
  with bench/train_throughput.py's commands: tokens/s and MFU of each, and the ratio; "skipped"
  without a checkout (--nanogpt, default $NANOGPT_DIR, else nanoGPT/ beside the repo).

Each section writes SECTION.json (status `ok`, `skipped: why` or `failed: why`; its numbers; the
command, date, torch, GPU); summary.md has a line per section. Both MFUs are computed here alike,
from the time per iteration, `trainer.flops_per_token` and this GPU's peak
(`trainer.gpu_peak_flops`); nanoGPT's own printed MFU, against an A100's 312 TFLOPS, is kept as
`printed_mfu_last`.

--dry-run runs every section on CPU at toy size: float32 stands in for float16 (a CUDA dtype),
nothing is compiled (the compile section measures eager only and says so), the nanoGPT section
runs only with a checkout. tests/test_gpu_check.py runs it.

Nothing is downloaded: the data is the embedded sample corpus, tokenized with the GPT-2 ranks
that tiktoken reads from TIKTOKEN_CACHE_DIR (else, when it exists, shared/tiktoken_cache in the
repo or beside it, which this script then sets for itself and its subprocesses).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_OUT = ROOT / "bench" / "results" / "gpu"
DEADLINE_S = 450.0  # 7.5 minutes, setup included: the whole check fits in 8 on one GPU
GRACE_S = 20.0  # past its limit a section is stopped hard: its own soft stops come first
STUDY = ("+sweep=lr_warmup", "budget=gpu")  # every config here is composed from this study's
TOY_MODEL = {"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 32}  # --dry-run: trains in ms
SWEEP_TRIALS = 3


def _toy() -> tuple:
    return tuple(f"model.{k}={v}" for k, v in TOY_MODEL.items())


@dataclass(frozen=True)
class Sizes:
    """How much each section trains, on the GPU or at toy size on CPU (--dry-run)."""

    model_overrides: tuple  # Hydra overrides after model=NAME
    batch_size: Optional[int]  # None: budget=gpu's micro-batch
    precision_iters: int
    throughput_iters: int  # the compile and nanogpt sections' runs
    skip: int  # iterations left out of a run's timing: warm-up and compilation
    eval_interval: int
    eval_iters: int
    lr: float
    sweep_overrides: tuple
    limits: dict  # seconds per section; they add up to DEADLINE_S
    min_start_s: float  # a section left less than this by the deadline is skipped


GPU = Sizes(model_overrides=(), batch_size=None, precision_iters=300, throughput_iters=60, skip=10,
            eval_interval=50, eval_iters=4, lr=6e-4,
            sweep_overrides=("model=gpt_40m", "schedule.max_iters=60", "eval_interval=10", "eval_iters=2"),
            # nanogpt: two processes, each compiling gpt2's eval and training graphs (about a minute each)
            limits={"precision": 60, "memory": 30, "compile": 90, "sweep": 70, "nanogpt": 200}, min_start_s=20)
DRY = Sizes(model_overrides=_toy(), batch_size=4, precision_iters=10, throughput_iters=8, skip=2,
            eval_interval=5, eval_iters=2, lr=3e-3,
            sweep_overrides=("model=gpt_40m", *_toy(), "batch_size=4", "schedule.max_iters=10", "eval_interval=5",
                             "eval_iters=2"),
            limits={"precision": 60, "memory": 60, "compile": 60, "sweep": 120, "nanogpt": 120}, min_start_s=1)


@dataclass
class Check:
    """One run of this script: where it trains, at what size, and until when."""

    dry_run: bool
    sizes: Sizes
    device: str  # cuda | cpu
    half: str  # the half-precision dtype: bfloat16 where the device has it, else float16
    work: Path
    out: Path
    nanogpt: Path
    deadline: float  # time.monotonic() by which every section has ended
    environment: dict
    started: float = dataclasses.field(default_factory=time.monotonic)
    dataset: Optional[Path] = None  # the prepared sample data as a nanoGPT dataset dir


class SectionTimeLimit(BaseException):
    """A section ran GRACE_S past its limit (a BaseException: no `except Exception` swallows it)."""


def say(check: Check, line: str) -> None:
    print(f"[gpu_check +{time.monotonic() - check.started:.0f}s] {line}", flush=True)


# ----------------------------------------------------------------------------- setup

def tiktoken_cache() -> Optional[str]:
    """TIKTOKEN_CACHE_DIR as given; else shared/tiktoken_cache in or beside the repo when it exists
    (set in os.environ, so the subprocesses read it too); else None: tiktoken would download."""
    if os.environ.get("TIKTOKEN_CACHE_DIR"):
        return os.environ["TIKTOKEN_CACHE_DIR"]
    for candidate in (ROOT / "shared" / "tiktoken_cache", ROOT.parent / "shared" / "tiktoken_cache"):
        if candidate.is_dir():
            os.environ["TIKTOKEN_CACHE_DIR"] = str(candidate)
            return str(candidate)
    return None


def environment(device: str, argv: Optional[list]) -> dict:
    import torch

    from bench.provenance import provenance
    from trainer import gpu_peak_flops

    env = {**provenance("bench/gpu_check.py", argv), "torch": torch.__version__, "cuda": torch.version.cuda,
           "tiktoken_cache": tiktoken_cache()}
    if device == "cuda":
        name = torch.cuda.get_device_name(0)
        peak = gpu_peak_flops(name)
        env.update(gpu=name, gpu_memory_gib=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1),
                   bf16_supported=torch.cuda.is_bf16_supported(), peak_tflops=peak / 1e12 if peak else None)
    else:
        env.update(gpu=None, note="dry run on CPU: toy sizes, no GPU numbers")
    return env


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def study_config(check: Check, *overrides: str):
    """The study config of STUDY with `overrides`, on this check's device and data cache."""
    from sweeps.compose import compose_study_config

    return compose_study_config(list(study_overrides(check, *overrides)))


def study_overrides(check: Check, *overrides: str) -> tuple:
    return (*STUDY, *overrides, f"device={check.device}", f"data.cache_dir={check.work / 'data_cache'}")


def model_overrides(check: Check, model: str) -> tuple:
    batch = (f"batch_size={check.sizes.batch_size}",) if check.sizes.batch_size else ()
    return (f"model={model}", *check.sizes.model_overrides, *batch)


def micro_batch(check: Check, cfg) -> int:
    """`cfg`'s micro-batch (budget=gpu's), or on a GPU where mode=plan's estimate says it does not fit
    (a 12 GB card), the largest that does: the estimate's own `largest_micro_batch`."""
    if check.device != "cuda":
        return cfg.batch_size
    import torch

    from trainer import CUDA_RESERVED_BYTES, largest_micro_batch

    usable = torch.cuda.get_device_properties(0).total_memory - CUDA_RESERVED_BYTES
    return max(1, min(cfg.batch_size, largest_micro_batch(cfg.model, True, "cuda", usable)))


def run_config(check: Check, model: str, label: str, iters: int, dtype: str, compile_: bool = False):
    """A short run of `model` at budget=gpu's micro-batch (`micro_batch`): every iteration logged
    (and timed), no checkpoint, warm-up a tenth of the run."""
    from trainer import as_train_config

    cfg = as_train_config(study_config(check, *model_overrides(check, model)))
    s = check.sizes
    schedule = dataclasses.replace(cfg.schedule, max_iters=iters, lr=s.lr, min_lr=s.lr / 10, min_lr_ratio=None,
                                   warmup_iters=max(1, iters // 10), warmup_fraction=None, lr_decay_iters=None,
                                   lr_decay_fraction=None)
    return dataclasses.replace(cfg, schedule=schedule, batch_size=micro_batch(check, cfg), dtype=dtype,
                               compile=compile_, eval_interval=min(s.eval_interval, iters), eval_iters=s.eval_iters,
                               log_interval=1, checkpoint="none", init_from="scratch",
                               out_dir=str(check.work / "runs" / label))


def peak_flops(check: Check) -> Optional[float]:
    from trainer import gpu_peak_flops

    return gpu_peak_flops(check.environment["gpu"]) if check.device == "cuda" else None


def mfu(check: Check, model, tokens_per_iter: int, ms_per_iter: float) -> Optional[float]:
    """Model FLOPs utilization of an iteration of `ms_per_iter` (None on CPU or an unknown GPU)."""
    from trainer import flops_per_token

    peak = peak_flops(check)
    return flops_per_token(model) * tokens_per_iter / (ms_per_iter / 1000) / peak if peak else None


def train_run(check: Check, label: str, cfg, limit_s: float) -> dict:
    """Train `cfg` here, stopping at the first evaluation past `limit_s`; its losses and speed."""
    from trainer import METRICS_NAME, train

    stop_at = time.monotonic() + limit_s
    say(check, f"  {label}: {cfg.schedule.max_iters} iterations of batch {cfg.batch_size} x {cfg.model.block_size}, "
               f"{cfg.dtype}{', compiled' if cfg.compile else ''} (stops at the first evaluation past {limit_s:.0f} s)")

    def log(line: str) -> None:
        if line.startswith(("step ", "compiling", "MFU", "WARNING")):
            say(check, f"    {label}: {line}")

    result = train(cfg, on_eval=lambda m: "time limit" if time.monotonic() > stop_at else None, log=log)
    rows = [json.loads(line) for line in (Path(cfg.out_dir) / METRICS_NAME).read_text().splitlines()]
    steps = [r for r in rows if r["type"] == "train"]
    evals = [r for r in rows if r["type"] == "eval"]
    times = [r["ms_per_iter"] for r in steps[check.sizes.skip:]] or [r["ms_per_iter"] for r in steps]
    ms = statistics.median(times) if times else math.nan
    losses = [r["loss"] for r in steps] + [r["val_loss"] for r in evals]
    run = {
        "dtype": cfg.dtype, "compile": cfg.compile, "batch_size": cfg.batch_size, "block_size": cfg.model.block_size,
        "params_M": round(result.num_params / 1e6, 2), "iters": result.iters, "status": result.status,
        "stop_reason": result.stop_reason,
        "first_loss": steps[0]["loss"] if steps else None, "last_loss": steps[-1]["loss"] if steps else None,
        "first_val_loss": evals[0]["val_loss"] if evals else None,
        "last_val_loss": evals[-1]["val_loss"] if evals else None,
        "finite": bool(losses) and all(math.isfinite(x) for x in losses) and result.status != "diverged",
        "ms_per_iter": ms, "iters_timed": len(times), "tokens_per_s": result.tokens_per_iter / (ms / 1000),
        "mfu": mfu(check, cfg.model, result.tokens_per_iter, ms), "wall_s": round(result.wall_time_s, 1),
    }
    run["val_loss_fell"] = len(evals) > 1 and run["finite"] and run["last_val_loss"] < run["first_val_loss"]
    say(check, f"  {label}: {_run_line(run)}")
    return run


def _run_line(r: dict) -> str:
    def f(key: str, fmt: str = ".3f") -> str:  # "?" for a number a run stopped too early to have
        value = r.get(key)
        return "?" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)

    mfu_part = f", MFU {r['mfu']:.1%}" if r.get("mfu") is not None else ""
    return (f"loss {f('first_loss')} -> {f('last_loss')} (val {f('first_val_loss')} -> {f('last_val_loss')}) "
            f"in {r['iters']} iterations, {f('tokens_per_s', ',.0f')} tokens/s{mfu_part}"
            + ("" if r["finite"] else ", NOT FINITE"))


def time_left(until: float) -> float:
    return max(0.0, until - time.monotonic())


# ----------------------------------------------------------------------------- sections
# Each takes the check, its time limit and a dict to fill (kept even when the section fails half
# way), and returns its status: "ok", "skipped: why" or "failed: why".

def precision(check: Check, limit: float, results: dict) -> str:
    import torch

    until = time.monotonic() + limit
    dtypes = ["float32" if check.dry_run else "float16", "bfloat16"]
    if check.dry_run:
        results["note"] = "dry run: float16 needs CUDA; float32 stands in for it"
    runs = results["runs"] = {}
    for i, dtype in enumerate(dtypes):
        if dtype == "bfloat16" and check.device == "cuda" and not torch.cuda.is_bf16_supported():
            runs[dtype] = {"status": "skipped: this GPU has no bfloat16"}
            continue
        cfg = run_config(check, "gpt_40m", f"precision_{dtype}", check.sizes.precision_iters, dtype)
        runs[dtype] = train_run(check, dtype, cfg, time_left(until) / (len(dtypes) - i))
    trained = {k: r for k, r in runs.items() if "finite" in r}
    results["summary"] = "; ".join(f"{k}: {_run_line(r)}" for k, r in trained.items())
    bad = [f"{k} {'is not finite' if not r['finite'] else 'did not lower val loss'} in {r['iters']} iterations"
           + (f" ({r['stop_reason']})" if r["stop_reason"] else "") for k, r in trained.items() if not r["val_loss_fell"]]
    return f"failed: {', '.join(bad)}" if bad else "ok"


def memory(check: Check, limit: float, results: dict) -> str:
    import torch

    from bench.memory_estimate import measure, two_steps
    from sweeps.plan import build_plan, memory_rows
    from trainer import as_train_config, step_memory

    rows = results["rows"] = []
    for model in ("gpt_40m", "gpt2"):
        overrides = list(study_overrides(check, *model_overrides(check, model)))
        cfg = study_config(check, *model_overrides(check, model))
        [row] = memory_rows(build_plan(cfg, overrides))
        train_cfg = as_train_config(cfg)
        entry = {"model": model, "configured_batch_size": row.batch_size, "plan_peak_bytes": row.peak,
                 "plan_largest_batch": row.largest, "dtype": check.half}
        rows.append(entry)
        batch = row.batch_size if row.largest >= row.batch_size else row.largest
        if batch == 0:
            entry["status"] = "skipped: the plan says not even batch_size=1 fits this GPU"
            continue
        run = two_steps(train_cfg.model, batch, check.half, check.device, check.work / "memory")
        run.data = train_cfg.data  # the data already prepared, not two_steps' default split
        say(check, f"  {model}: two steps at batch {batch}, {check.half} ...")
        measured = measure(run)
        estimate = step_memory(train_cfg.model, batch, check.half != "float32", check.device).peak
        entry.update(batch_size=batch, estimate_bytes=estimate, measured_bytes=measured,
                     estimate_over_measured=estimate / measured)
        if check.device == "cuda":
            entry["max_memory_reserved_bytes"] = torch.cuda.max_memory_reserved()
        say(check, f"  {model}: estimated {estimate / 2**20:,.0f} MiB, measured {measured / 2**20:,.0f} MiB "
                   f"(ratio {estimate / measured:.3f})")
    results["summary"] = "; ".join(
        f"{r['model']} batch {r['batch_size']}: estimate / measured {r['estimate_over_measured']:.3f} "
        f"({r['estimate_bytes'] / 2**30:.2f} / {r['measured_bytes'] / 2**30:.2f} GiB)"
        for r in rows if "measured_bytes" in r)
    return "ok"


def compile_speedup(check: Check, limit: float, results: dict) -> str:
    until = time.monotonic() + limit
    iters = check.sizes.throughput_iters
    eager = results["eager"] = train_run(check, "eager", run_config(check, "gpt_40m", "eager", iters, check.half),
                                         time_left(until) / 3)
    if check.dry_run:
        results["summary"] = f"eager {eager['tokens_per_s']:,.0f} tokens/s; not compiled on CPU"
        return "skipped: dry run: torch.compile is not measured on CPU (the eager run is)"
    compiled = results["compiled"] = train_run(
        check, "compiled", run_config(check, "gpt_40m", "compiled", iters, check.half, compile_=True), time_left(until))
    results["ratio_compiled_over_eager"] = compiled["tokens_per_s"] / eager["tokens_per_s"]
    results["summary"] = (f"eager {eager['tokens_per_s']:,.0f} tokens/s, compiled {compiled['tokens_per_s']:,.0f}: "
                          f"{results['ratio_compiled_over_eager']:.2f}x")
    return "ok" if compiled["finite"] else "failed: the compiled run's loss is not finite"


def sweep(check: Check, limit: float, results: dict) -> str:
    import optuna

    from sweeps import trial_record
    from trainer import as_train_config

    where = check.work / "sweep"
    where.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{where / 'study.db'}"
    cfg = as_train_config(study_config(check, *check.sizes.sweep_overrides))
    batch = micro_batch(check, cfg)  # what fits, so the trials need not find out by running out of memory
    args = [*study_overrides(check, *check.sizes.sweep_overrides),
            *([f"batch_size={batch}"] if batch != cfg.batch_size else []), f"study.n_trials={SWEEP_TRIALS}",
            "study.name=gpu_check", f"study.storage={url}", f"hydra.run.dir={where / 'hydra'}"]
    results["command"] = "python study_runner.py " + " ".join(args)
    say(check, f"  {results['command']}")
    log = where / "study_runner.log"
    with open(log, "w") as out:
        proc = subprocess.run([sys.executable, str(ROOT / "study_runner.py"), *args], cwd=where, env=_env(),
                              stdout=out, stderr=subprocess.STDOUT, timeout=max(1.0, limit), text=True)
    results["returncode"] = proc.returncode
    results["log_tail"] = log.read_text().splitlines()[-15:]
    if proc.returncode != 0:
        return f"failed: study_runner.py exited with {proc.returncode} (its log's end is in log_tail)"
    study = optuna.load_study(study_name="gpu_check", storage=url)
    trials = results["trials"] = [
        {"number": t.number, "state": t.state.name, "value": t.value, "params": t.params,
         "stop_reason": trial_record.stop_reason(t), "ms_per_iter": t.user_attrs.get(trial_record.MS_PER_ITER)}
        for t in study.trials]
    complete = [t for t in trials if t["state"] == "COMPLETE"]
    best = results["best"] = min(complete, key=lambda t: t["value"]) if complete else None
    states = ", ".join(f"{t['number']}: {t['state']}" + (f" {t['value']:.4f}" if t["value"] is not None else "")
                       for t in trials)
    results["summary"] = f"trials {states}; best trial {best['number'] if best else None}"
    say(check, f"  {results['summary']}")
    finished = [t for t in trials if t["state"] in ("COMPLETE", "PRUNED")]
    if len(finished) != SWEEP_TRIALS or best is None:
        return f"failed: {len(finished)} of {SWEEP_TRIALS} trials finished, {len(complete)} complete"
    return "ok"


def nanogpt(check: Check, limit: float, results: dict) -> str:
    from bench.train_throughput import Setup, nanogpt_command, ours_command, run_one
    from trainer import as_train_config

    if not (check.nanogpt / "train.py").is_file() or not (check.nanogpt / "model.py").is_file():
        return f"skipped: no nanoGPT checkout at {check.nanogpt}"
    until = time.monotonic() + limit
    cfg = as_train_config(study_config(check, *model_overrides(check, "gpt2")))
    batch = micro_batch(check, cfg)
    model = {k: getattr(cfg.model, k) for k in ("n_layer", "n_head", "n_embd", "block_size", "bias", "dropout")}
    setup = Setup(model=model, batch_size=batch, device=check.device,
                  dtype="float32" if check.dry_run else check.half, compile=not check.dry_run)
    results["config"] = {**dataclasses.asdict(setup), "tokens_per_iter": setup.tokens_per_iter,
                         "nanogpt_commit": _git_head(check.nanogpt)}
    iters, runs = check.sizes.throughput_iters, results.setdefault("runs", {})
    for i, name in enumerate(("ours", "nanogpt")):
        out_dir = check.work / f"throughput_{name}"
        if name == "ours":
            cmd, cwd = ours_command(check.work, out_dir, iters, setup), ROOT
        else:
            cmd, cwd = nanogpt_command(check.nanogpt.resolve(), check.dataset, out_dir, iters, setup), check.nanogpt
        say(check, f"  {name}: {iters} iterations of model=gpt2{' (toy size)' if check.dry_run else ''}, batch {batch}, "
                   f"{setup.dtype}{', compiled' if setup.compile else ''} ...")
        run = run_one(name, cmd, cwd, _env(), check.work / f"throughput_{name}.log", time_left(until) / (2 - i),
                      check.sizes.skip)
        run["tokens_per_s"] = setup.tokens_per_iter / (run["ms_per_iter"] / 1000)
        run["mfu"] = mfu(check, cfg.model, setup.tokens_per_iter, run["ms_per_iter"])
        runs[name] = run
        say(check, f"  {name}: {run['ms_per_iter']:.1f} ms/iter, {run['tokens_per_s']:,.0f} tokens/s"
                   + (f", MFU {run['mfu']:.1%}" if run["mfu"] is not None else ""))
    results["ratio_ours_over_nanogpt"] = runs["ours"]["tokens_per_s"] / runs["nanogpt"]["tokens_per_s"]
    results["summary"] = (f"ours {runs['ours']['tokens_per_s']:,.0f} tokens/s, nanoGPT "
                          f"{runs['nanogpt']['tokens_per_s']:,.0f}: {results['ratio_ours_over_nanogpt']:.3f}x"
                          + "".join(f"; MFU {k} {r['mfu']:.1%}" for k, r in runs.items() if r["mfu"] is not None))
    return "ok"


def _git_head(path: Path) -> Optional[str]:
    from bench.train_throughput import _git_head as head

    return head(path)


SECTIONS: dict[str, Callable[[Check, float, dict], str]] = {
    "precision": precision, "memory": memory, "compile": compile_speedup, "sweep": sweep, "nanogpt": nanogpt}


# ----------------------------------------------------------------------------- running them

@contextmanager
def hard_limit(limit: float):
    """SectionTimeLimit in this (the main) thread GRACE_S after `limit` seconds."""
    def expire(signum, frame):
        raise SectionTimeLimit(f"stopped {GRACE_S:.0f} s past its limit of {limit:.0f} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, limit + GRACE_S)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_section(check: Check, name: str, blocked: Optional[str] = None) -> dict:
    left = check.deadline - time.monotonic()
    limit = min(check.sizes.limits[name], max(0.0, left))
    results: dict = {}
    t0 = time.monotonic()
    if blocked:
        status = blocked
    elif left < check.sizes.min_start_s:
        status = "skipped: deadline"
    else:
        say(check, f"{name}: start (limit {limit:.0f} s)")
        try:
            with hard_limit(limit):
                status = SECTIONS[name](check, limit, results)
        except subprocess.TimeoutExpired as e:
            status = f"failed: a subprocess ran past the section's limit of {limit:.0f} s ({e.timeout:.0f} s)"
        except SectionTimeLimit as e:
            status = f"failed: {e}"
        except Exception as e:  # one section's failure is recorded; the next one runs
            status = f"failed: {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:500]
            results["traceback"] = traceback.format_exc()[-6000:]
        finally:
            free_memory()
    record = {"section": name, "status": status, "seconds": round(time.monotonic() - t0, 1), "limit_s": round(limit),
              "dry_run": check.dry_run, "results": results, "environment": check.environment}
    check.out.mkdir(parents=True, exist_ok=True)
    (check.out / f"{name}.json").write_text(json.dumps(record, indent=1, default=str) + "\n")
    say(check, f"{name}: {status} ({record['seconds']:.0f} s)" + (f": {results['summary']}" if results.get("summary") else ""))
    return record


def summary_markdown(check: Check, records: list[dict]) -> str:
    e = check.environment
    peak = f", peak {e['peak_tflops']:g} TFLOPS bf16" if e.get("peak_tflops") else ", peak unknown: no MFU"
    where = (f"{e['gpu']} ({e['gpu_memory_gib']} GiB{peak})" if e.get("gpu")
             else "CPU (--dry-run: toy sizes, not GPU numbers)")
    load = e["machine"]["load_average_at_start"]
    lines = [f"# GPU check{' (dry run)' if check.dry_run else ''}", "",
             f"`{e['command']}` on {where}; torch {e['torch']} (CUDA {e['cuda']}); {e['date_utc']}; load average at "
             f"start {' '.join(f'{x:.2f}' for x in load) if load else '?'}; total {time.monotonic() - check.started:.0f} s.", "",
             "| section | status | seconds | result |", "|---|---|---:|---|"]
    for r in records:
        result = r["results"].get("summary", "").replace("|", "/")
        lines.append(f"| {r['section']} | {r['status'].replace('|', '/')} | {r['seconds']:.0f} | {result} |")
    lines += ["", "Each section's numbers: SECTION.json beside this file (bench/gpu_check.py explains them)."]
    return "\n".join(lines) + "\n"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"where results go (default {DEFAULT_OUT})")
    p.add_argument("--nanogpt", type=Path, default=Path(os.environ.get("NANOGPT_DIR") or ROOT.parent / "nanoGPT"),
                   help="a checkout of github.com/karpathy/nanoGPT (default $NANOGPT_DIR, else ../nanoGPT)")
    p.add_argument("--deadline", type=float, default=DEADLINE_S,
                   help=f"seconds for everything; sections past it are skipped (default {DEADLINE_S:.0f})")
    p.add_argument("--only", default=None, help=f"comma-separated sections to run, of: {', '.join(SECTIONS)}")
    p.add_argument("--dry-run", action="store_true", help="every section on CPU at toy size (for the tests)")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="where data and runs go (kept); default: a temp dir, removed at the end")
    args = p.parse_args(argv)
    args.sections = list(SECTIONS) if args.only is None else [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in args.sections if s not in SECTIONS]
    if unknown or not args.sections:
        p.error(f"--only {args.only!r}: unknown sections {unknown}; valid: {', '.join(SECTIONS)}")
    if args.deadline < 0:
        p.error(f"--deadline {args.deadline}: must be >= 0 seconds")
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        p.error("no CUDA device is visible here: run it on a GPU, or add --dry-run for the CPU rehearsal")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from bench.train_throughput import prepare_shared_data

    device = "cpu" if args.dry_run else "cuda"
    half = "bfloat16" if device == "cpu" or torch.cuda.is_bf16_supported() else "float16"
    work = (args.work_dir or Path(tempfile.mkdtemp(prefix="gpu_check_"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    check = Check(dry_run=args.dry_run, sizes=DRY if args.dry_run else GPU, device=device, half=half, work=work,
                  out=args.out.resolve(), nanogpt=args.nanogpt.resolve(), deadline=time.monotonic() + args.deadline,
                  environment=environment(device, argv))
    say(check, f"{check.environment.get('gpu') or 'CPU (dry run)'}, torch {torch.__version__}; results into "
               f"{check.out}; deadline {args.deadline:.0f} s; tiktoken cache {check.environment['tiktoken_cache']}")
    blocked = None
    try:
        if args.deadline >= check.sizes.min_start_s:
            say(check, "preparing the embedded sample data ...")
            try:
                check.dataset = prepare_shared_data(work)
            except Exception as e:  # without the data no section can run: each says so
                blocked = f"skipped: the sample data could not be prepared: {type(e).__name__}: {e}"[:500]
        records = [run_section(check, name, blocked) for name in args.sections]
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    (check.out / "summary.md").write_text(summary_markdown(check, records))
    say(check, f"wrote {check.out / 'summary.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
