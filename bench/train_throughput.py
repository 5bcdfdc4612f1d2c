"""Training throughput on CPU: this project's trainer side by side with nanoGPT's train.py.

    git clone https://github.com/karpathy/nanoGPT /path/to/nanoGPT
    python bench/train_throughput.py --nanogpt /path/to/nanoGPT [--rounds 3] [--iters 60] [--json OUT]

Both trainers run as subprocesses at the same small config (4 layers, 4 heads, 128 wide, 128
tokens of context, batch 8, no accumulation, no dropout, no bias, float32, no torch.compile,
vocab 50304), on the same tokens (the embedded sample corpus, prepared once with
`trainer.data.prepare_data`), with the same number of torch threads. The runs alternate
(ours, nanoGPT, nanoGPT, ours, ...) so drift in the machine's load hits both alike.

Both print `iter N: loss X, time Yms[, mfu Z%]` for every iteration (log_interval=1; ours shows
MFU on GPUs only); the time is read from those lines. The first `--skip` iterations of each run are warm-up (nanoGPT's first
also contains its initial evaluation) and are left out; each run gives the median of the rest,
and the table shows the median over rounds. Evaluation is off apart from the one at the start
(and ours at the end), one batch each, outside the timed iterations.

Nothing is written into the nanoGPT checkout: its `--dataset` is given as an absolute path,
which its `os.path.join('data', dataset)` keeps as is.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ITER_LINE = re.compile(r"^iter (\d+): loss (\S+), time ([\d.]+)ms(?:, mfu (\S+)%)?", re.M)

MODEL = {"n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 128, "bias": False, "dropout": 0.0}
BATCH_SIZE = 8
LR, MIN_LR, WARMUP = 6e-4, 6e-5, 10  # nanoGPT's peak and floor; a short warm-up for both


@dataclass(frozen=True)
class Setup:
    """What both trainers run, alike: the model, the micro-batch, the device, dtype and compile.
    The default is this script's CPU comparison; bench/gpu_check.py runs gpt2 on a GPU with it."""

    model: dict = field(default_factory=lambda: dict(MODEL))  # n_layer, n_head, n_embd, block_size, bias, dropout
    batch_size: int = BATCH_SIZE
    device: str = "cpu"
    dtype: str = "float32"
    compile: bool = False

    @property
    def tokens_per_iter(self) -> int:
        return self.batch_size * self.model["block_size"]


CPU_SETUP = Setup()


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nanogpt", required=True, type=Path, help="a checkout of github.com/karpathy/nanoGPT")
    p.add_argument("--rounds", type=int, default=3, help="runs of each trainer (default 3)")
    p.add_argument("--iters", type=int, default=60, help="training iterations per run (default 60)")
    p.add_argument("--skip", type=int, default=5, help="warm-up iterations left out of the timing (default 5)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads for both (OMP_NUM_THREADS); default: this machine's torch default")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="where data, logs and run dirs go (kept); default: a temp dir, removed at the end")
    p.add_argument("--timeout", type=float, default=1800, help="seconds allowed per run (default 1800)")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    args = p.parse_args(argv)
    if not (args.nanogpt / "train.py").is_file() or not (args.nanogpt / "model.py").is_file():
        p.error(f"--nanogpt {args.nanogpt}: no train.py and model.py there; "
                f"git clone https://github.com/karpathy/nanoGPT")
    if args.iters <= args.skip + 2:
        p.error(f"--iters {args.iters} must exceed --skip {args.skip} by at least 3")
    if args.rounds < 1:
        p.error("--rounds must be >= 1")
    return args


def prepare_shared_data(work: Path) -> Path:
    """Tokenize the sample corpus with our data module; return a nanoGPT dataset dir that links to it."""
    from trainer.config import DataConfig
    from trainer.data import prepare_data

    prepared = prepare_data(DataConfig(name="sample", val_fraction=0.1, cache_dir=str(work / "data_cache")))
    dataset = work / "nanogpt_dataset"
    dataset.mkdir(exist_ok=True)
    for name, split in (("train.bin", prepared.train), ("val.bin", prepared.val)):
        link = dataset / name
        if link.is_symlink() or link.exists():
            link.unlink()
        try:
            link.symlink_to(Path(split.path).resolve())
        except OSError:
            shutil.copyfile(split.path, link)
    return dataset


