"""Regenerate the nanoGPT console logs in tests/data/nanogpt_logs/ by running nanoGPT's own train.py.

    git clone https://github.com/karpathy/nanoGPT /path/to/nanoGPT
    python scripts/make_nanogpt_logs.py --nanogpt /path/to/nanoGPT [--only NAME ...] [--jobs N] [--work-dir DIR]

Each log is a run built to have one cause of a plateau that `python -m sweeps.diagnose` must name
first (RUNS below: the settings, given to train.py as its `--key=value` arguments). All run on CPU
in float32 without torch.compile, a small model (4 layers, 4 heads, 128 wide, 64 tokens of
context, batch 8), a few hundred iterations: a few minutes each on a 2-core CPU.

The data is the embedded sample corpus, tokenized once with `trainer.data.prepare_data` and
written as nanoGPT's uint16 `train.bin` / `val.bin`; a run with `train_tokens` trains on only the
first that many training tokens (the same val). Nothing is written into the nanoGPT checkout: its
`--dataset` is an absolute path, which its `os.path.join('data', dataset)` keeps as is.

Writes, per run, `NAME.log` (train.py's stdout and stderr, as a user would save it) and
`runs.json` (per run: the cause it was built for, the exact arguments, the unique training
tokens, the nanoGPT commit), and `README.md` listing the commands.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OUT = ROOT / "tests" / "data" / "nanogpt_logs"

COMMON = {
    "device": "cpu", "compile": False, "dtype": "float32",
    "n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 64, "bias": False, "dropout": 0.0,
    "batch_size": 8, "gradient_accumulation_steps": 1,
    "eval_iters": 20, "log_interval": 1, "always_save_checkpoint": False, "wandb_log": False,
}

# name -> (the cause it is built to have, its own settings, unique training tokens or None for all)
RUNS = {
    # 8,192 training tokens, 300 x 512 tokens trained: ~19 epochs; val rises while train falls
    "repetition": ("data_repetition", {
        "learning_rate": 1e-3, "min_lr": 1e-4, "warmup_iters": 20, "max_iters": 300,
        "lr_decay_iters": 300, "eval_interval": 20}, 8192),
    # a peak LR of 1, ~1000x nanoGPT's default: the loss far above the untrained model's, again and again
    "absurd_lr": ("lr_too_high", {
        "learning_rate": 1.0, "min_lr": 0.1, "warmup_iters": 10, "max_iters": 150,
        "lr_decay_iters": 150, "eval_interval": 15, "eval_iters": 10}, None),
    # a high peak LR from iteration 0, decayed within 60 iterations: a blow-up at the start, then calm
    "no_warmup": ("warmup_too_short", {
        "learning_rate": 0.1, "min_lr": 1e-3, "warmup_iters": 0, "max_iters": 150,
        "lr_decay_iters": 60, "eval_interval": 15, "eval_iters": 10}, None),
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nanogpt", required=True, type=Path, help="a checkout of github.com/karpathy/nanoGPT")
    p.add_argument("--only", nargs="+", choices=sorted(RUNS), help="regenerate only these logs")
    p.add_argument("--out", type=Path, default=OUT, help=f"where the logs go (default {OUT.relative_to(ROOT)})")
    p.add_argument("--work-dir", type=Path, default=None, help="data and run dirs (default: a temp dir)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (OMP_NUM_THREADS, default 1)")
    p.add_argument("--jobs", type=int, default=1, help="runs at once (default 1)")
    args = p.parse_args(argv)
    if not (args.nanogpt / "train.py").is_file():
        p.error(f"--nanogpt {args.nanogpt}: no train.py there; git clone https://github.com/karpathy/nanoGPT")
    return args


def write_dataset(work: Path, name: str, train_tokens) -> tuple[Path, int]:
    """A nanoGPT dataset dir of the sample corpus (train cut to `train_tokens`); its train size."""
    from trainer.config import DataConfig
    from trainer.data import prepare_data

    prepared = prepare_data(DataConfig(name="sample", val_fraction=0.1, cache_dir=str(work / "data_cache")))
    train = np.memmap(prepared.train.path, dtype=np.uint16, mode="r")
    if train_tokens is not None:
        train = train[:train_tokens]
    dataset = work / f"dataset_{name}"
    dataset.mkdir(parents=True, exist_ok=True)
    np.asarray(train, dtype=np.uint16).tofile(dataset / "train.bin")
    np.asarray(np.memmap(prepared.val.path, dtype=np.uint16, mode="r")).tofile(dataset / "val.bin")
    return dataset, int(len(train))


def arguments(settings: dict) -> list[str]:
    return [f"--{k}={v}" for k, v in settings.items()]


def git_head(path: Path) -> str:
    try:
        return subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_readme(out: Path, index: dict) -> None:
    lines = ["# nanoGPT console logs for the diagnosis tests", "",
             "Made by `python scripts/make_nanogpt_logs.py --nanogpt /path/to/nanoGPT` (nanoGPT's own `train.py`, "
             "on CPU); `runs.json` holds each run's arguments, its unique training tokens and the nanoGPT commit. "
             "`--dataset` pointed at the sample corpus written as `train.bin`/`val.bin` (cut to `train_tokens`).", ""]
    for name, run in index.items():
        lines += [f"## {name}.log: built for `{run['cause']}`", "", "```",
                  f"python train.py {' '.join(run['args'])} --dataset=DATASET", "```",
                  f"unique training tokens: {run['train_tokens']:,}", ""]
    (out / "README.md").write_text("\n".join(lines))


def main(argv=None) -> int:
    args = parse_args(argv)
    work = (args.work_dir or Path(tempfile.mkdtemp(prefix="nanogpt_logs_"))).resolve()
    nanogpt = args.nanogpt.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    index_path = args.out / "runs.json"
    index = json.loads(index_path.read_text()) if index_path.is_file() else {}
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    names = list(args.only or RUNS)
    pending = []  # (name, settings, train tokens, process, log file)
    for name in names:
        cause, own, train_tokens = RUNS[name]
        dataset, n_train = write_dataset(work, name, train_tokens)
        settings = {**COMMON, **own, "out_dir": str(work / f"out_{name}")}
        cmd = [sys.executable, "train.py", *arguments(settings), f"--dataset={dataset}"]
        print(f"{name}: {' '.join(cmd[1:])}", flush=True)
        while len([p for p in pending if p[3].poll() is None]) >= args.jobs:
            time.sleep(1)
        log = open(args.out / f"{name}.log", "w")
        pending.append((name, settings, n_train, subprocess.Popen(cmd, cwd=nanogpt, env=env, stdout=log,
                                                                  stderr=subprocess.STDOUT, text=True), log))
    failed = 0
    for name, settings, n_train, proc, log in pending:
        proc.wait()
        log.close()
        if proc.returncode != 0:
            print(f"{name}: train.py exited with {proc.returncode}; its log is {args.out / f'{name}.log'}")
            failed += 1
            continue
        # the dataset and out_dir paths differ per machine: the README names the dataset DATASET
        index[name] = {"cause": RUNS[name][0],
                       "args": arguments({k: v for k, v in settings.items() if k != "out_dir"}),
                       "train_tokens": n_train, "nanogpt_commit": git_head(nanogpt)}
    index_path.write_text(json.dumps(index, indent=2) + "\n")
    write_readme(args.out, index)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
