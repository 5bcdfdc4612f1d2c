"""The peak memory estimate (`trainer.step_memory`, which `mode=plan` prints) against real training.

    python bench/memory_estimate.py [--device cpu|cuda] [--json OUT]

Each case trains two iterations with `trainer.train` on the embedded sample data (the second
step holds AdamW's states too) and measures the peak of tensor memory: on CUDA
`torch.cuda.max_memory_allocated` (what the caching allocator handed to tensors), on CPU the
profiler's allocation records (every CPU tensor allocation and free, in order; `peak_tensor_bytes`).
Neither counts the CUDA context or allocator slack, which the plan sets aside as
`trainer.CUDA_RESERVED_BYTES`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from trainer.config import ModelConfig, TrainConfig  # noqa: E402
from trainer.estimate import step_memory  # noqa: E402
from trainer.train import train  # noqa: E402

# (name, model, micro-batch, dtype) per device: CPU cases small enough for a 2-core machine
CASES = {
    "cpu": [
        ("nano", ModelConfig(n_layer=2, n_head=2, n_embd=64, block_size=64), 8, "float32"),
        ("nano, dropout 0.1", ModelConfig(n_layer=2, n_head=2, n_embd=64, block_size=64, dropout=0.1), 8, "float32"),
        ("nano", ModelConfig(n_layer=2, n_head=2, n_embd=64, block_size=64), 8, "bfloat16"),
        ("mini", ModelConfig(n_layer=4, n_head=4, n_embd=128, block_size=128), 4, "float32"),
    ],
    "cuda": [
        ("gpt_40m", ModelConfig(n_layer=12, n_head=12, n_embd=384, block_size=1024), 4, "bfloat16"),
        ("gpt_40m", ModelConfig(n_layer=12, n_head=12, n_embd=384, block_size=1024), 8, "bfloat16"),
        ("gpt_40m, dropout 0.1", ModelConfig(n_layer=12, n_head=12, n_embd=384, block_size=1024, dropout=0.1), 8,
         "float16"),
        ("gpt_40m", ModelConfig(n_layer=12, n_head=12, n_embd=384, block_size=1024), 4, "float32"),
        ("gpt2", ModelConfig(n_layer=12, n_head=12, n_embd=768, block_size=1024), 8, "bfloat16"),
        ("gpt2_medium", ModelConfig(n_layer=24, n_head=16, n_embd=1024, block_size=1024), 4, "bfloat16"),
    ],
}


def peak_tensor_bytes(fn) -> int:
    """The peak of CPU tensor memory allocated while `fn()` runs, from the profiler's allocation
    records, counted from what `fn` allocates."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    records = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                     if e.name() == "[memory]")
    live = peak = 0
    for _, nbytes in records:
        live += nbytes
        peak = max(peak, live)
    return peak


def two_steps(model: ModelConfig, batch_size: int, dtype: str, device: str, work: Path) -> TrainConfig:
    cfg = TrainConfig(model=model, batch_size=batch_size, dtype=dtype, device=device, eval_interval=2, eval_iters=1,
                      log_interval=1, checkpoint="none", out_dir=str(work / "run"))
    cfg.schedule.max_iters, cfg.schedule.warmup_iters = 2, 0
    cfg.data.cache_dir = str(work / "data_cache")
    return cfg


def measure(cfg: TrainConfig) -> int:
    quiet = lambda line: None  # noqa: E731
    if cfg.device == "cpu":
        return peak_tensor_bytes(lambda: train(cfg, log=quiet))
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    train(cfg, log=quiet)
    return torch.cuda.max_memory_allocated() - before


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=sorted(CASES), default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", type=Path, default=None, help="write the rows here")
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, model, batch, dtype in CASES[args.device]:
            cfg = two_steps(model, batch, dtype, args.device, Path(tmp))
            measured = measure(cfg)
            estimated = step_memory(model, batch, dtype != "float32", args.device).peak
            rows.append({"model": name, "batch_size": batch, "block_size": model.block_size, "dtype": dtype,
                         "measured_bytes": measured, "estimated_bytes": estimated,
                         "estimate_over_measured": estimated / measured})
            print(f"{name:<22} batch {batch:>3} {dtype:<9} measured {measured / 2**20:9.1f} MiB  estimated "
                  f"{estimated / 2**20:9.1f} MiB  ratio {estimated / measured:.3f}", flush=True)
    if args.json:
        device = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
        args.json.write_text(json.dumps({"device": device, "torch": torch.__version__, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