def ours_command(work: Path, out_dir: Path, iters: int, setup: Setup = CPU_SETUP) -> list[str]:
    m = setup.model
    return [sys.executable, "-m", "trainer",
            f"model.n_layer={m['n_layer']}", f"model.n_head={m['n_head']}", f"model.n_embd={m['n_embd']}",
            f"model.block_size={m['block_size']}", f"model.bias={m['bias']}", f"model.dropout={m['dropout']}",
            "model.vocab_size=50304",
            "data=sample", "data.val_fraction=0.1", f"data.cache_dir={work / 'data_cache'}",
            f"batch_size={setup.batch_size}", "gradient_accumulation_steps=1",
            "schedule=cosine", f"schedule.lr={LR}", f"schedule.min_lr={MIN_LR}",
            f"schedule.warmup_iters={WARMUP}", f"schedule.max_iters={iters}",
            f"eval_interval={iters}", "eval_iters=1", "log_interval=1",
            f"device={setup.device}", f"dtype={setup.dtype}", f"compile={str(setup.compile).lower()}",
            "checkpoint=none", f"out_dir={out_dir}"]


def nanogpt_command(nanogpt: Path, dataset: Path, out_dir: Path, iters: int, setup: Setup = CPU_SETUP) -> list[str]:
    m = setup.model
    # nanoGPT runs iterations 0..max_iters inclusive: max_iters = iters - 1 gives `iters` of them
    return [sys.executable, "train.py",
            f"--device={setup.device}", f"--compile={setup.compile}", f"--dtype={setup.dtype}", f"--dataset={dataset}",
            f"--n_layer={m['n_layer']}", f"--n_head={m['n_head']}", f"--n_embd={m['n_embd']}",
            f"--block_size={m['block_size']}", f"--bias={m['bias']}", f"--dropout={m['dropout']}",
            f"--batch_size={setup.batch_size}", "--gradient_accumulation_steps=1",
            f"--learning_rate={LR}", f"--min_lr={MIN_LR}", f"--warmup_iters={WARMUP}",
            f"--lr_decay_iters={iters}", f"--max_iters={iters - 1}",
            f"--eval_interval={10 * iters}", "--eval_iters=1", "--log_interval=1",
            "--always_save_checkpoint=False", "--wandb_log=False", f"--out_dir={out_dir}"]


