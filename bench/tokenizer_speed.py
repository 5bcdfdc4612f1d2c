"""Milliseconds per iteration of one small CPU run with GPT-2's tokens and with UTF-8 bytes.

    python bench/tokenizer_speed.py [--rounds 3] [--iters 200] [--n-embd 32] [--json OUT]

The model is the tests' tiny trial (1 layer, 2 heads, `--n-embd` wide, 32 tokens of context,
batch 4, float32, CPU) on the embedded sample corpus. The two tokenizers differ only in the
output layer's width: `r50k_base` with `model.vocab_size=50304`, `bytes` with 320. Runs alternate
(GPT-2, bytes, bytes, GPT-2, ...) so drift in the machine's load hits both alike; each run gives
the median of its logged iterations' ms_per_iter after the first 10, the table the median over
rounds and the ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer import as_train_config, train  # noqa: E402

SKIP = 10  # warm-up iterations left out of each run's median
TOKENIZERS = {"r50k_base": 50304, "bytes": 320}


def one_run(tokenizer: str, n_embd: int, iters: int, folder: Path) -> float:
    cfg = as_train_config({
        "model": {"n_layer": 1, "n_head": 2, "n_embd": n_embd, "block_size": 32, "vocab_size": TOKENIZERS[tokenizer]},
        "data": {"name": "sample", "tokenizer": tokenizer, "cache_dir": str(folder / "cache")},
        "schedule": {"max_iters": iters, "warmup_iters": 10, "lr": 1e-3, "min_lr": 1e-4},
        "batch_size": 4, "eval_interval": iters, "eval_iters": 1, "log_interval": 1, "device": "cpu",
        "dtype": "float32", "checkpoint": "none", "out_dir": str(folder / tokenizer)})
    train(cfg, log=lambda line: None)
    rows = [json.loads(line) for line in (folder / tokenizer / "metrics.jsonl").read_text().splitlines()]
    return statistics.median(r["ms_per_iter"] for r in rows if r["type"] == "train" and r["iter"] > SKIP)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--n-embd", type=int, default=32)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if args.rounds < 1 or args.iters <= SKIP:
        ap.error(f"--rounds must be >= 1 and --iters > {SKIP}; got {args.rounds} and {args.iters}")
    times: dict[str, list[float]] = {t: [] for t in TOKENIZERS}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            order = list(TOKENIZERS) if r % 2 == 0 else list(reversed(TOKENIZERS))
            for tokenizer in order:
                times[tokenizer].append(one_run(tokenizer, args.n_embd, args.iters, Path(tmp)))
    med = {t: statistics.median(v) for t, v in times.items()}
    print(f"n_embd={args.n_embd}, {args.iters} iterations, {args.rounds} rounds: ms per iteration (median)")
    for t, m in med.items():
        print(f"  {t:10s} vocab {TOKENIZERS[t]:>6,}: {m:7.2f} ms   (rounds: {', '.join(f'{x:.2f}' for x in times[t])})")
    print(f"  ratio r50k_base / bytes: {med['r50k_base'] / med['bytes']:.1f}x")
    if args.json:
        args.json.write_text(json.dumps({"n_embd": args.n_embd, "iters": args.iters, "rounds": times,
                                         "median_ms": med, "ratio": med["r50k_base"] / med["bytes"]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