def run_one(name: str, cmd: list[str], cwd: Path, env: dict, log: Path, timeout: float, skip: int) -> dict:
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=timeout)
    wall = time.time() - t0
    log.write_text(proc.stdout)
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.splitlines()[-25:])
        raise RuntimeError(f"{name} exited with {proc.returncode} (log {log}):\n{tail}")
    found = ITER_LINE.findall(proc.stdout)
    rows = [(int(i), float(loss), float(ms)) for i, loss, ms, _ in found]
    if len(rows) <= skip:
        raise RuntimeError(f"{name}: only {len(rows)} iteration lines in its output (log {log})")
    times = [ms for _, _, ms in rows[skip:]]
    params = re.search(r"number of parameters: ([\d.]+)M", proc.stdout) or \
        re.search(r"([\d.]+)M without position embeddings", proc.stdout)
    return {"ms_per_iter": statistics.median(times), "ms_p10": _quantile(times, 0.1), "ms_min": min(times),
            "ms_mean": statistics.fmean(times),
            "iters_logged": len(rows), "iters_timed": len(times), "final_loss": rows[-1][1],
            "params_M": float(params.group(1)) if params else None, "process_wall_s": round(wall, 1),
            # as the trainer printed it: ours against this GPU's peak, nanoGPT's against an A100's
            "printed_mfu_last": next((float(mfu) for *_, mfu in reversed(found) if mfu), None),
            "log": str(log)}


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch
    from bench.provenance import provenance

    made = provenance("bench/train_throughput.py", argv)  # before the runs: the load they started under

    threads = args.threads or torch.get_num_threads()
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="train_throughput_"))
    work = work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    nanogpt = args.nanogpt.resolve()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    tokens_per_iter = BATCH_SIZE * MODEL["block_size"]
    try:
        print(f"preparing the sample corpus in {work} ...", flush=True)
        dataset = prepare_shared_data(work)
        runs = {"ours": [], "nanogpt": []}
        for r in range(args.rounds):
            order = ("ours", "nanogpt") if r % 2 == 0 else ("nanogpt", "ours")
            for name in order:
                out_dir = work / f"{name}_round{r}"
                if name == "ours":
                    cmd, cwd = ours_command(work, out_dir, args.iters), ROOT
                else:
                    cmd, cwd = nanogpt_command(nanogpt, dataset, out_dir, args.iters), nanogpt
                print(f"round {r + 1}/{args.rounds}: {name} ...", end=" ", flush=True)
                res = run_one(name, cmd, cwd, env, work / f"{name}_round{r}.log", args.timeout, args.skip)
                runs[name].append(res)
                print(f"{res['ms_per_iter']:.1f} ms/iter (median of {res['iters_timed']}), "
                      f"final loss {res['final_loss']:.3f}, {res['process_wall_s']:.0f}s", flush=True)

        summary = {}
        for name, rs in runs.items():
            ms = statistics.median(r["ms_per_iter"] for r in rs)
            p10 = statistics.median(r["ms_p10"] for r in rs)
            summary[name] = {"ms_per_iter": ms, "tokens_per_s": tokens_per_iter / (ms / 1000),
                             "ms_p10": p10, "tokens_per_s_p10": tokens_per_iter / (p10 / 1000),
                             "ms_per_iter_by_round": [r["ms_per_iter"] for r in rs],
                             "params_M": rs[0]["params_M"], "final_loss_by_round": [r["final_loss"] for r in rs]}
        ratio = summary["ours"]["tokens_per_s"] / summary["nanogpt"]["tokens_per_s"]
        ratio_p10 = summary["ours"]["tokens_per_s_p10"] / summary["nanogpt"]["tokens_per_s_p10"]
        # each round's two runs are back to back, so they share the machine's load of the moment
        by_round = [n["ms_per_iter"] / o["ms_per_iter"] for o, n in zip(runs["ours"], runs["nanogpt"])]
        result = {
            **made,
            "config": {**MODEL, "vocab_size": 50304, "batch_size": BATCH_SIZE, "gradient_accumulation_steps": 1,
                       "tokens_per_iter": tokens_per_iter, "dtype": "float32", "compile": False, "device": "cpu",
                       "iters": args.iters, "skip": args.skip, "rounds": args.rounds, "threads": threads},
            "environment": {"torch": torch.__version__, "python": platform.python_version(),
                            "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                            "nanogpt_commit": _git_head(nanogpt)},
            "ours": summary["ours"], "nanogpt": summary["nanogpt"], "ratio_ours_over_nanogpt": ratio,
            "ratio_ours_over_nanogpt_p10": ratio_p10,
            "load_average_at_end": os.getloadavg(), "ratio_by_round": by_round, "ratio_median_of_rounds": statistics.median(by_round),
            "runs": runs,
        }
        print()
        print(markdown_table(result))
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(result, indent=2) + "\n")
            print(f"\nwrote {args.json}")
        return 0
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)


def _quantile(values, q: float) -> float:
    """The q-quantile (linear interpolation): p10 is the pace when the machine was least busy."""
    v = sorted(values)
    pos = q * (len(v) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def _git_head(path: Path):
    try:
        out = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def markdown_table(result: dict) -> str:
    c, e = result["config"], result["environment"]
    lines = [
        f"CPU training throughput, {c['n_layer']} layers x {c['n_embd']} wide, {c['n_head']} heads, "
        f"context {c['block_size']}, batch {c['batch_size']} ({c['tokens_per_iter']:,} tokens/iter), "
        f"float32, no compile, {c['threads']} torch threads, torch {e['torch']}; "
        f"median over {c['rounds']} alternating runs of the per-run median over iterations "
        f"{c['skip'] + 1}..{c['iters']}",
        "",
        "| trainer | ms/iter | tokens/s | ms/iter by round | p10 ms/iter | p10 tokens/s | params |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for key, label in (("ours", "this trainer (`python -m trainer`)"), ("nanogpt", "nanoGPT `train.py`")):
        s = result[key]
        rounds = ", ".join(f"{v:.1f}" for v in s["ms_per_iter_by_round"])
        params = f"{s['params_M']:.2f}M" if s["params_M"] is not None else "?"
        lines.append(f"| {label} | {s['ms_per_iter']:.1f} | {s['tokens_per_s']:,.0f} | {rounds} "
                     f"| {s['ms_p10']:.1f} | {s['tokens_per_s_p10']:,.0f} | {params} |")
    lines += ["", f"ratio ours / nanoGPT (tokens/s): **{result['ratio_ours_over_nanogpt']:.3f}** "
                  f"(p10: {result['ratio_ours_over_nanogpt_p10']:.3f}; median of the rounds' own ratios, "
                  f"each of two runs back to back: {result['ratio_median_of_rounds']:.3f})"]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
